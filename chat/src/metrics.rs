//! chat's own metrics (besides the gRPC and database pool metrics every service has,
//! `common::metrics`): sends, the committer's batches, streams and deliveries, the recent tails,
//! the caches, the bus and the event streams. `docs/metrics.md` lists them with their meaning.
//!
//! Each part is counted where it happens: the layers get the handle they need ([`CommitMetrics`]
//! for the committer, [`StreamMetrics`] for delivery, [`BusMetrics`] for the bus,
//! [`WatchMetrics`] for the event streams); the caches and the tails own their counters
//! ([`Lookups`], `RecentMessages::evictions`), which `lib.rs` registers. Below every layer: it
//! imports only `error.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::error::Error;

/// Every family chat registers itself; clones share the same series.
#[derive(Clone, Debug, Default)]
pub struct ChatMetrics {
    /// Sends by outcome.
    pub sends: SendMetrics,
    /// The committer's batches.
    pub commit: CommitMetrics,
    /// Streams and what they deliver.
    pub streams: StreamMetrics,
    /// Wake-ups between replicas.
    pub bus: BusMetrics,
    /// The event streams from group and auth.
    pub watch: WatchMetrics,
}

impl ChatMetrics {
    /// Adds the families to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "chat_sends",
            "Sends answered, by outcome: stored, duplicate (a retry answered with the original) \
             or the refusal's reason",
            self.sends.sends.clone(),
        );
        registry.register_with_unit(
            "chat_send",
            "Time from a send's arrival at chat to its answer (stored, duplicate or refused), by \
             path: unary (SendMessage) or stream (a send on OpenStream, which no gRPC metric \
             times)",
            Unit::Seconds,
            self.sends.seconds.clone(),
        );
        registry.register(
            "chat_commit_batch_size",
            "Sends per committed batch",
            self.commit.batch_size.clone(),
        );
        registry.register_with_unit(
            "chat_commit",
            "Time to commit one batch (its transaction, and the one-by-one retry after a client \
             message id conflict)",
            Unit::Seconds,
            self.commit.seconds.clone(),
        );
        registry.register(
            "chat_commit_batches",
            "Batches by outcome: ok, conflict_retried (retried one send per transaction), failed",
            self.commit.batches.clone(),
        );
        registry.register(
            "chat_streams_open",
            "Streams open on this replica, by kind (subscribe, open_stream)",
            self.streams.open.clone(),
        );
        registry.register_collector(Box::new(QueueCollector {
            queues: self.streams.queues.clone(),
        }));
        registry.register(
            "chat_streams_ended",
            "Streams ended, by reason (slow_consumer is a cut for a client that did not keep up)",
            self.streams.ended.clone(),
        );
        registry.register(
            "chat_deliveries",
            "Messages queued to streams, by phase (replay, live)",
            self.streams.deliveries.clone(),
        );
        registry.register(
            "chat_recent_tail_reads",
            "Stream reads answered by the recent tail (hit) or the database (miss)",
            self.streams.tail_reads.clone(),
        );
        registry.register(
            "chat_bus_published",
            "Events published to the bus (wake-ups, receipts, typing)",
            self.bus.published.clone(),
        );
        registry.register(
            "chat_bus_received",
            "Events received over the bus (NOTIFY) from every replica",
            self.bus.received.clone(),
        );
        registry.register_with_unit(
            "chat_bus_lag",
            "Time from a wake-up's publication (right after its commit) on one replica to this \
             replica hearing it over the bus (across hosts, clock skew adds to it)",
            Unit::Seconds,
            self.bus.lag.clone(),
        );
        registry.register(
            "chat_bus_resyncs",
            "Times every stream had to re-read, by cause: listener (the bus listener (re)connected \
             or lost its connection), lagged (the dispatcher fell behind the bus)",
            self.bus.resyncs.clone(),
        );
        registry.register(
            "chat_event_stream_connects",
            "Event streams opened, by events (membership from group, devices from auth); more than \
             one is a reconnect",
            self.watch.connects.clone(),
        );
        registry.register(
            "chat_event_stream_following",
            "1 while the event stream is followed (its cache trusted), 0 while it is down",
            self.watch.following.clone(),
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventsLabels {
    events: &'static str,
}

/// Sends by outcome, and how long each took to answer by the call it came on.
#[derive(Clone, Debug)]
pub struct SendMetrics {
    sends: Family<OutcomeLabels, Counter>,
    seconds: Family<PathLabels, Histogram, fn() -> Histogram>,
    /// The two series of `seconds`, looked up once: every send observes one.
    unary_seconds: Histogram,
    stream_seconds: Histogram,
}

impl Default for SendMetrics {
    fn default() -> Self {
        // 100 µs to about 6.5 s, as a commit.
        let seconds: Family<PathLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_1, 2.0, 17)));
        let series = |path| seconds.get_or_create(&PathLabels { path }).clone();
        Self {
            sends: Family::default(),
            unary_seconds: series("unary"),
            stream_seconds: series("stream"),
            seconds,
        }
    }
}

