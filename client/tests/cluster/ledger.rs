//! The ledger of the cluster and fault tests: what every sender sent (client message id,
//! acknowledged sequence, every failure by status), what every receiving device showed and how
//! its streams went (connections, catch-ups, drops), and the audit that compares both with what
//! PostgreSQL stored. The clients that record into it are in `clients.rs`.
//!
//! Senders retry a retryable failure (UNAVAILABLE) with the same client message id and the same
//! envelope, as the client library does (`Session::send_prepared`, and `Live`, which resends its
//! pending envelopes itself); a failure of another kind is final and fails the audit.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::Mutex,
    time::{Duration, Instant},
};

use sqlx::{Connection, PgConnection};

use crate::cluster::Deadline;

/// Everything recorded during one fault test.
#[derive(Default)]
pub struct Ledger {
    book: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    sends: HashMap<String, SendRecord>,
    /// What each (device, conversation) showed, in order: sequence and text.
    shown: BTreeMap<(String, String), Vec<(u64, String)>>,
    /// How each device's streams went.
    devices: BTreeMap<String, DeviceLog>,
    /// Failed attempts by status.
    failures: BTreeMap<String, usize>,
    /// Failures that were not retried (not retryable), with their send's client message id.
    final_failures: Vec<(String, String)>,
    /// Stream drops seen by the receivers, by status.
    disconnects: BTreeMap<String, usize>,
}

/// How one device's streams went.
#[derive(Debug, Default, Clone)]
pub struct DeviceLog {
    /// How many times a stream (re)connected.
    pub connects: usize,
    /// How many times it caught up after (re)connecting.
    pub caught_up: usize,
    /// Each drop: its status and detail.
    pub disconnects: Vec<String>,
    /// Set if the device's session ended (which must not happen).
    pub ended: Option<String>,
}

impl Book {
    fn device(&mut self, device: &str) -> &mut DeviceLog {
        self.devices.entry(device.to_owned()).or_default()
    }
}

/// One send.
struct SendRecord {
    conversation: String,
    text: String,
    acknowledged: Option<(u64, Instant)>,
    /// The server answered it as a duplicate: an earlier attempt was stored, its answer lost.
    duplicate: bool,
    failures: usize,
}

/// A fault's outcome, one row of the audit table.
#[derive(Debug)]
pub struct AuditRow {
    /// The fault.
    pub fault: &'static str,
    /// Sends acknowledged.
    pub acknowledged: usize,
    /// Of which acknowledged as duplicates: an attempt whose answer was lost had been stored,
    /// and the retry was answered with the original.
    pub settled_by_retry: usize,
    /// Messages stored (in the test's conversations).
    pub stored: usize,
    /// Messages shown, summed over the following devices.
    pub shown: usize,
    /// Acknowledged but not stored, or stored but not shown on a following device.
    pub lost: usize,
    /// Stored twice, or shown twice on a device.
    pub duplicated: usize,
    /// Failed attempts by status (each retried unless listed in `final_failures`).
    pub failures: BTreeMap<String, usize>,
    /// Sends that failed with a status that is not retried.
    pub final_failures: usize,
    /// Sends never acknowledged although retried.
    pub unsettled: usize,
    /// Stream drops seen by receivers, by status.
    pub disconnects: BTreeMap<String, usize>,
    /// From the end of the fault until every sender had a send acknowledged again, and the
    /// sender that took longest.
    pub recovery: Option<(Duration, String)>,
    /// Problems found, for the failure message (empty when the audit passed).
    pub problems: Vec<String>,
}

/// A conversation and the devices following it in the test.
pub struct Followed {
    /// Its id.
    pub conversation_id: String,
    /// The devices that must show all of it.
    pub followers: Vec<String>,
}

impl Ledger {
    /// A send of `text` with `client_message_id` to `conversation` begins.
    pub fn sending(&self, conversation: &str, client_message_id: &str, text: &str) {
        self.book().sends.insert(
            client_message_id.to_owned(),
            SendRecord {
                conversation: conversation.to_owned(),
                text: text.to_owned(),
                acknowledged: None,
                duplicate: false,
                failures: 0,
            },
        );
    }

    /// The send was acknowledged with `sequence`; `duplicate` when the server answered that
    /// an earlier attempt had been stored.
    pub fn acknowledged(&self, client_message_id: &str, sequence: u64, duplicate: bool) {
        if let Some(send) = self.book().sends.get_mut(client_message_id) {
            send.acknowledged.get_or_insert((sequence, Instant::now()));
            send.duplicate |= duplicate;
        }
    }

