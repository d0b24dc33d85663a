//! Suite V2's chain: each sending device numbers its envelopes in a conversation (1, 2, ...),
//! names the hash of its previous one and its own clock, all in the signed header. A receiving
//! device keeps, per conversation and sending device, the links it saw ([`ConversationChains`])
//! and flags what an honest server and sender never produce ([`ChainAnomaly`]): a counter seen
//! with two different envelopes or a link that does not follow its predecessor (a fork), counters
//! skipped between two messages it saw in a row (a gap: messages dropped or withheld), a missing
//! message arriving late (a reorder), and implausible times.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::{
    Error,
    format::{DIGEST_LEN, Header, signed_message},
};

/// The label that starts the input of an envelope hash.
pub const ENVELOPE_HASH_LABEL: &[u8] = b"chat-e2ee-v2 envelope hash";
/// How far ahead of the server's time a sender's clock may be before its time is flagged.
pub const MAX_CLOCK_AHEAD_MS: u64 = 5 * 60 * 1000;
/// How long before the server stored it a message may have been sealed before it is flagged
/// (the CLI resends a sealed envelope after reconnecting, so minutes are normal).
pub const MAX_DELAY_MS: u64 = 24 * 60 * 60 * 1000;
/// Links kept per sending device (the newest counters); older forks go unnoticed.
pub const CHAIN_WINDOW: usize = 256;
/// Gaps remembered per sending device, to tell a late arrival (the newest kept).
const MAX_GAPS: usize = 32;

/// A sending device's position in its chain of one conversation: what it puts in the next
/// envelope's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainPosition {
    /// `Envelope.sender_counter`: 1 for the device's first envelope in the conversation.
    pub counter: u64,
    /// `Envelope.previous_envelope_hash`: [`envelope_hash`] of envelope `counter - 1`, zeros
    /// for the first.
    pub previous_envelope_hash: [u8; DIGEST_LEN],
    /// `Envelope.sender_time_ms`: the sender's clock, Unix milliseconds.
    pub sender_time_ms: u64,
}

impl ChainPosition {
    /// The position of a device's first envelope in a conversation.
    #[must_use]
    pub fn first(sender_time_ms: u64) -> Self {
        ChainPosition {
            counter: 1,
            previous_envelope_hash: [0; DIGEST_LEN],
            sender_time_ms,
        }
    }
}

/// The hash that the next envelope of the same device names as its predecessor:
/// `SHA-256(lp("chat-e2ee-v2 envelope hash") || lp(signed message))`. Every recipient computes
/// it from what it verified (the signed message covers the header, the recipients digest and
/// so every wrapped key, and the ciphertext).
///
/// # Errors
/// As [`signed_message`].
pub fn envelope_hash(header: &Header<'_>, ciphertext: &[u8]) -> Result<[u8; DIGEST_LEN], Error> {
    let signed = signed_message(header, ciphertext)?;
    let mut hasher = Sha256::new();
    for item in [ENVELOPE_HASH_LABEL, &signed] {
        let length = u32::try_from(item.len()).map_err(|_| Error::Malformed {
            what: "an item is longer than 4 GiB",
        })?;
        hasher.update(length.to_be_bytes());
        hasher.update(item);
    }
    Ok(hasher.finalize().into())
}

/// One verified V2 envelope as a link of its sender's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainLink {
    /// `Envelope.sender_counter`.
    pub counter: u64,
    /// `Envelope.previous_envelope_hash`.
    pub previous_envelope_hash: [u8; DIGEST_LEN],
    /// [`envelope_hash`] of this envelope.
    pub envelope_hash: [u8; DIGEST_LEN],
    /// `Envelope.sender_time_ms`.
    pub sender_time_ms: u64,
}

/// What a received link tells about its chain, beyond being valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "snake_case"))]
pub enum ChainAnomaly {
    /// The device's envelopes `first..=last` were skipped between two of its messages this
    /// device saw with nothing missing in between in the conversation: dropped, or withheld.
    Gap {
        /// The first missing counter.
        first: u64,
        /// The last missing counter.
        last: u64,
    },
    /// Two different envelopes under one counter, or a link that does not name (or is not
    /// named by) its neighbour: the server, or the sender, shows different histories.
    Fork {
        /// The counter concerned.
        counter: u64,
    },
    /// A message reported missing (a [`ChainAnomaly::Gap`]) arrived after later ones.
    Late {
        /// Its counter.
        counter: u64,
    },
    /// The sender's time is ahead of the server's by more than [`MAX_CLOCK_AHEAD_MS`].
    TimeAhead {
        /// By how much.
        ms: u64,
    },
    /// The server stored the message more than [`MAX_DELAY_MS`] after it was sealed.
    TimeDelayed {
        /// By how much.
        ms: u64,
    },
    /// The sender's time is earlier than the time of its previous envelope by more than
    /// [`MAX_CLOCK_AHEAD_MS`].
    TimeBackwards {
        /// By how much.
        ms: u64,
    },
}

