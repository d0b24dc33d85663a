//! Suite V2's chains on this device: the position of this device's next envelope in each
//! conversation (`chains.json`), what it has seen of every other device's chain
//! (`received_chains.json`, see [`e2ee::ConversationChains`]), and the budget of decryption
//! failures per sending device (`decryption_failures.json`).
//!
//! The sending position is reserved when a message is sealed and kept for a reseal of the same
//! message (a retry after a device-list mismatch uses the same counter); a message that is
//! then never stored leaves a gap that its recipients report, which is what happened. A device
//! sends one message at a time ([`SendingTurn`]): two sends at once would otherwise take one
//! counter (a fork at every recipient) or reach the server out of their counters' order (a
//! gap, then a late arrival).

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{Result, profile::Profile};

const SENDING: &str = "chains.json";
const RECEIVED: &str = "received_chains.json";
const FAILURES: &str = "decryption_failures.json";

/// Decryption failures (after a verified signature: RSA unwrapping, key commitment, AES-GCM-SIV,
/// padding) allowed per sending device within [`FAILURE_WINDOW`] before its messages are no
/// longer decrypted until the window ends. An honest sender never causes one; a dishonest
/// sender (or, for V1, whose wrapped keys are not signed, the server) choosing RSA ciphertexts
/// for a timing attack (RUSTSEC-2023-0071) needs far more.
pub const MAX_FAILURES_PER_SENDER: u32 = 5;
/// See [`MAX_FAILURES_PER_SENDER`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(3600);

/// The lock file of [`SendingTurn`].
const SENDING_LOCK: &str = "sending.lock";
/// How long a send waits for its turn before giving up (another send of this device, in this
/// process or another, is waiting for the server that long).
pub const SENDING_TURN_TIMEOUT: Duration = Duration::from_secs(30);
const SENDING_TURN_POLL: Duration = Duration::from_millis(10);

/// This device's turn to send, held from sealing a message until the server stored it (or
/// refused it for good): an exclusive `flock` on `sending.lock` in the profile, which every
/// send of the device takes, in this process or another (two `chat send` of one profile take
/// turns). Released on drop, and by the kernel when the process ends.
#[derive(Debug)]
pub struct SendingTurn {
    _lock: std::fs::File,
}

/// Waits (up to [`SENDING_TURN_TIMEOUT`]) for this device's turn to send.
///
/// # Errors
/// [`crate::Error::Profile`] when the lock file cannot be opened or locked;
/// [`crate::Error::Unavailable`] when another send keeps the turn for too long.
pub(crate) async fn sending_turn(profile: &Profile) -> Result<SendingTurn> {
    use std::os::unix::fs::OpenOptionsExt;
    let profile_error =
        |error: std::io::Error| crate::Error::Profile(format!("{SENDING_LOCK}: {error}"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(profile.dir().join(SENDING_LOCK))
        .map_err(profile_error)?;
    let deadline = tokio::time::Instant::now() + SENDING_TURN_TIMEOUT;
    loop {
        // Polled: a blocking flock would hold a runtime thread while another send waits for
        // the server.
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(SendingTurn { _lock: lock }),
            Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) => {}
            Err(error) => return Err(profile_error(error.into())),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(crate::Error::unavailable(
                "another send from this device is still waiting for the server".to_owned(),
            ));
        }
        tokio::time::sleep(SENDING_TURN_POLL).await;
    }
}

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

/// The position to seal a kept message again at: its own counter (it never reached the server,
/// so its place in the chain is still free), after `previous` (the hash of the envelope now
/// before it, when that one was sealed again too) or the same predecessor as before, at the
/// time of sealing.
pub(crate) fn resealed_position(
    original: &e2ee::Envelope,
    previous: Option<[u8; 32]>,
) -> e2ee::ChainPosition {
    let original_previous = original
        .previous_envelope_hash
        .as_slice()
        .try_into()
        .unwrap_or([0; 32]);
    e2ee::ChainPosition {
        counter: original.sender_counter,
        previous_envelope_hash: previous.unwrap_or(original_previous),
        sender_time_ms: now_ms(),
    }
}