    /// An attempt of the send failed with `status`; `retried` tells whether it will be tried
    /// again.
    pub fn failed(&self, client_message_id: &str, status: &str, detail: &str, retried: bool) {
        let mut book = self.book();
        *book.failures.entry(status.to_owned()).or_default() += 1;
        if let Some(send) = book.sends.get_mut(client_message_id) {
            send.failures += 1;
        }
        if !retried {
            book.final_failures
                .push((client_message_id.to_owned(), format!("{status} ({detail})")));
        }
    }

    /// `device` showed message `sequence` of `conversation` with `text`.
    pub fn shown(&self, device: &str, conversation: &str, sequence: u64, text: String) {
        self.book()
            .shown
            .entry((device.to_owned(), conversation.to_owned()))
            .or_default()
            .push((sequence, text));
    }

    /// A stream of `device` (re)connected.
    pub fn connected(&self, device: &str) {
        self.book().device(device).connects += 1;
    }

    /// A stream of `device` caught up.
    pub fn caught_up(&self, device: &str) {
        self.book().device(device).caught_up += 1;
    }

    /// A stream of `device` dropped with `status` (`detail` says more).
    pub fn disconnected(&self, device: &str, status: &str, detail: &str) {
        let mut book = self.book();
        *book.disconnects.entry(status.to_owned()).or_default() += 1;
        book.device(device)
            .disconnects
            .push(format!("{status}: {detail}"));
    }

    /// The session of `device` ended (the audit fails).
    pub fn session_ended(&self, device: &str, error: &str) {
        self.book().device(device).ended = Some(error.to_owned());
    }

    /// How `device`'s streams went so far.
    pub fn device_log(&self, device: &str) -> DeviceLog {
        self.book().devices.get(device).cloned().unwrap_or_default()
    }

    /// The highest sequence `device` showed in `conversation`.
    pub fn last_shown(&self, device: &str, conversation: &str) -> u64 {
        self.book()
            .shown
            .get(&(device.to_owned(), conversation.to_owned()))
            .and_then(|shown| shown.last())
            .map_or(0, |(sequence, _)| *sequence)
    }

    /// The highest sequence acknowledged to any sender so far.
    pub fn last_acknowledged(&self) -> u64 {
        self.book()
            .sends
            .values()
            .filter_map(|send| send.acknowledged.map(|(sequence, _)| sequence))
            .max()
            .unwrap_or(0)
    }

    /// Sends acknowledged so far.
    pub fn n_acknowledged(&self) -> usize {
        self.book()
            .sends
            .values()
            .filter(|send| send.acknowledged.is_some())
            .count()
    }

    /// Failed attempts so far, of every status.
    pub fn n_failed_attempts(&self) -> usize {
        self.book().failures.values().sum()
    }

    /// Sends neither acknowledged nor failed for good.
    pub fn n_unsettled(&self) -> usize {
        self.n_unsettled_from("")
    }

    /// Sends of `sender` (whose texts start with its name and a space; all for "") neither
    /// acknowledged nor failed for good.
    pub fn n_unsettled_from(&self, sender: &str) -> usize {
        let book = self.book();
        let finals: Vec<&String> = book.final_failures.iter().map(|(id, _)| id).collect();
        let prefix = if sender.is_empty() {
            String::new()
        } else {
            format!("{sender} ")
        };
        book.sends
            .iter()
            .filter(|(id, send)| {
                send.text.starts_with(&prefix)
                    && send.acknowledged.is_none()
                    && !finals.contains(id)
            })
            .count()
    }

