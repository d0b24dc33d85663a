//! `chat send` and what it says about kept messages: a message is sealed and kept in the
//! profile's outbox before it is sent, and sealed from the devices the profile pinned when the
//! server cannot give them (`client::Session::keep_offline`), so that it is pending, never lost,
//! while the server is away.

use std::time::{Duration, Instant};

use client::{Delivery, Error, Flushed, KeptOffline, QueuedMessage, Result, Session};

use crate::output::Output;

/// How long `chat send` tries to send a message while the server cannot take it (a restart of
/// the database or the gateway), saying it is pending. Past that the message stays kept (if it
/// could be sealed) and the next command sends it ([`kept`]); if it could not be sealed (the
/// profile knows none of the participants' devices), nothing is kept and the user sends it again.
const PENDING_FOR_AT_MOST: Duration = Duration::from_secs(30);

/// The longest wait between two attempts of a pending `chat send`: a person is waiting, and a
/// restart of the database or the gateway takes seconds.
const PENDING_RETRY_AT_MOST: Duration = Duration::from_secs(2);

/// Sends `text` to `target` and prints the outcome (and that of the conversation's earlier kept
/// messages, sent first).
///
/// # Errors
/// As [`send_or_keep`]; a kept message's error says it is kept ([`kept`]).
pub async fn send(session: &Session, target: &str, text: &str, out: &Output) -> Result<()> {
    let delivery = send_or_keep(session, target, text, out).await?;
    let stopped = report_flushed(delivery.earlier, out);
    match delivery.outcome {
        Ok(sent) => out.print(&sent, &format!("sent #{}", sent.sequence)),
        Err(error) => return Err(kept(error)),
    }
    stopped.map_or(Ok(()), Err)
}

/// Resolves `target` and sends `text` ([`Session::send_kept`]). When the server cannot be
/// reached or cannot take it, the message is sealed for the participants' devices this profile
/// pinned and kept ([`Session::keep_offline`]), then sent as soon as the server takes it, for up
/// to [`PENDING_FOR_AT_MOST`]; when the profile knows none of them, the whole send is tried again
/// for as long, and nothing is kept if it never goes through.
async fn send_or_keep(
    session: &Session,
    target: &str,
    text: &str,
    out: &Output,
) -> Result<Delivery> {
    let deadline = Instant::now() + PENDING_FOR_AT_MOST;
    let mut backoff = client::Backoff::new();
    let mut not_known: Option<String> = None;
    loop {
        let attempt = async {
            let target = session.resolve(target).await?;
            session.send_kept(&target, text).await
        }
        .await;
        let error = match attempt {
            Err(error) if error.is_retryable() => error,
            other => return other,
        };
        let why = match &not_known {
            Some(why) => why.clone(),
            None => match session.keep_offline(target, text).await? {
                KeptOffline::Kept(message) => {
                    say_kept_offline(&error, &message, target, out);
                    return send_kept_offline(session, &message, error, deadline, out).await;
                }
                KeptOffline::NotKnown(why) => {
                    if !out.json {
                        eprintln!(
                            "… pending: {error}; {why}, so the message cannot be sealed without \
                             the server: trying again for up to {} seconds (Ctrl-C gives up)",
                            PENDING_FOR_AT_MOST.as_secs()
                        );
                    }
                    not_known.insert(why).clone()
                }
            },
        };
        if Instant::now() >= deadline {
            let Error::Unavailable(message, raw) = error else {
                return Err(error);
            };
            return Err(Error::Unavailable(
                format!(
                    "not sent: {message}. Nothing was kept: {why}, and the server did not \
                     answer: send it again"
                ),
                raw,
            ));
        }
        pause(&mut backoff, deadline).await;
    }
}