/// Records `envelope`, sealed again at `position`, as this device's latest in its
/// conversation when the envelope it replaces was the latest: the next message then follows it.
///
/// # Errors
/// As [`record_sealed`].
pub(crate) fn record_resealed(
    profile: &Profile,
    position: &e2ee::ChainPosition,
    envelope: &e2ee::Envelope,
) -> Result<()> {
    let is_last = {
        let _guard = FILES.lock().expect("not poisoned");
        let chains: BTreeMap<String, SendingChain> =
            profile.read_file(SENDING)?.unwrap_or_default();
        chains
            .get(&envelope.conversation_id)
            .is_some_and(|chain| chain.last_client_message_id == envelope.client_message_id)
    };
    if is_last {
        record_sealed(profile, position, envelope)?;
    }
    Ok(())
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

/// Decryption failures per sending device (or `v1`), as kept in the profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FailureBudget(BTreeMap<String, FailureCount>);

/// The failures of one sender in the window that started with the first of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FailureCount {
    count: u32,
    /// Unix milliseconds of the window's first failure.
    since_ms: u64,
}

impl FailureBudget {
    /// Whether messages from `sender` may still be decrypted at `now_ms`.
    pub(crate) fn allows(&self, sender: &str, now_ms: u64) -> bool {
        self.0.get(sender).is_none_or(|failures| {
            failures.count < MAX_FAILURES_PER_SENDER || window_over(failures, now_ms)
        })
    }

    /// Counts a failed decryption of a message from `sender` at `now_ms`, forgetting windows
    /// that are over.
    pub(crate) fn record_failure(&mut self, sender: &str, now_ms: u64) {
        self.0.retain(|_, failures| !window_over(failures, now_ms));
        let failures = self.0.entry(sender.to_owned()).or_insert(FailureCount {
            count: 0,
            since_ms: now_ms,
        });
        failures.count += 1;
    }
}

fn window_over(failures: &FailureCount, now_ms: u64) -> bool {
    let window_ms = u64::try_from(FAILURE_WINDOW.as_millis()).unwrap_or(u64::MAX);
    now_ms.saturating_sub(failures.since_ms) >= window_ms
}

/// Whether messages from `sender` (a sending device id, or `v1`) may still be decrypted: the
/// budget is kept in the profile, so that it holds across runs of `chat` and restarts.
///
/// # Errors
/// [`crate::Error::Profile`] when the file cannot be read.
pub(crate) fn may_decrypt(profile: &Profile, sender: &str) -> Result<bool> {
    let _guard = FILES.lock().expect("not poisoned");
    let budget: FailureBudget = profile.read_file(FAILURES)?.unwrap_or_default();
    Ok(budget.allows(sender, now_ms()))
}

/// Counts a failed decryption of a message from `sender` (see [`may_decrypt`]).
///
/// # Errors
/// [`crate::Error::Profile`] when the file cannot be read or written.
pub(crate) fn record_failure(profile: &Profile, sender: &str) -> Result<()> {
    let _guard = FILES.lock().expect("not poisoned");
    let mut budget: FailureBudget = profile.read_file(FAILURES)?.unwrap_or_default();
    budget.record_failure(sender, now_ms());
    profile.write_file(FAILURES, &budget)
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
        let mut budget = FailureBudget::default();

        for _ in 0..MAX_FAILURES_PER_SENDER {
            assert!(budget.allows("mallory", 1_000));
            budget.record_failure("mallory", 1_000);
        }

        assert!(!budget.allows("mallory", 2_000));
        assert!(budget.allows("alice", 2_000));
    }

    #[test]
    fn a_sender_is_decrypted_again_once_its_window_is_over() {
        let mut budget = FailureBudget::default();
        for _ in 0..MAX_FAILURES_PER_SENDER {
            budget.record_failure("mallory", 1_000);
        }
        let window_ms = u64::try_from(FAILURE_WINDOW.as_millis()).unwrap();

        let just_before = budget.allows("mallory", 1_000 + window_ms - 1);
        let after = budget.allows("mallory", 1_000 + window_ms);
        budget.record_failure("alice", 1_000 + window_ms);

        assert!(!just_before && after);
        assert!(
            !budget.0.contains_key("mallory"),
            "the window over, forgotten"
        );
    }
}
