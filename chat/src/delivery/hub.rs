//! The streams open on this replica, and the one dispatcher that wakes them from the bus.
//!
//! Each stream has an [`Inbox`]: a set of conversations to re-read ("dirty"), a bounded queue of
//! receipts, typing indicators, membership and device changes and forwarded-key notices (only
//! to the recipient device's streams), and a `Notify`. The dispatcher only marks
//! and notifies; it never blocks on a stream, so one slow stream cannot hold back the others. A
//! stream whose event queue overflows is marked and ends with SLOW_CONSUMER.
//!
//! Group conversations are routed by the groups each stream is in: learnt when it opens, then
//! kept current by the membership events `group_events.rs` follows ([`Hub::membership_changed`]):
//! a member added while streaming starts getting the group's messages, a removed one stops at
//! once. Changes missed while that event stream is down reach a stream when it reconnects.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use common::sync::lock;
use tokio::sync::{Notify, broadcast};

use crate::{
    Error,
    delivery::bus::{BusEvent, KeysForwarded, Receipt, Typing},
    ids::{ConversationId, DeviceId, UserId},
    metrics::BusMetrics,
    store::conversations::Participants,
};

/// The streams of this replica, by user and by group conversation.
pub struct Hub {
    streams: Mutex<Streams>,
    next_id: AtomicU64,
    max_streams_per_device: usize,
    max_events: usize,
}

#[derive(Default)]
struct Streams {
    /// Every stream, by its user: direct conversations are routed through their participants.
    by_user: HashMap<UserId, Vec<Arc<Inbox>>>,
    /// Streams by the group conversations their user is in.
    by_group: HashMap<ConversationId, Vec<Arc<Inbox>>>,
    /// The group conversations of each stream, by [`Inbox::id`].
    groups_of: HashMap<u64, Vec<ConversationId>>,
}

/// What wakes one stream.
pub struct Inbox {
    id: u64,
    /// The stream's user.
    pub user: UserId,
    /// The stream's device.
    pub device: DeviceId,
    work: Mutex<Work>,
    /// Signalled whenever `work` gains something.
    pub ready: Notify,
    /// The delivered positions the device acknowledged (on any replica) since the stream opened,
    /// by conversation: how the stream task judges a client's progress (`stream.rs`). Read on
    /// the task's own clock, so an acknowledgement never wakes it.
    acknowledged: Mutex<HashMap<ConversationId, u64>>,
}

/// What a stream has to do, taken at once by [`Inbox::take`].
#[derive(Default)]
pub struct Work {
    /// Conversations with new messages, each with the newest sequence announced.
    pub dirty: HashMap<ConversationId, u64>,
    /// Re-read every conversation (events may have been lost).
    pub resync: bool,
    /// Receipts, typing indicators and membership changes, in arrival order.
    pub events: VecDeque<Ephemeral>,
    /// The stream's group conversations, when a membership change altered them.
    pub groups: Option<Vec<ConversationId>>,
    /// The event queue overflowed.
    pub overflowed: bool,
}

/// An event that is delivered as is, not re-read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ephemeral {
    /// A participant's positions moved.
    Receipt(Receipt),
    /// A participant is typing.
    Typing(Typing),
    /// A group's membership changed.
    Membership(MembershipChange),
    /// A user's set of devices changed: refetch their keys before the next send to them.
    DevicesChanged(UserId),
    /// Keys of `count` messages of `conversation` were forwarded to the stream's device.
    KeysForwarded {
        /// The conversation.
        conversation: ConversationId,
        /// How many messages.
        count: u32,
    },
}

/// A change to a group's membership, from the group service's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipChange {
    /// The group (and its conversation).
    pub group: ConversationId,
    /// What happened.
    pub kind: ChangeKind,
    /// The member concerned; `None` for group-wide changes.
    pub user: Option<UserId>,
    /// The group's membership version after the change.
    pub version: u64,
}

/// What happened to a group's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// `user` joined.
    MemberAdded,
    /// `user` left or was removed.
    MemberRemoved,
    /// `user`'s role changed.
    RoleChanged,
    /// The group was renamed.
    GroupRenamed,
    /// The group was deleted.
    GroupDeleted,
}

/// Removes the stream from the hub when dropped.
pub struct Registration {
    hub: Arc<Hub>,
    inbox: Arc<Inbox>,
}

impl Hub {
    /// A hub allowing `max_streams_per_device`, each with at most `max_events` waiting events.
    pub fn new(max_streams_per_device: usize, max_events: usize) -> Arc<Self> {
        Arc::new(Self {
            streams: Mutex::default(),
            next_id: AtomicU64::new(0),
            max_streams_per_device,
            max_events,
        })
    }

