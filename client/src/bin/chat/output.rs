//! Printing results: text for people, or one JSON document per result with `--json`.

use std::io::Write;

use client::{
    Content, ConversationSummary, Error, History, LiveEvent, Preview, RawStatus, ReceivedText,
    Session, Unreadable, Warning,
};
use serde::Serialize;

#[derive(Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn print<T: Serialize>(&self, value: &T, text: &str) {
        let mut stdout = std::io::stdout().lock();
        if self.json {
            let _ = serde_json::to_writer(&mut stdout, value);
            let _ = writeln!(stdout);
        } else if !text.is_empty() {
            let _ = writeln!(stdout, "{text}");
        }
    }

    /// A key or membership warning, on stderr: as text, or with `--json` as
    /// `{"key_warning": ..., "message": ...}` (or `"membership_warning"`).
    pub fn warn(&self, warning: &Warning) {
        if self.json {
            let mut value = serde_json::to_value(warning).unwrap_or_default();
            value["message"] = warning.to_string().into();
            eprintln!("{value}");
        } else {
            eprintln!("{warning}");
        }
    }

    pub fn account(&self, session: &Session) {
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
    pub fn live_event(&self, event: &LiveEvent) -> bool {
        let failed = match event {
            LiveEvent::Message(message) => message.content.is_flagged(),
            LiveEvent::NowReadable(messages) => messages.iter().any(|m| m.content.is_flagged()),
            _ => false,
        };
        match event {
            LiveEvent::Message(message) => self.print(message, &line(message)),
            LiveEvent::NowReadable(messages) => {
                let (value, text) = now_readable(messages.len());
                self.print(&value, &text);
                for message in messages {
                    self.print(message, &line(message));
                }
            }
            LiveEvent::Unreadable(run) => {
                let (value, text) = unreadable(run);
                self.print(&value, &text);
            }
            LiveEvent::Sent(sent) => self.print(sent, ""),
            LiveEvent::CaughtUp => self.print(&serde_json::json!({ "caught_up": true }), ""),
            LiveEvent::Connected => eprintln!("connected"),
            LiveEvent::Disconnected {
                error, retry_in, ..
            } => {
                eprintln!("disconnected ({error}); reconnecting in {retry_in:?}");
            }
            LiveEvent::SendFailed { reason, .. } => eprintln!("not sent: {reason}"),
            LiveEvent::SendHeld { reason, .. } => eprintln!(
                "… not sent yet, kept in this profile: {}; once you accept them (chat trust or \
                 chat verify, in another terminal), that command sends it",
                reason.strip_prefix("not sent: ").unwrap_or(reason)
            ),
            LiveEvent::SendRetrying { code, .. } => {
                eprintln!("… pending: the server is unreachable, retrying ({code:?})");
            }
            LiveEvent::KeyWarning(warning) => self.warn(&Warning::KeyWarning(warning.clone())),
            LiveEvent::MembershipWarning(warning) => {
                self.warn(&Warning::MembershipWarning(warning.clone()));
            }
            LiveEvent::Ended { error } => eprintln!("error: {error}"),
        }
        failed
    }
}

/// A failed command, on stderr: the sentence (`error: ...`), with `--verbose` followed by the
/// server's status; with `--json` as `{"error": {"message", "exit_code", "status"}}` (the
/// status `null` for a local error).
pub fn error(error: &Error, json: bool, verbose: bool) {
    let raw = error.raw_status();
    if json {
        let value = serde_json::json!({ "error": {
            "message": error.to_string(),
            "exit_code": error.exit_code(),
            "status": raw.map(RawStatus::to_json),
        }});
        eprintln!("{value}");
        return;
    }
    eprintln!("error: {error}");
    if let (true, Some(raw)) = (verbose, raw) {
        eprintln!("  server status: {raw}");
    }
}

