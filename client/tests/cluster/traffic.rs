//! The clients: devices following the conversation on a live stream (the client library's
//! [`client::Live`], which resumes from its saved cursor after every drop), and senders that
//! keep sending through the Ingress and record which sends were acknowledged: unary
//! `SendMessage` (as `chat send` and the web demo do), or on a device's own live stream (as
//! `chat live` does), which then keeps receiving while it sends (issue 20: such a stream was
//! seen to stop receiving now and then on an older main; not reproduced since).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use client::{Content, Live, LiveEvent, Session, Target};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::cluster::Deadline;

/// Time between two sends of one sender: well within the gateway's per-user send rate.
pub const SEND_INTERVAL: Duration = Duration::from_millis(100);
/// Sends on a stream in flight at a time, at most.
const MAX_UNANSWERED: usize = 4;
/// How long the last sends on a stream may wait for their answers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// What one device's live conversation showed, in order.
#[derive(Debug, Default)]
pub struct Shown {
    /// Every message shown: sequence and text.
    pub messages: Vec<(u64, String)>,
    /// How many times the stream dropped.
    pub disconnects: usize,
    /// How many times it caught up after (re)connecting.
    pub caught_up: usize,
    /// Set if the session ended (which must not happen).
    pub ended: Option<String>,
}

impl Shown {
    /// The sequence of the last message shown, 0 before any.
    pub fn last_sequence(&self) -> u64 {
        self.messages.last().map_or(0, |(sequence, _)| *sequence)
    }
}

/// A device following the conversation live.
pub struct Device {
    /// Its name in the test's messages.
    pub name: &'static str,
    shown: Arc<Mutex<Shown>>,
    /// What its sends on the stream came to ([`Sender::on_stream`]).
    sends: Arc<Mutex<Sends>>,
    /// The texts of sends on the stream not answered yet, by client message id.
    unanswered: Arc<Mutex<HashMap<String, String>>>,
    /// Keeps the stream open.
    live: Arc<Live>,
    drain: JoinHandle<()>,
}

impl Device {
    /// Opens the live conversation `target` of `session`.
    pub fn follow(name: &'static str, session: &Arc<Session>, target: Target) -> Self {
        let shown = Arc::new(Mutex::new(Shown::default()));
        let sends = Arc::new(Mutex::new(Sends::default()));
        let unanswered = Arc::new(Mutex::new(HashMap::new()));
        let mut live = session.clone().live(target);
        // The events are drained here; `Live` closes the stream when dropped, so it stays here.
        let (_, closed) = mpsc::channel(1);
        let mut events = std::mem::replace(&mut live.events, closed);
        let (record, record_sends, texts) = (shown.clone(), sends.clone(), unanswered.clone());
        let drain = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                record_event(&record, &record_sends, &texts, event);
            }
        });
        Self {
            name,
            shown,
            sends,
            unanswered,
            live: Arc::new(live),
            drain,
        }
    }

    /// What it has shown so far.
    pub fn shown(&self) -> MutexGuard<'_, Shown> {
        self.shown.lock().unwrap()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

fn record_event(
    shown: &Mutex<Shown>,
    sends: &Mutex<Sends>,
    unanswered: &Mutex<HashMap<String, String>>,
    event: LiveEvent,
) {
    let mut shown = shown.lock().unwrap();
    let text_of = |id: &str| unanswered.lock().unwrap().remove(id).unwrap_or_default();
    match event {
        LiveEvent::Message(message) => {
            let text = match message.content {
                Content::Verified { text } => text,
                Content::Failed { reason } => format!("FAILED VERIFICATION: {reason}"),
                Content::Replayed { first_sequence } => format!("REPLAY OF {first_sequence}"),
            };
            shown.messages.push((message.sequence, text));
        }
        LiveEvent::Disconnected { .. } => shown.disconnects += 1,
        LiveEvent::CaughtUp => shown.caught_up += 1,
        LiveEvent::Ended { error } => shown.ended = Some(error),
        LiveEvent::Sent(sent) => {
            let text = text_of(&sent.client_message_id);
            sends
                .lock()
                .unwrap()
                .acknowledged
                .push((sent.sequence, text));
        }
        LiveEvent::SendFailed {
            client_message_id,
            reason,
            ..
        } => {
            let text = client_message_id.map(|id| text_of(&id)).unwrap_or_default();
            sends.lock().unwrap().failed.push((text, reason));
        }
        LiveEvent::Connected
        | LiveEvent::KeyWarning(_)
        | LiveEvent::MembershipWarning(_)
        | LiveEvent::SendRetrying { .. } => {}
    }
}

