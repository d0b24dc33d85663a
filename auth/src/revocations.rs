//! Auth's own revocation list. Auth validates access tokens too (Logout, ListDevices,
//! LookupUsers, GetActiveDevices...), with the same `token::Revocations` as every other validator:
//! fed at once by this replica's revocations ([`crate::state::State::revoked`]) and, for every
//! replica's, from the `auth.device_events` outbox in process (`follow`), as `WatchRevocations`
//! feeds the gateway, chat and group.

use std::{sync::Arc, time::Duration};

use common::outbox::{Feed, FeedError, FeedItem, Start};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::devices::{self, DeviceEvent};

/// Pause before following the outbox again after it failed.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Longest wait, at start, for the list to catch up before serving anyway (authenticated calls
/// answer UNAVAILABLE until it has).
const START_WAIT: Duration = Duration::from_secs(5);

/// Keeps `list` current from `feed` until `stop` fires.
pub async fn follow(
    db: PgPool,
    feed: Arc<Feed<DeviceEvent>>,
    list: Arc<token::Revocations>,
    stop: CancellationToken,
) {
    tokio::select! {
        () = follow_forever(&db, &feed, &list) => {}
        () = stop.cancelled() => {}
    }
}

/// Waits until `list` has caught up once, for at most [`START_WAIT`].
pub async fn wait_until_caught_up(list: &token::Revocations) {
    let wait = async {
        while !list.has_caught_up() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(START_WAIT, wait).await.is_err() {
        tracing::warn!(
            "revocations not read yet: authenticated calls answer UNAVAILABLE until then"
        );
    }
}

async fn follow_forever(db: &PgPool, feed: &Arc<Feed<DeviceEvent>>, list: &token::Revocations) {
    let mut cursor: u64 = 0;
    loop {
        if cursor == 0 {
            // Revocations older than a token's longest life refuse nothing: skip them.
            match devices::recent_revocations_start(db, list.retention()).await {
                Ok(start) => cursor = start,
                Err(error) => tracing::warn!(%error, "cannot find the recent revocations"),
            }
        }
        let error = match feed.follow_with_progress(Start::After(cursor)).await {
            Ok(mut items) => loop {
                match items.recv().await {
                    Some(Ok(FeedItem::Event(event))) => {
                        if let Some(revocation) = event.revocation() {
                            list.revoke(revocation);
                        }
                        cursor = u64::try_from(event.id).unwrap_or_default();
                    }
                    Some(Ok(FeedItem::CaughtUp(at))) => {
                        list.caught_up();
                        cursor = u64::try_from(at).unwrap_or_default();
                    }
                    Some(Err(error)) => break error,
                    None => break FeedError::ShuttingDown,
                }
            },
            Err(error) => error,
        };
        if matches!(error, FeedError::CursorOutOfRange(_)) {
            // Kept far longer than a token lives: restarting from the oldest loses nothing.
            cursor = 0;
        }
        tracing::warn!(%error, "following revocations failed; retrying");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}
