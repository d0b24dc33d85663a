//! The clients of the cluster and fault tests, all recording into the [`Ledger`]: devices on a
//! live conversation ([`LiveDevice`]: `OpenStream` through the client library's [`Live`], which
//! resumes from its cursor and resends unanswered sends itself), which may send on it; devices on
//! `Subscribe` (which the library does not offer: a loop here that resumes from its own cursors,
//! opening each message with the library); and unary senders (`SendMessage`, retried with the
//! same envelope through `Session::send_prepared`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use client::{Content, Error, Live, LiveEvent, ReceivedText, Session, Target};
use proto::chat::v1::{self as pb, chat_service_client::ChatServiceClient, stream_event::Event};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    ledger::Ledger,
    traffic::{SEND_INTERVAL, paced},
};

/// Delay before a retry of a failed unary send, and the first reconnection delay of a
/// `Subscribe` receiver (doubled up to [`MAX_BACKOFF`]).
const RETRY_DELAY: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a send is retried before the sender gives up (the audit then fails).
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// Sends on a live stream not answered yet before its sender waits (a person does not type on
/// for minutes into a conversation that shows none of their lines as sent; without a bound, an
/// outage's backlog would take longer to work off than the test lasts).
const MAX_UNANSWERED_ON_STREAM: usize = 8;

/// How a sender sends: one `"<name> <n>"` every `interval`, padded with spaces to `text_bytes`.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub interval: Duration,
    pub text_bytes: usize,
}

impl Pace {
    /// Ten short texts a second.
    pub const DEFAULT: Self = Self {
        interval: SEND_INTERVAL,
        text_bytes: 0,
    };

    fn text(self, name: &str, n: u64) -> String {
        let mut text = format!("{name} {n}");
        let missing = self.text_bytes.saturating_sub(text.len());
        text.extend(std::iter::repeat_n(' ', missing));
        text
    }
}

/// Background tasks that stop when dropped.
pub struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    /// Tasks of a test's own clients.
    pub fn new(tasks: Vec<JoinHandle<()>>) -> Self {
        Self(tasks)
    }

    /// Waits until every task has returned (a sender, once stopped).
    pub async fn finish(mut self) {
        for task in std::mem::take(&mut self.0) {
            task.await.unwrap();
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A device following one conversation on `OpenStream` (the library's [`Live`]), recording what
/// it shows and how its stream goes; it may send on the stream ([`LiveDevice::send`]).
pub struct LiveDevice {
    pub name: String,
    conversation: String,
    live: Live,
    ledger: Arc<Ledger>,
    _recorder: Tasks,
}

impl LiveDevice {
    /// Opens the live conversation `target` of `session` as device `name`.
    pub fn open(name: &str, session: &Arc<Session>, target: Target, ledger: Arc<Ledger>) -> Self {
        let conversation = target.conversation_id.clone();
        let mut live = session.clone().live(target);
        // The events are read here; `Live` keeps the stream (and the send side) open.
        let (_, closed) = tokio::sync::mpsc::channel(1);
        let mut events = std::mem::replace(&mut live.events, closed);
        let (record, device, conversation_id) =
            (ledger.clone(), name.to_owned(), conversation.clone());
        let recorder = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                record_live_event(&device, &conversation_id, &record, event);
            }
        });
        Self {
            name: name.to_owned(),
            conversation,
            live,
            ledger,
            _recorder: Tasks(vec![recorder]),
        }
    }

    /// Queues `text` on the stream (the library resends it after a reconnection, with the same
    /// client message id, until the server answers), recorded in the ledger.
    pub async fn send(&self, text: String) {
        let id = uuid::Uuid::new_v4().to_string();
        self.ledger.sending(&self.conversation, &id, &text);
        self.live
            .send_with_id(id, text)
            .await
            .expect("the stream is open");
    }
}

