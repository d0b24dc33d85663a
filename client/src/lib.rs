//! The reference end-to-end encrypted client: a library (this crate) and the `chat`
//! command-line program (`src/bin/chat/`; the chat service's binary is `chat-server`). It talks
//! only to the gateway.
//!
//! Everything secret stays on the device: messages are sealed and opened here with the `e2ee`
//! crate, for every device of every participant (this one included, so that it can read its own
//! history), and every delivered message is verified (signature, key commitment, decryption)
//! before its text is shown; one that fails is shown as [`Content::Failed`], never as text.
//! Contacts' keys (and the user's own devices) are pinned on first use by their bytes (the
//! fingerprints the server sends are never trusted: every one is computed here), and a change
//! is reported as a [`KeyWarning`] before anything is sealed for it; a device whose keys
//! changed, or a new device of a verified contact, gets nothing until the user accepts it
//! ([`Session::trust`], [`Error::Untrusted`]). Group memberships are pinned too
//! ([`MembershipWarning`]). A device gone from its owner's list is revoked from then on: its
//! later messages are refused, its earlier ones still verify. What each conversation showed is
//! remembered in the profile, so that an envelope the server sends again under another sequence
//! is flagged as a replay ([`Content::Replayed`]), across restarts; a message is only shown in
//! the conversation it belongs to.
//! Messages are acknowledged on receipt, before any decryption, and the RSA work runs on a
//! blocking thread, never on the task that reads the stream and acknowledges, so that nothing
//! the server sees depends on the timing of an RSA decryption (the condition of the
//! RUSTSEC-2023-0071 waiver in `deny.toml`); which check failed is never reported to the server
//! or shown. A sending device whose messages failed to decrypt 5 times within an hour is not
//! decrypted at all until the hour is over (kept in the profile, so across runs of `chat`).
//! The device sends one message at a time (a lock in the profile, which other `chat` processes
//! of the same profile wait for), so that two sends never take one chain counter.
//!
//! Start with [`Session`] (`session.rs`: login, tokens, the `call` helper that refreshes them),
//! then `messages.rs` (send, history, opening), `live.rs` (the interactive stream), `groups.rs`,
//! `contacts.rs`, and `profile.rs` / `keystore.rs` for what is stored on disk.
//!
//! **The profile directory** (mode 0700; every file 0600, written atomically):
//! `account.json` (server, username, user and device ids), `tokens.json` (access and refresh
//! tokens with their expiry), `keys.json` (the device's private keys sealed with
//! AES-256-GCM-SIV under an argon2id key from a passphrase that is not the account password, at
//! least 19 MiB of memory, see [`keystore::SealedKeys`]), `contacts.json` (pinned device keys
//! per user, with the public keys themselves so that a message can be sealed while the server is
//! unreachable, pending changes, verified flags, the direct conversation once opened), `groups.json` (group members as last shown),
//! `cursors.json` (last sequence shown per conversation), `seen/` (per conversation, the
//! sequence at which each verified message was first shown, for replay detection; bounded),
//! `chains.json` and `received_chains.json` (suite V2: this device's position in each
//! conversation, and what it saw of other devices' chains; see `chains.rs`),
//! `decryption_failures.json` (the budget of decryption failures per sending device),
//! `forwarded.json` (per other device of the user and conversation, the last sequence whose
//! keys this device forwarded to it; see `forwarding.rs`), `outbox.json` (sealed messages the server has not acknowledged yet, resent with the same
//! client message id until it does, across restarts, and sealed again for the current devices
//! after a device-list mismatch; see [`outbox`] and `offline.rs`) and
//! `sending.lock` (locked while a send of this device is under way). `chat unlock` keeps the
//! argon2id key outside the profile, in `$XDG_RUNTIME_DIR` (memory), for a while ([`unlock`]).
//!
//! **Chains** (suite V2): every envelope carries its sending device's counter in the
//! conversation, the hash of that device's previous envelope and its clock, all signed. Each
//! message shown comes with what is wrong with its chain ([`ReceivedText::chain`]): a gap
//! (messages dropped or withheld), a fork (two histories), a late arrival, an implausible time.
//!
//! **Exit codes of `chat`** ([`Error::exit_code`]): 0 success, 1 other errors, 2 usage (bad
//! arguments, a request the server finds invalid, a group name several groups share), 3
//! authentication (not logged in, wrong password or passphrase, session ended, this device
//! revoked, too many failed logins), 4 not found, 5 network or server unavailable (TLS
//! failures included) or a rate limit, 6 verification failure (a message that failed
//! verification, or a replay, was shown), 7 not sent: a participant's keys changed and are not
//! accepted yet, 8 refused by the server as asked (a username taken, not allowed for the
//! user's role, too many devices).
//!
//! **Errors** read as sentences: every gRPC status becomes one in a single function
//! (`explain.rs`), which also picks the kind, hence the exit code, from the code,
//! the `google.rpc.ErrorInfo` reason and the `RetryInfo` delay (said as "wait 8 seconds");
//! the status itself stays in the error ([`Error::raw_status`]) for `--verbose` and `--json`.
//!
//! **Transport** ([`Server`]): TLS (rustls) for `https://` servers, with the system's roots or
//! a CA file, and never a plaintext fallback; plaintext for `http://`, which the program warns
//! about before sending a password anywhere but loopback.
//!
//! Not done here: no forward secrecy (see the `e2ee` crate); passwords are read from the
//! environment or a line of stdin, without disabling the terminal's echo.

#![forbid(unsafe_code)]

mod backoff;
pub mod chains;
mod contacts;
mod error;
mod explain;
mod forwarding;
mod groups;
pub mod keystore;
mod live;
mod messages;
mod offline;
pub mod outbox;
pub mod profile;
mod server;
mod session;
pub mod unlock;
mod unreadable;
mod warnings;

pub use backoff::{Backoff, FIRST_BACKOFF, MAX_BACKOFF};
pub use contacts::{SafetyNumber, Trusted};
pub use error::{Error, RawStatus, Result};
pub use forwarding::Forwarded;
pub use groups::{GroupInfo, MemberInfo};
pub use live::{Live, LiveEvent};
pub use messages::{
    Content, ConversationSummary, DEFAULT_PREVIEWS, PREVIEW_CHARS, PreparedText, Preview,
    ReceivedText, SentMessage, Target, TargetKind, check_text,
};
pub use offline::{KeptOffline, PendingMessage};
pub use outbox::{Delivery, Flushed, NotSent, QueuedMessage};
pub use profile::{Profile, same_username};
pub use server::Server;
pub use session::{DeviceInfo, KeyOptions, Session, register};
pub use unreadable::{History, Unreadable};
pub use warnings::{KeyWarning, MembershipWarning, Warning, WarningSink};
