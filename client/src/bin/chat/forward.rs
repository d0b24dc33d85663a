//! Key forwarding from the command line: `chat forward-keys`, and the forwarding that commands
//! which sync run first, so that a new device of the user can read the history this device can
//! (see the `client` crate's `forwarding.rs`).

use std::sync::Arc;

use client::{Forwarded, Result, Session};

use crate::output::Output;

/// `chat forward-keys`: forwards and says what it did.
pub async fn forward_keys(session: &Session, out: &Output) -> Result<()> {
    let forwarded = session.forward_keys().await?;
    out.print(&forwarded, &describe(&forwarded));
    Ok(())
}

/// Forwards before a command that syncs (`history`, `conversations`, `chat`): a failure does not
/// fail the command, it is said on stderr (forwarding is tried again by the next command).
pub async fn forward_quietly(session: &Session, out: &Output) {
    match session.forward_keys().await {
        Ok(forwarded) if forwarded.keys > 0 && !out.json => {
            eprintln!("{}", describe(&forwarded));
        }
        Ok(_) => {}
        Err(error) => {
            if !out.json {
                eprintln!("warning: could not forward message keys to your other devices: {error}");
            }
        }
    }
}

/// The same, in the background of the live conversation (its first run, and after a warning
/// that the user has a new device).
pub fn forward_in_background(session: &Arc<Session>, out: &Output) {
    let (session, out) = (session.clone(), Output { json: out.json });
    tokio::spawn(async move { forward_quietly(&session, &out).await });
}

fn describe(forwarded: &Forwarded) -> String {
    if forwarded.devices.is_empty() {
        return "no other device of yours to forward message keys to".to_owned();
    }
    format!(
        "forwarded the keys of {} earlier message(s) to {} other device(s) of yours, so that \
         they can read them",
        forwarded.keys,
        forwarded.devices.len()
    )
}
