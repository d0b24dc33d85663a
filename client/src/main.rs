//! `chat`: the command-line client. Thin: parses arguments, reads secrets, calls the `client`
//! library and prints (as text or, with `--json`, one JSON document per result).

use std::{
    io::{BufRead, Write},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
};

use clap::{CommandFactory, Parser, Subcommand};
use client::{
    Content, Error, KeyOptions, LiveEvent, Profile, ReceivedText, Result, Session,
    keystore::KdfParams,
};
use secrecy::SecretString;
use serde::Serialize;
use tokio::io::AsyncBufReadExt;

const EXIT_CODES: &str = "\
Exit codes: 0 success, 1 other error, 2 usage, 3 authentication (not logged in, wrong password \
or passphrase, session ended), 4 not found, 5 network or server unavailable, 6 a message failed \
verification.

Secrets: the password comes from CHAT_PASSWORD, else a line of stdin; the passphrase of the \
device keys from CHAT_PASSPHRASE, else the password. Targets: a username, or #group (name or id).";

/// End-to-end encrypted chat from the command line.
#[derive(Debug, Parser)]
#[command(name = "chat", version, after_help = EXIT_CODES)]
struct Cli {
    /// Profile name (one device login per profile).
    #[arg(long, global = true, env = "CHAT_PROFILE", default_value = "default")]
    profile: String,
    /// Profile directory (default: $XDG_CONFIG_HOME/chat/<profile> or ~/.config/chat/<profile>).
    #[arg(long, global = true, env = "CHAT_PROFILE_DIR")]
    profile_dir: Option<PathBuf>,
    /// Gateway URL for register and login (later commands use the profile's).
    #[arg(
        long,
        global = true,
        env = "CHAT_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// Machine-readable output: JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// RSA size of new device keys (tests use 2048).
    #[arg(long, global = true, hide = true, env = "CHAT_RSA_BITS", default_value_t = e2ee::DEFAULT_RSA_BITS)]
    rsa_bits: usize,
    /// argon2id memory (KiB) for new key files (tests use less).
    #[arg(long, global = true, hide = true, env = "CHAT_KDF_MEMORY_KIB")]
    kdf_memory_kib: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// Send one message.
    Send {
        /// A username or #group.
        target: String,
        /// The text (words are joined by spaces).
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Show the last messages of a conversation (and mark them read).
    History {
        /// A username or #group.
        target: String,
        /// How many messages.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// List conversations with unread counts.
    Conversations,
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
    /// Show the safety number with a user (compare it out of band) and mark the user verified.
    Verify {
        /// The username.
        username: String,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// List the active devices.
    List,
    /// Revoke a device.
    Revoke {
        /// The device id.
        device_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<u8> {
    let dir = match &cli.profile_dir {
        Some(dir) => dir.clone(),
        None => Profile::default_dir(&cli.profile)?,
    };
    let options = KeyOptions {
        rsa_bits: cli.rsa_bits,
        kdf: KdfParams {
            m_cost: cli.kdf_memory_kib.unwrap_or(KdfParams::default().m_cost),
            ..KdfParams::default()
        },
    };
    let out = Output { json: cli.json };
    match cli.command {
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "chat", &mut std::io::stdout());
            Ok(0)
        }
        Command::Register {
            username,
            display_name,
        } => {
            let password = password()?;
            client::register(&cli.server, &username, &password, &display_name).await?;
            let profile = Profile::open(dir)?;
            let passphrase = passphrase_env();
            let session = Session::login(
                profile,
                &cli.server,
                &username,
                &password,
                passphrase.as_ref(),
                options,
            )
            .await?;
            out.account(&session);
            Ok(0)
        }
        Command::Login { username } => {
            let password = password()?;
            let passphrase = passphrase_env();
            let profile = Profile::open(dir)?;
            let session = Session::login(
                profile,
                &cli.server,
                &username,
                &password,
                passphrase.as_ref(),
                options,
            )
            .await?;
            out.account(&session);
            Ok(0)
        }
        command => {
            let needs_keys = matches!(
                command,
                Command::Send { .. } | Command::History { .. } | Command::Chat { .. }
            );
            let passphrase = if needs_keys {
                Some(passphrase()?)
            } else {
                None
            };
            let session = Arc::new(Session::resume(Profile::open(dir)?, passphrase.as_ref())?);
            let code = logged_in(&session, command, &out).await;
            for warning in session.take_warnings() {
                eprintln!("{warning}");
            }
            code
        }
    }
}

async fn logged_in(session: &Arc<Session>, command: Command, out: &Output) -> Result<u8> {
    match command {
        Command::Logout => {
            session.logout().await?;
            out.print(&serde_json::json!({ "logged_out": true }), "logged out");
        }
        Command::Whoami => {
            let (user, device) = session.whoami().await?;
            let text = format!(
                "{} ({}) on device {} ({})",
                user.username, user.user_id, device.device_id, device.name
            );
            let value = serde_json::json!({
                "user_id": user.user_id, "username": user.username, "device": device,
            });
            out.print(&value, &text);
        }
        Command::Devices { command } => match command.unwrap_or(DevicesCommand::List) {
            DevicesCommand::List => {
                let devices = session.devices().await?;
                let text = devices
                    .iter()
                    .map(|d| {
                        let mark = if d.current { " (this device)" } else { "" };
                        let short: String = d.encryption_fingerprint.chars().take(16).collect();
                        format!("{}  {}  {short}{mark}", d.device_id, d.name)
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                out.print(&devices, &text);
            }
            DevicesCommand::Revoke { device_id } => {
                session.revoke_device(&device_id).await?;
                let value = serde_json::json!({ "revoked": device_id });
                out.print(&value, &format!("revoked {device_id}"));
            }
        },
        Command::Send { target, text } => {
            let target = session.resolve(&target).await?;
            let sent = session.send_text(&target, &text.join(" ")).await?;
            out.print(&sent, &format!("sent #{}", sent.sequence));
        }
        Command::History { target, limit } => {
            let target = session.resolve(&target).await?;
            let messages = session.history(&target, limit).await?;
            let text = messages.iter().map(line).collect::<Vec<_>>().join("\n");
            out.print(&messages, &text);
            if messages
                .iter()
                .any(|m| matches!(m.content, Content::Failed { .. }))
            {
                return Ok(6);
            }
        }
        Command::Conversations => {
            let conversations = session.conversations().await?;
            let text = conversations
                .iter()
                .map(|c| format!("{}  {} unread  ({})", c.with, c.unread_count, c.kind))
                .collect::<Vec<_>>()
                .join("\n");
            out.print(&conversations, &text);
        }
        Command::Chat { target } => return interactive(session, &target, out).await,
        Command::Group { command } => group(session, command, out).await?,
        Command::Verify { username } => {
            let number = session.safety_number(&username, true).await?;
            let text = format!(
                "Safety number with {}:\n{}\nCompare it with theirs (in person or by a trusted call). \
                 {} is now marked verified until their keys change.",
                number.username, number.safety_number, number.username
            );
            out.print(&number, &text);
        }
        Command::Register { .. } | Command::Login { .. } | Command::Completions { .. } => {
            unreachable!("handled before resuming a session")
        }
    }
    Ok(0)
}

async fn group(session: &Session, command: GroupCommand, out: &Output) -> Result<()> {
    let group_line = |g: &client::GroupInfo| {
        format!(
            "#{}  {}  {} members  ({})",
            g.name, g.group_id, g.member_count, g.role
        )
    };
    match command {
        GroupCommand::Create { name, members } => {
            let group = session.create_group(&name, &members).await?;
            out.print(&group, &group_line(&group));
        }
        GroupCommand::Rename { group, name } => {
            let group = session.rename_group(&group, &name).await?;
            out.print(&group, &group_line(&group));
        }
        GroupCommand::Add { group, users } => {
            let group = session.add_members(&group, &users).await?;
            out.print(&group, &group_line(&group));
        }
        GroupCommand::Remove { group, user } => {
            let group = session.remove_member(&group, &user).await?;
            out.print(&group, &group_line(&group));
        }
        GroupCommand::Leave { group } => {
            session.leave_group(&group).await?;
            out.print(&serde_json::json!({ "left": group }), "left the group");
        }
        GroupCommand::Members { group } => {
            let members = session.group_members(&group).await?;
            let text = members
                .iter()
                .map(|m| format!("{}  ({}, {} devices)", m.username, m.role, m.devices))
                .collect::<Vec<_>>()
                .join("\n");
            out.print(&members, &text);
        }
        GroupCommand::List => {
            let groups = session.groups().await?;
            let text = groups.iter().map(group_line).collect::<Vec<_>>().join("\n");
            out.print(&groups, &text);
        }
    }
    Ok(())
}

/// `chat <target>`: events to stdout, stdin lines to the stream, until stdin ends and every
/// line is answered.
async fn interactive(session: &Arc<Session>, target: &str, out: &Output) -> Result<u8> {
    let target = session.resolve(target).await?;
    let mut live = session.clone().live(target);
    let (lines_sender, mut lines) = tokio::sync::mpsc::channel::<String>(16);
    tokio::spawn(async move {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = stdin.next_line().await {
            if !line.trim().is_empty() && lines_sender.send(line).await.is_err() {
                break;
            }
        }
    });
    let mut failed = false;
    let mut ended = false;
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => live.send(line).await?,
                None => live.finish_sending(),
            },
            event = live.events.recv() => match event {
                Some(event) => {
                    ended |= matches!(event, LiveEvent::Ended { .. });
                    failed |= out.live_event(&event);
                }
                None => break,
            },
        }
    }
    Ok(if ended {
        3
    } else if failed {
        6
    } else {
        0
    })
}

struct Output {
    json: bool,
}

impl Output {
    fn print<T: Serialize>(&self, value: &T, text: &str) {
        let mut stdout = std::io::stdout().lock();
        if self.json {
            let _ = serde_json::to_writer(&mut stdout, value);
            let _ = writeln!(stdout);
        } else if !text.is_empty() {
            let _ = writeln!(stdout, "{text}");
        }
    }

    fn account(&self, session: &Session) {
        let account = session.account();
        self.print(
            account,
            &format!(
                "logged in as {} on device {}",
                account.username, account.device_id
            ),
        );
    }

    /// Prints one live event; returns whether it was a message that failed verification.
    fn live_event(&self, event: &LiveEvent) -> bool {
        let failed = matches!(
            event,
            LiveEvent::Message(ReceivedText {
                content: Content::Failed { .. },
                ..
            })
        );
        match event {
            LiveEvent::Message(message) => self.print(message, &line(message)),
            LiveEvent::Sent(sent) => self.print(sent, ""),
            LiveEvent::CaughtUp => self.print(&serde_json::json!({ "caught_up": true }), ""),
            LiveEvent::Connected => eprintln!("connected"),
            LiveEvent::Disconnected { error, retry_in } => {
                eprintln!("disconnected ({error}); reconnecting in {retry_in:?}");
            }
            LiveEvent::SendFailed { reason } => eprintln!("not sent: {reason}"),
            LiveEvent::KeyWarning(warning) => eprintln!("{warning}"),
            LiveEvent::Ended { error } => eprintln!("error: {error}"),
        }
        failed
    }
}

/// One message as a line of text.
fn line(message: &ReceivedText) -> String {
    let sender = if message.sender_username.is_empty() {
        &message.sender_user_id
    } else {
        &message.sender_username
    };
    match &message.content {
        Content::Verified { text } => format!("[{}] {sender}: {text}", message.sequence),
        Content::Failed { reason } => format!(
            "[{}] {sender}: !!! MESSAGE FAILED VERIFICATION, NOT SHOWN: {reason}",
            message.sequence
        ),
    }
}

fn password() -> Result<SecretString> {
    if let Ok(password) = std::env::var("CHAT_PASSWORD") {
        return Ok(password.into());
    }
    read_secret_line("Password: ")
}

fn passphrase_env() -> Option<SecretString> {
    std::env::var("CHAT_PASSPHRASE")
        .or_else(|_| std::env::var("CHAT_PASSWORD"))
        .ok()
        .map(Into::into)
}

fn passphrase() -> Result<SecretString> {
    match passphrase_env() {
        Some(passphrase) => Ok(passphrase),
        None => read_secret_line("Passphrase of the device keys: "),
    }
}

fn read_secret_line(prompt: &str) -> Result<SecretString> {
    eprint!("{prompt}");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|error| Error::Usage(format!("reading a secret from stdin: {error}")))?;
    let secret = line.trim_end_matches(['\r', '\n']).to_owned();
    if secret.is_empty() {
        return Err(Error::Usage(
            "no secret given (set CHAT_PASSWORD / CHAT_PASSPHRASE)".into(),
        ));
    }
    Ok(secret.into())
}
