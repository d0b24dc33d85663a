//! The database pool's gauges, read from the pool at each scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use sqlx::PgPool;

/// Registers the gauges of `pool` into `registry`:
///
/// - `db_pool_connections`: connections open (idle or in use).
/// - `db_pool_connections_idle`: open connections waiting in the pool.
/// - `db_pool_connections_in_use`: connections checked out by the service.
/// - `db_pool_max_connections`: the pool's bound (`<SERVICE>_DATABASE_MAX_CONNECTIONS`).
///
/// In use at the bound means callers are (or will soon be) waiting to acquire one.
pub fn register_pool(registry: &mut Registry, pool: PgPool) {
    registry.register_collector(Box::new(PoolCollector { pool }));
}

#[derive(Debug)]
struct PoolCollector {
    pool: PgPool,
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
        Ok(())
    }
}
