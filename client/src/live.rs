//! A live conversation over the bidirectional stream (`OpenStream`): incoming messages as they
//! arrive, sends on the same stream, and reconnection with backoff after any drop, resuming from
//! the cursor saved in the profile so that nothing is shown twice and nothing is missed.
//!
//! The loop that reads the stream never awaits a remote call: lines are sealed (which may fetch
//! the participants and their keys, see [`PARTICIPANTS_MAX_AGE`]) by a task of their own, as
//! messages are opened by another. Otherwise each line held up reading while the stream's
//! responses piled up unread, and an unread stream holds HTTP/2 flow-control window that other
//! calls on the same connection may need.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use proto::auth::v1 as auth_pb;
use proto::chat::v1::{
    self as pb, open_stream_request::Request as Outgoing,
    open_stream_response::Response as Incoming, stream_event::Event,
};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::{
    Backoff, Error, KeyWarning, MembershipWarning, ReceivedText, Result, SentMessage, Session,
    Target, TargetKind, Unreadable, Warning,
    backoff::with_jitter,
    chains, outbox,
    profile::Cursors,
    session::authorized,
    unreadable::{Gaps, without},
};

/// Delay before a send the server refused with a retryable status (UNAVAILABLE) is sent again.
const SEND_RETRY_DELAY: Duration = Duration::from_millis(500);

/// How long the sealer seals new lines for the participants it last fetched. They are fetched
/// again before that when an event of the stream says they changed (`DevicesChanged`,
/// `MembershipChange`) and when the server refuses a line for them: it checks every envelope's
/// recipients against the current members and devices (`DeviceListMismatch`), so a stale list
/// delays a line but never seals it for the wrong devices. Fetching them for every line (a
/// group's members: a round trip through the gateway to group) held a stream's sends to about
/// two lines a second on a loaded machine, below what the fault suite's senders type (issue 20,
/// fault 8: what looked like a stall after the gateway rolled was that backlog).
const PARTICIPANTS_MAX_AGE: Duration = Duration::from_secs(30);

/// How long after learning the conversation's last sequence (once caught up) the messages up to
/// it that did not arrive are reported as not readable here: one committed just before that
/// answer may still be on its way to this stream (it is published after its commit).
const UNREADABLE_GRACE: Duration = Duration::from_millis(500);

/// What a live conversation reports.
#[derive(Clone, Debug)]
pub enum LiveEvent {
    /// The stream is open (again).
    Connected,
    /// Every message missed while away has been shown.
    CaughtUp,
    /// A new message of the conversation (verified or not: see its content).
    Message(ReceivedText),
    /// Messages of the conversation this device cannot read (not encrypted for it: sent
    /// before it existed, or by a sender that left it out), in their place among the
    /// messages: reported before the message that follows them, or once caught up for those
    /// after the last one received.
    Unreadable(Unreadable),
    /// Messages reported as [`LiveEvent::Unreadable`] that became readable: another device of
    /// the user forwarded their keys to this one (the stream's `KeysForwarded`), oldest first,
    /// verified as any message (see their content).
    NowReadable(Vec<ReceivedText>),
    /// A line given to [`Live::send`] was stored by the server.
    Sent(SentMessage),
    /// A line could not be sent (and will not be: retryable failures are retried).
    SendFailed {
        /// Its client message id, once one was given or chosen.
        client_message_id: Option<String>,
        /// The server's status code, when the server refused it.
        code: Option<Code>,
        /// Why.
        reason: String,
    },
    /// A line the server refused for a device-list mismatch could not be sealed again, because
    /// a participant's new keys are not accepted yet: it stays kept in the profile's outbox,
    /// marked as waiting for the user, and `chat trust` (or `chat verify`) sends it.
    SendHeld {
        /// Its client message id.
        client_message_id: String,
        /// Why, as [`Error::Untrusted`] says it.
        reason: String,
    },
    /// The server refused a line with a retryable status (UNAVAILABLE, DEADLINE_EXCEEDED), or
    /// was unavailable while it was being sealed: it is tried again shortly (a sent envelope is
    /// resent as is, which the server stores at most once). A sealed line is kept in the
    /// profile's outbox until answered, so a later run sends it if this one ends first.
    SendRetrying {
        /// Its client message id.
        client_message_id: String,
        /// The status code.
        code: Code,
    },
    /// The stream dropped; it reopens after `retry_in`.
    Disconnected {
        /// What happened.
        error: String,
        /// The status the stream ended with ([`Error::status_code`]), if any.
        code: Option<Code>,
        /// The backoff delay (up to this; jittered).
        retry_in: Duration,
    },
    /// A participant's keys changed. Shown before anything is sealed for the new keys.
    KeyWarning(KeyWarning),
    /// The group's members changed. Shown before anything is sealed for the new members.
    MembershipWarning(MembershipWarning),
    /// The session ended (the refresh token was refused): log in again. Nothing follows.
    Ended {
        /// What happened.
        error: String,
    },
}