    /// Registers a stream of `device`, whose user's group conversations are `groups`. From here
    /// on it is woken for every new message of those and of its user's direct conversations.
    ///
    /// # Errors
    /// [`Error::TooManyStreams`] when the device has the most streams allowed.
    pub fn register(
        self: &Arc<Self>,
        user: UserId,
        device: DeviceId,
        groups: Vec<ConversationId>,
    ) -> Result<Registration, Error> {
        let mut streams = lock(&self.streams);
        let of_user = streams.by_user.entry(user).or_default();
        let of_device = of_user
            .iter()
            .filter(|inbox| inbox.device == device)
            .count();
        if of_device >= self.max_streams_per_device {
            return Err(Error::TooManyStreams);
        }
        let inbox = Arc::new(Inbox {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            user,
            device,
            work: Mutex::default(),
            ready: Notify::new(),
            acknowledged: Mutex::default(),
        });
        of_user.push(inbox.clone());
        for group in &groups {
            streams
                .by_group
                .entry(*group)
                .or_default()
                .push(inbox.clone());
        }
        streams.groups_of.insert(inbox.id, groups);
        Ok(Registration {
            hub: self.clone(),
            inbox,
        })
    }

    /// Routes bus events to the streams until the bus closes; counts in `metrics` the resyncs
    /// it makes when it falls behind.
    pub async fn dispatch(
        self: Arc<Self>,
        mut events: broadcast::Receiver<BusEvent>,
        participants: Participants,
        metrics: BusMetrics,
    ) {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    metrics.lagged_resync();
                    BusEvent::Resync
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if let Err(error) = self.route(event, &participants).await {
                // Without the participants we cannot tell who to wake: wake everyone.
                tracing::warn!(%error, "cannot route a bus event; resyncing every stream");
                self.resync_all();
            }
        }
    }

    async fn route(&self, event: BusEvent, participants: &Participants) -> Result<(), Error> {
        match event {
            BusEvent::NewMessages {
                conversation,
                last_sequence,
            } => {
                let targets = self.streams_of(conversation, participants).await?;
                wake(
                    &targets,
                    |_| true,
                    |work| {
                        let newest = work.dirty.entry(conversation).or_default();
                        *newest = (*newest).max(last_sequence);
                    },
                );
            }
            BusEvent::Receipt(receipt) => {
                let targets = self.streams_of(receipt.conversation, participants).await?;
                for own in targets
                    .iter()
                    .filter(|inbox| inbox.device == receipt.device)
                {
                    own.acknowledge(receipt.conversation, receipt.delivered);
                }
                self.push(
                    &targets,
                    |inbox| inbox.device != receipt.device,
                    Ephemeral::Receipt(receipt),
                );
            }
            BusEvent::Typing(typing) => {
                let targets = self.streams_of(typing.conversation, participants).await?;
                self.push(
                    &targets,
                    |inbox| inbox.user != typing.user,
                    Ephemeral::Typing(typing),
                );
            }
            BusEvent::KeysForwarded(forwarded) => self.keys_forwarded(forwarded),
            BusEvent::Resync => self.resync_all(),
        }
        Ok(())
    }

    /// Tells the recipient device's streams (and no other) that keys were forwarded to it.
    fn keys_forwarded(&self, forwarded: KeysForwarded) {
        let targets = lock(&self.streams)
            .by_user
            .get(&forwarded.user)
            .cloned()
            .unwrap_or_default();
        self.push(
            &targets,
            |inbox| inbox.device == forwarded.device,
            Ephemeral::KeysForwarded {
                conversation: forwarded.conversation,
                count: forwarded.count,
            },
        );
    }

    /// The streams that take part in `conversation`: those registered for it as a group, else
    /// those of its direct participants. Only those streams are visited, so an event costs the
    /// same with 10 or 50,000 streams open.
    async fn streams_of(
        &self,
        conversation: ConversationId,
        participants: &Participants,
    ) -> Result<Vec<Arc<Inbox>>, Error> {
        if let Some(members) = lock(&self.streams).by_group.get(&conversation) {
            return Ok(members.clone());
        }
        let users = participants.of(conversation).await?;
        let streams = lock(&self.streams);
        Ok(users
            .iter()
            .filter_map(|user| streams.by_user.get(user))
            .flatten()
            .cloned()
            .collect())
    }

    /// Applies a membership change to the streams' group routing, and tells the group's
    /// streams (a removed member's included) about it.
    pub fn membership_changed(&self, change: MembershipChange) {
        let mut streams = lock(&self.streams);
        let group = change.group;
        if let (ChangeKind::MemberAdded, Some(user)) = (change.kind, change.user) {
            let joining: Vec<Arc<Inbox>> = streams.by_user.get(&user).cloned().unwrap_or_default();
            for inbox in joining {
                let groups = streams.groups_of.entry(inbox.id).or_default();
                if groups.contains(&group) {
                    continue;
                }
                groups.push(group);
                lock(&inbox.work).groups = Some(groups.clone());
                streams
                    .by_group
                    .entry(group)
                    .or_default()
                    .push(inbox.clone());
            }
        }
        let Some(targets) = streams.by_group.get(&group).cloned() else {
            return;
        };
        self.push(&targets, |_| true, Ephemeral::Membership(change));
        let leaving: Vec<Arc<Inbox>> = match (change.kind, change.user) {
            (ChangeKind::MemberRemoved, Some(user)) => targets
                .into_iter()
                .filter(|inbox| inbox.user == user)
                .collect(),
            (ChangeKind::GroupDeleted, _) => targets,
            _ => Vec::new(),
        };
        for inbox in leaving {
            let groups = streams.leave(&inbox, group);
            lock(&inbox.work).groups = Some(groups);
            inbox.ready.notify_one();
        }
    }

    /// Tells the streams that may send to `user` (theirs, their direct peers' and their groups'
    /// members') that `user`'s devices changed.
    pub fn devices_changed(&self, user: UserId, peers: &[UserId], groups: &[ConversationId]) {
        let targets: Vec<Arc<Inbox>> = {
            let streams = lock(&self.streams);
            let mut seen = std::collections::HashSet::new();
            std::iter::once(&user)
                .chain(peers)
                .filter_map(|user| streams.by_user.get(user))
                .chain(
                    groups
                        .iter()
                        .filter_map(|group| streams.by_group.get(group)),
                )
                .flatten()
                .filter(|inbox| seen.insert(inbox.id))
                .cloned()
                .collect()
        };
        self.push(&targets, |_| true, Ephemeral::DevicesChanged(user));
    }

    fn push(&self, targets: &[Arc<Inbox>], to: impl Fn(&Inbox) -> bool, event: Ephemeral) {
        let max_events = self.max_events;
        wake(targets, to, |work| {
            if work.events.len() >= max_events {
                work.overflowed = true;
            } else {
                work.events.push_back(event);
            }
        });
    }

    fn resync_all(&self) {
        let streams = lock(&self.streams);
        for inbox in streams.by_user.values().flatten() {
            lock(&inbox.work).resync = true;
            inbox.ready.notify_one();
        }
    }
}

