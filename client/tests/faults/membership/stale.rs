//! The stale sender: a device that seals by hand for the devices it saw before the change (the
//! client library fetches the current members and reseals after a refusal), and sends each
//! envelope once.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use client::Session;
use proto::chat::v1::{self as pb, chat_service_client::ChatServiceClient};
use tokio::sync::watch;
use tonic::{Code, transport::Channel};

use super::{PROBE_INTERVAL, PROBE_TIMEOUT, STALE_TRUST_BOUND, raw::authorized};
use crate::cluster::Deadline;

/// The device passphrase of every test device (`accounts.rs`).
const DEVICE_PASSPHRASE: &[u8] = b"a separate device passphrase";

/// A device that seals for the devices it saw before the change, by hand, and sends each
/// envelope once.
pub(super) struct StaleSender {
    pub(super) session: Arc<Session>,
    pub(super) keys: e2ee::DeviceKeys,
    pub(super) recipients: Vec<e2ee::RecipientDevice>,
    pub(super) conversation: String,
    pub(super) chat: ChatServiceClient<Channel>,
    pub(super) next: Mutex<e2ee::ChainPosition>,
    pub(super) probes: Mutex<Vec<Probe>>,
}

/// One stale send.
pub(super) struct Probe {
    pub(super) started: Instant,
    pub(super) outcome: Outcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Stored with this sequence.
    Stored(u64),
    /// Refused with this status (as the client library maps it).
    Refused(Code),
    /// No answer within [`PROBE_TIMEOUT`].
    TimedOut,
}

impl StaleSender {
    /// `session`'s device, sealing for every device of alice, bob and carol as auth lists them
    /// now.
    pub(super) async fn start(session: Arc<Session>, conversation: &str, channel: Channel) -> Self {
        let sealed = session.profile().sealed_keys().unwrap().unwrap();
        let keys = client::keystore::open_keys(&sealed, DEVICE_PASSPHRASE).unwrap();
        let mut recipients = Vec::new();
        for username in ["alice", "bob", "carol"] {
            let user = session.user_by_name(username).await.unwrap();
            for device in user.devices {
                let keys = device.keys.unwrap();
                recipients.push(e2ee::RecipientDevice {
                    device_id: device.device_id,
                    encryption_spki: keys.encryption_public_key,
                });
            }
        }
        assert_eq!(recipients.len(), 6, "every device has keys");
        Self {
            session,
            keys,
            recipients,
            conversation: conversation.to_owned(),
            chat: ChatServiceClient::new(channel),
            next: Mutex::new(e2ee::ChainPosition::first(unix_ms())),
            probes: Mutex::default(),
        }
    }

    /// Seals a new message for the old devices and sends it once.
    pub(super) async fn send_once(&self) -> Outcome {
        let started = Instant::now();
        let envelope = self.seal();
        let outcome = match self.session.access_token_for_tests().await {
            Err(error) => Outcome::Refused(error.status_code().unwrap_or(Code::Unknown)),
            Ok(token) => {
                let mut request = authorized(
                    pb::SendMessageRequest {
                        envelope: Some(envelope),
                    },
                    &token,
                );
                request.set_timeout(PROBE_TIMEOUT);
                let mut chat = self.chat.clone();
                let sent = tokio::time::timeout(PROBE_TIMEOUT, chat.send_message(request)).await;
                match sent {
                    Err(_) => Outcome::TimedOut,
                    Ok(Ok(response)) => Outcome::Stored(response.into_inner().sequence),
                    Ok(Err(status)) => match client::Error::from(status).status_code() {
                        Some(Code::DeadlineExceeded | Code::Cancelled) => Outcome::TimedOut,
                        code => Outcome::Refused(code.unwrap_or(Code::Unknown)),
                    },
                }
            }
        };
        self.lock_probes().push(Probe { started, outcome });
        outcome
    }

    pub(super) fn seal(&self) -> pb::Envelope {
        let mut next = self.next.lock().unwrap();
        let sender = e2ee::Sender {
            user_id: &self.session.account().user_id,
            device_id: &self.session.account().device_id,
            keys: &self.keys,
        };
        let id = uuid::Uuid::new_v4().to_string();
        let envelope = e2ee::seal(
            &sender,
            &self.conversation,
            &id,
            &self.recipients,
            &next,
            b"sealed for the old list",
        )
        .unwrap();
        // Refused envelopes leave gaps in the chain; receivers only note them.
        let link = e2ee::sealed_link(&envelope).unwrap();
        *next = e2ee::ChainPosition {
            counter: link.counter + 1,
            previous_envelope_hash: link.envelope_hash,
            sender_time_ms: unix_ms(),
        };
        envelope.into()
    }

    /// Sends until chat stores one (the link is whole: the envelopes are good).
    pub(super) async fn send_until_stored(&self) {
        let deadline = Deadline::after(Duration::from_secs(30), "a stale send stored before");
        while !matches!(self.send_once().await, Outcome::Stored(_)) {
            deadline.tick().await;
        }
    }

    /// Sends every [`PROBE_INTERVAL`] until `stop`.
    pub(super) async fn keep_sending(self: Arc<Self>, stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            self.send_once().await;
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Waits until two sends begun after `departing` in a row were not stored, at most
    /// [`STALE_TRUST_BOUND`] (and the sends' timeout) after it.
    pub(super) async fn wait_until_refusing(&self, departing: Instant) {
        let deadline = Deadline::after(
            STALE_TRUST_BOUND + PROBE_TIMEOUT * 2,
            "chat to refuse sends sealed for the old list",
        );
        loop {
            let refused_in_a_row = self
                .lock_probes()
                .iter()
                .filter(|probe| probe.started > departing)
                .rev()
                .take_while(|probe| !matches!(probe.outcome, Outcome::Stored(_)))
                .count();
            if refused_in_a_row >= 2 {
                return;
            }
            deadline.tick().await;
        }
    }

    /// Waits until a send begun after `healed` is refused with FAILED_PRECONDITION
    /// (DEVICE_LIST_MISMATCH): chat checked the old list against the current one.
    pub(super) async fn wait_until_mismatch_after(&self, healed: Instant) {
        let deadline = Deadline::after(Duration::from_secs(30), "a device-list mismatch");
        while !self.lock_probes().iter().any(|probe| {
            probe.started > healed && probe.outcome == Outcome::Refused(Code::FailedPrecondition)
        }) {
            deadline.tick().await;
        }
    }

    pub(super) fn lock_probes(&self) -> std::sync::MutexGuard<'_, Vec<Probe>> {
        self.probes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

pub(super) fn unix_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}