/// One kept link.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SeenLink {
    /// The server's sequence it came with.
    pub sequence: u64,
    /// Its previous envelope hash.
    pub previous: [u8; DIGEST_LEN],
    /// Its envelope hash.
    pub hash: [u8; DIGEST_LEN],
    /// Its sender time.
    pub sender_time_ms: u64,
    /// What was reported when it was first seen (reported again when it is seen again, so a
    /// message shows the same flags in every view).
    #[cfg_attr(feature = "serde", serde(default))]
    pub anomalies: Vec<ChainAnomaly>,
}

/// What a receiving device remembers of one sending device's chain in one conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DeviceChain {
    /// The newest [`CHAIN_WINDOW`] links, by counter.
    pub links: BTreeMap<u64, SeenLink>,
    /// Counters reported missing, as inclusive ranges.
    pub gaps: Vec<(u64, u64)>,
}

/// What a receiving device remembers of every chain in one conversation (persist it: the CLI
/// in its profile, the page in IndexedDB).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConversationChains {
    /// The first server sequence of the newest run of sequences seen with none missing.
    pub run_start: u64,
    /// The last sequence of that run.
    pub run_end: u64,
    /// By sending device id.
    pub devices: BTreeMap<String, DeviceChain>,
}

impl ConversationChains {
    /// Records `link`, from `sender_device_id` and delivered with the server's `sequence` and
    /// time (`server_time_ms`), and returns what is wrong with it. Call it for every verified
    /// V2 message, in any order (history pages may go backwards): gaps are reported only
    /// between two messages of a run of sequences seen with none missing, so a history view
    /// that skipped messages reports no gap; seeing the same envelope again reports nothing.
    pub fn observe(
        &mut self,
        sequence: u64,
        sender_device_id: &str,
        link: &ChainLink,
        server_time_ms: u64,
    ) -> Vec<ChainAnomaly> {
        if self.run_end == 0 || sequence > self.run_end + 1 {
            self.run_start = sequence;
            self.run_end = sequence;
        } else if sequence == self.run_end + 1 {
            self.run_end = sequence;
        } else if sequence + 1 == self.run_start {
            self.run_start = sequence;
        }
        let run_start = self.run_start;
        let chain = self.devices.entry(sender_device_id.to_owned()).or_default();
        chain.observe(sequence, run_start, link, server_time_ms)
    }
}

impl DeviceChain {
    fn observe(
        &mut self,
        sequence: u64,
        run_start: u64,
        link: &ChainLink,
        server_time_ms: u64,
    ) -> Vec<ChainAnomaly> {
        let counter = link.counter;
        if let Some(seen) = self.links.get(&counter) {
            return if seen.hash == link.envelope_hash {
                seen.anomalies.clone()
            } else {
                vec![ChainAnomaly::Fork { counter }]
            };
        }
        let mut anomalies = Vec::new();
        let before = counter
            .checked_sub(1)
            .and_then(|previous| self.links.get(&previous));
        let after = counter
            .checked_add(1)
            .and_then(|next| self.links.get(&next));
        if before.is_some_and(|before| before.hash != link.previous_envelope_hash)
            || after.is_some_and(|after| after.previous != link.envelope_hash)
        {
            anomalies.push(ChainAnomaly::Fork { counter });
        }
        if let Some(position) = self
            .gaps
            .iter()
            .position(|(first, last)| (*first..=*last).contains(&counter))
        {
            let (first, last) = self.gaps.remove(position);
            if first < counter {
                self.gaps.push((first, counter - 1));
            }
            if counter < last {
                self.gaps.push((counter + 1, last));
            }
            anomalies.push(ChainAnomaly::Late { counter });
        } else if let Some((&highest, newest)) = self.links.last_key_value()
            && counter > highest + 1
            && sequence > newest.sequence
            && newest.sequence >= run_start
        {
            anomalies.push(ChainAnomaly::Gap {
                first: highest + 1,
                last: counter - 1,
            });
            self.gaps.push((highest + 1, counter - 1));
            if self.gaps.len() > MAX_GAPS {
                self.gaps.remove(0);
            }
        }
        anomalies.extend(time_anomaly(
            link.sender_time_ms,
            server_time_ms,
            self.links.range(..counter).next_back().map(|(_, l)| l),
        ));
        self.links.insert(
            counter,
            SeenLink {
                sequence,
                previous: link.previous_envelope_hash,
                hash: link.envelope_hash,
                sender_time_ms: link.sender_time_ms,
                anomalies: anomalies.clone(),
            },
        );
        while self.links.len() > CHAIN_WINDOW {
            self.links.pop_first();
        }
        anomalies
    }
}

