//! This binary's own accounting for the faults of `ingress.rs`, `rollout.rs` and
//! `slow_consumers.rs`: every send the clients queued and what became of it (acknowledged with
//! its message id and sequence, or failed with its status), what every device showed, and the
//! audit of both against the conversation's rows in PostgreSQL: every acknowledged message
//! stored once at its sequence, and shown once, in sequence order, with no gap, on every device.
//!
//! Kept apart and small on purpose: the shared ledger of issue #20 (section 2) replaces it.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use client::{Content, Live, LiveEvent, ReceivedText, Session, Target};
use proto::chat::v1::{self as pb, chat_service_client::ChatServiceClient, stream_event::Event};
use sqlx::{Connection, PgConnection};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::traffic::paced;

/// What the senders did.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Every text handed to a client to send, with its sender.
    queued: Vec<(String, String)>,
    acknowledged: Vec<Acknowledged>,
    /// Failed sends (after the client's own retries) by status or reason.
    failed: BTreeMap<String, usize>,
}

/// An acknowledged send.
#[derive(Debug, Clone)]
pub struct Acknowledged {
    /// Who sent it.
    pub sender: String,
    /// Its text, when the sending call tells it (a unary send does; a stream's answer does not,
    /// the text is then checked through what the devices showed).
    pub text: Option<String>,
    /// The server's message id.
    pub message_id: String,
    /// Its sequence in the conversation.
    pub sequence: u64,
}

/// What one device showed, in order.
#[derive(Debug, Default, Clone)]
pub struct ShownLog {
    /// Every message shown.
    pub messages: Vec<ShownMessage>,
    /// How many times the stream (re)opened.
    pub connects: usize,
    /// Why the stream dropped, each time it did.
    pub disconnects: Vec<String>,
    /// How many times it caught up after (re)connecting.
    pub caught_up: usize,
    /// Set if the session ended (which must not happen).
    pub ended: Option<String>,
}

/// One message as a device showed it.
#[derive(Debug, Clone)]
pub struct ShownMessage {
    pub sequence: u64,
    pub message_id: String,
    pub client_message_id: String,
    pub text: String,
}

/// A live conversation (`OpenStream` through the client library) that records what it shows
/// and, when it sends, what became of its sends.
pub struct LiveClient {
    pub name: String,
    live: Live,
    log: Arc<Mutex<ShownLog>>,
    ledger: Arc<Ledger>,
    recorder: JoinHandle<()>,
}

/// A task sending `"<name> <n>"` at a fixed pace until stopped: with unary `SendMessage` calls
/// (the client library retries UNAVAILABLE with the same client message id), or on a
/// [`LiveClient`]'s stream.
pub struct PacedSender {
    task: JoinHandle<()>,
}

/// One row of `chat.messages`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Stored {
    pub sequence: i64,
    pub id: uuid::Uuid,
    pub client_message_id: String,
}

/// The audit of one fault: one row of the report.
#[derive(Debug, Default)]
pub struct Audit {
    pub acknowledged: usize,
    pub stored: usize,
    /// The fewest messages any device showed.
    pub shown: usize,
    /// Each problem found: an acknowledged message not stored, or not shown by a device.
    pub lost: Vec<String>,
    /// Each message stored or shown more than once.
    pub duplicated: Vec<String>,
    /// Sends that failed for good, by status.
    pub failed: BTreeMap<String, usize>,
}

impl Ledger {
    /// A text handed to a client to send.
    pub fn queued(&self, sender: &str, text: &str) {
        self.entries()
            .queued
            .push((sender.to_owned(), text.to_owned()));
    }

    /// A send the server acknowledged.
    pub fn acknowledged(&self, acknowledged: Acknowledged) {
        self.entries().acknowledged.push(acknowledged);
    }

    /// A send that failed for good.
    pub fn failed(&self, status: &str) {
        *self.entries().failed.entry(status.to_owned()).or_default() += 1;
    }

