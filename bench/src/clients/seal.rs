//! Sealing envelopes before they are timed, on every CPU: real `e2ee` envelopes, a fresh content
//! key each, wrapped with RSA-OAEP for every recipient device.

use std::{collections::VecDeque, sync::Arc};

use proto::chat::v1 as chat_pb;
use tokio::sync::oneshot;

use super::setup::SendingDevice;

/// Plaintext size of every message (a short chat line).
pub(crate) const MESSAGE_BYTES: usize = 200;

/// Who sends what where: one sender, one conversation, its recipients.
pub(crate) struct Route {
    pub sender: Arc<SendingDevice>,
    pub conversation_id: String,
    pub recipients: Arc<Vec<e2ee::RecipientDevice>>,
}

/// A sealed envelope and the client message id it carries.
pub(crate) struct Sealed {
    pub client_message_id: String,
    pub envelope: chat_pb::Envelope,
}

/// Seals `per_route[i]` envelopes for each `routes[i]`, with client message ids
/// `<tag>-<i>-<n>`, splitting the work over `workers` threads per route. Returns one queue per
/// route.
pub(crate) async fn seal_all(
    routes: &[Arc<Route>],
    per_route: &[usize],
    tag: &str,
    workers: usize,
) -> anyhow::Result<Vec<VecDeque<Sealed>>> {
    // Split each route's count into pieces, so that one big group does not run on one thread.
    let mut pieces = Vec::new();
    for (route_index, (route, count)) in routes.iter().zip(per_route).enumerate() {
        let piece = count.div_ceil(workers.max(1)).max(1);
        let mut start = 0;
        while start < *count {
            let end = (start + piece).min(*count);
            pieces.push((route_index, route.clone(), start..end));
            start = end;
        }
    }
    // Named threads of their own, joined before anything is timed: `cpu.rs` adds up threads by
    // name, and blocking-pool threads that exit later, named like the bench's runtime workers,
    // would take their sealing time with them and hide the stream readers' time.
    let mut sealing = Vec::with_capacity(pieces.len());
    for (route_index, route, range) in pieces {
        let tag = tag.to_owned();
        let (sealed_tx, sealed_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("sealer".to_owned())
            .spawn(move || {
                let _ = sealed_tx.send(seal_range(&route, route_index, range, &tag));
            })?;
        sealing.push(sealed_rx);
    }
    let mut pieces_done: Vec<Vec<(usize, Vec<Sealed>)>> =
        (0..routes.len()).map(|_| Vec::new()).collect();
    for sealed_rx in sealing {
        let (route_index, start, sealed) = sealed_rx.await??;
        pieces_done[route_index].push((start, sealed));
    }
    Ok(pieces_done
        .into_iter()
        .map(|mut pieces| {
            pieces.sort_by_key(|(start, _)| *start);
            pieces.into_iter().flat_map(|(_, sealed)| sealed).collect()
        })
        .collect())
}

/// Seals the envelopes `range` of `route`; returns them with the route's index and the start.
fn seal_range(
    route: &Route,
    route_index: usize,
    range: std::ops::Range<usize>,
    tag: &str,
) -> anyhow::Result<(usize, usize, Vec<Sealed>)> {
    let start = range.start;
    let sender = e2ee::Sender {
        user_id: &route.sender.identity.user_id,
        device_id: &route.sender.identity.device_id,
        keys: &route.sender.keys,
    };
    let plaintext = vec![b'x'; MESSAGE_BYTES];
    let mut sealed = Vec::with_capacity(range.len());
    for n in range {
        let client_message_id = format!("{tag}-{route_index}-{n}");
        let envelope = e2ee::seal(
            &sender,
            &route.conversation_id,
            &client_message_id,
            &route.recipients,
            // The server does not follow chains: each envelope may be a first one.
            &e2ee::ChainPosition::first(0),
            &plaintext,
        )?;
        sealed.push(Sealed {
            client_message_id,
            envelope: envelope.into(),
        });
    }
    Ok((route_index, start, sealed))
}
