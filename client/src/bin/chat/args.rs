//! The command line: every command and option, with their help.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes: 0 success, 1 other error, 2 usage (or a request the server finds invalid, or a \
group name several groups share), 3 authentication (not logged in, wrong password or \
passphrase, session ended, this device revoked, too many failed logins: the wait is said), 4 not \
found, 5 network or server unavailable, TLS failures included, or a rate limit (the wait is \
said), 6 a message failed verification or was replayed, 7 not sent: a participant's keys \
changed and are not accepted yet (chat verify / chat trust), 8 refused by the server as asked \
(a username taken, not allowed for your role, too many devices). Errors are sentences; \
--verbose adds the server's status, --json prints {\"error\": {\"message\", \"exit_code\", \"status\"}} \
on stderr.

Secrets: the password comes from CHAT_PASSWORD, else a line of stdin; the passphrase of the \
device keys (never the password, which the server sees) from CHAT_PASSPHRASE, else the key kept \
by chat unlock, else the next line of stdin. Targets: a username, or #group (name or id).";

/// End-to-end encrypted chat from the command line.
#[derive(Debug, Parser)]
#[command(name = "chat", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Profile name (one device login per profile).
    #[arg(long, global = true, env = "CHAT_PROFILE", default_value = "default")]
    pub profile: String,
    /// Profile directory (default: $XDG_CONFIG_HOME/chat/PROFILE or ~/.config/chat/PROFILE).
    #[arg(long, global = true, env = "CHAT_PROFILE_DIR")]
    pub profile_dir: Option<PathBuf>,
    /// Gateway URL for register and login (later commands use the profile's). https:// is
    /// always TLS; http:// is plaintext, which is warned about beyond this machine.
    #[arg(
        long,
        global = true,
        env = "CHAT_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// PEM file of the CA certificate(s) to trust for an https:// server, instead of the
    /// system's roots (a private CA). Needed by every command that talks to that server.
    #[arg(long, global = true, env = "CHAT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Machine-readable output: JSON on stdout (errors and warnings as JSON on stderr, an
    /// error with the server's status).
    #[arg(long, global = true)]
    pub json: bool,
    /// Show the server's status (code, message, reason) after an error's explanation.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// RSA size of new device keys (tests use 2048).
    #[arg(long, global = true, hide = true, env = "CHAT_RSA_BITS", default_value_t = e2ee::DEFAULT_RSA_BITS)]
    pub rsa_bits: usize,
    /// argon2id memory (KiB) for new key files: at least 19456 (19 MiB), at most 4 GiB.
    #[arg(long, global = true, hide = true, env = "CHAT_KDF_MEMORY_KIB")]
    pub kdf_memory_kib: Option<u32>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an account, then log this profile in as a new device.
    Register {
        /// The username.
        username: String,
        /// Display name.
        #[arg(long, default_value = "")]
        display_name: String,
    },
    /// Log in (a new device, with new keys, unless this profile already has one for the user).
    Login {
        /// The username.
        username: String,
    },
    /// End the session (the device and its keys stay for the next login).
    Logout,
    /// Show the current user and device.
    Whoami,
    /// List or revoke devices.
    Devices {
        #[command(subcommand)]
        command: Option<DevicesCommand>,
    },
    /// Send one message (an empty one is refused, exit code 2). Sent after the conversation's
    /// earlier messages that are still kept; when the server is unreachable, the message is
    /// kept in the profile (exit code 5) and sent by the next send, chat or flush.
    Send {
        /// A username or #group.
        target: String,
        /// The text (words are joined by spaces).
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// List the messages kept in this profile because the server has not acknowledged them,
    /// with their text (opened with this device's keys).
    Pending {
        /// Without the text: nothing is decrypted, so the passphrase is not needed.
        #[arg(long)]
        no_text: bool,
    },
    /// Send the messages kept in this profile (exit code 5 when the server is still unreachable).
    Flush,
    /// Show the last messages of a conversation (and mark them read).
    History {
        /// A username or #group.
        target: String,
        /// How many messages.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// List conversations, most recent activity first: unread counts, the time of the newest
    /// message and a preview of it, decrypted here (for the most recent ones).
    Conversations {
        /// No previews: nothing is decrypted, so the passphrase is not needed.
        #[arg(long)]
        no_preview: bool,
    },
    /// Forward the keys of the messages this device can read to your other devices that were
    /// not encrypted for them (a device added later), so that they can read your history
    /// there too. `history`, `conversations` and `chat` do it first anyway.
    ForwardKeys,
    /// Interactive conversation: shows messages as they arrive, sends each line of stdin.
    Chat {
        /// A username or #group.
        target: String,
    },
    /// Manage groups.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Show the safety number with a user, and once you confirm that it matches theirs
    /// (compared in person or on a call), mark the user verified: their current keys are
    /// trusted, pending changes included. Asks on the terminal; elsewhere needs --yes.
    Verify {
        /// The username (not your own).
        username: String,
        /// The numbers were compared and match: mark verified without asking (for scripts).
        #[arg(long, short)]
        yes: bool,
    },
    /// Accept a user's current keys after a change (a new device, or keys that differ from the
    /// pinned ones), without verifying them: sending to them resumes; they are no longer
    /// verified. Compare the safety number first (chat verify) when you can.
    Trust {
        /// The username (your own, to accept a change of your own devices).
        username: String,
    },
    /// Seal this device's keys under a new passphrase (CHAT_PASSPHRASE is the current one,
    /// CHAT_NEW_PASSPHRASE the new one, else both are read from stdin). Also moves keys sealed
    /// with the account password by earlier versions to a proper passphrase.
    Passphrase,
    /// Open the device keys once and keep them open for a while: later commands of this
    /// profile need no passphrase until then (the argon2id key is kept in $XDG_RUNTIME_DIR,
    /// which is in memory; see the README).
    Unlock {
        /// For how many minutes (at most 720).
        #[arg(long, default_value_t = 15)]
        minutes: u64,
    },
    /// End an unlock before its time (logout does too).
    Lock,
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// List the active devices.
    List,
    /// Revoke a device.
    Revoke {
        /// The device id.
        device_id: String,
    },
    /// Rename a device (this one, or another of yours).
    Rename {
        /// The device id (see `chat devices`).
        device_id: String,
        /// The new name: 1 to 64 characters, no control characters.
        name: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group with members.
    Create {
        /// The name.
        name: String,
        /// Usernames of the other members.
        members: Vec<String>,
    },
    /// Rename a group.
    Rename {
        /// The group (name or id).
        group: String,
        /// The new name.
        name: String,
    },
    /// Add members.
    Add {
        /// The group (name or id).
        group: String,
        /// Usernames.
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Remove a member.
    Remove {
        /// The group (name or id).
        group: String,
        /// The username.
        user: String,
    },
    /// Leave a group.
    Leave {
        /// The group (name or id).
        group: String,
    },
    /// List a group's members.
    Members {
        /// The group (name or id).
        group: String,
    },
    /// List your groups.
    List,
}