    /// The time from `healed` until every sender (told apart by their texts' first word, the
    /// sender's name) had a send acknowledged again, and the sender that took longest.
    /// (Not "a send begun after `healed`": a live stream queues its sends during an outage and
    /// works through them first, so that would measure its backlog.)
    fn recovery(&self, healed: Instant) -> Option<(Duration, String)> {
        let book = self.book();
        let mut first_after: HashMap<&str, Option<Instant>> = HashMap::new();
        for send in book.sends.values() {
            let sender = send.text.split_once(' ').map_or("", |(name, _)| name);
            let first = first_after.entry(sender).or_default();
            if let Some((_, at)) = send.acknowledged
                && at >= healed
                && first.is_none_or(|first| at < first)
            {
                *first = Some(at);
            }
        }
        let (sender, latest) = first_after
            .into_iter()
            .map(|(sender, first)| (sender, first.unwrap_or_else(Instant::now)))
            .max_by_key(|(_, at)| *at)?;
        Some((latest.saturating_duration_since(healed), sender.to_owned()))
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The audit of `fault`: every acknowledged send stored once with its sequence, the
    /// conversations' sequences gap-free, every stored message shown exactly once, in order,
    /// with its text, on every following device; failures only retryable ones, each retried to
    /// success. `healed` is when the fault ended.
    pub async fn audit(
        &self,
        fault: &'static str,
        database_url: &str,
        followed: &[Followed],
        healed: Instant,
    ) -> AuditRow {
        let stored = stored_messages(database_url, followed).await;
        let recovery = self.recovery(healed);
        let book = self.book();
        let mut problems = Vec::new();
        let (mut lost, mut duplicated) = (0, 0);
        let mut stored_by_id: HashMap<&str, Vec<(&str, u64)>> = HashMap::new();
        for (conversation, sequence, client_message_id) in &stored {
            stored_by_id
                .entry(client_message_id)
                .or_default()
                .push((conversation, *sequence));
        }
        for (id, copies) in &stored_by_id {
            if copies.len() > 1 {
                duplicated += copies.len() - 1;
                problems.push(format!("{id} stored {} times: {copies:?}", copies.len()));
            }
        }
        let mut acknowledged = 0;
        for (id, send) in &book.sends {
            let Some((sequence, _)) = send.acknowledged else {
                continue;
            };
            acknowledged += 1;
            match stored_by_id.get(id.as_str()) {
                None => {
                    lost += 1;
                    problems.push(format!("{id} ({}) acknowledged, not stored", send.text));
                }
                Some(copies) if !copies.contains(&(send.conversation.as_str(), sequence)) => {
                    problems.push(format!(
                        "{id} acknowledged as {sequence}, stored {copies:?}"
                    ));
                }
                Some(_) => {}
            }
        }
        let texts: HashMap<(&str, u64), &str> = stored
            .iter()
            .filter_map(|(conversation, sequence, id)| {
                let send = book.sends.get(id)?;
                Some(((conversation.as_str(), *sequence), send.text.as_str()))
            })
            .collect();
        let mut shown_total = 0;
        for conversation in followed {
            let sequences: Vec<u64> = stored
                .iter()
                .filter(|(id, ..)| *id == conversation.conversation_id)
                .map(|(_, sequence, _)| *sequence)
                .collect();
            let last = sequences.iter().copied().max().unwrap_or(0);
            if sequences.len() as u64 != last {
                problems.push(format!(
                    "{}: {} messages stored up to sequence {last}: a gap",
                    conversation.conversation_id,
                    sequences.len()
                ));
            }
            for device in &conversation.followers {
                let empty = Vec::new();
                let shown = book
                    .shown
                    .get(&(device.clone(), conversation.conversation_id.clone()))
                    .unwrap_or(&empty);
                shown_total += shown.len();
                let shown_sequences: Vec<u64> = shown.iter().map(|(s, _)| *s).collect();
                let missing = (1..=last).filter(|s| !shown_sequences.contains(s)).count();
                let mut unique = shown_sequences.clone();
                unique.sort_unstable();
                unique.dedup();
                let twice = shown_sequences.len() - unique.len();
                lost += missing;
                duplicated += twice;
                if missing > 0 || twice > 0 || !shown_sequences.is_sorted() {
                    problems.push(format!(
                        "{device} in {}: {missing} of 1..={last} missing, {twice} shown twice, \
                         in order: {}",
                        conversation.conversation_id,
                        shown_sequences.is_sorted()
                    ));
                }
                for (sequence, text) in shown {
                    let expected = texts.get(&(conversation.conversation_id.as_str(), *sequence));
                    if expected.is_some_and(|expected| expected != text) {
                        problems.push(format!(
                            "{device} showed {sequence} as {text:?}, sent as {expected:?}"
                        ));
                    }
                }
            }
        }
        let unsettled = book
            .sends
            .iter()
            .filter(|(id, send)| {
                send.acknowledged.is_none() && !book.final_failures.iter().any(|(f, _)| f == *id)
            })
            .count();
        if unsettled > 0 {
            problems.push(format!("{unsettled} sends never acknowledged"));
        }
        for (device, log) in &book.devices {
            if let Some(error) = &log.ended {
                problems.push(format!("{device}'s session ended: {error}"));
            }
        }
        for (id, status) in &book.final_failures {
            problems.push(format!("{id} failed for good with {status}"));
        }
        for status in book.failures.keys() {
            if status != "UNAVAILABLE" {
                problems.push(format!(
                    "a send failed with {status}, which is not retryable"
                ));
            }
        }
        let settled_by_retry = book.sends.values().filter(|send| send.duplicate).count();
        AuditRow {
            fault,
            acknowledged,
            settled_by_retry,
            stored: stored.len(),
            shown: shown_total,
            lost,
            duplicated,
            failures: book.failures.clone(),
            final_failures: book.final_failures.len(),
            unsettled,
            disconnects: book.disconnects.clone(),
            recovery,
            problems,
        }
    }
}

/// Devices following one conversation, as the ledger saw them.
pub struct Following<'a> {
    pub ledger: &'a Ledger,
    pub conversation_id: &'a str,
    pub devices: &'a [String],
    /// How long a wait may take.
    pub within: Duration,
    /// More to print when a wait times out.
    pub diagnose: Option<Box<dyn Fn() -> String + Send + Sync>>,
}

