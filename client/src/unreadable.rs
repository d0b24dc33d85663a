//! Messages of a conversation this device cannot read because they were not encrypted for it:
//! the server lists only the messages that carry a wrapped key for the caller's device, so a
//! device sees them as gaps in the conversation's sequences (which are 1-based and gap-free).
//! They are explained rather than silently left out.
//!
//! The live conversation ([`crate::Live`]) finds the same runs as it goes ([`Gaps`]): between two
//! messages it receives, and after the last one up to the conversation's last sequence once it
//! has caught up, and reports them as [`crate::LiveEvent::Unreadable`] in their place.
//!
//! When another device of the user forwards it their keys (`forwarding.rs`), the server tells
//! the device's open streams (`KeysForwarded`): the live conversation then lists the runs it
//! reported ([`Session::now_readable`]) and shows what became readable
//! ([`crate::LiveEvent::NowReadable`]).
//!
//! What is counted is the server's word: a server that withholds messages makes them look like
//! these. Messages withheld from a device's chain are reported by the chain checks
//! ([`crate::ReceivedText::chain`]) as well.

use std::collections::BTreeMap;

use proto::chat::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{Profile, ReceivedText, Result, Session, Target};

/// The profile's file of runs a live conversation reported and nothing showed since, per
/// conversation: a later `chat chat` lists them again, so that keys forwarded meanwhile (or
/// while it runs) show their messages, whatever run reported them.
const REPORTED: &str = "unreadable.json";

/// Most messages one ListMessages call of [`Session::now_readable`] asks for (the server's
/// largest page).
const NOW_READABLE_PAGE: u64 = 200;

/// A run of consecutive messages not encrypted for this device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// The first sequence of the run.
    pub first_sequence: u64,
    /// The last sequence of the run.
    pub last_sequence: u64,
    /// How many messages (`last_sequence - first_sequence + 1`).
    pub count: u64,
    /// Whether the run comes before every message this device can read: sent before this
    /// device existed (else the sender did not encrypt them for it).
    pub before_this_device: bool,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.count;
        let (s, were) = if count == 1 {
            ("message was", "it was")
        } else {
            ("messages were", "they were")
        };
        if self.before_this_device {
            write!(
                f,
                "{count} earlier {s} sent before this device existed and cannot be read here \
                 ({were} not encrypted for it)"
            )
        } else {
            write!(
                f,
                "{count} {s} not encrypted for this device and cannot be read here"
            )
        }
    }
}

/// A conversation's history: the messages this device can read, and the runs it cannot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// The messages, oldest first.
    pub messages: Vec<ReceivedText>,
    /// The runs of messages not encrypted for this device, oldest first.
    pub unreadable: Vec<Unreadable>,
}

/// The runs of messages a live conversation did not receive, found as it receives messages in
/// order of sequence (the server delivers a conversation's messages to a device in that order,
/// its own included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Gaps {
    /// Every sequence up to this one was received or reported.
    accounted: u64,
    /// Whether a message up to `accounted` was readable (then no later run is "before this
    /// device").
    any_readable: bool,
}

impl Gaps {
    /// Starts after `shown`, the last sequence shown before (0: none, the conversation's start).
    pub(crate) fn after(shown: u64) -> Self {
        Self {
            accounted: shown,
            any_readable: shown > 0,
        }
    }

    /// A message at `sequence` arrived: the run it ends, if any. An older sequence (a
    /// duplicate) changes nothing.
    pub(crate) fn received(&mut self, sequence: u64) -> Option<Unreadable> {
        if sequence <= self.accounted {
            return None;
        }
        let run = self.up_to(sequence - 1);
        self.accounted = sequence;
        self.any_readable = true;
        run
    }

    /// The conversation's last sequence is `last`: the run of messages after the last one
    /// received, if any.
    pub(crate) fn up_to(&mut self, last: u64) -> Option<Unreadable> {
        if last <= self.accounted {
            return None;
        }
        let run = Unreadable {
            first_sequence: self.accounted + 1,
            last_sequence: last,
            count: last - self.accounted,
            before_this_device: !self.any_readable,
        };
        self.accounted = last;
        Some(run)
    }

    /// Every sequence up to this one was received or reported.
    pub(crate) fn accounted(&self) -> u64 {
        self.accounted
    }
}

