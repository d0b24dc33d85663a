//! `chat`: the command-line client. Thin: parses arguments, reads secrets, calls the `client`
//! library and prints (as text or, with `--json`, one JSON document per result).

use std::{
    io::{BufRead, IsTerminal},
    process::{ExitCode, Stdio},
    sync::Arc,
};

use clap::{CommandFactory, Parser};
use client::{Error, KeyOptions, Profile, Result, Server, Session, keystore::KdfParams};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    args::{Cli, Command, DevicesCommand, GroupCommand},
    output::{Output, conversation_line},
};

mod args;
mod forward;
mod interactive;
mod output;
mod send;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (json, verbose) = (cli.json, cli.verbose);
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            output::error(&error, json, verbose);
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
    options.kdf.check()?;
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
            let server = password_server(&cli.server, cli.ca_file.as_deref())?;
            let profile = Profile::open(dir)?;
            server.check_no_downgrade(&profile)?;
            let password = password()?;
            let passphrase = passphrase()?;
            not_the_password(&password, &passphrase)?;
            client::register(&server, &username, &password, &display_name).await?;
            let session =
                Session::login(profile, &server, &username, &password, &passphrase, options)
                    .await?;
            out.account(&session);
            Ok(0)
        }
        Command::Login { username } => {
            let server = password_server(&cli.server, cli.ca_file.as_deref())?;
            let password = password()?;
            let passphrase = passphrase()?;
            let profile = Profile::open(dir)?;
            let session =
                Session::login(profile, &server, &username, &password, &passphrase, options)
                    .await?;
            out.account(&session);
            Ok(0)
        }
        Command::Passphrase => {
            let profile = Profile::open(dir)?;
            let current = passphrase()?;
            let new = new_passphrase()?;
            if let Ok(password) = std::env::var("CHAT_PASSWORD") {
                not_the_password(&password.into(), &new)?;
            }
            // A kept key opens only the keys as sealed now.
            client::unlock::lock(&profile)?;
            client::keystore::change_passphrase(
                &profile,
                current.expose_secret().as_bytes(),
                new.expose_secret().as_bytes(),
                options.kdf,
            )?;
            out.print(
                &serde_json::json!({ "resealed": true }),
                "the device keys are sealed under the new passphrase",
            );
            Ok(0)
        }
        Command::Unlock { minutes } => {
            let profile = Profile::open(dir)?;
            let passphrase = passphrase()?;
            let duration = std::time::Duration::from_secs(minutes.saturating_mul(60));
            let until =
                client::unlock::unlock(&profile, passphrase.expose_secret().as_bytes(), duration)?;
            out.print(
                &serde_json::json!({ "unlocked_until": until }),
                &format!(
                    "the device keys are open until {} (chat lock ends it sooner)",
                    output::time_of(until)
                ),
            );
            Ok(0)
        }
        Command::Pending { no_text: true } => {
            let kept = client::outbox::queued(&Profile::open(dir)?)?;
            let text = kept
                .iter()
                .map(|m| {
                    format!(
                        "{}  conversation {}  kept since {}",
                        m.client_message_id,
                        m.conversation_id,
                        output::time_of(m.queued_at)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            out.print(&kept, &text);
            Ok(0)
        }
        Command::Lock => {
            let was = client::unlock::lock(&Profile::open(dir)?)?;
            let text = if was {
                "locked: commands ask for the passphrase again"
            } else {
                "the keys were not unlocked"
            };
            out.print(&serde_json::json!({ "locked": was }), text);
            Ok(0)
        }
        command => {
            let needs_keys = matches!(
                command,
                Command::Send { .. }
                    | Command::Pending { no_text: false }
                    | Command::History { .. }
                    | Command::Chat { .. }
                    | Command::Conversations { no_preview: false }
                    | Command::ForwardKeys
                    // These send kept messages, which may need sealing again.
                    | Command::Flush
                    | Command::Trust { .. }
                    | Command::Verify { .. }
            );
            let profile = Profile::open(dir)?;
            let session = Arc::new(resume(profile, needs_keys, cli.ca_file.as_deref())?);
            if matches!(command, Command::Logout) {
                client::unlock::lock(session.profile())?;
            }
            // Warnings are printed as soon as they are found: before anything is sealed for the
            // keys or members that changed. The live conversation shows them as its events.
            if !matches!(command, Command::Chat { .. }) {
                session.set_warning_sink(Some(Arc::new(move |warning| out.warn(warning))));
            }
            let code = logged_in(&session, command, &out).await;
            for warning in session.take_all_warnings() {
                out.warn(&warning);
            }
            code
        }
    }
}

/// The session of `profile`; with `needs_keys`, its keys opened with CHAT_PASSPHRASE, else
/// with the key `chat unlock` kept, else with a passphrase read from stdin.
fn resume(
    profile: Profile,
    needs_keys: bool,
    ca_file: Option<&std::path::Path>,
) -> Result<Session> {
    if !needs_keys {
        return Session::resume(profile, None, ca_file);
    }
    if std::env::var_os("CHAT_PASSPHRASE").is_none()
        && let Some(key) = client::unlock::unlocked_key(&profile)
    {
        match Session::resume_unlocked(profile.clone(), &key, ca_file) {
            // The keys were sealed again since: the kept key is useless.
            Err(Error::Auth(..)) => {
                client::unlock::lock(&profile)?;
            }
            result => return result,
        }
    }
    Session::resume(profile, Some(&passphrase()?), ca_file)
}

/// The server of a command that sends the password; warns first when it would cross the
/// network in plaintext.
fn password_server(url: &str, ca_file: Option<&std::path::Path>) -> Result<Server> {
    let server = Server::new(url, ca_file)?;
    if server.is_plaintext_beyond_loopback() {
        eprintln!(
            "warning: {} is plaintext http://: the password will cross the network unencrypted \
             (use https://)",
            server.url()
        );
    }
    Ok(server)
}

async fn logged_in(session: &Arc<Session>, command: Command, out: &Output) -> Result<u8> {
    // Commands that sync forward message keys to the user's new devices first.
    if matches!(
        command,
        Command::History { .. } | Command::Conversations { no_preview: false }
    ) {
        forward::forward_quietly(session, out).await;
    }
    match command {
        Command::ForwardKeys => forward::forward_keys(session, out).await?,
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
            DevicesCommand::Rename { device_id, name } => {
                let device = session.rename_device(&device_id, &name.join(" ")).await?;
                out.print(
                    &device,
                    &format!("renamed {} to {}", device.device_id, device.name),
                );
            }
        },
        Command::Send { target, text } => {
            let text = text.join(" ");
            // Before anything is looked up: `chat send bob ""` is a usage error.
            client::check_text(&text)?;
            send::send(session, &target, &text, out).await?;
        }
        Command::Pending { .. } => {
            let pending = session.pending()?;
            let text = pending
                .iter()
                .map(output::pending_line)
                .collect::<Vec<_>>()
                .join("\n");
            out.print(&pending, &text);
        }
        Command::Flush => {
            let flushed = session.flush(None).await?;
            if let Some(error) = send::report_flushed(flushed, out) {
                return Err(send::kept(error));
            }
        }
        Command::History { target, limit } => {
            let target = session.resolve(&target).await?;
            let history = session.history_with_unreadable(&target, limit).await?;
            let (value, text) = output::history(&history);
            out.print(&value, &text);
            if history.messages.iter().any(|m| m.content.is_flagged()) {
                return Ok(6);
            }
        }
        Command::Conversations { no_preview } => {
            let mut conversations = session.conversations().await?;
            if !no_preview {
                session
                    .add_previews(&mut conversations, client::DEFAULT_PREVIEWS)
                    .await?;
            }
            let text = conversations
                .iter()
                .map(conversation_line)
                .collect::<Vec<_>>()
                .join("\n");
            out.print(&conversations, &text);
        }
        Command::Chat { target } => return interactive::interactive(session, &target, out).await,
        Command::Group { command } => group(session, command, out).await?,
        Command::Verify { username, yes } => {
            return interactive::verify(session, &username, yes, out).await;
        }
        Command::Trust { username } => {
            let trusted = session.trust(&username).await?;
            let text = format!(
                "accepted the current keys of {} ({} device key(s) newly trusted); {0} is not \
                 verified: compare the safety number with chat verify {0}",
                trusted.username,
                trusted.accepted.len()
            );
            out.print(&trusted, &text);
            send::send_held(session, out).await?;
        }
        Command::Register { .. }
        | Command::Login { .. }
        | Command::Completions { .. }
        | Command::Unlock { .. }
        | Command::Lock
        | Command::Passphrase => {
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

fn password() -> Result<SecretString> {
    if let Ok(password) = std::env::var("CHAT_PASSWORD") {
        return Ok(password.into());
    }
    read_secret_line("Password: ")
}

/// The passphrase of the device keys: never the password (the server receives the password at
/// every login, so keys sealed with it would be open to the server).
fn passphrase() -> Result<SecretString> {
    match std::env::var("CHAT_PASSPHRASE") {
        Ok(passphrase) => Ok(passphrase.into()),
        Err(_) => read_secret_line("Passphrase of the device keys (not your password): "),
    }
}

/// Refuses the password as the passphrase (also checked by the library, but before an account
/// is created here).
fn not_the_password(password: &SecretString, passphrase: &SecretString) -> Result<()> {
    if password.expose_secret() == passphrase.expose_secret() {
        return Err(Error::usage(
            "the passphrase of the device keys must not be the account password (the server \
             receives the password at every login): choose another one",
        ));
    }
    Ok(())
}

fn new_passphrase() -> Result<SecretString> {
    match std::env::var("CHAT_NEW_PASSPHRASE") {
        Ok(passphrase) => Ok(passphrase.into()),
        Err(_) => read_secret_line("New passphrase of the device keys: "),
    }
}

/// Reads one line of stdin; on a terminal, with echo off (through `stty`, to avoid a
/// dependency for it).
fn read_secret_line(prompt: &str) -> Result<SecretString> {
    let terminal = std::io::stdin().is_terminal();
    eprint!("{prompt}");
    if terminal {
        stty("-echo");
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if terminal {
        stty("echo");
        eprintln!();
    }
    read.map_err(|error| Error::usage(format!("reading a secret from stdin: {error}")))?;
    let secret = line.trim_end_matches(['\r', '\n']).to_owned();
    if secret.is_empty() {
        return Err(Error::usage(
            "no secret given (set CHAT_PASSWORD / CHAT_PASSPHRASE)",
        ));
    }
    Ok(secret.into())
}

fn stty(setting: &str) {
    let _ = std::process::Command::new("stty")
        .arg(setting)
        .stdin(Stdio::inherit())
        .status();
}