impl Following<'_> {
    /// Each device's stream drops so far.
    pub fn disconnects(&self) -> Vec<usize> {
        self.devices
            .iter()
            .map(|device| self.ledger.device_log(device).disconnects.len())
            .collect()
    }

    /// Waits until the last sequence every device showed is `reached`.
    pub async fn wait_until_shown(&self, reached: impl Fn(u64) -> bool, what: &'static str) {
        let deadline = Deadline::after(self.within, what);
        let last = |device: &String| self.ledger.last_shown(device, self.conversation_id);
        while !self.devices.iter().all(|device| reached(last(device))) {
            for device in self.devices {
                if let Some(error) = self.ledger.device_log(device).ended {
                    panic!("{device}'s session ended: {error}");
                }
            }
            if deadline.expired() {
                let shown: Vec<String> = self
                    .devices
                    .iter()
                    .map(|device| {
                        let log = self.ledger.device_log(device);
                        format!(
                            "{device}: last {}, {} catch-ups, drops {:?}",
                            last(device),
                            log.caught_up,
                            log.disconnects
                        )
                    })
                    .collect();
                panic!(
                    "timed out waiting for {what}:\n{}\n{} sends unsettled\n{}",
                    shown.join("\n"),
                    self.ledger.n_unsettled(),
                    self.diagnose
                        .as_ref()
                        .map(|diagnose| diagnose())
                        .unwrap_or_default()
                );
            }
            deadline.tick().await;
        }
    }
}

/// Every message stored in the followed conversations: conversation, sequence, client
/// message id, in sequence order.
async fn stored_messages(database_url: &str, followed: &[Followed]) -> Vec<(String, u64, String)> {
    let mut db = PgConnection::connect(database_url).await.unwrap();
    let ids: Vec<uuid::Uuid> = followed
        .iter()
        .map(|f| f.conversation_id.parse().unwrap())
        .collect();
    let rows: Vec<(uuid::Uuid, i64, String)> = sqlx::query_as(
        "select conversation_id, sequence, client_message_id from chat.messages
         where conversation_id = any($1) order by conversation_id, sequence",
    )
    .bind(&ids)
    .fetch_all(&mut db)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(conversation, sequence, id)| {
            (
                conversation.to_string(),
                u64::try_from(sequence).unwrap(),
                id,
            )
        })
        .collect()
}

impl AuditRow {
    /// The header of the audit table (Markdown).
    pub const HEADER: &'static str = "| fault | acknowledged (of which duplicates of a stored \
        attempt) | stored | shown | lost | duplicated | failed attempts by status | final failures \
        | unsettled | stream drops by status | recovery |\n|---|---|---|---|---|---|---|---|---|---|---|";

    /// Panics with the problems, after printing the row, unless the audit passed.
    pub fn assert_clean(&self) {
        eprintln!("{}\n{self}", Self::HEADER);
        assert!(
            self.problems.is_empty() && self.lost == 0 && self.duplicated == 0,
            "the audit of {} failed:\n{}",
            self.fault,
            self.problems.join("\n")
        );
    }
}

impl fmt::Display for AuditRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by_status = |counts: &BTreeMap<String, usize>| {
            if counts.is_empty() {
                return "none".to_owned();
            }
            let parts: Vec<String> = counts
                .iter()
                .map(|(status, n)| format!("{status} {n}"))
                .collect();
            parts.join(", ")
        };
        let (failures, disconnects) = (by_status(&self.failures), by_status(&self.disconnects));
        let recovery = self
            .recovery
            .as_ref()
            .map_or("-".to_owned(), |(d, sender)| {
                format!("{:.1} s ({sender})", d.as_secs_f64())
            });
        write!(
            f,
            "| {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.fault,
            self.acknowledged,
            self.settled_by_retry,
            self.stored,
            self.shown,
            self.lost,
            self.duplicated,
            failures,
            self.final_failures,
            self.unsettled,
            disconnects,
            recovery
        )
    }
}