impl Session {
    /// [`Session::history`], with the runs of messages the server left out because they were
    /// not encrypted for this device. Those older than the oldest readable message are known
    /// only when the history reaches back to it (fewer than `limit` messages listed).
    ///
    /// # Errors
    /// As [`Session::history`].
    pub async fn history_with_unreadable(&self, target: &Target, limit: u32) -> Result<History> {
        let messages = self.history(target, limit).await?;
        let complete = messages.len() < limit as usize;
        let last_sequence = if complete {
            self.conversations()
                .await?
                .into_iter()
                .find(|c| c.conversation_id == target.conversation_id)
                .map(|c| c.last_sequence)
        } else {
            None
        };
        let sequences: Vec<u64> = messages.iter().map(|m| m.sequence).collect();
        let unreadable = runs(&sequences, complete, last_sequence);
        Ok(History {
            messages,
            unreadable,
        })
    }
}

impl Session {
    /// The messages of `runs` (reported as not readable here) that the server now lists for this
    /// device, because another device of the user forwarded their keys to it; oldest first,
    /// opened and checked as [`Session::history`] opens them (replays flagged). Nothing is
    /// acknowledged: the view had already moved past them.
    ///
    /// # Errors
    /// As [`Session::history`].
    pub async fn now_readable(
        &self,
        target: &Target,
        runs: &[Unreadable],
    ) -> Result<Vec<ReceivedText>> {
        let mut listed = Vec::new();
        for run in runs {
            listed.extend(self.listed_in(target, run).await?);
        }
        let mut seen = self.profile.seen(&target.conversation_id)?;
        let mut opened = Vec::with_capacity(listed.len());
        for message in listed {
            opened.push(self.open_in(target, message, &mut seen).await);
        }
        self.profile.save_seen(&target.conversation_id, &seen)?;
        Ok(opened)
    }

    /// The messages of `run` the server lists for this device, oldest first.
    async fn listed_in(&self, target: &Target, run: &Unreadable) -> Result<Vec<pb::Message>> {
        let mut listed = Vec::new();
        let mut from_sequence = run.first_sequence - 1;
        while from_sequence < run.last_sequence {
            let request = pb::ListMessagesRequest {
                conversation_id: target.conversation_id.clone(),
                direction: pb::Direction::Forward as i32,
                from_sequence,
                page_size: u32::try_from(
                    (run.last_sequence - from_sequence).min(NOW_READABLE_PAGE),
                )
                .unwrap_or(u32::MAX),
                include_all_recipients: false,
            };
            let page = self
                .call(request, |request| {
                    let mut chat = self.chat.clone();
                    async move { chat.list_messages(request).await }
                })
                .await?;
            listed.extend(
                page.messages
                    .into_iter()
                    .filter(|m| (run.first_sequence..=run.last_sequence).contains(&m.sequence)),
            );
            if page.next_from_sequence <= from_sequence {
                break;
            }
            from_sequence = page.next_from_sequence;
        }
        Ok(listed)
    }
}

/// The runs of `conversation_id` that live conversations reported and nothing showed since
/// (none when the file cannot be read: it only saves a listing).
pub(crate) fn reported(profile: &Profile, conversation_id: &str) -> Vec<Unreadable> {
    profile
        .read_file::<BTreeMap<String, Vec<Unreadable>>>(REPORTED)
        .ok()
        .flatten()
        .and_then(|mut all| all.remove(conversation_id))
        .unwrap_or_default()
}

/// Records `runs` as what is reported and not shown of `conversation_id`.
///
/// # Errors
/// [`crate::Error::Profile`] when the file cannot be read or written.
pub(crate) fn save_reported(
    profile: &Profile,
    conversation_id: &str,
    runs: &[Unreadable],
) -> Result<()> {
    let mut all: BTreeMap<String, Vec<Unreadable>> =
        profile.read_file(REPORTED)?.unwrap_or_default();
    if runs.is_empty() {
        if all.remove(conversation_id).is_none() {
            return Ok(());
        }
    } else {
        all.insert(conversation_id.to_owned(), runs.to_vec());
    }
    profile.write_file(REPORTED, &all)
}