/// Sends on `device`'s stream at `pace` until `stop`, with at most
/// [`MAX_UNANSWERED_ON_STREAM`] sends unanswered.
pub fn send_on_stream(device: Arc<LiveDevice>, pace: Pace, stop: watch::Receiver<bool>) -> Tasks {
    let task = tokio::spawn(paced(pace.interval, stop, move |n| {
        let device = device.clone();
        async move {
            device.send(pace.text(&device.name, n)).await;
            while device.ledger.n_unsettled_from(&device.name) >= MAX_UNANSWERED_ON_STREAM {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }));
    Tasks(vec![task])
}

/// A device following one conversation on `OpenStream`, sending `"<name> <n>"` on it ten times
/// a second until `stop` turns true (never, if `None`).
pub fn live_device(
    name: &str,
    session: &Arc<Session>,
    target: Target,
    ledger: Arc<Ledger>,
    stop: Option<watch::Receiver<bool>>,
) -> Tasks {
    let device = Arc::new(LiveDevice::open(name, session, target, ledger));
    let mut tasks = Vec::new();
    if let Some(stop) = stop {
        tasks.extend(std::mem::take(
            &mut send_on_stream(device.clone(), Pace::DEFAULT, stop).0,
        ));
    }
    // The live conversation lives as long as this task holds it.
    tasks.push(tokio::spawn(async move {
        let _keep = device;
        std::future::pending::<()>().await;
    }));
    Tasks(tasks)
}

fn record_live_event(device: &str, conversation: &str, ledger: &Ledger, event: LiveEvent) {
    match event {
        LiveEvent::Message(message) => {
            ledger.shown(device, conversation, message.sequence, text_of(message));
        }
        LiveEvent::Sent(sent) => {
            ledger.acknowledged(&sent.client_message_id, sent.sequence, sent.duplicate);
        }
        LiveEvent::SendRetrying {
            client_message_id,
            code,
        } => ledger.failed(&client_message_id, &status_name(code), "", true),
        LiveEvent::SendFailed {
            client_message_id,
            code,
            reason,
        } => {
            let status = code.map_or_else(|| format!("local: {reason}"), status_name);
            let id = client_message_id.unwrap_or_default();
            ledger.failed(&id, &status, &reason, false);
        }
        // Waits for the user to accept new keys: never in these runs, so a failure if it comes.
        LiveEvent::SendHeld {
            client_message_id,
            reason,
        } => ledger.failed(&client_message_id, "held", &reason, false),
        LiveEvent::Disconnected { code, error, .. } => {
            let status = code.map_or_else(|| format!("local: {error}"), status_name);
            ledger.disconnected(device, &status, &error);
        }
        LiveEvent::Connected => ledger.connected(device),
        LiveEvent::CaughtUp => ledger.caught_up(device),
        LiveEvent::Ended { error } => ledger.session_ended(device, &error),
        // A run of messages not received: the audit finds gaps in what each device showed.
        LiveEvent::KeyWarning(_)
        | LiveEvent::MembershipWarning(_)
        | LiveEvent::Unreadable(_)
        | LiveEvent::NowReadable(_) => {}
    }
}

/// A device following `conversations` on `Subscribe` through `server`, resuming from the
/// last sequence it showed in each after every drop.
pub fn subscribe_device(
    name: &str,
    session: Arc<Session>,
    server: &str,
    conversations: Vec<String>,
    ledger: Arc<Ledger>,
) -> Tasks {
    let channel = tonic::transport::Endpoint::from_shared(server.to_owned())
        .unwrap()
        .connect_lazy();
    let name = name.to_owned();
    let task = tokio::spawn(async move {
        let mut cursors: HashMap<String, u64> =
            conversations.iter().map(|id| (id.clone(), 0)).collect();
        let mut backoff = RETRY_DELAY;
        loop {
            let mut chat = ChatServiceClient::new(channel.clone());
            let (delivered, status) =
                subscribe_once(&name, &session, &mut chat, &mut cursors, &ledger).await;
            if delivered {
                backoff = RETRY_DELAY;
            }
            ledger.disconnected(&name, &status, "");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
    Tasks(vec![task])
}

/// One `Subscribe` call until it drops; returns whether it delivered anything, and the status
/// it ended with (as the client library maps it).
async fn subscribe_once(
    name: &str,
    session: &Session,
    chat: &mut ChatServiceClient<tonic::transport::Channel>,
    cursors: &mut HashMap<String, u64>,
    ledger: &Ledger,
) -> (bool, String) {
    let token = match session.access_token_for_tests().await {
        Ok(token) => token,
        Err(error) => return (false, error_status(&error)),
    };
    let positions = cursors
        .iter()
        .map(|(conversation_id, sequence)| pb::ConversationPosition {
            conversation_id: conversation_id.clone(),
            sequence: *sequence,
        })
        .collect();
    let mut request = tonic::Request::new(pb::SubscribeRequest { positions });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut stream = match chat.subscribe(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (false, error_status(&status.into())),
    };
    ledger.connected(name);
    let mut delivered = false;
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return (delivered, "ENDED WITHOUT A STATUS".to_owned()),
            Err(status) => return (delivered, error_status(&status.into())),
        };
        delivered = true;
        let message = match response.event.and_then(|event| event.event) {
            Some(Event::Message(message)) => message,
            Some(Event::CaughtUp(_)) => {
                ledger.caught_up(name);
                continue;
            }
            _ => continue,
        };
        let Some(cursor) = cursors.get_mut(&message.conversation_id) else {
            continue;
        };
        // Already shown (a replay from an older cursor would be a server bug the audit
        // would not see here, so it counts as shown twice).
        let (conversation, sequence) = (message.conversation_id.clone(), message.sequence);
        if sequence <= *cursor {
            ledger.shown(name, &conversation, sequence, "REDELIVERED".to_owned());
            continue;
        }
        *cursor = sequence;
        let shown = session.open_message(message).await;
        ledger.shown(name, &conversation, sequence, text_of(shown));
    }
}

/// Sends `"<name> <n>"` to `target` with unary calls at `pace` until `stop`: each message
/// sealed once, then sent until acknowledged (retryable failures retried with the same
/// envelope) or failed for good.
pub fn unary_sender(
    name: &str,
    session: Arc<Session>,
    target: Target,
    ledger: Arc<Ledger>,
    (pace, stop): (Pace, watch::Receiver<bool>),
) -> Tasks {
    let name = name.to_owned();
    let task = tokio::spawn(paced(pace.interval, stop, move |n| {
        let (session, target, ledger) = (session.clone(), target.clone(), ledger.clone());
        let text = pace.text(&name, n);
        async move {
            let id = uuid::Uuid::new_v4().to_string();
            ledger.sending(&target.conversation_id, &id, &text);
            send_until_settled(&session, &target, &ledger, id, &text).await;
        }
    }));
    Tasks(vec![task])
}

/// Seals `text` once and sends it until acknowledged or failed for good, recording each
/// attempt in `ledger` (the storm test's sender uses it too).
pub async fn send_until_settled(
    session: &Session,
    target: &Target,
    ledger: &Ledger,
    id: String,
    text: &str,
) {
    let started = std::time::Instant::now();
    let prepared = until_settled(ledger, &id, started, || {
        session.prepare_text(target, id.clone(), text)
    })
    .await;
    let Some(mut prepared) = prepared else {
        return;
    };
    loop {
        let sent = session.send_prepared(target, &mut prepared).await;
        let Some(sent) = settle(ledger, &id, started, sent).await else {
            return;
        };
        if let Some(sent) = sent {
            return ledger.acknowledged(&id, sent.sequence, sent.duplicate);
        }
    }
}

/// Runs `attempt` until it succeeds (`Some`) or fails for good (`None`), each failure recorded.
async fn until_settled<T, Fut>(
    ledger: &Ledger,
    id: &str,
    started: std::time::Instant,
    attempt: impl Fn() -> Fut,
) -> Option<T>
where
    Fut: Future<Output = Result<T, Error>>,
{
    loop {
        if let Some(outcome) = settle(ledger, id, started, attempt().await).await? {
            return Some(outcome);
        }
    }
}

/// One attempt's outcome: `Some(Some(_))` success, `Some(None)` a failure to retry (recorded,
/// after the retry delay), `None` a failure for good (recorded).
async fn settle<T>(
    ledger: &Ledger,
    id: &str,
    started: std::time::Instant,
    outcome: Result<T, Error>,
) -> Option<Option<T>> {
    match outcome {
        Ok(value) => Some(Some(value)),
        Err(error) => {
            let retried = error.is_retryable() && started.elapsed() < GIVE_UP_AFTER;
            ledger.failed(id, &error_status(&error), &error.to_string(), retried);
            if !retried {
                return None;
            }
            tokio::time::sleep(RETRY_DELAY).await;
            Some(None)
        }
    }
}

/// What the ledger records as shown for `message`.
pub fn text_of(message: ReceivedText) -> String {
    match message.content {
        Content::Verified { text } => text,
        Content::Failed { reason } => format!("FAILED VERIFICATION: {reason}"),
        Content::Replayed { first_sequence } => format!("REPLAY OF {first_sequence}"),
    }
}

/// The gRPC status name of a client error (as the library maps statuses: a server that could
/// not be reached is UNAVAILABLE).
pub fn error_status(error: &Error) -> String {
    error
        .status_code()
        .map_or_else(|| format!("local: {error}"), status_name)
}

/// A gRPC status code as its proto name (`UNAVAILABLE`).
pub fn status_name(code: tonic::Code) -> String {
    let name = format!("{code:?}");
    // `DeadlineExceeded` -> `DEADLINE_EXCEEDED`.
    let mut out = String::new();
    for (index, c) in name.chars().enumerate() {
        if c.is_uppercase() && index > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}
