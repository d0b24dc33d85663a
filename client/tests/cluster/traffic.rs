//! The pace of the cluster and fault tests' senders (`clients.rs`): [`SEND_INTERVAL`] and
//! [`paced`].

use std::time::Duration;

use tokio::sync::watch;

/// Time between two sends of one sender: well within the gateway's per-user send rate.
pub const SEND_INTERVAL: Duration = Duration::from_millis(100);

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
