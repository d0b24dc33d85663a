//! group's own metrics (besides the gRPC and database pool metrics every service has,
//! `common::metrics`): operations by outcome and membership events written. `docs/metrics.md`
//! lists them.

use common::outbox::FeedMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::Error;

/// group's metric families; clones share the same series.
#[derive(Clone, Debug, Default)]
pub struct GroupMetrics {
    operations: Family<OperationLabels, Counter>,
    events_written: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
    outcome: &'static str,
}

impl GroupMetrics {
    /// Adds the families to `registry`, with what the membership-event feed counts.
    pub fn register(&self, registry: &mut Registry, feed: &FeedMetrics) {
        feed.register(
            registry,
            "group_membership_events",
            "Membership events (WatchMembershipEvents)",
        );
        registry.register(
            "group_operations",
            "Group changes run, by operation and outcome (ok, refused, error)",
            self.operations.clone(),
        );
        registry.register(
            "group_membership_events_written",
            "Membership events committed to the outbox (WatchMembershipEvents streams them)",
            self.events_written.clone(),
        );
    }

    /// Counts `operation` (`create_group`, `add_members`, ...) by the outcome of `result`, which it
    /// returns: `refused` for what the caller asked wrong (invalid, not found, not allowed, over a
    /// limit, last owner), `error` when the database or auth failed.
    pub fn operation<T>(
        &self,
        operation: &'static str,
        result: Result<T, Error>,
    ) -> Result<T, Error> {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Error::Db(_) | Error::Auth(_) | Error::Feed(_)) => "error",
            Err(_) => "refused",
        };
        self.operations
            .get_or_create(&OperationLabels { operation, outcome })
            .inc();
        result
    }

    /// Counts `count` membership events whose transaction committed.
    pub fn events_written(&self, count: usize) {
        self.events_written.inc_by(count as u64);
    }
}
