//! The world a delivery property case runs in: the replicas, the model of what was committed,
//! and each device's client, which opens, reads and checks its stream.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::StreamExt as _;
use proptest::{prelude::*, sample::Index};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::case::{CATCH_UP_LIMIT, Case, N_DEVICES, Op, Resume, STALL_LIMIT, Until};
use crate::{
    Error,
    config::{CommitSettings, RecentSettings, StreamSettings},
    delivery::{
        bus::{Bus, BusEvent},
        hub::Hub,
        recent::RecentMessages,
        stream::{Delivery, EventStream, Outgoing, TokenWatch},
    },
    ids::{ConversationId, DeviceId, UserId},
    message::{Caller, V2Fields},
    metrics::{BusMetrics, CommitMetrics, StreamKind, StreamMetrics},
    send::commit::{Committer, NewMessage, RecipientKey},
    store::{conversations::Participants, positions},
};

/// Every replica hears every event at once (the bus may be late; this one never is).
struct SharedBus(broadcast::Sender<BusEvent>);

impl Bus for SharedBus {
    fn publish(&self, event: BusEvent) {
        let _ = self.0.send(event);
    }
    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.0.subscribe()
    }
}

struct Replica {
    committer: Committer,
    delivery: Delivery,
}

/// What was committed: per conversation, each sequence's client message id and recipients.
#[derive(Default)]
struct Model {
    messages: Vec<HashMap<u64, (String, u8)>>,
    last: Vec<u64>,
    /// Per device and conversation, the stored delivered position.
    stored: HashMap<(usize, usize), u64>,
}

impl Model {
    /// The first message after `after` in `conversation` with a key for `device`.
    fn next_for(&self, device: usize, conversation: usize, after: u64) -> Option<u64> {
        (after + 1..=self.last[conversation])
            .find(|sequence| self.messages[conversation][sequence].1 & (1 << device) != 0)
    }
}

/// One device's client: its open stream and, per conversation, what it last received.
#[derive(Default)]
struct Client {
    stream: Option<EventStream>,
    /// Where the open stream is, per conversation: its resume point, then its last message.
    position: Vec<u64>,
    /// Per conversation, what was committed when the stream opened: its replay, which ends
    /// with `CaughtUp`, covers at least that.
    replay_through: Vec<u64>,
    caught_up: bool,
    received: Vec<u64>,
}

pub(super) struct World {
    db: PgPool,
    replicas: Vec<Replica>,
    conversations: Vec<ConversationId>,
    devices: Vec<Caller>,
    clients: Vec<Client>,
    model: Model,
    bus: Arc<SharedBus>,
    shutdown: CancellationToken,
    next_send: u64,
    /// What happened, resolved (which replica, which cursors, which sequences): shown with a
    /// failure, since the ops alone do not say what the streams saw.
    pub(super) trace: Vec<String>,
}

