//! Safety numbers: what two people compare (side by side, or read aloud) to check that the
//! server gave each of them the other's real keys.

use sha2::{Digest, Sha512};

use crate::format::DIGEST_LEN;

/// The version string that starts the hash input of each half.
pub const SAFETY_NUMBER_LABEL: &[u8] = b"chat-e2ee-v1 safety number";
/// SHA-512 iterations per half (as Signal's), to make a partial collision costly.
pub const SAFETY_NUMBER_ITERATIONS: usize = 5200;

/// The safety number of two users: 60 decimal digits in 12 groups of 5 separated by single
/// spaces, the same whichever side computes it.
///
/// Pass, for each user, the fingerprints of every active device with keys: both its
/// `encryption_key_fingerprint` and its `signing_key_fingerprint` (as `auth.v1.Device` gives
/// them). Their order does not matter and repeats are ignored. The number changes whenever a
/// device is added, revoked or replaces its keys.
///
/// The algorithm, for each user (`lp(x)` is `x` prefixed by its length as 4 big-endian bytes):
/// 1. `keys` = the distinct fingerprints, sorted bytewise, concatenated (32 bytes each);
/// 2. `h` = `lp("chat-e2ee-v1 safety number") || lp(keys) || lp(user_id as UTF-8)`;
/// 3. 5200 times: `h` = SHA-512(`h || keys`);
/// 4. the half is 30 digits: for `i` in 0..6, bytes `h[5i..5i+5]` as a big-endian 40-bit
///    integer, modulo 100000, written as 5 decimal digits with leading zeros.
///
/// The two halves are ordered as strings (equivalently as numbers), the smaller first, so both
/// parties get the same 60 digits, then split into groups of 5.
#[must_use]
pub fn safety_number(
    my_user_id: &str,
    my_fingerprints: &[[u8; DIGEST_LEN]],
    their_user_id: &str,
    their_fingerprints: &[[u8; DIGEST_LEN]],
) -> String {
    let mine = half(my_user_id, my_fingerprints);
    let theirs = half(their_user_id, their_fingerprints);
    let (first, second) = if mine <= theirs {
        (mine, theirs)
    } else {
        (theirs, mine)
    };
    let digits = first + &second;
    digits
        .as_bytes()
        .chunks(5)
        .map(|group| String::from_utf8_lossy(group).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One user's 30 digits.
fn half(user_id: &str, fingerprints: &[[u8; DIGEST_LEN]]) -> String {
    let mut sorted = fingerprints.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let keys = sorted.concat();

    let mut hash = Vec::new();
    for item in [SAFETY_NUMBER_LABEL, &keys, user_id.as_bytes()] {
        // Lengths beyond u32 cannot occur: a user id that long is refused long before this.
        let length = u32::try_from(item.len()).unwrap_or(u32::MAX);
        hash.extend_from_slice(&length.to_be_bytes());
        hash.extend_from_slice(item);
    }
    for _ in 0..SAFETY_NUMBER_ITERATIONS {
        let mut hasher = Sha512::new();
        hasher.update(&hash);
        hasher.update(&keys);
        hash = hasher.finalize().to_vec();
    }
    hash.chunks(5)
        .take(6)
        .map(|chunk| {
            let value = chunk
                .iter()
                .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
            format!("{:05}", value % 100_000)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_compute_the_same_number() {
        let alice = [[1u8; 32], [2u8; 32]];
        let bob = [[3u8; 32], [4u8; 32]];

        let from_alice = safety_number("alice", &alice, "bob", &bob);
        let from_bob = safety_number("bob", &bob, "alice", &alice);

        assert_eq!(from_alice, from_bob);
    }

    #[test]
    fn the_number_is_60_digits_in_12_groups_of_5() {
        let number = safety_number("alice", &[[1; 32]], "bob", &[[2; 32]]);

        let groups: Vec<&str> = number.split(' ').collect();
        assert_eq!(groups.len(), 12);
        assert!(
            groups
                .iter()
                .all(|group| group.len() == 5 && group.bytes().all(|b| b.is_ascii_digit()))
        );
    }

    #[test]
    fn fingerprint_order_and_repeats_do_not_matter_but_every_key_and_id_does() {
        let base = safety_number("alice", &[[1; 32], [2; 32]], "bob", &[[3; 32]]);

        assert_eq!(
            base,
            safety_number("alice", &[[2; 32], [1; 32], [2; 32]], "bob", &[[3; 32]])
        );
        assert_ne!(base, safety_number("alice", &[[1; 32]], "bob", &[[3; 32]]));
        assert_ne!(
            base,
            safety_number("alice", &[[1; 32], [2; 32]], "bob", &[[4; 32]])
        );
        assert_ne!(
            base,
            safety_number("alicf", &[[1; 32], [2; 32]], "bob", &[[3; 32]])
        );
    }

    #[test]
    fn users_without_keys_still_get_a_number() {
        assert_eq!(safety_number("", &[], "", &[]).len(), 60 + 11);
    }
}