/// One message as a line of text: `[sequence] YYYY-MM-DD HH:MM UTC sender: text`.
pub fn line(message: &ReceivedText) -> String {
    let sender = if message.sender_username.is_empty() {
        &message.sender_user_id
    } else {
        &message.sender_username
    };
    let flags: String = message
        .chain
        .iter()
        .map(|anomaly| format!(" [!! {}]", client::chains::describe(anomaly)))
        .collect();
    // The server's time of acceptance: the sender's own clock is only in the chain checks.
    let head = format!("[{}] {}", message.sequence, time_of(message.sent_at));
    match &message.content {
        Content::Verified { text } => format!("{head} {sender}: {text}{flags}"),
        Content::Failed { reason } => {
            format!("{head} {sender}: !!! MESSAGE FAILED VERIFICATION, NOT SHOWN: {reason}")
        }
        Content::Replayed { first_sequence } => format!(
            "{head} {sender}: !!! REPLAY of message [{first_sequence}]: the server sent it again, \
             not shown"
        ),
    }
}

/// A history as JSON (an array of messages, with `{"unreadable": {...}, "message": ...}` in
/// the place of each run of messages not encrypted for this device) and as lines of text.
pub fn history(history: &History) -> (serde_json::Value, String) {
    let mut entries: Vec<(u64, serde_json::Value, String)> = history
        .messages
        .iter()
        .map(|m| {
            (
                m.sequence,
                serde_json::to_value(m).unwrap_or_default(),
                line(m),
            )
        })
        .collect();
    for run in &history.unreadable {
        let (value, text) = unreadable(run);
        entries.push((run.first_sequence, value, text));
    }
    entries.sort_by_key(|(sequence, ..)| *sequence);
    let (values, lines): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .map(|(_, value, text)| (value, text))
        .unzip();
    (serde_json::Value::Array(values), lines.join("\n"))
}

/// A run of messages this device cannot read, in the place of those messages: as JSON
/// (`{"unreadable": {...}, "message": ...}`) and as a line of text (in parentheses: not a
/// message). The same in `chat history` and `chat chat`.
fn unreadable(run: &Unreadable) -> (serde_json::Value, String) {
    let value = serde_json::json!({ "unreadable": run, "message": run.to_string() });
    (value, format!("({run})"))
}

/// The line before the messages of a live conversation that became readable (keys forwarded
/// by another device of the user): as JSON (`{"now_readable": {"count": n}, "message": ...}`)
/// and as text (in parentheses: not a message).
fn now_readable(count: usize) -> (serde_json::Value, String) {
    let s = if count == 1 {
        "message is"
    } else {
        "messages are"
    };
    let text = format!(
        "{count} earlier {s} now readable here (another device of yours forwarded the keys):"
    );
    let value = serde_json::json!({ "now_readable": { "count": count }, "message": text });
    (value, format!("({text})"))
}

/// One conversation as a line of text: who, unread count, kind, the time of the newest message
/// and its preview (when there is one).
pub fn conversation_line(c: &ConversationSummary) -> String {
    let when = c
        .last_message_at
        .map_or_else(|| "no messages".to_owned(), time_of);
    let preview = match &c.preview {
        Some(Preview::Verified { from, text }) => format!("  {from}: {text}"),
        Some(Preview::NotShown) => "  (a message this device cannot show)".to_owned(),
        None => String::new(),
    };
    format!(
        "{}  {} unread  ({})  {when}{preview}",
        c.with, c.unread_count, c.kind
    )
}

/// A server time (Unix seconds) as `YYYY-MM-DD HH:MM UTC` (UTC: the machine's offset cannot be
/// read soundly in a multithreaded program).
pub fn time_of(seconds: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => format!(
            "{}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => seconds.to_string(),
    }
}

/// One kept message of `chat pending`: `to bob  kept 2026-12-07 03:31 UTC  2 attempts  "text"`.
pub fn pending_line(message: &client::PendingMessage) -> String {
    let to = message
        .to
        .clone()
        .unwrap_or_else(|| format!("conversation {}", message.conversation_id));
    let text = match (&message.text, &message.not_opened) {
        (Some(text), _) => format!("{text:?}"),
        (None, Some(why)) => format!("(its text cannot be opened here: {why})"),
        (None, None) => "(its text cannot be opened here)".to_owned(),
    };
    let waiting = match &message.held {
        Some(reason) => format!("\n  waiting for you: {reason}"),
        None => String::new(),
    };
    format!(
        "to {to}  kept since {}  {} attempt(s)  {text}  [{}]{waiting}",
        time_of(message.queued_at),
        message.attempts,
        message.client_message_id
    )
}
