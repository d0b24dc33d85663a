//! Suite V2's chains on this device: the position of this device's next envelope in each
//! conversation (`chains.json`), what it has seen of every other device's chain
//! (`received_chains.json`, see [`e2ee::ConversationChains`]), and the budget of decryption
//! failures per sending device.
//!
//! The sending position is reserved when a message is sealed and kept for a reseal of the same
//! message (a retry after a device-list mismatch uses the same counter); a message that is
//! then never stored leaves a gap that its recipients report, which is what happened.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{Result, profile::Profile};

const SENDING: &str = "chains.json";
const RECEIVED: &str = "received_chains.json";

/// Decryption failures (after a verified signature: RSA unwrapping, key commitment, AES-GCM-SIV,
/// padding) allowed per sending device within [`FAILURE_WINDOW`] before its messages are no
/// longer decrypted until the window ends. An honest sender never causes one; a dishonest
/// sender (or, for V1, whose wrapped keys are not signed, the server) choosing RSA ciphertexts
/// for a timing attack (RUSTSEC-2023-0071) needs far more.
pub const MAX_FAILURES_PER_SENDER: u32 = 5;
/// See [`MAX_FAILURES_PER_SENDER`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(3600);

/// This device's chain in one conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendingChain {
    /// The counter of the last envelope sealed.
    pub counter: u64,
    /// Its envelope hash (hex).
    pub last_hash: String,
    /// Its client message id (a reseal of it keeps its position).
    pub last_client_message_id: String,
    /// The previous hash it named (hex), for a reseal.
    pub previous_of_last: String,
}

/// Serialises the read-modify-write of the chain files within this process.
static FILES: Mutex<()> = Mutex::new(());

/// The position of the envelope of `client_message_id` in `conversation_id`: the next one, or
/// the same as before when this message was the last one sealed (a reseal).
///
/// # Errors
/// [`crate::Error::Profile`] when the file cannot be read.
pub(crate) fn next_position(
    profile: &Profile,
    conversation_id: &str,
    client_message_id: &str,
) -> Result<e2ee::ChainPosition> {
    let _guard = FILES.lock().expect("not poisoned");
    let chains: BTreeMap<String, SendingChain> = profile.read_file(SENDING)?.unwrap_or_default();
    let chain = chains.get(conversation_id).cloned().unwrap_or_default();
    let (counter, previous) =
        if chain.counter > 0 && chain.last_client_message_id == client_message_id {
            (chain.counter, chain.previous_of_last)
        } else {
            (chain.counter + 1, chain.last_hash)
        };
    Ok(e2ee::ChainPosition {
        counter,
        previous_envelope_hash: hex::decode(previous)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .unwrap_or([0; 32]),
        sender_time_ms: now_ms(),
    })
}

/// Records that `envelope` (sealed at `position`) is this device's latest in its conversation.
///
/// # Errors
/// [`crate::Error::Profile`] when the file cannot be written; [`crate::Error::Crypto`] if the
/// envelope's hash cannot be computed.
pub(crate) fn record_sealed(
    profile: &Profile,
    position: &e2ee::ChainPosition,
    envelope: &e2ee::Envelope,
) -> Result<()> {
    let link = e2ee::sealed_link(envelope)?;
    let _guard = FILES.lock().expect("not poisoned");
    let mut chains: BTreeMap<String, SendingChain> =
        profile.read_file(SENDING)?.unwrap_or_default();
    chains.insert(
        envelope.conversation_id.clone(),
        SendingChain {
            counter: position.counter,
            last_hash: hex::encode(link.envelope_hash),
            last_client_message_id: envelope.client_message_id.clone(),
            previous_of_last: hex::encode(position.previous_envelope_hash),
        },
    );
    profile.write_file(SENDING, &chains)
}

/// Records a verified V2 envelope of `conversation_id` and returns what is wrong with its
/// chain (see [`e2ee::ConversationChains::observe`]).
///
/// # Errors
/// [`crate::Error::Profile`] when the file cannot be read or written.
pub(crate) fn observe(
    profile: &Profile,
    conversation_id: &str,
    sequence: u64,
    sender_device_id: &str,
    link: &e2ee::ChainLink,
    server_time_ms: u64,
) -> Result<Vec<e2ee::ChainAnomaly>> {
    let _guard = FILES.lock().expect("not poisoned");
    let mut chains: BTreeMap<String, e2ee::ConversationChains> =
        profile.read_file(RECEIVED)?.unwrap_or_default();
    let anomalies = chains
        .entry(conversation_id.to_owned())
        .or_default()
        .observe(sequence, sender_device_id, link, server_time_ms);
    profile.write_file(RECEIVED, &chains)?;
    Ok(anomalies)
}

/// Decryption failures by (this device, sending device), in this process.
#[derive(Debug, Default)]
pub(crate) struct FailureBudget(Mutex<HashMap<String, (u32, Instant)>>);

/// The budget of this process (keys name the receiving device too).
pub(crate) static FAILURES: std::sync::LazyLock<FailureBudget> =
    std::sync::LazyLock::new(FailureBudget::default);

impl FailureBudget {
    /// Whether messages from `sender` may still be decrypted.
    pub(crate) fn allows(&self, sender: &str) -> bool {
        let failures = self.0.lock().expect("not poisoned");
        failures.get(sender).is_none_or(|(count, since)| {
            *count < MAX_FAILURES_PER_SENDER || since.elapsed() >= FAILURE_WINDOW
        })
    }

    /// Counts a failed decryption of a message from `sender`.
    pub(crate) fn record_failure(&self, sender: &str) {
        let mut failures = self.0.lock().expect("not poisoned");
        let entry = failures
            .entry(sender.to_owned())
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

/// One anomaly as a line for people.
#[must_use]
pub fn describe(anomaly: &e2ee::ChainAnomaly) -> String {
    use e2ee::ChainAnomaly::*;
    match *anomaly {
        Gap { first, last } if first == last => {
            format!("message {first} of this sender's device never arrived (dropped or withheld)")
        }
        Gap { first, last } => format!(
            "messages {first} to {last} of this sender's device never arrived (dropped or withheld)"
        ),
        Fork { counter } => format!(
            "this sender's device shows two different histories at its message {counter} (a fork)"
        ),
        Late { counter } => format!("message {counter} of this sender's device arrived late"),
        TimeAhead { ms } => format!("sealed {} s ahead of the server's time", ms / 1000),
        TimeDelayed { ms } => format!("stored {} h after it was sealed", ms / 3_600_000),
        TimeBackwards { ms } => format!(
            "sealed {} s before this device's previous message",
            ms / 1000
        ),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_is_cut_off_after_its_failure_budget_and_others_are_not() {
        let budget = FailureBudget::default();

        for _ in 0..MAX_FAILURES_PER_SENDER {
            assert!(budget.allows("mallory"));
            budget.record_failure("mallory");
        }

        assert!(!budget.allows("mallory"));
        assert!(budget.allows("alice"));
    }
}