    /// How many texts were handed to clients so far.
    pub fn n_queued(&self) -> usize {
        self.entries().queued.len()
    }

    /// How many sends failed for good so far.
    pub fn n_failed(&self) -> usize {
        self.entries().failed.values().sum()
    }

    /// The sends that failed for good so far, by status or reason.
    pub fn failures(&self) -> BTreeMap<String, usize> {
        self.entries().failed.clone()
    }

    /// Per sender, how many of its sends are neither acknowledged nor failed (failures are not
    /// attributed: they count against no sender).
    pub fn unanswered(&self) -> BTreeMap<String, i64> {
        let entries = self.entries();
        let mut unanswered: BTreeMap<String, i64> = BTreeMap::new();
        for (sender, _) in &entries.queued {
            *unanswered.entry(sender.clone()).or_default() += 1;
        }
        for ack in &entries.acknowledged {
            *unanswered.entry(ack.sender.clone()).or_default() -= 1;
        }
        unanswered.retain(|_, n| *n != 0);
        unanswered
    }

    /// How many sends were acknowledged so far.
    pub fn n_acknowledged(&self) -> usize {
        self.entries().acknowledged.len()
    }

    /// The highest sequence acknowledged so far.
    pub fn last_acknowledged(&self) -> u64 {
        let entries = self.entries();
        entries
            .acknowledged
            .iter()
            .map(|ack| ack.sequence)
            .max()
            .unwrap_or(0)
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap()
    }
}

impl LiveClient {
    /// Opens the live conversation `target` of `session` as device `name`.
    pub fn open(name: &str, session: &Arc<Session>, target: Target, ledger: Arc<Ledger>) -> Self {
        let mut live = session.clone().live(target);
        // The events are read here; `Live` keeps the stream (and the send side) open.
        let (_, closed) = mpsc::channel(1);
        let mut events = std::mem::replace(&mut live.events, closed);
        let log = Arc::new(Mutex::new(ShownLog::default()));
        let (record, sends) = (log.clone(), ledger.clone());
        let sender = name.to_owned();
        let recorder = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                record_event(&record, &sends, &sender, event);
            }
        });
        Self {
            name: name.to_owned(),
            live,
            log,
            ledger,
            recorder,
        }
    }

    /// Queues `text` to be sent on the stream (the client resends it after a reconnection, with
    /// the same client message id, until the server answers).
    pub async fn send(&self, text: String) {
        self.ledger.queued(&self.name, &text);
        self.live.send(text).await.expect("the stream is open");
    }

    /// What it has shown so far.
    pub fn log(&self) -> MutexGuard<'_, ShownLog> {
        self.log.lock().unwrap()
    }

    /// A copy of what it has shown so far.
    pub fn snapshot(&self) -> ShownLog {
        self.log().clone()
    }
}

impl Drop for LiveClient {
    fn drop(&mut self) {
        self.recorder.abort();
    }
}

/// A device that shows a conversation: a [`LiveClient`] or a [`SubscribeClient`].
pub trait Follower: Send + Sync {
    fn name(&self) -> &str;
    /// What it has shown so far.
    fn log(&self) -> MutexGuard<'_, ShownLog>;
    /// A copy of what it has shown so far.
    fn snapshot(&self) -> ShownLog {
        self.log().clone()
    }
}

impl Follower for LiveClient {
    fn name(&self) -> &str {
        &self.name
    }

    fn log(&self) -> MutexGuard<'_, ShownLog> {
        LiveClient::log(self)
    }
}

impl Follower for SubscribeClient {
    fn name(&self) -> &str {
        &self.name
    }

    fn log(&self) -> MutexGuard<'_, ShownLog> {
        self.log.lock().unwrap()
    }
}

/// A device following one conversation on `Subscribe`, as the web demo does (the client library
/// offers only `OpenStream`): raw gRPC through `server`, each message opened with the device's
/// keys, resuming from the last sequence shown after every drop (200 ms later).
pub struct SubscribeClient {
    pub name: String,
    log: Arc<Mutex<ShownLog>>,
    task: JoinHandle<()>,
}

