//! The clients: devices following the conversation on a live stream (the client library's
//! [`client::Live`], which resumes from its saved cursor after every drop), and senders that
//! keep sending through the Ingress and record which sends were acknowledged.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use client::{Content, LiveEvent, Session, Target};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

/// Time between two sends of one sender: well within the gateway's per-user send rate.
const SEND_INTERVAL: Duration = Duration::from_millis(100);

/// What one device's live conversation showed, in order.
#[derive(Debug, Default)]
pub struct Shown {
    /// Every message shown: sequence and text.
    pub messages: Vec<(u64, String)>,
    /// Sequences of this device's own sends on the stream that the server acknowledged.
    pub sent: Vec<u64>,
    /// Sends on the stream the server refused.
    pub send_failures: Vec<String>,
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
    lines: mpsc::Sender<String>,
    task: JoinHandle<()>,
    drain: JoinHandle<()>,
}

impl Device {
    /// Opens the live conversation `target` of `session`.
    pub fn follow(name: &'static str, session: &Arc<Session>, target: Target) -> Self {
        let shown = Arc::new(Mutex::new(Shown::default()));
        let (lines, mut queued) = mpsc::channel::<String>(64);
        let mut live = session.clone().live(target);
        // The events are drained by a task of their own, so that a send waiting for room in the
        // live conversation's queue never stops them (the conversation may be waiting for room
        // for its events at the same time).
        let (_, closed) = mpsc::channel(1);
        let mut events = std::mem::replace(&mut live.events, closed);
        let record = shown.clone();
        let drain = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                record_event(&record, event);
            }
        });
        let task = tokio::spawn(async move {
            while let Some(text) = queued.recv().await {
                live.send(text).await.expect("the stream runs");
            }
        });
        Self {
            name,
            shown,
            lines,
            task,
            drain,
        }
    }

    /// What it has shown so far.
    pub fn shown(&self) -> MutexGuard<'_, Shown> {
        self.shown.lock().unwrap()
    }

    /// Sends `text` on the live stream (acknowledged in [`Shown::sent`]).
    async fn send_on_stream(&self, text: String) {
        self.lines.send(text).await.expect("the device runs");
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
        self.drain.abort();
    }
}

fn record_event(shown: &Mutex<Shown>, event: LiveEvent) {
    let mut shown = shown.lock().unwrap();
    match event {
        LiveEvent::Message(message) => {
            let text = match message.content {
                Content::Verified { text } => text,
                Content::Failed { reason } => format!("FAILED VERIFICATION: {reason}"),
            };
            shown.messages.push((message.sequence, text));
        }
        LiveEvent::Sent(sent) => shown.sent.push(sent.sequence),
        LiveEvent::SendFailed { reason } => shown.send_failures.push(reason),
        LiveEvent::Disconnected { .. } => shown.disconnects += 1,
        LiveEvent::CaughtUp => shown.caught_up += 1,
        LiveEvent::Ended { error } => shown.ended = Some(error),
        LiveEvent::Connected | LiveEvent::KeyWarning(_) => {}
    }
}

/// What a sender's sends came to.
#[derive(Debug, Default)]
pub struct Sends {
    /// Acknowledged sends: sequence and text.
    pub acknowledged: Vec<(u64, String)>,
    /// Sends that returned an error: text and error (they may or may not have been stored).
    pub failed: Vec<(String, String)>,
    /// Lines queued on a stream (for a stream sender; acknowledged in its device's `sent`).
    pub queued: usize,
}

/// A running sender.
pub struct Sender {
    /// Its sends.
    pub sends: Arc<Mutex<Sends>>,
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
        let task = tokio::spawn(paced(stop, move |n| {
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
        Self { sends, task }
    }

    /// Sends `"<name> <n>"` on `device`'s live stream until `stop`.
    pub fn on_stream(device: Arc<Device>, stop: watch::Receiver<bool>) -> Self {
        let sends = Arc::new(Mutex::new(Sends::default()));
        let record = sends.clone();
        let task = tokio::spawn(paced(stop, move |n| {
            let (device, record) = (device.clone(), record.clone());
            async move {
                device.send_on_stream(format!("{} {n}", device.name)).await;
                record.lock().unwrap().queued += 1;
            }
        }));
        Self { sends, task }
    }

    /// Waits until the sender has stopped (after its last send returned).
    pub async fn finish(self) -> Arc<Mutex<Sends>> {
        self.task.await.unwrap();
        self.sends
    }
}

/// Runs `send(0)`, `send(1)`, ... one every [`SEND_INTERVAL`] (or right after the previous one
/// when it took longer) until `stop` turns true.
async fn paced<F, Fut>(mut stop: watch::Receiver<bool>, send: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut interval = tokio::time::interval(SEND_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0.. {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            _ = interval.tick() => {}
        }
        send(n).await;
    }
}
