//! Following auth's device changes (`auth.internal.v1` `WatchDeviceChanges`, with the
//! deployment's service credential; see `watch.rs`): each change drops its user from the device
//! cache (`devices.rs`) at once, then reaches the open streams that may send to that user (their
//! own, their direct peers' and their groups' members') as `DevicesChanged`, so clients refetch
//! keys before their next send instead of after a refused one.

use std::sync::Arc;

use common::service_credential::ServiceCredential;
use proto::{auth::internal::v1 as auth_pb, group::internal::v1 as group_pb};
use sqlx::PgPool;
use tonic::{Request, transport::Channel};
use uuid::Uuid;

use crate::{
    Error,
    delivery::hub::Hub,
    ids::{ConversationId, UserId},
    membership::{devices::DevicesCache, watch::EventSource},
};

/// Device changes, applied to the cache and the hub.
pub struct DeviceEvents {
    /// The auth service.
    pub auth: Channel,
    /// The group service, asked for the changed user's groups.
    pub group: Channel,
    /// What WatchDeviceChanges (and ListUserGroups, for no user) require.
    pub credential: ServiceCredential,
    /// Kept right by the events.
    pub cache: Arc<DevicesCache>,
    /// Told about every change.
    pub hub: Arc<Hub>,
    /// For the changed user's direct peers.
    pub db: PgPool,
}

impl EventSource for DeviceEvents {
    type Event = auth_pb::WatchDeviceChangesResponse;
    const NAME: &'static str = "device changes";
    const LABEL: &'static str = "devices";

    async fn open(
        &self,
        after: Option<u64>,
    ) -> Result<tonic::Streaming<Self::Event>, tonic::Status> {
        let mut client = auth_pb::auth_internal_service_client::AuthInternalServiceClient::new(
            self.auth.clone(),
        );
        let request = auth_pb::WatchDeviceChangesRequest {
            after_event_id: after.unwrap_or(0),
            start_at_newest: after.is_none(),
            heartbeats: true,
        };
        let response = client
            .watch_device_changes(self.credential.attach(Request::new(request)))
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
        let Ok(user) = Uuid::try_parse(&event.user_id).map(UserId) else {
            tracing::warn!(
                event_id = event.event_id,
                "ignoring a malformed device change"
            );
            return;
        };
        self.cache.invalidate(user);
        // Telling streams needs the user's peers and groups: off the event loop, so the next
        // change invalidates the cache without waiting. The notice is a hint; sends stay exact.
        let notify = Notice {
            group: self.group.clone(),
            credential: self.credential.clone(),
            hub: self.hub.clone(),
            db: self.db.clone(),
        };
        tokio::spawn(async move {
            if let Err(error) = notify.send(user).await {
                tracing::warn!(%error, "cannot tell streams about a device change");
            }
        });
    }

    fn set_following(&self, following: bool) {
        self.cache.set_following(following);
    }
}

/// What telling the streams about one change needs.
struct Notice {
    group: Channel,
    credential: ServiceCredential,
    hub: Arc<Hub>,
    db: PgPool,
}

impl Notice {
    async fn send(&self, user: UserId) -> Result<(), Error> {
        let peers: Vec<Uuid> = sqlx::query_scalar(
            "select other.user_id
             from chat.conversation_participants mine
             join chat.conversations c on c.id = mine.conversation_id and c.kind = 'direct'
             join chat.conversation_participants other
               on other.conversation_id = mine.conversation_id and other.user_id <> mine.user_id
             where mine.user_id = $1",
        )
        .bind(user.0)
        .fetch_all(&self.db)
        .await?;
        let mut client = group_pb::group_internal_service_client::GroupInternalServiceClient::new(
            self.group.clone(),
        );
        let request = group_pb::ListUserGroupsRequest {
            user_id: user.to_string(),
        };
        let groups = client
            .list_user_groups(self.credential.attach(Request::new(request)))
            .await
            .map_err(Error::Group)?
            .into_inner()
            .group_ids
            .iter()
            .filter_map(|id| Uuid::try_parse(id).ok().map(ConversationId))
            .collect::<Vec<_>>();
        let peers: Vec<UserId> = peers.into_iter().map(UserId).collect();
        self.hub.devices_changed(user, &peers, &groups);
        Ok(())
    }
}