impl SubscribeClient {
    pub fn open(name: &str, session: &Arc<Session>, server: &str, conversation_id: &str) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(server.to_owned())
            .unwrap()
            .connect_lazy();
        let log = Arc::new(Mutex::new(ShownLog::default()));
        let (record, session, conversation_id) =
            (log.clone(), session.clone(), conversation_id.to_owned());
        let task = tokio::spawn(async move {
            let mut chat = ChatServiceClient::new(channel);
            loop {
                let ended = subscribe_once(&session, &mut chat, &conversation_id, &record).await;
                record.lock().unwrap().disconnects.push(ended);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self {
            name: name.to_owned(),
            log,
            task,
        }
    }
}

impl Drop for SubscribeClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One `Subscribe` call from the last sequence shown, until it ends; returns how it ended.
async fn subscribe_once(
    session: &Session,
    chat: &mut ChatServiceClient<tonic::transport::Channel>,
    conversation_id: &str,
    log: &Mutex<ShownLog>,
) -> String {
    let token = match session.access_token_for_tests().await {
        Ok(token) => token,
        Err(error) => return format!("no token: {error}"),
    };
    let cursor = log.lock().unwrap().last_sequence();
    let mut request = tonic::Request::new(pb::SubscribeRequest {
        positions: vec![pb::ConversationPosition {
            conversation_id: conversation_id.to_owned(),
            sequence: cursor,
        }],
    });
    let bearer = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", bearer);
    let mut stream = match chat.subscribe(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return format!("refused: {:?}: {}", status.code(), status.message()),
    };
    log.lock().unwrap().connects += 1;
    loop {
        let event = match stream.message().await {
            Ok(Some(response)) => response.event.and_then(|event| event.event),
            Ok(None) => return "ended without a status".to_owned(),
            Err(status) => return format!("{:?}: {}", status.code(), status.message()),
        };
        match event {
            Some(Event::Message(message)) if message.conversation_id == conversation_id => {
                let shown = shown_message(session.open_message(message).await);
                log.lock().unwrap().messages.push(shown);
            }
            Some(Event::CaughtUp(_)) => log.lock().unwrap().caught_up += 1,
            _ => {}
        }
    }
}

fn shown_message(received: ReceivedText) -> ShownMessage {
    ShownMessage {
        sequence: received.sequence,
        message_id: received.message_id,
        client_message_id: received.client_message_id,
        text: text_of(received.content),
    }
}

fn text_of(content: Content) -> String {
    match content {
        Content::Verified { text } => text,
        Content::Failed { reason } => format!("FAILED VERIFICATION: {reason}"),
        Content::Replayed { first_sequence } => format!("REPLAY OF {first_sequence}"),
    }
}

impl PacedSender {
    /// Unary sends from `session` to `target`, one every `pace.0`, until `stop`; texts padded to
    /// `pace.1` bytes.
    pub fn unary(
        name: &str,
        session: Arc<Session>,
        target: Target,
        ledger: Arc<Ledger>,
        pace: (Duration, usize),
        stop: watch::Receiver<bool>,
    ) -> Self {
        let name = name.to_owned();
        let (interval, text_bytes) = pace;
        let task = tokio::spawn(paced(interval, stop, move |n| {
            let (name, session, target, ledger) = (
                name.clone(),
                session.clone(),
                target.clone(),
                ledger.clone(),
            );
            async move {
                let text = padded(format!("{name} {n}"), text_bytes);
                ledger.queued(&name, &text);
                match session.send_text(&target, &text).await {
                    Ok(sent) => ledger.acknowledged(Acknowledged {
                        sender: name,
                        text: Some(text),
                        message_id: sent.message_id,
                        sequence: sent.sequence,
                    }),
                    Err(error) => ledger.failed(&error.to_string()),
                }
            }
        }));
        Self { task }
    }

    /// Sends on `client`'s stream, one every `pace.0`, until `stop`; texts padded to `pace.1`
    /// bytes.
    pub fn on_stream(
        client: Arc<LiveClient>,
        pace: (Duration, usize),
        stop: watch::Receiver<bool>,
    ) -> Self {
        let (interval, text_bytes) = pace;
        let task = tokio::spawn(paced(interval, stop, move |n| {
            let client = client.clone();
            async move {
                let text = padded(format!("{} {n}", client.name), text_bytes);
                client.send(text).await;
            }
        }));
        Self { task }
    }

    /// Waits until the last send has returned (for a stream: was queued).
    pub async fn finish(self) {
        self.task.await.unwrap();
    }
}

/// `text`, then spaces up to `bytes` (nothing when it is that long already).
fn padded(mut text: String, bytes: usize) -> String {
    let missing = bytes.saturating_sub(text.len());
    text.extend(std::iter::repeat_n(' ', missing));
    text
}

impl ShownLog {
    /// The sequence of the last message shown, 0 before any.
    pub fn last_sequence(&self) -> u64 {
        self.messages.last().map_or(0, |message| message.sequence)
    }
}

fn record_event(log: &Mutex<ShownLog>, ledger: &Ledger, sender: &str, event: LiveEvent) {
    let mut log = log.lock().unwrap();
    match event {
        LiveEvent::Message(message) => log.messages.push(shown_message(message)),
        LiveEvent::Connected => log.connects += 1,
        // With the code: the sentence need not name it ("cannot reach the server ...").
        LiveEvent::Disconnected { error, code, .. } => {
            log.disconnects.push(format!("{code:?}: {error}"));
        }
        LiveEvent::CaughtUp => log.caught_up += 1,
        LiveEvent::Ended { error } => log.ended = Some(error),
        LiveEvent::Sent(sent) => ledger.acknowledged(Acknowledged {
            sender: sender.to_owned(),
            text: None,
            message_id: sent.message_id,
            sequence: sent.sequence,
        }),
        LiveEvent::SendFailed { reason, .. } => ledger.failed(&reason),
        // A retried send is recorded once it is answered.
        LiveEvent::SendRetrying { .. }
        | LiveEvent::KeyWarning(_)
        | LiveEvent::MembershipWarning(_) => {}
    }
}

/// The rows of `conversation_id` in sequence order.
pub async fn stored_messages(database_url: &str, conversation_id: &str) -> Vec<Stored> {
    let mut db = PgConnection::connect(database_url).await.unwrap();
    let conversation_id: uuid::Uuid = conversation_id.parse().unwrap();
    sqlx::query_as(
        "select sequence, id, client_message_id from chat.messages \
         where conversation_id = $1 order by sequence",
    )
    .bind(conversation_id)
    .fetch_all(&mut db)
    .await
    .unwrap()
}

/// Checks the ledger and what `devices` showed (each from the conversation's first message)
/// against the `stored` rows.
pub fn audit(ledger: &Ledger, stored: &[Stored], devices: &[(&str, &ShownLog)]) -> Audit {
    let entries = ledger.entries();
    let mut audit = Audit {
        acknowledged: entries.acknowledged.len(),
        stored: stored.len(),
        shown: usize::MAX,
        failed: entries.failed.clone(),
        ..Audit::default()
    };
    for (index, row) in stored.iter().enumerate() {
        if row.sequence != index as i64 + 1 {
            audit
                .lost
                .push(format!("stored sequences jump to {}", row.sequence));
            break;
        }
    }
    let by_id: HashMap<String, &Stored> =
        stored.iter().map(|row| (row.id.to_string(), row)).collect();
    for ack in &entries.acknowledged {
        match by_id.get(&ack.message_id) {
            Some(row) if row.sequence as u64 == ack.sequence => {}
            Some(row) => audit.lost.push(format!(
                "{}'s message {} acknowledged at {} but stored at {}",
                ack.sender, ack.message_id, ack.sequence, row.sequence
            )),
            None => audit.lost.push(format!(
                "{}'s message {} acknowledged at {} is not stored",
                ack.sender, ack.message_id, ack.sequence
            )),
        }
    }
    for (name, log) in devices {
        audit.shown = audit.shown.min(log.messages.len());
        check_device(&mut audit, name, log, stored, &entries);
    }
    if devices.is_empty() {
        audit.shown = 0;
    }
    audit
}

/// The device showed exactly the stored rows, in order, each once; every acknowledged text at its
/// sequence; and no text twice (a retried send stored under a second id would show so).
fn check_device(
    audit: &mut Audit,
    name: &str,
    log: &ShownLog,
    stored: &[Stored],
    entries: &Entries,
) {
    let mut seen = HashSet::new();
    for message in &log.messages {
        if !seen.insert(message.sequence) {
            audit
                .duplicated
                .push(format!("{name} showed {} twice", message.sequence));
        }
    }
    for row in stored {
        if !seen.contains(&(row.sequence as u64)) {
            audit
                .lost
                .push(format!("{name} never showed {}", row.sequence));
        }
    }
    let sequences: Vec<u64> = log.messages.iter().map(|m| m.sequence).collect();
    if !sequences.is_sorted() {
        audit
            .lost
            .push(format!("{name} showed messages out of order"));
    }
    let by_sequence: HashMap<u64, &ShownMessage> =
        log.messages.iter().map(|m| (m.sequence, m)).collect();
    for row in stored {
        if let Some(shown) = by_sequence.get(&(row.sequence as u64))
            && (shown.message_id != row.id.to_string()
                || shown.client_message_id != row.client_message_id)
        {
            audit.lost.push(format!(
                "{name} showed another message than the stored one at {}",
                row.sequence
            ));
        }
    }
    for ack in &entries.acknowledged {
        if let (Some(text), Some(shown)) = (&ack.text, by_sequence.get(&ack.sequence))
            && &shown.text != text
        {
            audit.lost.push(format!(
                "{name} showed {:?} at {} where {text:?} was acknowledged",
                shown.text, ack.sequence
            ));
        }
    }
    let mut texts: HashMap<&str, u64> = HashMap::new();
    for message in &log.messages {
        if message.text.starts_with("FAILED") || message.text.starts_with("REPLAY") {
            audit
                .lost
                .push(format!("{name} at {}: {}", message.sequence, message.text));
        }
        if let Some(first) = texts.insert(&message.text, message.sequence)
            && first != message.sequence
        {
            audit.duplicated.push(format!(
                "{name} showed {:?} at {first} and {}",
                message.text, message.sequence
            ));
        }
    }
    // Every queued text that was acknowledged reached the device: the stream senders' texts are
    // checked here, their answers carry none.
    let queued: usize = entries.queued.len();
    let failed: usize = entries.failed.values().sum();
    let shown_queued = entries
        .queued
        .iter()
        .filter(|(_, text)| texts.contains_key(text.as_str()))
        .count();
    if shown_queued + failed < queued {
        audit.lost.push(format!(
            "{name} showed {shown_queued} of {queued} queued texts ({failed} failed)"
        ));
    }
}

impl Audit {
    /// Panics with every problem found unless nothing was lost or duplicated and nothing failed
    /// for good.
    pub fn assert_exactly_once(&self, fault: &str) {
        assert!(
            self.lost.is_empty() && self.duplicated.is_empty() && self.failed.is_empty(),
            "{fault}: {}\nlost: {:#?}\nduplicated: {:#?}",
            self.row(fault),
            self.lost.iter().take(20).collect::<Vec<_>>(),
            self.duplicated.iter().take(20).collect::<Vec<_>>(),
        );
    }

    /// `fault | acknowledged | stored | shown | lost | duplicated | failed`.
    pub fn row(&self, fault: &str) -> String {
        format!(
            "| {fault} | {} | {} | {} | {} | {} | {:?} |",
            self.acknowledged,
            self.stored,
            self.shown,
            self.lost.len(),
            self.duplicated.len(),
            self.failed,
        )
    }
}
