//! Following the group service's membership events (`group.internal.v1`
//! `WatchMembershipEvents`, with the deployment's service credential): each event drops its
//! group from the membership cache (`groups.rs`) and reaches the group's open streams
//! (`hub.rs`), so clients refetch recipients and a removed member stops receiving at once.
//!
//! One task per replica. While it follows, the cache is trusted; when the stream ends or cannot
//! be opened, the cache is emptied and bypassed (every check asks group) until it follows again.
//! It resumes after the last event seen, so open streams get the changes they missed late
//! rather than never; without a position (first start, or fallen out of the group service's
//! retention) it starts at the newest event, and streams learn what they missed when they
//! reconnect.

use std::{sync::Arc, time::Duration};

use common::service_credential::ServiceCredential;
use proto::group::internal::v1 as group_pb;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, transport::Channel};
use uuid::Uuid;

use crate::{
    groups::MembersCache,
    hub::{ChangeKind, Hub, MembershipChange},
    ids::{ConversationId, UserId},
};

/// First pause before reconnecting; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause before reconnecting: also the longest the cache stays bypassed once group is
/// back.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The task that follows membership events.
pub struct Follower {
    /// The group service.
    pub channel: Channel,
    /// What WatchMembershipEvents requires.
    pub credential: ServiceCredential,
    /// Kept right by the events.
    pub cache: Arc<MembersCache>,
    /// Told about every change.
    pub hub: Arc<Hub>,
}

impl Follower {
    /// Follows events until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        tokio::select! {
            () = self.follow() => {}
            () = stop.cancelled() => {}
        }
        self.cache.set_following(false);
    }

    async fn follow(&self) {
        let mut last_event: Option<u64> = None;
        let mut backoff = MIN_BACKOFF;
        let mut was_following = true; // log the first failure loudly
        loop {
            match self.follow_once(&mut last_event).await {
                Ok(()) => {
                    backoff = MIN_BACKOFF;
                    was_following = true;
                    tracing::info!("membership events ended; reconnecting");
                }
                Err(status) => {
                    if status.code() == Code::OutOfRange {
                        last_event = None;
                    }
                    if was_following {
                        tracing::warn!(%status, "cannot follow membership events; group membership is not cached until then");
                    } else {
                        tracing::debug!(%status, "cannot follow membership events");
                    }
                    was_following = false;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One event stream, from `last_event` on, until it ends (`Ok`) or fails.
    async fn follow_once(&self, last_event: &mut Option<u64>) -> Result<(), tonic::Status> {
        let mut client = group_pb::group_internal_service_client::GroupInternalServiceClient::new(
            self.channel.clone(),
        );
        let request = group_pb::WatchMembershipEventsRequest {
            after_event_id: last_event.unwrap_or(0),
            start_at_newest: last_event.is_none(),
        };
        let mut events = client
            .watch_membership_events(self.credential.attach(Request::new(request)))
            .await?
            .into_inner();
        self.cache.set_following(true);
        let result = loop {
            match events.message().await {
                Ok(Some(event)) => {
                    *last_event = Some(event.event_id);
                    match change_from(&event) {
                        Some(change) => {
                            self.cache.invalidate(change.group);
                            self.hub.membership_changed(change);
                        }
                        None => tracing::warn!(
                            event_id = event.event_id,
                            "ignoring a malformed membership event"
                        ),
                    }
                }
                Ok(None) => break Ok(()),
                Err(status) => break Err(status),
            }
        };
        self.cache.set_following(false);
        result
    }
}

/// The change an event describes, `None` if it is malformed.
fn change_from(event: &group_pb::WatchMembershipEventsResponse) -> Option<MembershipChange> {
    let kind = match group_pb::MembershipEventKind::try_from(event.kind).ok()? {
        group_pb::MembershipEventKind::MemberAdded => ChangeKind::MemberAdded,
        group_pb::MembershipEventKind::MemberRemoved => ChangeKind::MemberRemoved,
        group_pb::MembershipEventKind::RoleChanged => ChangeKind::RoleChanged,
        group_pb::MembershipEventKind::GroupRenamed => ChangeKind::GroupRenamed,
        group_pb::MembershipEventKind::GroupDeleted => ChangeKind::GroupDeleted,
        group_pb::MembershipEventKind::Unspecified => return None,
    };
    let user = match event.user_id.as_str() {
        "" => None,
        id => Some(UserId(Uuid::try_parse(id).ok()?)),
    };
    if user.is_none()
        && matches!(
            kind,
            ChangeKind::MemberAdded | ChangeKind::MemberRemoved | ChangeKind::RoleChanged
        )
    {
        return None;
    }
    Some(MembershipChange {
        group: ConversationId(Uuid::try_parse(&event.group_id).ok()?),
        kind,
        user,
        version: event.membership_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        kind: group_pb::MembershipEventKind,
        user_id: &str,
    ) -> group_pb::WatchMembershipEventsResponse {
        group_pb::WatchMembershipEventsResponse {
            event_id: 7,
            group_id: "0190f3c2-0000-7000-8000-000000000001".to_owned(),
            kind: kind.into(),
            user_id: user_id.to_owned(),
            role: 0,
            membership_version: 3,
        }
    }

    #[test]
    fn well_formed_events_become_changes() {
        let user = "0190f3c2-0000-7000-8000-000000000002";
        let added = change_from(&event(group_pb::MembershipEventKind::MemberAdded, user)).unwrap();
        assert_eq!(added.kind, ChangeKind::MemberAdded);
        assert_eq!(added.user.unwrap().to_string(), user);
        assert_eq!(added.version, 3);
        let renamed = change_from(&event(group_pb::MembershipEventKind::GroupRenamed, "")).unwrap();
        assert_eq!(renamed.user, None);
    }

    #[test]
    fn malformed_events_are_refused() {
        assert!(change_from(&event(group_pb::MembershipEventKind::Unspecified, "")).is_none());
        assert!(change_from(&event(group_pb::MembershipEventKind::MemberRemoved, "")).is_none());
        assert!(
            change_from(&event(
                group_pb::MembershipEventKind::MemberAdded,
                "not-a-uuid"
            ))
            .is_none()
        );
        let mut bad_group = event(group_pb::MembershipEventKind::GroupDeleted, "");
        bad_group.group_id = "x".to_owned();
        assert!(change_from(&bad_group).is_none());
    }
}
