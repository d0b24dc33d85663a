//! The commands that talk with the person at the terminal: `chat chat` (a live conversation
//! with a prompt) and `chat verify` (which asks before marking a contact verified).

use std::{
    io::{BufRead, IsTerminal},
    sync::Arc,
};

use client::{Error, LiveEvent, Result, Session};
use tokio::io::AsyncBufReadExt;

use crate::output::Output;

/// `chat chat <target>`: events to stdout, stdin lines to the stream, until stdin ends and every
/// line is answered.
pub async fn interactive(session: &Arc<Session>, target: &str, out: &Output) -> Result<u8> {
    let target = session.resolve(target).await?;
    // The prompt is for a person at a terminal; a script reading stdout gets only the events.
    let prompt = std::io::stdin().is_terminal() && !out.json;
    if !out.json {
        eprintln!(
            "chat with {}: type a message and press Enter to send it; Ctrl-D (end of input) \
             leaves once every line is sent. Times are UTC.",
            match &target.kind {
                client::TargetKind::Direct { username, .. } => username.clone(),
                client::TargetKind::Group { name, .. } => format!("#{name}"),
            }
        );
    }
    crate::forward::forward_in_background(session, out);
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
    // What was typed and not answered yet, and whether the stream is open: a line typed while
    // it is not, or left unanswered when it drops, is said to be pending (kept, and sent once
    // the server is reachable), never silently held.
    let mut unanswered = 0usize;
    let mut connected = false;
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => {
                    live.send(line).await?;
                    unanswered += 1;
                    if !connected && !out.json {
                        eprintln!("… pending: not connected; sent once the server is reachable");
                    }
                }
                None => live.finish_sending(),
            },
            event = live.events.recv() => match event {
                Some(event) => {
                    if prompt {
                        // Clears the prompt's line, so that the event does not follow "> ".
                        eprint!("\r\x1b[2K");
                    }
                    ended |= matches!(event, LiveEvent::Ended { .. });
                    match &event {
                        LiveEvent::Connected => connected = true,
                        LiveEvent::Disconnected { .. } => connected = false,
                        LiveEvent::Sent(_) | LiveEvent::SendFailed { .. } | LiveEvent::SendHeld { .. } => {
                            unanswered = unanswered.saturating_sub(1);
                        }
                        // A new device of this user: give it the keys of what this one can read.
                        LiveEvent::KeyWarning(warning) if warning.own && !warning.added.is_empty() => {
                            crate::forward::forward_in_background(session, out);
                        }
                        _ => {}
                    }
                    failed |= out.live_event(&event);
                    if matches!(event, LiveEvent::Disconnected { .. }) && unanswered > 0 && !out.json {
                        eprintln!(
                            "… {unanswered} message(s) pending: kept, and sent again once reconnected"
                        );
                    }
                    if prompt {
                        eprint!("> ");
                    }
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

/// `chat verify`: shows the safety number, then marks the user verified only once the user
/// confirms that it matches (`--yes`: already compared, for scripts).
pub async fn verify(session: &Session, username: &str, yes: bool, out: &Output) -> Result<u8> {
    if client::same_username(username, &session.account().username) {
        // Also refused by the library; said here before anything is looked up.
        return Err(Error::usage(
            "you cannot verify yourself: compare safety numbers with another user (chat verify \
             <username>); a change of your own devices is accepted with chat trust <your username>",
        ));
    }
    let number = session.safety_number(username, false).await?;
    let shown = format!(
        "Safety number with {}:\n{}\nCompare it with the one {0} sees (in person or on a call you \
         trust).",
        number.username, number.safety_number
    );
    if !out.json {
        println!("{shown}");
    }
    let confirmed = if yes {
        true
    } else if std::io::stdin().is_terminal() {
        confirm(&format!(
            "Do the numbers match? Mark {} verified [y/N]: ",
            number.username
        ))?
    } else {
        if out.json {
            out.print(&number, "");
        }
        return Err(Error::usage(format!(
            "not marked verified: chat verify asks you to confirm that the numbers match, and \
             stdin is not a terminal. Compare them, then run chat verify {username} --yes"
        )));
    };
    if !confirmed {
        out.print(
            &number,
            &format!(
                "{} is NOT marked verified. If the numbers differ, someone may be reading along: \
                 send them nothing sensitive until you know why.",
                number.username
            ),
        );
        return Ok(1);
    }
    let verified = session.verify(username, &number.safety_number).await?;
    out.print(
        &verified,
        &format!(
            "{} is now marked verified, until their keys change.",
            verified.username
        ),
    );
    crate::send::send_held(session, out).await?;
    Ok(0)
}

/// Asks a yes/no question on the terminal; anything but y or yes is no.
fn confirm(question: &str) -> Result<bool> {
    eprint!("{question}");
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|error| Error::usage(format!("reading the answer: {error}")))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
