//! The database pool's gauges, read from the pool at each scrape, and its acquire time, sampled.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use sqlx::PgPool;

/// How often the acquire probe takes a connection from the pool.
pub const ACQUIRE_PROBE_PERIOD: Duration = Duration::from_secs(1);

/// Registers the gauges of `pool` into `registry`:
///
/// - `db_pool_connections`: connections open (idle or in use).
/// - `db_pool_connections_idle`: open connections waiting in the pool.
/// - `db_pool_connections_in_use`: connections checked out by the service.
/// - `db_pool_max_connections`: the pool's bound (`<SERVICE>_DATABASE_MAX_CONNECTIONS`).
/// - `db_pool_acquire_seconds`: how long a caller waits for a connection, sampled.
///
/// In use at the bound means callers are (or will soon be) waiting to acquire one.
///
/// sqlx reports neither its waiters nor its callers' acquire times (only a log line past a
/// threshold, which does not say which pool). Timing every acquisition would mean wrapping every
/// query of every service, so instead a probe task takes a connection every
/// [`ACQUIRE_PROBE_PERIOD`] and gives it straight back, timing the wait: what a caller arriving
/// at that moment would wait (a timeout counts as the time it took, about the acquire timeout).
/// The probe (spawned here, so call this inside a Tokio runtime; outside one there is no probe)
/// ends when `registry` is dropped or the pool is closed. It keeps one connection warm, and
/// while the pool is saturated it is one more caller waiting once a second.
pub fn register_pool(registry: &mut Registry, pool: PgPool) {
    // 100 µs to about 6.5 s: past the 5 s acquire timeout (`common::db::connect_lazy`).
    let acquire = Arc::new(Histogram::new(exponential_buckets(0.000_1, 2.0, 17)));
    spawn_acquire_probe(pool.clone(), Arc::downgrade(&acquire));
    registry.register_collector(Box::new(PoolCollector { pool, acquire }));
}

fn spawn_acquire_probe(pool: PgPool, acquire: Weak<Histogram>) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(ACQUIRE_PROBE_PERIOD);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            // The registry is gone (the server stopped): so is the probe.
            let Some(acquire) = acquire.upgrade() else {
                return;
            };
            if pool.is_closed() {
                return;
            }
            let started = Instant::now();
            let connection = pool.acquire().await;
            acquire.observe(started.elapsed().as_secs_f64());
            if let Err(sqlx::Error::PoolClosed) = connection {
                return;
            }
        }
    });
}

#[derive(Debug)]
struct PoolCollector {
    pool: PgPool,
    acquire: Arc<Histogram>,
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let size = i64::from(self.pool.size());
        // `num_idle` and `size` are read one after the other: clamp, never report a negative.
        let idle = i64::try_from(self.pool.num_idle())
            .unwrap_or(i64::MAX)
            .min(size);
        let max = i64::from(self.pool.options().get_max_connections());
        for (name, help, value) in [
            ("db_pool_connections", "Database connections open", size),
            (
                "db_pool_connections_idle",
                "Open database connections idle in the pool",
                idle,
            ),
            (
                "db_pool_connections_in_use",
                "Database connections checked out of the pool",
                size - idle,
            ),
            (
                "db_pool_max_connections",
                "The bound on the pool's connections",
                max,
            ),
        ] {
            let gauge = ConstGauge::new(value);
            let metric_encoder =
                encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric_encoder)?;
        }
        let metric_encoder = encoder.encode_descriptor(
            "db_pool_acquire",
            "Time to acquire a database connection, sampled by a probe once a second",
            Some(&Unit::Seconds),
            self.acquire.metric_type(),
        )?;
        self.acquire.encode(metric_encoder)?;
        Ok(())
    }
}