/// The call a send came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendPath {
    /// `SendMessage`: the gateway's gRPC metrics time it too.
    Unary,
    /// A send on `OpenStream`, answered on the stream: only this metric times it.
    Stream,
}

impl SendMetrics {
    /// Counts a send on `path` answered `Ok(duplicate)` or refused with `error`, `elapsed`
    /// after chat received it.
    pub fn answered(
        &self,
        path: SendPath,
        elapsed: std::time::Duration,
        outcome: Result<bool, &Error>,
    ) {
        let outcome = match outcome {
            Ok(false) => "stored",
            Ok(true) => "duplicate",
            Err(error) => refusal_reason(error),
        };
        self.sends.get_or_create(&OutcomeLabels { outcome }).inc();
        let seconds = match path {
            SendPath::Unary => &self.unary_seconds,
            SendPath::Stream => &self.stream_seconds,
        };
        seconds.observe(elapsed.as_secs_f64());
    }
}

/// A bounded label value for why a send (or a stream) was refused or ended.
pub fn refusal_reason(error: &Error) -> &'static str {
    match error {
        Error::InvalidArgument(_) => "invalid_argument",
        Error::ConversationNotFound => "conversation_not_found",
        Error::UserNotFound => "user_not_found",
        Error::MessageNotFound(_) => "message_not_found",
        Error::ForwardingDenied(_) => "forwarding_denied",
        Error::StaleRecipientKey(_) => "stale_recipient_key",
        Error::SignatureInvalid(_) => "signature_invalid",
        Error::DeviceListMismatch(_) => "device_list_mismatch",
        Error::ClientMessageIdReused => "client_message_id_reused",
        Error::RateLimited { .. } => "rate_limited",
        Error::SlowConsumer => "slow_consumer",
        Error::TooManyStreams => "too_many_streams",
        Error::TokenExpired => "token_expired",
        Error::Token(_) => "token_refused",
        Error::ShuttingDown => "shutting_down",
        Error::Auth(_) => "auth_unavailable",
        Error::Group(_) => "group_unavailable",
        Error::Db(_) => "database",
        Error::CommitOutcomeUnknown => "commit_outcome_unknown",
        Error::Internal(_) => "internal",
    }
}

/// The committer's batches.
#[derive(Clone, Debug)]
pub struct CommitMetrics {
    batch_size: Histogram,
    seconds: Histogram,
    batches: Family<OutcomeLabels, Counter>,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        Self {
            // 1 to 4096 sends (CHAT_COMMIT_MAX_BATCH is far below).
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            // 100 µs to about 6.5 s.
            seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 17)),
            batches: Family::default(),
        }
    }
}