fn time_anomaly(
    sender_time_ms: u64,
    server_time_ms: u64,
    previous: Option<&SeenLink>,
) -> Option<ChainAnomaly> {
    if sender_time_ms > server_time_ms + MAX_CLOCK_AHEAD_MS {
        return Some(ChainAnomaly::TimeAhead {
            ms: sender_time_ms - server_time_ms,
        });
    }
    if server_time_ms > sender_time_ms + MAX_DELAY_MS {
        return Some(ChainAnomaly::TimeDelayed {
            ms: server_time_ms - sender_time_ms,
        });
    }
    let previous = previous?.sender_time_ms;
    (previous > sender_time_ms + MAX_CLOCK_AHEAD_MS).then(|| ChainAnomaly::TimeBackwards {
        ms: previous - sender_time_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000_000;

    /// Link `counter` of a chain whose envelope hashes are `[counter; 32]` (`fork` changes it).
    fn link(counter: u64, fork: u8) -> ChainLink {
        ChainLink {
            counter,
            previous_envelope_hash: [(counter - 1) as u8; 32],
            envelope_hash: [counter as u8 ^ fork; 32],
            sender_time_ms: T + counter,
        }
    }

    fn observe(
        chains: &mut ConversationChains,
        sequence: u64,
        link: ChainLink,
    ) -> Vec<ChainAnomaly> {
        chains.observe(sequence, "d", &link, link.sender_time_ms + 50)
    }

    #[test]
    fn an_unbroken_chain_and_a_repeated_envelope_report_nothing() {
        let mut chains = ConversationChains::default();

        for counter in 1..=5 {
            assert_eq!(observe(&mut chains, counter * 2, link(counter, 0)), []);
            chains.observe(counter * 2 + 1, "other", &link(counter, 0), T);
        }
        assert_eq!(observe(&mut chains, 4, link(2, 0)), []);
    }

    #[test]
    fn a_dropped_message_is_a_gap_and_its_late_arrival_is_reported() {
        let mut chains = ConversationChains::default();
        observe(&mut chains, 1, link(1, 0));

        assert_eq!(
            observe(&mut chains, 2, link(4, 0)),
            [ChainAnomaly::Gap { first: 2, last: 3 }]
        );
        assert_eq!(
            observe(&mut chains, 3, link(3, 0)),
            [ChainAnomaly::Late { counter: 3 }]
        );
        assert_eq!(
            observe(&mut chains, 4, link(2, 0)),
            [ChainAnomaly::Late { counter: 2 }]
        );
    }

    #[test]
    fn a_message_seen_again_shows_the_flags_it_was_first_seen_with() {
        let mut chains = ConversationChains::default();
        observe(&mut chains, 1, link(1, 0));
        let gap = observe(&mut chains, 2, link(3, 0));

        assert_eq!(observe(&mut chains, 2, link(3, 0)), gap);
        assert_eq!(gap, [ChainAnomaly::Gap { first: 2, last: 2 }]);
    }

    #[test]
    fn a_view_that_skipped_sequences_reports_no_gap() {
        let mut chains = ConversationChains::default();
        observe(&mut chains, 10, link(1, 0));

        assert_eq!(observe(&mut chains, 40, link(7, 0)), []);
        assert_eq!(observe(&mut chains, 41, link(8, 0)), []);
    }

    #[test]
    fn two_envelopes_for_one_counter_or_a_broken_link_are_a_fork() {
        let mut chains = ConversationChains::default();
        observe(&mut chains, 1, link(1, 0));
        observe(&mut chains, 2, link(2, 0));

        assert_eq!(
            observe(&mut chains, 3, link(2, 0xff)),
            [ChainAnomaly::Fork { counter: 2 }]
        );
        let mut broken = link(3, 0);
        broken.previous_envelope_hash = [0xee; 32];
        assert_eq!(
            observe(&mut chains, 4, broken),
            [ChainAnomaly::Fork { counter: 3 }]
        );
    }

    #[test]
    fn implausible_times_are_reported() {
        let mut chains = ConversationChains::default();
        let mut ahead = link(1, 0);
        ahead.sender_time_ms = T + MAX_CLOCK_AHEAD_MS + 1;
        let mut delayed = link(2, 0);
        delayed.sender_time_ms = T - MAX_DELAY_MS - 1;

        assert_eq!(
            chains.observe(1, "d", &ahead, T),
            [ChainAnomaly::TimeAhead {
                ms: MAX_CLOCK_AHEAD_MS + 1
            }]
        );
        assert_eq!(
            chains.observe(2, "d", &delayed, T),
            [ChainAnomaly::TimeDelayed {
                ms: MAX_DELAY_MS + 1
            }]
        );
        let mut backwards = link(3, 0);
        backwards.sender_time_ms = T - 10 * 60 * 1000;
        let mut chains = ConversationChains::default();
        chains.observe(1, "d", &link(2, 0), T);
        assert_eq!(
            chains.observe(2, "d", &backwards, T),
            [ChainAnomaly::TimeBackwards {
                ms: 10 * 60 * 1000 + 2
            }]
        );
    }

    #[test]
    fn only_the_newest_links_are_kept() {
        let mut chains = ConversationChains::default();
        for counter in 1..=(CHAIN_WINDOW as u64 + 10) {
            observe(&mut chains, counter, link(counter, 0));
        }

        assert_eq!(chains.devices["d"].links.len(), CHAIN_WINDOW);
    }
}
