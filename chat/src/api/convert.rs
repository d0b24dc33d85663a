//! Domain -> proto conversions for `handlers.rs`.

use proto::chat::v1 as pb;

use super::codec::{EventResponse as _, StreamItem};
use crate::{
    delivery::{
        hub::{ChangeKind, Ephemeral, MembershipChange},
        stream::{Outgoing, SendAnswer},
        wire::timestamp,
    },
    error::send_rejected,
    message::{Committed, DeliveredForwardedKey},
    store::conversations::Conversation,
};

pub(super) fn send_response(committed: Committed) -> pb::SendMessageResponse {
    pb::SendMessageResponse {
        message_id: committed.message_id.to_string(),
        sequence: committed.sequence,
        sent_at: Some(timestamp(committed.sent_at)),
        duplicate: committed.duplicate,
    }
}

pub(super) fn forwarded_key_pb(key: DeliveredForwardedKey, message_id: &str) -> pb::ForwardedKey {
    pb::ForwardedKey {
        message_id: message_id.to_owned(),
        recipient_device_id: key.recipient.to_string(),
        recipient_key_fingerprint: key.recipient_key_fingerprint,
        wrapped_key: key.wrapped_key,
        signature: key.signature,
        forwarder_device_id: key.forwarder_device.to_string(),
        forwarder_user_id: key.forwarder_user.to_string(),
        forwarded_at: Some(timestamp(key.forwarded_at)),
    }
}

pub(super) fn conversation_pb(conversation: Conversation) -> pb::Conversation {
    let kind = if conversation.group_id.is_some() {
        pb::ConversationKind::Group
    } else {
        pb::ConversationKind::Direct
    };
    pb::Conversation {
        conversation_id: conversation.id.to_string(),
        kind: kind as i32,
        peer_user_id: conversation
            .peer_user_id
            .map(|user| user.to_string())
            .unwrap_or_default(),
        group_id: conversation
            .group_id
            .map(|group| group.to_string())
            .unwrap_or_default(),
        last_sequence: conversation.last_sequence,
        read_sequence: conversation.read_sequence,
        unread_count: conversation.unread_count,
        last_message_at: conversation.last_message_at.map(timestamp),
        created_at: Some(timestamp(conversation.created_at)),
    }
}

/// An OpenStream item: a message goes from its shared encoding, anything else through prost.
pub(super) fn open_stream_item(outgoing: Outgoing) -> StreamItem<pb::OpenStreamResponse> {
    match outgoing {
        Outgoing::Message(message) => StreamItem::Message(message),
        other => StreamItem::Other(pb::OpenStreamResponse {
            response: Some(stream_response_pb(other)),
        }),
    }
}

/// A Subscribe item, or none for what only OpenStream carries (answers to sends).
pub(super) fn subscribe_item(outgoing: Outgoing) -> Option<StreamItem<pb::SubscribeResponse>> {
    match outgoing {
        Outgoing::Message(message) => Some(StreamItem::Message(message)),
        other => match stream_response_pb(other) {
            pb::open_stream_response::Response::Event(event) => {
                Some(StreamItem::Other(pb::SubscribeResponse::event(event)))
            }
            _ => None,
        },
    }
}

fn stream_response_pb(outgoing: Outgoing) -> pb::open_stream_response::Response {
    use pb::{open_stream_response::Response, stream_event::Event};
    let event = match outgoing {
        Outgoing::Message(message) => Event::Message(message.to_pb()),
        Outgoing::Ephemeral(event) => ephemeral_pb(*event),
        Outgoing::Heartbeat(at) => Event::Heartbeat(pb::Heartbeat {
            server_time: Some(timestamp(at)),
        }),
        Outgoing::CaughtUp => Event::CaughtUp(pb::CaughtUp {}),
        Outgoing::SendAnswer(answer) => {
            let SendAnswer {
                request_id,
                outcome,
            } = *answer;
            return match outcome {
                Ok(committed) => Response::SendResult(pb::SendResult {
                    request_id,
                    result: Some(send_response(committed)),
                }),
                Err(error) => Response::SendRejected(send_rejected(request_id, error)),
            };
        }
    };
    Response::Event(pb::StreamEvent { event: Some(event) })
}

fn ephemeral_pb(event: Ephemeral) -> pb::stream_event::Event {
    use pb::stream_event::Event;
    match event {
        Ephemeral::Receipt(receipt) => Event::Receipt(pb::Receipt {
            conversation_id: receipt.conversation.to_string(),
            user_id: receipt.user.to_string(),
            device_id: receipt.device.to_string(),
            delivered_sequence: receipt.delivered,
            read_sequence: receipt.read,
        }),
        Ephemeral::Typing(typing) => Event::Typing(pb::TypingIndicator {
            conversation_id: typing.conversation.to_string(),
            user_id: typing.user.to_string(),
            device_id: typing.device.to_string(),
        }),
        Ephemeral::Membership(change) => Event::MembershipChange(membership_change_pb(change)),
        Ephemeral::DevicesChanged(user) => Event::DevicesChanged(pb::DevicesChanged {
            user_id: user.to_string(),
        }),
        Ephemeral::KeysForwarded {
            conversation,
            count,
        } => Event::KeysForwarded(pb::KeysForwarded {
            conversation_id: conversation.to_string(),
            message_count: count,
        }),
    }
}

fn membership_change_pb(change: MembershipChange) -> pb::MembershipChange {
    let kind = match change.kind {
        ChangeKind::MemberAdded => pb::MembershipChangeKind::MemberAdded,
        ChangeKind::MemberRemoved => pb::MembershipChangeKind::MemberRemoved,
        ChangeKind::RoleChanged => pb::MembershipChangeKind::RoleChanged,
        ChangeKind::GroupRenamed => pb::MembershipChangeKind::GroupRenamed,
        ChangeKind::GroupDeleted => pb::MembershipChangeKind::GroupDeleted,
    };
    pb::MembershipChange {
        group_id: change.group.to_string(),
        kind: kind.into(),
        user_id: change.user.map(|user| user.to_string()).unwrap_or_default(),
        membership_version: change.version,
    }
}