/// How a batch's commit went, for [`CommitMetrics::committed`].
#[derive(Clone, Copy, Debug)]
pub enum BatchOutcome {
    /// One transaction stored it.
    Ok,
    /// A client message id conflict: retried one send per transaction.
    ConflictRetried,
    /// The transaction failed; every send was answered with an error.
    Failed,
}

impl CommitMetrics {
    /// Records a batch of `size` sends that took `elapsed` to commit.
    pub fn committed(&self, size: usize, elapsed: std::time::Duration, outcome: BatchOutcome) {
        self.batch_size.observe(size as f64);
        self.seconds.observe(elapsed.as_secs_f64());
        let outcome = match outcome {
            BatchOutcome::Ok => "ok",
            BatchOutcome::ConflictRetried => "conflict_retried",
            BatchOutcome::Failed => "failed",
        };
        self.batches.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

/// Which API a stream was opened with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// `Subscribe`.
    Subscribe,
    /// `OpenStream`.
    OpenStream,
}

impl StreamKind {
    fn label(self) -> &'static str {
        match self {
            StreamKind::Subscribe => "subscribe",
            StreamKind::OpenStream => "open_stream",
        }
    }
}

/// Streams and what they deliver.
#[derive(Clone, Debug, Default)]
pub struct StreamMetrics {
    open: Family<KindLabels, Gauge>,
    ended: Family<ReasonLabels, Counter>,
    deliveries: Family<PhaseLabels, Counter>,
    tail_reads: Family<ResultLabels, Counter>,
    queues: Arc<Mutex<Queues>>,
}

/// Reads a stream's queue: `(items queued, capacity)`, `None` once the queue is gone.
pub type QueueDepth = Box<dyn Fn() -> Option<(usize, usize)> + Send + Sync>;

/// The queues of the open streams, read only at a scrape: the delivery path never touches a
/// shared metric for them (a histogram observed on every push would be a lock on that path).
#[derive(Default)]
struct Queues {
    next: u64,
    open: HashMap<u64, QueueDepth>,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("open", &self.open.len())
            .finish()
    }
}

/// Counts one open stream of its kind (and reads its queue at scrapes) until dropped.
#[derive(Debug)]
pub struct OpenStream {
    gauge: Gauge,
    queues: Arc<Mutex<Queues>>,
    id: u64,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.gauge.dec();
        common::sync::lock(&self.queues).open.remove(&self.id);
    }
}

impl StreamMetrics {
    /// A stream of `kind` opened, whose queue `depth` reads; it counts as open until the guard
    /// is dropped.
    pub fn opened(&self, kind: StreamKind, depth: QueueDepth) -> OpenStream {
        let gauge = self
            .open
            .get_or_create(&KindLabels { kind: kind.label() })
            .clone();
        gauge.inc();
        let mut queues = common::sync::lock(&self.queues);
        let id = queues.next;
        queues.next += 1;
        queues.open.insert(id, depth);
        drop(queues);
        OpenStream {
            gauge,
            queues: self.queues.clone(),
            id,
        }
    }