impl World {
    pub(super) async fn new(db: PgPool, case: &Case) -> Self {
        let bus = Arc::new(SharedBus(broadcast::channel(1024).0));
        let shutdown = CancellationToken::new();
        let streams = StreamSettings {
            queue: case.queue,
            stall_limit: STALL_LIMIT,
            // The model's clients acknowledge nothing that should end a stream.
            ack_timeout: Duration::from_secs(3600),
            heartbeat: Duration::from_secs(3600),
            replay_page: case.replay_page,
            notify_window: Duration::ZERO,
        };
        let (per_conversation, budget_bytes, max_conversations) = case.recent;
        let replicas = (0..case.n_replicas)
            .map(|_| {
                let hub = Hub::new(4, 64);
                tokio::spawn(hub.clone().dispatch(
                    bus.subscribe(),
                    Participants::new(db.clone()),
                    BusMetrics::default(),
                ));
                let recent = Arc::new(RecentMessages::new(
                    db.clone(),
                    RecentSettings {
                        budget_bytes,
                        per_conversation,
                        max_conversations,
                    },
                ));
                let commit = CommitSettings {
                    window: Duration::ZERO,
                    max_batch: 512,
                    queue: 64,
                };
                Replica {
                    committer: Committer::start(
                        db.clone(),
                        commit,
                        bus.clone(),
                        recent.clone(),
                        CommitMetrics::default(),
                    ),
                    delivery: Delivery::new(
                        db.clone(),
                        hub,
                        recent,
                        streams.clone(),
                        shutdown.clone(),
                        StreamMetrics::default(),
                    ),
                }
            })
            .collect();
        let mut conversations = Vec::new();
        for _ in 0..case.n_conversations {
            conversations.push(crate::test_support::new_conversation(&db).await);
        }
        let devices = (0..N_DEVICES)
            .map(|_| Caller {
                user: UserId(Uuid::new_v4()),
                device: DeviceId(Uuid::new_v4()),
            })
            .collect();
        let n = case.n_conversations;
        Self {
            db,
            replicas,
            conversations,
            devices,
            clients: (0..N_DEVICES)
                .map(|_| Client {
                    stream: None,
                    position: vec![0; n],
                    replay_through: vec![0; n],
                    caught_up: false,
                    received: vec![0; n],
                })
                .collect(),
            model: Model {
                messages: vec![HashMap::new(); n],
                last: vec![0; n],
                ..Model::default()
            },
            bus,
            shutdown,
            next_send: 0,
            trace: Vec::new(),
        }
    }

