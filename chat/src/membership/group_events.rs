//! Following the group service's membership events (`group.internal.v1`
//! `WatchMembershipEvents`, with the deployment's service credential; see `watch.rs`): each
//! event drops its group from the membership cache (`groups.rs`) and reaches the group's open
//! streams (`hub.rs`), so clients refetch recipients and a removed member stops receiving at
//! once.

use std::sync::Arc;

use common::service_credential::ServiceCredential;
use proto::group::internal::v1 as group_pb;
use tonic::{Request, transport::Channel};
use uuid::Uuid;

use crate::{
    delivery::hub::{ChangeKind, Hub, MembershipChange},
    ids::{ConversationId, UserId},
    membership::{
        groups::{MembersCache, UserGroupsCache},
        watch::EventSource,
    },
};

/// Membership events, applied to the cache and the hub.
pub struct MembershipEvents {
    /// The group service.
    pub channel: Channel,
    /// What WatchMembershipEvents requires.
    pub credential: ServiceCredential,
    /// Kept right by the events.
    pub cache: Arc<MembersCache>,
    /// Each user's groups, kept right by the events.
    pub user_groups: Arc<UserGroupsCache>,
    /// Told about every change.
    pub hub: Arc<Hub>,
}

impl EventSource for MembershipEvents {
    type Event = group_pb::WatchMembershipEventsResponse;
    const NAME: &'static str = "membership events";
    const LABEL: &'static str = "membership";

    async fn open(
        &self,
        after: Option<u64>,
    ) -> Result<tonic::Streaming<Self::Event>, tonic::Status> {
        let mut client = group_pb::group_internal_service_client::GroupInternalServiceClient::new(
            self.channel.clone(),
        );
        let request = group_pb::WatchMembershipEventsRequest {
            after_event_id: after.unwrap_or(0),
            start_at_newest: after.is_none(),
            heartbeats: true,
        };
        let response = client
            .watch_membership_events(self.credential.attach(Request::new(request)))
            .await?;
        Ok(response.into_inner())
    }

    fn event_id(event: &Self::Event) -> u64 {
        event.event_id
    }

    fn is_heartbeat(event: &Self::Event) -> bool {
        event.heartbeat
    }

    fn apply(&self, event: Self::Event) {
        match change_from(&event) {
            Some(change) => {
                self.cache.invalidate(change.group);
                match change.user {
                    Some(user) => self.user_groups.invalidate(user),
                    // Deleted: every member's list changes (renamed: none does).
                    None if change.kind == ChangeKind::GroupDeleted => {
                        self.user_groups.invalidate_all();
                    }
                    None => {}
                }
                self.hub.membership_changed(change);
            }
            None => tracing::warn!(
                event_id = event.event_id,
                "ignoring a malformed membership event"
            ),
        }
    }

    fn set_following(&self, following: bool) {
        self.cache.set_following(following);
        self.user_groups.set_following(following);
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
            heartbeat: false,
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