    /// A stream ended with `error` (`None`: the client closed it).
    pub fn ended(&self, error: Option<&Error>) {
        let reason = error.map_or("client_closed", refusal_reason);
        self.ended.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// `count` messages were queued to a stream, replaying or live.
    pub fn delivered(&self, count: usize, replay: bool) {
        let phase = if replay { "replay" } else { "live" };
        self.deliveries
            .get_or_create(&PhaseLabels { phase })
            .inc_by(count as u64);
    }

    /// A stream's read was answered by the recent tail (`true`) or the database.
    pub fn tail_read(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.tail_reads
            .get_or_create(&ResultLabels { result })
            .inc();
    }
}

/// Reads the open streams' queues at a scrape: `chat_stream_queued_messages` (their sum),
/// `chat_stream_queue_depth_max` (the fullest) and `chat_streams_queue_full` (how many are full:
/// their live pushes wait, and are cut after the stall limit).
#[derive(Debug)]
struct QueueCollector {
    queues: Arc<Mutex<Queues>>,
}

impl Collector for QueueCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (mut queued, mut deepest, mut full) = (0_i64, 0_i64, 0_i64);
        for (depth, capacity) in common::sync::lock(&self.queues)
            .open
            .values()
            .filter_map(|depth| depth())
        {
            queued = queued.saturating_add(i64::try_from(depth).unwrap_or(i64::MAX));
            deepest = deepest.max(i64::try_from(depth).unwrap_or(i64::MAX));
            full += i64::from(depth > 0 && depth >= capacity);
        }
        for (name, help, value) in [
            (
                "chat_stream_queued_messages",
                "Items queued to the open streams of this replica, not yet taken by the transport",
                queued,
            ),
            (
                "chat_stream_queue_depth_max",
                "Items queued to the fullest open stream of this replica",
                deepest,
            ),
            (
                "chat_streams_queue_full",
                "Open streams whose queue is full (their live pushes wait, up to the stall limit)",
                full,
            ),
        ] {
            let gauge = ConstGauge::new(value);
            let metric_encoder =
                encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric_encoder)?;
        }
        Ok(())
    }
}

/// Wake-ups between replicas.
#[derive(Clone, Debug)]
pub struct BusMetrics {
    /// Events published.
    pub published: Counter,
    /// Events received over NOTIFY.
    pub received: Counter,
    /// From a wake-up's publication to this replica hearing it.
    lag: Histogram,
    /// Resyncs of every stream, by cause.
    resyncs: Family<CauseLabels, Counter>,
}

impl Default for BusMetrics {
    fn default() -> Self {
        Self {
            published: Counter::default(),
            received: Counter::default(),
            // 100 µs to about 6.5 s.
            lag: Histogram::new(exponential_buckets(0.000_1, 2.0, 17)),
            resyncs: Family::default(),
        }
    }
}

impl BusMetrics {
    /// A wake-up was heard `lag` after it was published.
    pub fn lagged(&self, lag: std::time::Duration) {
        self.lag.observe(lag.as_secs_f64());
    }

    /// The bus listener (re)connected or lost its connection: what was sent meanwhile is lost.
    pub fn listener_resync(&self) {
        self.resyncs
            .get_or_create(&CauseLabels { cause: "listener" })
            .inc();
    }

    /// The hub's dispatcher fell behind the bus and skipped events.
    pub fn lagged_resync(&self) {
        self.resyncs
            .get_or_create(&CauseLabels { cause: "lagged" })
            .inc();
    }
}

/// The event streams chat follows.
#[derive(Clone, Debug, Default)]
pub struct WatchMetrics {
    connects: Family<EventsLabels, Counter>,
    following: Family<EventsLabels, Gauge>,
}

impl WatchMetrics {
    /// The event stream `events` opened (`true`) or ended (`false`).
    pub fn following(&self, events: &'static str, following: bool) {
        let labels = EventsLabels { events };
        if following {
            self.connects.get_or_create(&labels).inc();
        }
        self.following
            .get_or_create(&labels)
            .set(i64::from(following));
    }
}

/// Lookups of one cache: hits, misses, and bypassed (its event stream is down, so it is not
/// trusted). Clones share the same series.
#[derive(Clone, Debug, Default)]
pub struct Lookups {
    lookups: Family<ResultLabels, Counter>,
}

impl Lookups {
    /// A lookup while the cache is trusted.
    pub fn looked_up(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.lookups.get_or_create(&ResultLabels { result }).inc();
    }

    /// A lookup while the cache is bypassed.
    pub fn bypassed(&self) {
        self.lookups
            .get_or_create(&ResultLabels { result: "bypassed" })
            .inc();
    }

    /// Registers these lookups as `name` (`chat_devices_cache_lookups`, ...).
    pub fn register(&self, registry: &mut Registry, name: &str, help: &str) {
        registry.register(name, help, self.lookups.clone());
    }
}
