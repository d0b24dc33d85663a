//! The recipients digest of suite V2: a Merkle tree over the recipient entries, each entry
//! binding its device, its key fingerprint and the hash of its wrapped key. A device that
//! receives only its own entry checks, with an inclusion proof the server computed, that its
//! wrapped key is one the sender signed, before any RSA work on it.
//!
//! The tree has the shape of RFC 9162 (Certificate Transparency 2.0) section 2.1.1: leaves
//! sorted by device id (UTF-8 bytes, then by leaf hash), `leaf = SHA-256(0x00 || entry)`,
//! `node = SHA-256(0x01 || left || right)`, an odd last node carried up a level unchanged; proofs
//! and their verification are those of its sections 2.1.3.1 and 2.1.3.2.

use sha2::{Digest, Sha256};

use crate::{Error, format::DIGEST_LEN};

/// The first item of the V2 recipients digest.
pub const RECIPIENTS_LABEL_V2: &[u8] = b"chat-e2ee-v2 recipients";

/// Where one entry sits in the recipients tree, and the sibling hashes that lead from it to the
/// root (`WrappedKey.leaf_index` and `WrappedKey.inclusion_proof`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inclusion {
    /// The entry's position among the entries sorted by device id.
    pub leaf_index: u32,
    /// The sibling hashes from the leaf up, 32 bytes each, concatenated.
    pub proof: Vec<u8>,
}

/// The recipients digest of a full entry list, and each entry's inclusion proof (in the order
/// the entries were given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientsTree {
    /// `SHA-256(lp("chat-e2ee-v2 recipients") || lp(u32be(count)) || lp(root))`.
    pub digest: [u8; DIGEST_LEN],
    /// One per entry, in input order.
    pub inclusions: Vec<Inclusion>,
}

/// The leaf hash of one entry: `SHA-256(0x00 || lp(device_id) || lp(key_fingerprint) ||
/// lp(SHA-256(wrapped_key)))`.
///
/// # Errors
/// [`Error::Malformed`] for an item longer than 4 GiB.
pub fn recipient_leaf(
    device_id: &str,
    key_fingerprint: &[u8],
    wrapped_key: &[u8],
) -> Result<[u8; DIGEST_LEN], Error> {
    let wrapped_key_hash = Sha256::digest(wrapped_key);
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    for item in [device_id.as_bytes(), key_fingerprint, &wrapped_key_hash] {
        hasher.update(length_of(item)?.to_be_bytes());
        hasher.update(item);
    }
    Ok(hasher.finalize().into())
}

/// The tree of `entries` (`(device_id, key_fingerprint, wrapped_key)`, in any order): the
/// digest the V2 header carries and every entry's inclusion proof.
///
/// # Errors
/// [`Error::Malformed`] for more than `u32::MAX` entries or an item longer than 4 GiB.
pub fn recipients_tree<'a, I>(entries: I) -> Result<RecipientsTree, Error>
where
    I: IntoIterator<Item = (&'a str, &'a [u8], &'a [u8])>,
{
    let mut leaves = Vec::new();
    for (position, (device_id, fingerprint, wrapped_key)) in entries.into_iter().enumerate() {
        let leaf = recipient_leaf(device_id, fingerprint, wrapped_key)?;
        leaves.push((device_id.as_bytes(), leaf, position));
    }
    let count = u32::try_from(leaves.len()).map_err(|_| Error::Malformed {
        what: "too many recipients",
    })?;
    leaves.sort_unstable();
    let mut inclusions = vec![Inclusion::default(); leaves.len()];
    let mut index_of_leaf = vec![0usize; leaves.len()];
    for (sorted_index, (_, _, position)) in leaves.iter().enumerate() {
        index_of_leaf[sorted_index] = *position;
        inclusions[*position].leaf_index = u32::try_from(sorted_index).unwrap_or(u32::MAX);
    }
    let mut level: Vec<[u8; DIGEST_LEN]> = leaves.iter().map(|(_, leaf, _)| *leaf).collect();
    // Each sorted leaf's index at the current level.
    let mut indexes: Vec<usize> = (0..level.len()).collect();
    while level.len() > 1 {
        for (sorted_index, index) in indexes.iter_mut().enumerate() {
            let sibling = *index ^ 1;
            if sibling < level.len() {
                inclusions[index_of_leaf[sorted_index]]
                    .proof
                    .extend_from_slice(&level[sibling]);
            }
            *index >>= 1;
        }
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => node(left, right),
                [alone] => *alone,
                _ => unreachable!("chunks of two"),
            })
            .collect();
    }
    let root = level
        .first()
        .copied()
        .unwrap_or_else(|| Sha256::digest(b"").into());
    Ok(RecipientsTree {
        digest: tree_digest(count, &root),
        inclusions,
    })
}