/// What a sender's sends came to.
#[derive(Debug, Default)]
pub struct Sends {
    /// Acknowledged sends: sequence and text.
    pub acknowledged: Vec<(u64, String)>,
    /// Sends that returned an error: text and error (they may or may not have been stored).
    pub failed: Vec<(String, String)>,
}

/// A running sender.
pub struct Sender {
    /// Its sends.
    pub sends: Arc<Mutex<Sends>>,
    /// A sender on a stream: its sends not answered yet.
    unanswered: Option<Arc<Mutex<HashMap<String, String>>>>,
    task: JoinHandle<()>,
}

impl Sender {
    /// Sends `"<name> <n>"` with unary `SendMessage` calls until `stop`.
    pub fn unary(
        name: &'static str,
        session: Arc<Session>,
        target: Target,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let sends = Arc::new(Mutex::new(Sends::default()));
        let record = sends.clone();
        let task = tokio::spawn(paced(SEND_INTERVAL, stop, move |n| {
            let (session, target, record) = (session.clone(), target.clone(), record.clone());
            async move {
                let text = format!("{name} {n}");
                match session.send_text(&target, &text).await {
                    Ok(sent) => record
                        .lock()
                        .unwrap()
                        .acknowledged
                        .push((sent.sequence, text)),
                    Err(error) => record
                        .lock()
                        .unwrap()
                        .failed
                        .push((text, error.to_string())),
                }
            }
        }));
        Self {
            sends,
            unanswered: None,
            task,
        }
    }

    /// Sends `"<name> <n>"` on `device`'s live stream until `stop` (the stream keeps receiving
    /// meanwhile), with at most [`MAX_UNANSWERED`] sends unanswered; a send counts when its
    /// answer arrives on the stream.
    pub fn on_stream(name: &'static str, device: &Device, stop: watch::Receiver<bool>) -> Self {
        let (live, unanswered) = (device.live.clone(), device.unanswered.clone());
        let waiting = unanswered.clone();
        let task = tokio::spawn(paced(SEND_INTERVAL, stop, move |n| {
            let (live, unanswered) = (live.clone(), unanswered.clone());
            async move {
                let text = format!("{name} {n}");
                let id = uuid::Uuid::new_v4().to_string();
                unanswered.lock().unwrap().insert(id.clone(), text.clone());
                live.send_with_id(id, text).await.unwrap();
                while unanswered.lock().unwrap().len() >= MAX_UNANSWERED {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
        Self {
            sends: device.sends.clone(),
            unanswered: Some(waiting),
            task,
        }
    }

    /// Waits until the sender has stopped (after its last send was answered).
    pub async fn finish(self) -> Arc<Mutex<Sends>> {
        self.task.await.unwrap();
        if let Some(unanswered) = self.unanswered {
            let deadline = Deadline::after(ANSWER_TIMEOUT, "the answers to sends on a stream");
            while !unanswered.lock().unwrap().is_empty() {
                deadline.tick().await;
            }
        }
        self.sends
    }
}

/// Runs `send(0)`, `send(1)`, ... one every `interval` (or right after the previous one when it
/// took longer) until `stop` turns true. (Every sender of the cluster and fault tests uses it.)
pub async fn paced<F, Fut>(interval: Duration, mut stop: watch::Receiver<bool>, send: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut interval = tokio::time::interval(interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0.. {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            _ = interval.tick() => {}
        }
        send(n).await;
    }
}