/// A running live conversation. Dropping it closes the stream.
#[derive(Debug)]
pub struct Live {
    /// The events, in order.
    pub events: mpsc::Receiver<LiveEvent>,
    texts: Option<mpsc::Sender<Line>>,
    task: JoinHandle<()>,
}

impl Live {
    /// Queues `text` to be encrypted and sent on the stream (resent after a reconnection until
    /// the server answers).
    ///
    /// # Errors
    /// [`Error::Usage`] when the conversation has ended or the text is empty.
    pub async fn send(&self, text: String) -> Result<()> {
        self.send_with_id(uuid::Uuid::new_v4().to_string(), text)
            .await
    }

    /// Like [`Live::send`], with the client message id chosen by the caller (which must be new
    /// for this device): what it is answered with ([`LiveEvent::Sent`],
    /// [`LiveEvent::SendFailed`]) carries it.
    ///
    /// # Errors
    /// [`Error::Usage`] when the conversation has ended or the text is empty.
    pub async fn send_with_id(&self, client_message_id: String, text: String) -> Result<()> {
        crate::check_text(&text)?;
        let texts = self
            .texts
            .as_ref()
            .ok_or_else(|| Error::usage("the conversation was closed".to_owned()))?;
        texts
            .send(Line {
                client_message_id,
                text,
            })
            .await
            .map_err(|_| Error::usage("the conversation has ended".to_owned()))
    }

    /// No more lines to send: the task ends once every queued line is answered.
    pub fn finish_sending(&mut self) {
        self.texts = None;
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    /// Opens a live conversation with `target` (see [`Live`]).
    #[must_use]
    pub fn live(self: Arc<Self>, target: Target) -> Live {
        let (event_sender, events) = mpsc::channel(256);
        let (texts, text_receiver) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            let (to_open, opened) = spawn_opener(self.clone(), target.clone());
            let (to_seal, sealed) =
                spawn_sealer(self.clone(), target.clone(), event_sender.clone());
            let (to_retry, retries) = mpsc::unbounded_channel();
            let (pending, turn) = restore_kept(&self, &target).await;
            let (to_answer_last_sequence, last_sequences) = mpsc::unbounded_channel();
            let reported = crate::unreadable::reported(&self.profile, &target.conversation_id);
            let mut state = LiveState {
                to_open,
                opened,
                opening: 0,
                to_seal,
                sealed,
                sealing: 0,
                to_retry,
                retries,
                caught_up_after_opening: false,
                session: self,
                target,
                texts: text_receiver,
                texts_open: true,
                events: event_sender,
                seen: HashSet::new(),
                pending,
                cursors: Cursors::new(),
                outbox: VecDeque::new(),
                turn,
                ack: None,
                fatal: None,
                gaps: None,
                unreadable_before: BTreeMap::new(),
                unreadable_after: None,
                relist_reported: !reported.is_empty(),
                reported,
                keys_arrived: false,
                to_answer_last_sequence,
                last_sequences,
                checking: 0,
            };
            state.run().await;
        });
        Live {
            events,
            texts: Some(texts),
            task,
        }
    }
}

/// A conversation's last sequence, and whether the grace period after it was learnt is over
/// (see `UNREADABLE_GRACE`).
type LastSequence = (u64, bool);

/// A line to send, with its client message id.
#[derive(Debug)]
struct Line {
    client_message_id: String,
    text: String,
}

struct Pending {
    client_message_id: String,
    /// Empty for a message kept from an earlier run (only its envelope was kept; a reseal opens
    /// it).
    text: String,
    envelope: pb::Envelope,
    /// Resealed once after a device-list mismatch.
    resealed: bool,
}

/// Work for the sealing task.
enum SealJob {
    /// Seal a new line.
    New { request_id: String, line: Line },
    /// Seal a refused line again for freshly fetched devices (same client message id).
    Reseal {
        request_id: String,
        pending: Box<Pending>,
    },
    /// Review the participants' keys now (an event said they changed).
    Review,
}

/// Work for the opening task.
enum OpenJob {
    /// A message delivered on the stream.
    Delivered(Box<pb::Message>),
    /// Keys were forwarded to this device: list and open what became readable of these runs.
    Forwarded(Vec<Unreadable>),
}

/// What the opening task hands back, in the order of the jobs.
enum Opened {
    /// The delivered message.
    Delivered(Result<ReceivedText>),
    /// The messages of the runs that became readable.
    Forwarded(Result<Vec<ReceivedText>>),
}

/// What the sealing task hands back.
enum Sealed {
    /// Ready to send.
    Ready {
        request_id: String,
        pending: Box<Pending>,
        /// This device's turn to send, taken for a new line (a reseal keeps the line's turn).
        turn: Option<chains::SendingTurn>,
    },
    /// Nothing was sealed.
    Failed {
        client_message_id: String,
        error: Error,
        /// The line is kept in the outbox (it was sealed before, and refused).
        kept: bool,
    },
}