/// What is left of `runs` once the messages of `sequences` are shown: each run without them,
/// split where they were.
pub(crate) fn without(runs: &[Unreadable], sequences: &[u64]) -> Vec<Unreadable> {
    let mut left = Vec::new();
    for run in runs {
        let mut inside: Vec<u64> = sequences
            .iter()
            .copied()
            .filter(|s| (run.first_sequence..=run.last_sequence).contains(s))
            .collect();
        inside.sort_unstable();
        inside.dedup();
        let mut first = run.first_sequence;
        for sequence in inside.into_iter().chain([run.last_sequence + 1]) {
            if sequence > first {
                left.push(Unreadable {
                    first_sequence: first,
                    last_sequence: sequence - 1,
                    count: sequence - first,
                    before_this_device: run.before_this_device,
                });
            }
            first = sequence + 1;
        }
    }
    left
}

/// The runs missing from `sequences` (ascending): between them, before the first when
/// `complete_below` (the listing reached the conversation's start), and after the last up to
/// `last_sequence`.
fn runs(sequences: &[u64], complete_below: bool, last_sequence: Option<u64>) -> Vec<Unreadable> {
    let mut runs = Vec::new();
    let mut previous = if complete_below { Some(0) } else { None };
    let mut before_this_device = true;
    let end = last_sequence.map(|last| last + 1);
    for &sequence in sequences.iter().chain(end.iter()) {
        if let Some(previous) = previous
            && sequence > previous + 1
        {
            runs.push(Unreadable {
                first_sequence: previous + 1,
                last_sequence: sequence - 1,
                count: sequence - 1 - previous,
                before_this_device,
            });
        }
        before_this_device = false;
        previous = Some(sequence);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(first: u64, last: u64, before: bool) -> Unreadable {
        Unreadable {
            first_sequence: first,
            last_sequence: last,
            count: last - first + 1,
            before_this_device: before,
        }
    }

    #[test]
    fn a_device_that_reads_nothing_sees_every_message_as_earlier() {
        assert_eq!(runs(&[], true, Some(3)), vec![run(1, 3, true)]);
        assert_eq!(runs(&[], true, Some(0)), vec![]);
    }

    #[test]
    fn runs_before_between_and_after_the_readable_messages_are_found() {
        let found = runs(&[4, 5, 8], true, Some(10));

        assert_eq!(
            found,
            vec![run(1, 3, true), run(6, 7, false), run(9, 10, false)]
        );
    }

    #[test]
    fn an_incomplete_listing_says_nothing_about_what_precedes_it() {
        assert_eq!(runs(&[4, 6], false, None), vec![run(5, 5, false)]);
        assert_eq!(runs(&[1, 2], true, Some(2)), vec![]);
    }

    #[test]
    fn a_live_conversation_finds_the_runs_it_did_not_receive_in_their_place() {
        let mut new_device = Gaps::after(0);
        let mut resumed = Gaps::after(4);

        assert_eq!(new_device.received(4), Some(run(1, 3, true)));
        assert_eq!(new_device.received(5), None);
        assert_eq!(new_device.received(5), None);
        assert_eq!(new_device.received(8), Some(run(6, 7, false)));
        assert_eq!(new_device.up_to(8), None);
        assert_eq!(new_device.up_to(10), Some(run(9, 10, false)));
        assert_eq!(new_device.received(11), None);
        assert_eq!(Gaps::after(0).up_to(3), Some(run(1, 3, true)));
        assert_eq!(resumed.received(7), Some(run(5, 6, false)));
    }

    #[test]
    fn runs_lose_the_messages_that_became_readable() {
        let runs = [run(1, 5, true), run(8, 8, false)];

        assert_eq!(without(&runs, &[1, 2, 3, 4, 5, 8]), vec![]);
        assert_eq!(
            without(&runs, &[3, 9, 2]),
            vec![run(1, 1, true), run(4, 5, true), run(8, 8, false)]
        );
        assert_eq!(without(&runs, &[]), runs.to_vec());
    }

    #[test]
    fn the_explanation_counts_the_messages() {
        assert_eq!(
            run(1, 3, true).to_string(),
            "3 earlier messages were sent before this device existed and cannot be read here \
             (they were not encrypted for it)"
        );
        assert_eq!(
            run(2, 2, false).to_string(),
            "1 message was not encrypted for this device and cannot be read here"
        );
    }
}