    pub(super) async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Send { replica, sends } => {
                self.send(replica.index(self.replicas.len()), sends).await
            }
            Op::Open {
                device,
                replica,
                from,
            } => {
                let replica = replica.index(self.replicas.len());
                self.open(device.index(N_DEVICES), replica, from).await;
                Ok(())
            }
            Op::Close { device } => {
                self.clients[device.index(N_DEVICES)].stream = None;
                self.trace
                    .push(format!("device {} closes", device.index(N_DEVICES)));
                Ok(())
            }
            Op::Acknowledge {
                device,
                conversation,
            } => {
                let (device, conversation) = (
                    device.index(N_DEVICES),
                    conversation.index(self.conversations.len()),
                );
                self.acknowledge(device, conversation).await
            }
            Op::Read { device } => self.read(device.index(N_DEVICES), Until::Everything).await,
            Op::Resync => {
                self.bus.publish(BusEvent::Resync);
                self.trace.push("resync".to_owned());
                Ok(())
            }
            Op::Pause => {
                tokio::time::sleep(STALL_LIMIT * 2).await;
                self.trace.push("pause".to_owned());
                Ok(())
            }
        }
    }

    async fn send(&mut self, replica: usize, sends: &[(Index, u8)]) -> Result<(), TestCaseError> {
        let committer = self.replicas[replica].committer.clone();
        let mut pending = Vec::new();
        for (conversation, recipients) in sends {
            let conversation = conversation.index(self.conversations.len());
            let recipients = recipients & ((1 << N_DEVICES) - 1);
            self.next_send += 1;
            let client_id = format!("send {}", self.next_send);
            let message = self.new_message(conversation, &client_id, recipients);
            pending.push((
                conversation,
                client_id,
                recipients,
                committer.commit(message),
            ));
        }
        let (targets, futures): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .map(|(c, id, r, f)| ((c, id, r), f))
            .unzip();
        let results = futures::future::join_all(futures).await;
        for ((conversation, client_id, recipients), result) in targets.into_iter().zip(results) {
            let committed = result.map_err(|error| TestCaseError::fail(error.to_string()))?;
            prop_assert!(!committed.duplicate);
            let stored = self.model.messages[conversation]
                .insert(committed.sequence, (client_id, recipients));
            prop_assert!(
                stored.is_none(),
                "sequence {} given twice",
                committed.sequence
            );
            self.model.last[conversation] = self.model.last[conversation].max(committed.sequence);
            self.trace.push(format!(
                "replica {replica} commits c{conversation}#{} for devices {recipients:03b}",
                committed.sequence
            ));
        }
        // Sequences are gap-free: every one up to the last is a message of the model.
        for (conversation, messages) in self.model.messages.iter().enumerate() {
            prop_assert_eq!(messages.len() as u64, self.model.last[conversation]);
        }
        Ok(())
    }

    fn new_message(&self, conversation: usize, client_id: &str, recipients: u8) -> NewMessage {
        let sender = &self.devices[0];
        NewMessage {
            id: Uuid::now_v7(),
            conversation: self.conversations[conversation],
            sender_user: sender.user,
            sender_device: sender.device,
            client_message_id: client_id.to_owned(),
            nonce: vec![0; 12],
            ciphertext: client_id.as_bytes().to_vec(),
            key_commitment: vec![2; 32],
            signature: vec![3; 64],
            recipients_digest: vec![4; 32],
            suite: 1,
            v2: V2Fields::default(),
            recipients: (0..N_DEVICES)
                .filter(|device| recipients & (1 << device) != 0)
                .map(|device| RecipientKey {
                    device: self.devices[device].device,
                    key_fingerprint: vec![5; 32],
                    wrapped_key: format!("{client_id} for {device}").into_bytes(),
                    leaf_index: 0,
                    inclusion_proof: Vec::new(),
                })
                .collect(),
        }
    }

    async fn open(&mut self, device: usize, replica: usize, from: &[Resume]) {
        let mut requested = HashMap::new();
        let mut position = Vec::new();
        for (conversation, id) in self.conversations.iter().enumerate() {
            let client = &self.clients[device];
            let after = match from[conversation] {
                Resume::Stored => self
                    .model
                    .stored
                    .get(&(device, conversation))
                    .copied()
                    .unwrap_or(0),
                Resume::Received => client.received[conversation],
                Resume::Any(index) => {
                    index.index(self.model.last[conversation] as usize + 1) as u64
                }
            };
            if !matches!(from[conversation], Resume::Stored) {
                requested.insert(*id, after);
            }
            position.push(after);
        }
        // The old stream ends first, as when a client reconnects elsewhere.
        self.clients[device].stream = None;
        // The old stream's task leaves the hub when it notices the client is gone; until then
        // the device may be at its limit of streams, and a client retries.
        let mut attempts = 0;
        let stream = loop {
            let token = TokenWatch {
                expires_at: OffsetDateTime::now_utc() + time::Duration::hours(1),
                revoked: Box::pin(std::future::pending()),
            };
            let opened = self.replicas[replica].delivery.open(
                self.devices[device],
                self.conversations.clone(),
                requested.clone(),
                token,
                StreamKind::OpenStream,
            );
            match opened {
                Ok((_outbox, stream)) => break stream,
                Err(Error::TooManyStreams) if attempts < 500 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(error) => panic!("device {device} cannot open a stream: {error}"),
            }
        };
        self.trace.push(format!(
            "device {device} opens on replica {replica} after {position:?} ({from:?})"
        ));
        let client = &mut self.clients[device];
        client.stream = Some(stream);
        client.position = position;
        client.replay_through.clone_from(&self.model.last);
        client.caught_up = false;
    }

    async fn acknowledge(
        &mut self,
        device: usize,
        conversation: usize,
    ) -> Result<(), TestCaseError> {
        // A client acknowledges what it received, so after its stream replayed: the stream
        // reads the stored positions when it starts, and the model knows them only from then.
        self.read(device, Until::CaughtUp).await?;
        let delivered = self.clients[device].received[conversation];
        let caller = self.devices[device];
        let positions = positions::acknowledge(
            &self.db,
            caller.user,
            caller.device,
            self.conversations[conversation],
            delivered,
            0,
        )
        .await
        .unwrap();
        self.model
            .stored
            .insert((device, conversation), positions.delivered);
        self.trace.push(format!(
            "device {device} acknowledges c{conversation}#{delivered}: stored {}",
            positions.delivered
        ));
        Ok(())
    }

    /// Reads `device`'s stream until it delivered everything committed for it, or until its
    /// `CaughtUp`, checking each item against the model; a stream that ended as too slow is
    /// reopened from what the client received, as a client does.
    async fn read(&mut self, device: usize, until: Until) -> Result<(), TestCaseError> {
        loop {
            let client = &self.clients[device];
            let done = match until {
                Until::CaughtUp => client.caught_up,
                Until::Everything => (0..self.conversations.len()).all(|conversation| {
                    let after = client.position[conversation];
                    self.model.next_for(device, conversation, after).is_none()
                }),
            };
            let Some(stream) = &mut self.clients[device].stream else {
                return Ok(());
            };
            if done {
                return Ok(());
            }
            let item = tokio::time::timeout(CATCH_UP_LIMIT, stream.next())
                .await
                .map_err(|_| {
                    TestCaseError::fail(format!(
                        "device {device} did not catch up: its stream is at {:?}",
                        self.clients[device].position
                    ))
                })?;
            self.receive(device, item).await?;
        }
    }

    /// Checks one item of `device`'s stream.
    async fn receive(
        &mut self,
        device: usize,
        item: Option<Result<Outgoing, Error>>,
    ) -> Result<(), TestCaseError> {
        match item {
            Some(Ok(Outgoing::Message(message))) => self.check(device, &message.to_pb()),
            Some(Ok(Outgoing::CaughtUp)) => {
                let client = &mut self.clients[device];
                prop_assert!(!client.caught_up, "device {} caught up twice", device);
                client.caught_up = true;
                self.trace.push(format!("device {device} caught up"));
                for conversation in 0..self.conversations.len() {
                    let next =
                        self.model
                            .next_for(device, conversation, client.position[conversation]);
                    prop_assert!(
                        next.is_none_or(|next| next > client.replay_through[conversation]),
                        "device {} caught up before c{}#{:?}",
                        device,
                        conversation,
                        next
                    );
                }
                Ok(())
            }
            Some(Ok(_)) => Ok(()),
            Some(Err(Error::SlowConsumer)) => {
                self.trace.push(format!("device {device}: slow consumer"));
                let from = [Resume::Received, Resume::Received, Resume::Received];
                self.open(device, 0, &from).await;
                Ok(())
            }
            other => Err(TestCaseError::fail(format!(
                "device {device}'s stream ended: {other:?}"
            ))),
        }
    }

    /// What may arrive next on `device`'s stream is exactly the model's next message for it.
    fn check(
        &mut self,
        device: usize,
        message: &proto::chat::v1::Message,
    ) -> Result<(), TestCaseError> {
        let conversation = self
            .conversations
            .iter()
            .position(|id| id.0.to_string() == message.conversation_id)
            .ok_or_else(|| TestCaseError::fail("a message of an unknown conversation"))?;
        let client = &mut self.clients[device];
        let after = client.position[conversation];
        let expected = self.model.next_for(device, conversation, after);
        prop_assert_eq!(
            Some(message.sequence),
            expected,
            "device {} in conversation {} after {}",
            device,
            conversation,
            after
        );
        self.trace.push(format!(
            "device {device} receives c{conversation}#{}",
            message.sequence
        ));
        let (client_id, _) = &self.model.messages[conversation][&message.sequence];
        let envelope = message.envelope.as_ref().expect("an envelope");
        prop_assert_eq!(&envelope.client_message_id, client_id);
        let keys: Vec<_> = envelope
            .wrapped_keys
            .iter()
            .map(|key| key.wrapped_key.clone())
            .collect();
        prop_assert_eq!(keys, vec![format!("{client_id} for {device}").into_bytes()]);
        client.position[conversation] = message.sequence;
        client.received[conversation] = message.sequence;
        Ok(())
    }

    /// Every stream catches up, then stays quiet: nothing but heartbeats follows.
    pub(super) async fn finish(&mut self) -> Result<(), TestCaseError> {
        for device in 0..N_DEVICES {
            self.read(device, Until::Everything).await?;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        for device in 0..N_DEVICES {
            while let Some(stream) = &mut self.clients[device].stream {
                let Ok(item) = tokio::time::timeout(Duration::from_millis(2), stream.next()).await
                else {
                    break;
                };
                if item.is_none() {
                    break;
                }
                // A message here is one the model has not got: a repeat.
                self.receive(device, item).await?;
            }
        }
        Ok(())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