struct LiveState {
    /// Messages acknowledged and waiting for their RSA work, which a task of their own does so
    /// that no acknowledgement ever waits for it (RUSTSEC-2023-0071: nothing the server sees
    /// may depend on the time an RSA decryption takes).
    to_open: mpsc::UnboundedSender<OpenJob>,
    /// The opened messages, in the order they were handed over.
    opened: mpsc::UnboundedReceiver<Opened>,
    /// Jobs handed over and not back yet.
    opening: usize,
    /// `CaughtUp` arrived while messages before it were being opened: reported after them.
    caught_up_after_opening: bool,
    /// Lines for the sealing task, which does every remote call a send needs (participants,
    /// keys), so that this loop never waits for one.
    to_seal: mpsc::UnboundedSender<SealJob>,
    sealed: mpsc::UnboundedReceiver<Sealed>,
    /// Jobs handed over and not back yet.
    sealing: usize,
    /// Request ids to send again once their retry delay has passed.
    to_retry: mpsc::UnboundedSender<String>,
    retries: mpsc::UnboundedReceiver<String>,
    session: Arc<Session>,
    target: Target,
    texts: mpsc::Receiver<Line>,
    texts_open: bool,
    events: mpsc::Sender<LiveEvent>,
    seen: HashSet<String>,
    pending: BTreeMap<String, Pending>,
    cursors: Cursors,
    /// Requests waiting for room in the stream's request side. Never awaited while responses
    /// wait: the server stops reading requests while its answers are not read, so a client that
    /// blocks on sending while not reading would deadlock with it.
    outbox: VecDeque<pb::OpenStreamRequest>,
    /// This device's turn to send, held while a line is pending: lines go one at a time, in
    /// the order of their chain counters (see `chains.rs`).
    turn: Option<chains::SendingTurn>,
    /// The newest acknowledgement not sent yet (an older one says nothing more).
    ack: Option<pb::Acknowledgement>,
    /// Set when reconnecting cannot help (the session ended).
    fatal: Option<Error>,
    /// The runs of messages not received (set when the first stream opens, from the cursor).
    gaps: Option<Gaps>,
    /// Runs to report just before the message of this sequence is shown.
    unreadable_before: BTreeMap<u64, Unreadable>,
    /// A run after the last message received, reported once the messages before it are shown.
    unreadable_after: Option<Unreadable>,
    /// The runs reported as not readable here (by this run or an earlier one, kept in the
    /// profile) and not readable since: what keys forwarded to this device may open.
    reported: Vec<Unreadable>,
    /// Runs reported by an earlier run are listed again once caught up: keys may have been
    /// forwarded since.
    relist_reported: bool,
    /// Keys were forwarded to this device while no run was reported: the next run reported is
    /// looked up at once (the server's event may come before the run is found).
    keys_arrived: bool,
    /// The conversation's last sequence, looked up by a task of its own after `CaughtUp`;
    /// `true` once the grace period after the answer has passed.
    to_answer_last_sequence: mpsc::UnboundedSender<LastSequence>,
    last_sequences: mpsc::UnboundedReceiver<LastSequence>,
    /// Lookups of the last sequence not answered (or not settled) yet.
    checking: usize,
}

/// Why a connection ended.
enum End {
    /// Nothing more to do.
    Done,
    /// Reconnect; `caught_up` tells whether the connection had worked (resets the backoff).
    Dropped { error: Error, caught_up: bool },
}