/// Whether `leaf`, at `inclusion.leaf_index` of a tree of `count` entries, leads with
/// `inclusion.proof` to the root that `digest` commits to (RFC 9162, section 2.1.3.2).
#[must_use]
pub fn verify_inclusion(
    leaf: &[u8; DIGEST_LEN],
    inclusion: &Inclusion,
    count: u32,
    digest: &[u8],
) -> bool {
    let leaf_index = inclusion.leaf_index;
    if leaf_index >= count || !inclusion.proof.len().is_multiple_of(DIGEST_LEN) {
        return false;
    }
    let (mut index, mut last) = (leaf_index, count - 1);
    let mut hash = *leaf;
    for sibling in inclusion.proof.chunks_exact(DIGEST_LEN) {
        if last == 0 {
            return false;
        }
        if index & 1 == 1 || index == last {
            hash = node(sibling, &hash);
            while index & 1 == 0 && index != 0 {
                index >>= 1;
                last >>= 1;
            }
        } else {
            hash = node(&hash, sibling);
        }
        index >>= 1;
        last >>= 1;
    }
    last == 0 && tree_digest(count, &hash).as_slice() == digest
}

fn node(left: &[u8], right: &[u8]) -> [u8; DIGEST_LEN] {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

fn tree_digest(count: u32, root: &[u8; DIGEST_LEN]) -> [u8; DIGEST_LEN] {
    let mut hasher = Sha256::new();
    for item in [RECIPIENTS_LABEL_V2, &count.to_be_bytes(), root] {
        hasher.update((item.len() as u32).to_be_bytes());
        hasher.update(item);
    }
    hasher.finalize().into()
}

fn length_of(item: &[u8]) -> Result<u32, Error> {
    u32::try_from(item.len()).map_err(|_| Error::Malformed {
        what: "an item is longer than 4 GiB",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9162's recursive definition of the root, independent of the code above.
    fn reference_root(leaves: &[[u8; 32]]) -> [u8; 32] {
        match leaves.len() {
            0 => Sha256::digest(b"").into(),
            1 => leaves[0],
            n => {
                // The largest power of two smaller than n.
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                node(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn entries(n: usize) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| {
                (
                    format!("device-{:03}", (i * 7919) % 1000),
                    vec![i as u8; 32],
                    vec![1; i],
                )
            })
            .collect()
    }

    fn tree_of(entries: &[(String, Vec<u8>, Vec<u8>)]) -> RecipientsTree {
        recipients_tree(
            entries
                .iter()
                .map(|(id, fp, key)| (id.as_str(), fp.as_slice(), key.as_slice())),
        )
        .unwrap()
    }

    #[test]
    fn the_digest_commits_to_the_rfc_9162_root_of_the_sorted_leaves() {
        for n in 1..=17 {
            let entries = entries(n);
            let mut sorted = entries.clone();
            sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let leaves: Vec<[u8; 32]> = sorted
                .iter()
                .map(|(id, fp, key)| recipient_leaf(id, fp, key).unwrap())
                .collect();

            let tree = tree_of(&entries);

            assert_eq!(
                tree.digest,
                tree_digest(n as u32, &reference_root(&leaves)),
                "{n} entries"
            );
        }
    }

    #[test]
    fn every_proof_verifies_and_no_other_leaf_index_or_count_does() {
        for n in 1..=17 {
            let entries = entries(n);
            let tree = tree_of(&entries);
            for ((id, fp, key), inclusion) in entries.iter().zip(&tree.inclusions) {
                let leaf = recipient_leaf(id, fp, key).unwrap();

                assert!(verify_inclusion(&leaf, inclusion, n as u32, &tree.digest));

                let other_key = recipient_leaf(id, fp, b"chosen ciphertext").unwrap();
                assert!(!verify_inclusion(
                    &other_key,
                    inclusion,
                    n as u32,
                    &tree.digest
                ));
                assert!(!verify_inclusion(
                    &leaf,
                    inclusion,
                    n as u32 + 1,
                    &tree.digest
                ));
                let moved = Inclusion {
                    leaf_index: (inclusion.leaf_index + 1) % n as u32,
                    ..inclusion.clone()
                };
                assert!(n == 1 || !verify_inclusion(&leaf, &moved, n as u32, &tree.digest));
                let mut truncated = inclusion.clone();
                truncated
                    .proof
                    .truncate(truncated.proof.len().saturating_sub(32));
                assert!(n == 1 || !verify_inclusion(&leaf, &truncated, n as u32, &tree.digest));
            }
        }
    }

    #[test]
    fn input_order_does_not_change_the_digest() {
        let entries = entries(9);
        let mut reversed = entries.clone();
        reversed.reverse();

        assert_eq!(tree_of(&entries).digest, tree_of(&reversed).digest);
    }
}