/// Changes the work of the `targets` that pass `to`, and wakes them.
fn wake(targets: &[Arc<Inbox>], to: impl Fn(&Inbox) -> bool, change: impl Fn(&mut Work)) {
    for inbox in targets.iter().filter(|inbox| to(inbox)) {
        change(&mut lock(&inbox.work));
        inbox.ready.notify_one();
    }
}

impl Inbox {
    /// Everything to do, leaving the inbox empty.
    pub fn take(&self) -> Work {
        std::mem::take(&mut lock(&self.work))
    }

    /// The device acknowledged `delivered` in `conversation` (positions only move forward).
    pub fn acknowledge(&self, conversation: ConversationId, delivered: u64) {
        let mut acknowledged = lock(&self.acknowledged);
        let position = acknowledged.entry(conversation).or_default();
        *position = (*position).max(delivered);
    }

    /// The delivered positions the device acknowledged since the stream opened, by
    /// conversation; empty while it has acknowledged nothing.
    pub fn acknowledged(&self) -> HashMap<ConversationId, u64> {
        lock(&self.acknowledged).clone()
    }
}

impl Registration {
    /// The stream's inbox.
    pub fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }
}

impl Streams {
    /// Stops routing `group` to `inbox`; returns the groups it still has.
    fn leave(&mut self, inbox: &Inbox, group: ConversationId) -> Vec<ConversationId> {
        if let Some(members) = self.by_group.get_mut(&group) {
            members.retain(|member| member.id != inbox.id);
            if members.is_empty() {
                self.by_group.remove(&group);
            }
        }
        let groups = self.groups_of.entry(inbox.id).or_default();
        groups.retain(|joined| *joined != group);
        groups.clone()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut streams = lock(&self.hub.streams);
        let id = self.inbox.id;
        if let Some(of_user) = streams.by_user.get_mut(&self.inbox.user) {
            of_user.retain(|inbox| inbox.id != id);
            if of_user.is_empty() {
                streams.by_user.remove(&self.inbox.user);
            }
        }
        for group in streams.groups_of.remove(&id).unwrap_or_default() {
            if let Some(members) = streams.by_group.get_mut(&group) {
                members.retain(|inbox| inbox.id != id);
                if members.is_empty() {
                    streams.by_group.remove(&group);
                }
            }
        }
    }
}