impl LiveState {
    async fn run(&mut self) {
        let mut backoff = Backoff::new();
        loop {
            match self.connect_once().await {
                End::Done => return,
                End::Dropped { error, caught_up } => {
                    if let Some(fatal) = self.fatal.take() {
                        let event = LiveEvent::Ended {
                            error: fatal.to_string(),
                        };
                        let _ = self.events.send(event).await;
                        return;
                    }
                    if caught_up {
                        backoff.reset();
                    }
                    let event = LiveEvent::Disconnected {
                        code: error.status_code(),
                        error: error.to_string(),
                        retry_in: backoff.current(),
                    };
                    if self.events.send(event).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    async fn connect_once(&mut self) -> End {
        let mut caught_up = false;
        let result = self.stream(&mut caught_up).await;
        match result {
            Ok(()) => End::Done,
            Err(error) => End::Dropped { error, caught_up },
        }
    }

    async fn stream(&mut self, caught_up: &mut bool) -> Result<()> {
        self.cursors = self.session.profile.cursors()?;
        if self.gaps.is_none() {
            let shown = self.cursors.get(&self.target.conversation_id).copied();
            self.gaps = Some(Gaps::after(shown.unwrap_or(0)));
        }
        let token = match self.session.access_token().await {
            Ok(token) => token,
            Err(error @ Error::Auth(..)) => {
                self.fatal = Some(Error::auth(error.to_string()));
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        let (requests, outgoing) = mpsc::channel(64);
        let positions = self
            .cursors
            .iter()
            .map(|(conversation_id, sequence)| pb::ConversationPosition {
                conversation_id: conversation_id.clone(),
                sequence: *sequence,
            })
            .collect();
        let _ = requests
            .send(request(Outgoing::Start(pb::StartStream { positions })))
            .await;
        let mut chat = self.session.chat.clone();
        let opened = chat
            .open_stream(authorized(ReceiverStream::new(outgoing), &token))
            .await;
        let mut stream = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => return Err(self.failure(status, &token).await),
        };
        self.emit(LiveEvent::Connected).await?;
        // Lines not answered before the drop: the same envelope again (the server answers a
        // repeated client message id as a duplicate, never storing it twice).
        self.outbox = self
            .pending
            .iter()
            .map(|(request_id, pending)| send_request(request_id, pending.envelope.clone()))
            .collect();
        loop {
            if !self.texts_open
                && self.pending.is_empty()
                && *caught_up
                && self.opening == 0
                && self.sealing == 0
                && self.checking == 0
            {
                return Ok(());
            }
            let has_requests = self.ack.is_some() || !self.outbox.is_empty();
            tokio::select! {
                permit = requests.reserve(), if has_requests => {
                    let Ok(permit) = permit else {
                        return Err(Error::unavailable("the stream ended".to_owned()));
                    };
                    match self.ack.take() {
                        Some(ack) => permit.send(request(Outgoing::Ack(ack))),
                        None => permit.send(self.outbox.pop_front().expect("checked above")),
                    }
                }
                Some(opened) = self.opened.recv(), if self.opening > 0 => {
                    self.opening -= 1;
                    match opened {
                        Opened::Delivered(shown) => self.shown(shown?).await?,
                        Opened::Forwarded(readable) => self.now_readable(readable).await?,
                    }
                    if self.opening == 0 {
                        self.emit_unreadable_after().await?;
                    }
                    if self.opening == 0 && std::mem::take(&mut self.caught_up_after_opening) {
                        self.emit(LiveEvent::CaughtUp).await?;
                    }
                }
                Some((last_sequence, settled)) = self.last_sequences.recv(), if self.checking > 0 => {
                    self.last_sequence(last_sequence, settled).await?;
                }
                item = stream.message() => match item {
                    Ok(Some(response)) => {
                        if let Some(response) = response.response {
                            self.handle(response, caught_up).await?;
                        }
                    }
                    Ok(None) => return Err(Error::unavailable("the stream ended".to_owned())),
                    Err(status) => return Err(self.failure(status, &token).await),
                },
                Some(sealed) = self.sealed.recv(), if self.sealing > 0 => {
                    self.sealing -= 1;
                    self.sealed(sealed).await?;
                }
                Some(request_id) = self.retries.recv() => {
                    if let Some(pending) = self.pending.get(&request_id) {
                        self.outbox.push_back(send_request(&request_id, pending.envelope.clone()));
                    }
                }
                // A new line waits until the previous one is answered: lines go one at a time,
                // in the order of their chain counters, which the server then stores in order.
                line = self.texts.recv(), if self.texts_open
                    && self.pending.is_empty()
                    && self.sealing == 0 => match line {
                    Some(line) => self.seal_later(SealJob::New {
                        request_id: uuid::Uuid::new_v4().to_string(),
                        line,
                    }),
                    None => self.texts_open = false,
                },
            }
        }
    }

    async fn failure(&mut self, status: tonic::Status, token: &str) -> Error {
        if status.code() == Code::Unauthenticated
            && let Err(error @ Error::Auth(..)) = self.session.refresh_after_rejection(token).await
        {
            self.fatal = Some(error);
        }
        status.into()
    }

    async fn handle(&mut self, response: Incoming, caught_up: &mut bool) -> Result<()> {
        match response {
            Incoming::Event(pb::StreamEvent { event: Some(event) }) => match event {
                Event::Message(message) => self.show(message).await?,
                Event::CaughtUp(_) => {
                    *caught_up = true;
                    self.look_up_last_sequence();
                    if std::mem::take(&mut self.relist_reported) {
                        self.keys_forwarded()?;
                    }
                    if self.opening == 0 {
                        self.emit(LiveEvent::CaughtUp).await?;
                    } else {
                        self.caught_up_after_opening = true;
                    }
                }
                Event::DevicesChanged(pb::DevicesChanged { user_id }) => {
                    self.session.users.lock().expect("not poisoned").clear();
                    let concerned = match &self.target.kind {
                        TargetKind::Direct { user_id: peer, .. } => {
                            user_id == *peer || user_id == self.session.account.user_id
                        }
                        TargetKind::Group { .. } => true,
                    };
                    if concerned {
                        self.seal_later(SealJob::Review);
                    }
                }
                Event::MembershipChange(change) => {
                    self.session.users.lock().expect("not poisoned").clear();
                    if change.group_id == self.target.conversation_id {
                        self.seal_later(SealJob::Review);
                    }
                }
                Event::KeysForwarded(forwarded)
                    if forwarded.conversation_id == self.target.conversation_id =>
                {
                    self.keys_forwarded()?;
                }
                _ => {}
            },
            Incoming::Event(_) => {}
            Incoming::SendResult(result) => {
                if let Some(pending) = self.pending.remove(&result.request_id) {
                    // Left in an unwritable outbox, it is sent again later and answered as a
                    // duplicate.
                    let _ = outbox::forget(&self.session.profile, &pending.client_message_id);
                    self.end_turn();
                    let response = result.result.unwrap_or_default();
                    let sent = SentMessage {
                        client_message_id: pending.client_message_id,
                        conversation_id: self.target.conversation_id.clone(),
                        message_id: response.message_id,
                        sequence: response.sequence,
                        duplicate: response.duplicate,
                    };
                    self.emit(LiveEvent::Sent(sent)).await?;
                }
            }
            Incoming::SendRejected(rejected) => {
                self.rejected(rejected).await?;
                self.end_turn();
            }
        }
        Ok(())
    }

    async fn show(&mut self, message: pb::Message) -> Result<()> {
        if message.conversation_id != self.target.conversation_id {
            return Ok(());
        }
        let cursor = self.cursors.get(&message.conversation_id).copied();
        if cursor.is_some_and(|cursor| message.sequence <= cursor)
            || !self.seen.insert(message.message_id.clone())
        {
            return Ok(());
        }
        let sequence = message.sequence;
        if let Some(run) = self.gaps.as_mut().and_then(|gaps| gaps.received(sequence)) {
            self.unreadable_before.insert(sequence, run);
        }
        // Acknowledge on receipt, and open in the opener task: this loop, which reads the
        // stream and sends acknowledgements, never waits for an RSA decryption, so no
        // acknowledgement's timing depends on one (RUSTSEC-2023-0071, see deny.toml).
        let ack = pb::Acknowledgement {
            conversation_id: self.target.conversation_id.clone(),
            delivered_sequence: sequence,
            read_sequence: sequence,
        };
        self.ack = Some(ack);
        self.open_later(OpenJob::Delivered(Box::new(message)))
    }

    fn open_later(&mut self, job: OpenJob) -> Result<()> {
        if self.to_open.send(job).is_err() {
            return Err(Error::usage("the conversation was closed".to_owned()));
        }
        self.opening += 1;
        Ok(())
    }

    /// Keys were forwarded to this device: the runs reported so far are listed again (by the
    /// opening task, after the messages before it), or the next one reported is.
    fn keys_forwarded(&mut self) -> Result<()> {
        if self.reported.is_empty() {
            self.keys_arrived = true;
            return Ok(());
        }
        self.open_later(OpenJob::Forwarded(self.reported.clone()))
    }

    /// The messages of reported runs that became readable: shown, and no longer counted as
    /// unreadable. A failed listing shows nothing (the next `KeysForwarded`, or `chat history`,
    /// shows them).
    async fn now_readable(&mut self, readable: Result<Vec<ReceivedText>>) -> Result<()> {
        let Ok(mut readable) = readable else {
            return Ok(());
        };
        // Two events close together list the same runs twice: each message is shown once.
        readable.retain(|message| {
            self.reported
                .iter()
                .any(|run| (run.first_sequence..=run.last_sequence).contains(&message.sequence))
        });
        if readable.is_empty() {
            return Ok(());
        }
        let sequences: Vec<u64> = readable.iter().map(|m| m.sequence).collect();
        self.reported = without(&self.reported, &sequences);
        self.save_reported();
        self.emit_warnings().await?;
        self.emit(LiveEvent::NowReadable(readable)).await
    }

    /// Reports a run of messages not readable here, and remembers it for forwarded keys.
    async fn report_unreadable(&mut self, run: Unreadable) -> Result<()> {
        // A run an earlier run reported may be found again (after the cursor): kept once.
        self.reported.retain(|earlier| {
            earlier.last_sequence < run.first_sequence || earlier.first_sequence > run.last_sequence
        });
        self.reported.push(run.clone());
        self.reported.sort_by_key(|run| run.first_sequence);
        self.save_reported();
        self.emit(LiveEvent::Unreadable(run)).await?;
        if std::mem::take(&mut self.keys_arrived) {
            self.keys_forwarded()?;
        }
        Ok(())
    }

    /// Keeps the reported runs in the profile for the next run. An unwritable profile only
    /// loses that: this run still lists them when keys arrive.
    fn save_reported(&self) {
        let _ = crate::unreadable::save_reported(
            &self.session.profile,
            &self.target.conversation_id,
            &self.reported,
        );
    }

    /// An opened message (replays and misplaced messages already flagged by the opener): shown,
    /// then the cursor moves past it.
    async fn shown(&mut self, shown: ReceivedText) -> Result<()> {
        let sequence = shown.sequence;
        self.emit_warnings().await?;
        if self
            .unreadable_after
            .as_ref()
            .is_some_and(|run| run.last_sequence < sequence)
        {
            self.emit_unreadable_after().await?;
        }
        if let Some(run) = self.unreadable_before.remove(&sequence) {
            self.report_unreadable(run).await?;
        }
        self.emit(LiveEvent::Message(shown)).await?;
        // Delivered readable after all (keys forwarded before the stream reached it).
        if self
            .reported
            .iter()
            .any(|run| (run.first_sequence..=run.last_sequence).contains(&sequence))
        {
            self.reported = without(&self.reported, &[sequence]);
            self.save_reported();
        }
        let cursor = self
            .cursors
            .entry(self.target.conversation_id.clone())
            .or_default();
        *cursor = (*cursor).max(sequence);
        self.session.profile.save_cursors(&self.cursors)?;
        Ok(())
    }

    /// Looks up the conversation's last sequence (a task of its own: this loop never waits for a
    /// remote call), to report the messages after the last one received that this device cannot
    /// read. A failed lookup reports nothing.
    fn look_up_last_sequence(&mut self) {
        self.checking += 1;
        let session = self.session.clone();
        let conversation_id = self.target.conversation_id.clone();
        let answers = self.to_answer_last_sequence.clone();
        tokio::spawn(async move {
            let last_sequence = session
                .conversations()
                .await
                .ok()
                .and_then(|conversations| {
                    conversations
                        .into_iter()
                        .find(|c| c.conversation_id == conversation_id)
                        .map(|c| c.last_sequence)
                });
            // 0 reports nothing (and ends the lookup).
            let _ = answers.send((last_sequence.unwrap_or(0), false));
        });
    }

    /// The conversation's last sequence: when messages up to it did not arrive, they are
    /// reported after a grace period (they may still be on their way), and only once no line
    /// of this device is waiting for its answer (its message may be among them).
    async fn last_sequence(&mut self, last_sequence: u64, settled: bool) -> Result<()> {
        let accounted = self.gaps.as_ref().map_or(u64::MAX, Gaps::accounted);
        if last_sequence <= accounted {
            self.checking -= 1;
            return Ok(());
        }
        if !settled || !self.pending.is_empty() || self.sealing > 0 {
            let answers = self.to_answer_last_sequence.clone();
            tokio::spawn(async move {
                tokio::time::sleep(UNREADABLE_GRACE).await;
                let _ = answers.send((last_sequence, true));
            });
            return Ok(());
        }
        self.checking -= 1;
        let run = self
            .gaps
            .as_mut()
            .and_then(|gaps| gaps.up_to(last_sequence));
        self.unreadable_after = run;
        if self.opening == 0 {
            self.emit_unreadable_after().await?;
        }
        Ok(())
    }

    async fn emit_unreadable_after(&mut self) -> Result<()> {
        match self.unreadable_after.take() {
            Some(run) => self.report_unreadable(run).await,
            None => Ok(()),
        }
    }

    fn seal_later(&mut self, job: SealJob) {
        if !matches!(job, SealJob::Review) {
            self.sealing += 1;
        }
        // The sealing task ends only with this loop.
        let _ = self.to_seal.send(job);
    }

    /// A line back from the sealing task: queued for the stream, or reported as failed.
    async fn sealed(&mut self, sealed: Sealed) -> Result<()> {
        match sealed {
            Sealed::Ready {
                request_id,
                pending,
                turn,
            } => {
                if turn.is_some() {
                    self.turn = turn;
                }
                // Kept across restarts until answered. An unwritable profile loses only that copy:
                // the line is still sent (and resent after reconnections) by this run.
                let _ = outbox::keep(
                    &self.session.profile,
                    outbox::QueuedMessage::new(
                        &self.target.conversation_id,
                        &pending.client_message_id,
                        &request_id,
                        &pending.envelope,
                    ),
                );
                self.outbox
                    .push_back(send_request(&request_id, pending.envelope.clone()));
                self.pending.insert(request_id, *pending);
                Ok(())
            }
            Sealed::Failed {
                client_message_id,
                error: Error::Untrusted(reason),
                kept: true,
            } => {
                // Not final: kept until the user accepts the keys. An unwritable profile only
                // loses the mark (the message stays kept, and a flush holds it again).
                let _ = outbox::hold(&self.session.profile, &client_message_id, &reason);
                self.end_turn();
                self.emit(LiveEvent::SendHeld {
                    client_message_id,
                    reason,
                })
                .await
            }
            Sealed::Failed {
                client_message_id,
                error,
                kept,
            } => {
                // Refused for good, as a flush drops it; an ended session leaves it kept for
                // the next login.
                if kept && !matches!(error, Error::Auth(..)) {
                    let _ = outbox::forget(&self.session.profile, &client_message_id);
                }
                self.end_turn();
                let code = error.status_code();
                self.emit(LiveEvent::SendFailed {
                    client_message_id: Some(client_message_id),
                    code,
                    reason: error.to_string(),
                })
                .await
            }
        }
    }

    /// A refused send: after a device-list mismatch, resealed for the refetched devices once;
    /// after a retryable status, the same envelope again after a delay.
    async fn rejected(&mut self, rejected: pb::SendRejected) -> Result<()> {
        let Some(pending) = self.pending.remove(&rejected.request_id) else {
            return Ok(());
        };
        let code = Code::from(rejected.code);
        if code == Code::FailedPrecondition && !pending.resealed {
            self.seal_later(SealJob::Reseal {
                request_id: rejected.request_id,
                pending: Box::new(pending),
            });
            return Ok(());
        }
        // The server stores a client message id at most once: a send whose answer was lost
        // (deadline, broken connection) is sent again as is.
        if matches!(code, Code::Unavailable | Code::DeadlineExceeded) {
            let client_message_id = pending.client_message_id.clone();
            self.pending.insert(rejected.request_id.clone(), pending);
            let to_retry = self.to_retry.clone();
            tokio::spawn(async move {
                tokio::time::sleep(with_jitter(SEND_RETRY_DELAY * 2)).await;
                let _ = to_retry.send(rejected.request_id);
            });
            return self
                .emit(LiveEvent::SendRetrying {
                    client_message_id,
                    code,
                })
                .await;
        }
        let _ = outbox::forget(&self.session.profile, &pending.client_message_id);
        self.end_turn();
        let reason = format!("{} ({})", rejected.message, rejected.reason);
        self.emit(LiveEvent::SendFailed {
            client_message_id: Some(pending.client_message_id),
            code: Some(code),
            reason,
        })
        .await
    }

    /// Gives the turn to send back once no line is pending.
    fn end_turn(&mut self) {
        if self.pending.is_empty() {
            self.turn = None;
        }
    }

    async fn emit_warnings(&self) -> Result<()> {
        for warning in self.session.take_all_warnings() {
            let event = match warning {
                Warning::KeyWarning(warning) => LiveEvent::KeyWarning(warning),
                Warning::MembershipWarning(warning) => LiveEvent::MembershipWarning(warning),
            };
            self.emit(event).await?;
        }
        Ok(())
    }

    async fn emit(&self, event: LiveEvent) -> Result<()> {
        // The receiver is gone: stop quietly (Done is reached through the closed text channel
        // or the abort in Drop).
        self.events
            .send(event)
            .await
            .map_err(|_| Error::usage("the conversation was closed".to_owned()))
    }
}

/// The task that seals lines one at a time, in order (so their chain positions follow the
/// order of the lines): the participants are reviewed and every change shown first (through
/// `events`), and only then is anything sealed (never for keys the user has not accepted).
fn spawn_sealer(
    session: Arc<Session>,
    target: Target,
    events: mpsc::Sender<LiveEvent>,
) -> (
    mpsc::UnboundedSender<SealJob>,
    mpsc::UnboundedReceiver<Sealed>,
) {
    let (to_seal, mut jobs) = mpsc::unbounded_channel::<SealJob>();
    let (sealed_sender, sealed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // The participants as last fetched, and when (see `PARTICIPANTS_MAX_AGE`).
        let mut participants: Option<(Instant, Vec<auth_pb::UserWithDevices>)> = None;
        while let Some(job) = jobs.recv().await {
            let (request_id, client_message_id, text, fresh) = match job {
                SealJob::Review => {
                    let users = session.participants(&target, true).await;
                    participants = users.ok().map(|users| (Instant::now(), users));
                    emit_warnings(&session, &events).await;
                    continue;
                }
                SealJob::New { request_id, line } => {
                    (request_id, line.client_message_id, line.text, false)
                }
                SealJob::Reseal {
                    request_id,
                    pending,
                } => {
                    // A message kept by an earlier run (or `chat send`) has only its envelope:
                    // its text is opened from it, as `chat flush` does, never sealed empty.
                    let text = if pending.text.is_empty() {
                        session.open_own(pending.envelope.clone())
                    } else {
                        Ok(pending.text)
                    };
                    match text {
                        Ok(text) => (request_id, pending.client_message_id, text, true),
                        Err(error) => {
                            let failed = Sealed::Failed {
                                client_message_id: pending.client_message_id,
                                error,
                                kept: true,
                            };
                            if sealed_sender.send(failed).is_err() {
                                return;
                            }
                            continue;
                        }
                    }
                }
            };
            // A new line takes this device's turn (another process of the profile may hold it
            // for up to its timeout: waited here, not in the loop that reads the stream).
            let turn = if fresh {
                None
            } else {
                match chains::sending_turn(&session.profile).await {
                    Ok(turn) => Some(turn),
                    Err(error) => {
                        let failed = Sealed::Failed {
                            client_message_id,
                            error,
                            kept: false,
                        };
                        if sealed_sender.send(failed).is_err() {
                            return;
                        }
                        continue;
                    }
                }
            };
            // The participants cannot be fetched while the server is unavailable: the line waits
            // (as a sent one waits for its answer) rather than being dropped.
            let reusable = participants
                .as_ref()
                .filter(|(fetched, _)| !fresh && fetched.elapsed() < PARTICIPANTS_MAX_AGE)
                .map(|(_, users)| users.clone());
            let users = loop {
                if let Some(users) = &reusable {
                    break Ok(users.clone());
                }
                let users = session.participants(&target, fresh).await;
                emit_warnings(&session, &events).await;
                if let Ok(users) = &users {
                    participants = Some((Instant::now(), users.clone()));
                }
                match users {
                    Err(error) if error.is_retryable() => {
                        let retrying = LiveEvent::SendRetrying {
                            client_message_id: client_message_id.clone(),
                            code: Code::Unavailable,
                        };
                        let _ = events.send(retrying).await;
                        tokio::time::sleep(with_jitter(SEND_RETRY_DELAY * 2)).await;
                    }
                    users => break users,
                }
            };
            let outcome = users.and_then(|users| {
                match session.seal_to(&target, &client_message_id, &text, &users) {
                    // A new line waits for the user to accept the keys, kept as `chat send`
                    // keeps it; a line sealed before is held by the loop.
                    Err(Error::Untrusted(reason)) if !fresh => {
                        let reason = session.keep_held(
                            &target,
                            &client_message_id,
                            &request_id,
                            &text,
                            users,
                            &reason,
                        )?;
                        Err(Error::Untrusted(reason))
                    }
                    sealed => sealed,
                }
            });
            let sealed = match outcome {
                Ok(envelope) => Sealed::Ready {
                    request_id,
                    pending: Box::new(Pending {
                        client_message_id,
                        text,
                        envelope,
                        resealed: fresh,
                    }),
                    turn,
                },
                Err(error) => Sealed::Failed {
                    kept: fresh || matches!(error, Error::Untrusted(_)),
                    client_message_id,
                    error,
                },
            };
            if sealed_sender.send(sealed).is_err() {
                return;
            }
        }
    });
    (to_seal, sealed)
}

/// The conversation's messages kept in the outbox by an earlier run (or `chat send`), to be
/// sent first, as they are, with this device's turn to send (they hold the first chain
/// positions). An unreadable outbox or a turn another process keeps leaves them for later.
async fn restore_kept(
    session: &Session,
    target: &Target,
) -> (BTreeMap<String, Pending>, Option<chains::SendingTurn>) {
    let kept: BTreeMap<String, Pending> = outbox::queued(&session.profile)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.conversation_id == target.conversation_id)
        // A held message waits for the user to accept keys (`chat trust` sends it), and the
        // later ones are chained after it.
        .take_while(|m| m.held.is_none())
        .enumerate()
        .filter_map(|(index, m)| {
            let envelope = m.envelope().ok()?;
            let pending = Pending {
                client_message_id: m.client_message_id,
                // Opened from the envelope if it must be sealed again.
                text: String::new(),
                envelope,
                resealed: false,
            };
            // Keyed so that they go in the order they were kept (their chain order); the request
            // id only pairs an answer with its line.
            Some((format!("kept-{index:06}-{}", m.request_id), pending))
        })
        .collect();
    if kept.is_empty() {
        return (kept, None);
    }
    match chains::sending_turn(&session.profile).await {
        Ok(turn) => (kept, Some(turn)),
        Err(_) => (BTreeMap::new(), None),
    }
}

async fn emit_warnings(session: &Session, events: &mpsc::Sender<LiveEvent>) {
    for warning in session.take_all_warnings() {
        let event = match warning {
            Warning::KeyWarning(warning) => LiveEvent::KeyWarning(warning),
            Warning::MembershipWarning(warning) => LiveEvent::MembershipWarning(warning),
        };
        let _ = events.send(event).await;
    }
}

/// The task that opens (verifies and decrypts) delivered messages one at a time, in order, so
/// that no acknowledgement waits for RSA work. It also checks that each belongs to `target` and
/// is not a replay (what was shown is reread for each message: another command may have shown
/// some too).
fn spawn_opener(
    session: Arc<Session>,
    target: Target,
) -> (
    mpsc::UnboundedSender<OpenJob>,
    mpsc::UnboundedReceiver<Opened>,
) {
    let (to_open, mut jobs) = mpsc::unbounded_channel::<OpenJob>();
    let (opened_sender, opened) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(job) = jobs.recv().await {
            // Listing what became readable is a remote call: done here, where opening waits
            // for it, never in the loop that reads the stream. One task for both keeps the
            // conversation's seen log written by one task at a time.
            let opened = match job {
                OpenJob::Delivered(message) => {
                    Opened::Delivered(open_in(&session, &target, *message).await)
                }
                OpenJob::Forwarded(runs) => {
                    Opened::Forwarded(session.now_readable(&target, &runs).await)
                }
            };
            if opened_sender.send(opened).is_err() {
                return;
            }
        }
    });
    (to_open, opened)
}

async fn open_in(session: &Session, target: &Target, message: pb::Message) -> Result<ReceivedText> {
    let mut seen = session.profile.seen(&target.conversation_id)?;
    let shown = session.open_in(target, message, &mut seen).await;
    session.profile.save_seen(&target.conversation_id, &seen)?;
    Ok(shown)
}

fn request(request: Outgoing) -> pb::OpenStreamRequest {
    pb::OpenStreamRequest {
        request: Some(request),
    }
}

fn send_request(request_id: &str, envelope: pb::Envelope) -> pb::OpenStreamRequest {
    request(Outgoing::Send(pb::StreamSend {
        request_id: request_id.to_owned(),
        envelope: Some(envelope),
    }))
}