/// Sends the conversation's kept messages, this one among them, until the server takes it or
/// `deadline` passes (it stays kept: [`Delivery::outcome`] is the last error).
async fn send_kept_offline(
    session: &Session,
    message: &QueuedMessage,
    mut last_error: Error,
    deadline: Instant,
    out: &Output,
) -> Result<Delivery> {
    let mut backoff = client::Backoff::new();
    while Instant::now() < deadline {
        pause(&mut backoff, deadline).await;
        let mut flushed = match session.flush(Some(&message.conversation_id)).await {
            Err(error) if error.is_retryable() => {
                last_error = error;
                continue;
            }
            other => other?,
        };
        let own = |id: &str| id == message.client_message_id;
        if let Some(index) = flushed.sent.iter().position(|s| own(&s.client_message_id)) {
            let sent = flushed.sent.remove(index);
            return Ok(Delivery {
                earlier: flushed,
                outcome: Ok(sent),
            });
        }
        if let Some(not_sent) = flushed.dropped.iter().find(|d| own(&d.client_message_id)) {
            let error = Error::usage(format!("not sent: {}", not_sent.reason));
            report_flushed(flushed, out);
            return Err(error);
        }
        let stopped = flushed.stopped.take();
        report_flushed(flushed, out);
        if let Some(error) = stopped {
            last_error = error;
        }
    }
    Ok(Delivery {
        earlier: Flushed::default(),
        outcome: Err(last_error),
    })
}

/// Says that `message` was sealed without the server and kept (`--json`: its ids, on stdout).
fn say_kept_offline(error: &Error, message: &QueuedMessage, to: &str, out: &Output) {
    if out.json {
        let value = serde_json::json!({
            "pending": {
                "conversation_id": message.conversation_id,
                "client_message_id": message.client_message_id,
            }
        });
        println!("{value}");
        return;
    }
    eprintln!(
        "… pending: {error}; sealed without the server for the devices this profile knows of \
         {to}, and kept in this profile: trying to send it for up to {} seconds (Ctrl-C leaves \
         it kept: the next chat send or chat chat to this conversation, or chat flush, sends it)",
        PENDING_FOR_AT_MOST.as_secs()
    );
}

async fn pause(backoff: &mut client::Backoff, deadline: Instant) {
    let wait = backoff
        .next_delay()
        .min(PENDING_RETRY_AT_MOST)
        .min(deadline.saturating_duration_since(Instant::now()));
    tokio::time::sleep(wait).await;
}

/// Prints what a flush did (each kept message sent, dropped as refused, or held for keys not
/// accepted yet); returns the error that stopped it when the server was unreachable, else an
/// [`Error::Untrusted`] when messages wait for the user.
pub fn report_flushed(flushed: Flushed, out: &Output) -> Option<Error> {
    for sent in &flushed.sent {
        let text = format!(
            "sent kept message {} as #{}{}",
            sent.client_message_id,
            sent.sequence,
            if sent.duplicate {
                " (it had reached the server already)"
            } else {
                ""
            }
        );
        out.print(sent, &text);
    }
    for (key, not_sent, say) in [
        ("not_sent", &flushed.dropped, "not sent, and no longer kept"),
        (
            "held",
            &flushed.held,
            "not sent yet, still kept (waits for you)",
        ),
    ] {
        for message in not_sent {
            if out.json {
                let value = serde_json::to_value(message).unwrap_or_default();
                eprintln!(
                    "{}",
                    serde_json::Value::from_iter([(key.to_owned(), value)])
                );
            } else {
                eprintln!(
                    "{say}: message {} ({})",
                    message.client_message_id, message.reason
                );
            }
        }
    }
    let held = flushed.held.len();
    flushed.stopped.or_else(|| {
        (held > 0).then(|| {
            Error::Untrusted(format!(
                "{held} kept message(s) wait until you accept new keys (chat pending shows \
                 them); chat trust or chat verify sends them"
            ))
        })
    })
}

/// Sends the kept messages once the user accepted keys (`chat trust`, `chat verify`), when
/// some were held for keys not accepted yet ([`Session::send_held`]); the server being away
/// leaves them kept.
///
/// # Errors
/// As [`Session::send_held`]; the error [`report_flushed`] returns, said as kept.
pub async fn send_held(session: &Session, out: &Output) -> Result<()> {
    let Some(flushed) = session.send_held().await.map_err(kept)? else {
        return Ok(());
    };
    report_flushed(flushed, out).map_or(Ok(()), |error| Err(kept(error)))
}

/// A retryable send failure, said with what happens to the message: it is kept.
pub fn kept(error: Error) -> Error {
    match error {
        Error::Unavailable(message, raw) => Error::Unavailable(
            format!(
                "not sent yet: {message}. The message is kept in this profile and will be sent \
                 by the next chat send or chat chat to this conversation, or by chat flush"
            ),
            raw,
        ),
        error => error,
    }
}
