//! The byte strings of the format: canonical header, recipients digest, signed message and key
//! commitment, exactly as the comment of `chat.v1.Envelope` specifies them.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::Error;

/// `CIPHER_SUITE_V1`: AES-256-GCM-SIV, RSA-OAEP-SHA-256, Ed25519, SHA-256. Still opened, no
/// longer sealed.
pub const SUITE_V1: u32 = 1;
/// `CIPHER_SUITE_V2`: the primitives of V1; the header adds the sender's chain position
/// (counter, previous envelope hash, time), the recipients digest binds every wrapped key (a
/// Merkle tree, `tree.rs`), and plaintexts are padded to buckets (`padding.rs`).
pub const SUITE_V2: u32 = 2;
/// Length of a content key (AES-256).
pub const CONTENT_KEY_LEN: usize = 32;
/// Length of an AES-GCM-SIV nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the AES-GCM-SIV tag that ends every ciphertext.
pub const TAG_LEN: usize = 16;
/// Length of a key commitment (HMAC-SHA-256).
pub const KEY_COMMITMENT_LEN: usize = 32;
/// Length of a recipients digest and of a key fingerprint (SHA-256).
pub const DIGEST_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of a raw Ed25519 public key.
pub const SIGNING_KEY_LEN: usize = 32;

/// The first item of every canonical header of suite V1.
pub const HEADER_LABEL: &[u8] = b"chat-e2ee-v1 header";
/// The first item of every canonical header of suite V2.
pub const HEADER_LABEL_V2: &[u8] = b"chat-e2ee-v2 header";
/// The HMAC message of the key commitment (the content key is the HMAC key).
pub const KEY_COMMITMENT_LABEL: &[u8] = b"chat-e2ee-v1 key commitment";

/// The items of a canonical header, borrowed from an envelope (see [`canonical_header`]).
///
/// The recipients digest is not an envelope field: a sender and the server compute it from the
/// full recipient list ([`recipients_digest`]), a receiving device takes it from
/// `Message.recipients_digest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// `Envelope.suite`, as its enum number.
    pub suite: u32,
    /// `Envelope.conversation_id`.
    pub conversation_id: &'a str,
    /// `Envelope.sender_user_id`.
    pub sender_user_id: &'a str,
    /// `Envelope.sender_device_id`.
    pub sender_device_id: &'a str,
    /// `Envelope.client_message_id`.
    pub client_message_id: &'a str,
    /// The recipients digest (32 bytes).
    pub recipients_digest: &'a [u8],
    /// `Envelope.key_commitment` (32 bytes).
    pub key_commitment: &'a [u8],
    /// `Envelope.nonce` (12 bytes).
    pub nonce: &'a [u8],
    /// V2: `Envelope.sender_counter`, from 1 per (sending device, conversation).
    pub sender_counter: u64,
    /// V2: `Envelope.previous_envelope_hash` (32 bytes; zeros before the first message).
    pub previous_envelope_hash: &'a [u8],
    /// V2: `Envelope.sender_time_ms`, the sender's clock at sealing (Unix milliseconds).
    pub sender_time_ms: u64,
}

impl Header<'_> {
    /// Checks the lengths of the fixed-size items: a 32-byte recipients digest and key
    /// commitment, and a 12-byte nonce.
    ///
    /// # Errors
    /// [`Error::Malformed`] naming the first item of the wrong length.
    pub fn check_lengths(&self) -> Result<(), Error> {
        if self.recipients_digest.len() != DIGEST_LEN {
            return Err(Error::Malformed {
                what: "the recipients digest must be 32 bytes",
            });
        }
        if self.key_commitment.len() != KEY_COMMITMENT_LEN {
            return Err(Error::Malformed {
                what: "the key commitment must be 32 bytes",
            });
        }
        if self.nonce.len() != NONCE_LEN {
            return Err(Error::Malformed {
                what: "the nonce must be 12 bytes",
            });
        }
        if self.suite == SUITE_V2 {
            if self.previous_envelope_hash.len() != DIGEST_LEN {
                return Err(Error::Malformed {
                    what: "the previous envelope hash must be 32 bytes",
                });
            }
            if self.sender_counter == 0 {
                return Err(Error::Malformed {
                    what: "the sender counter starts at 1",
                });
            }
        }
        Ok(())
    }
}

/// The canonical header: every item prefixed by its length as a 32-bit big-endian integer, in
/// this order: `"chat-e2ee-v1 header"`, the suite as 4 big-endian bytes, `conversation_id`,
/// `sender_user_id`, `sender_device_id`, `client_message_id` (UTF-8), the recipients digest,
/// the key commitment, the nonce. It is the associated data of the AES-GCM-SIV encryption.
///
/// Suite V2 starts with `"chat-e2ee-v2 header"` instead and appends three items:
/// `sender_counter` and `sender_time_ms` as 8 big-endian bytes each, with
/// `previous_envelope_hash` between them (the order of the proto fields). Every other suite
/// number is encoded as V1 (and refused by [`verify_signature`](crate::verify_signature)).
///
/// Items are encoded as given, whatever their lengths ([`Header::check_lengths`] checks those).
///
/// # Errors
/// [`Error::Malformed`] when an item is longer than `u32::MAX` bytes.
pub fn canonical_header(header: &Header<'_>) -> Result<Vec<u8>, Error> {
    let v2 = header.suite == SUITE_V2;
    let counter = header.sender_counter.to_be_bytes();
    let time = header.sender_time_ms.to_be_bytes();
    let suite = header.suite.to_be_bytes();
    let mut items: Vec<&[u8]> = vec![
        if v2 { HEADER_LABEL_V2 } else { HEADER_LABEL },
        &suite,
        header.conversation_id.as_bytes(),
        header.sender_user_id.as_bytes(),
        header.sender_device_id.as_bytes(),
        header.client_message_id.as_bytes(),
        header.recipients_digest,
        header.key_commitment,
        header.nonce,
    ];
    if v2 {
        items.extend([&counter[..], header.previous_envelope_hash, &time[..]]);
    }
    let total = items.iter().map(|item| 4 + item.len()).sum();
    let mut out = Vec::with_capacity(total);
    for item in items {
        put_length_prefixed(&mut out, item)?;
    }
    Ok(out)
}

/// What the sender device signs: the canonical header, itself length-prefixed (4 bytes,
/// big-endian), followed by SHA-256 of the ciphertext (32 bytes, no prefix).
///
/// # Errors
/// As [`canonical_header`].
pub fn signed_message(header: &Header<'_>, ciphertext: &[u8]) -> Result<Vec<u8>, Error> {
    let header = canonical_header(header)?;
    let mut out = Vec::with_capacity(4 + header.len() + DIGEST_LEN);
    put_length_prefixed(&mut out, &header)?;
    out.extend_from_slice(&Sha256::digest(ciphertext));
    Ok(out)
}

/// The recipients digest: SHA-256 over the recipients sorted by `device_id` (bytewise, on the
/// UTF-8 bytes), each as length-prefixed `device_id` followed by length-prefixed
/// `key_fingerprint`. Each item is `(device_id, key_fingerprint)`, in any order.
///
/// Device ids are unique in any valid envelope; should two be equal, they are ordered by their
/// fingerprints (bytewise), so the digest never depends on the input order.
///
/// # Errors
/// [`Error::Malformed`] when an item is longer than `u32::MAX` bytes.
///
/// This is the digest of suite V1; V2 uses [`recipients_tree`](crate::recipients_tree).
pub fn recipients_digest<'a, I>(recipients: I) -> Result<[u8; DIGEST_LEN], Error>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let mut sorted: Vec<(&[u8], &[u8])> = recipients
        .into_iter()
        .map(|(device_id, fingerprint)| (device_id.as_bytes(), fingerprint))
        .collect();
    sorted.sort_unstable();
    let mut encoded = Vec::with_capacity(sorted.len() * (4 + 36 + 4 + DIGEST_LEN));
    for (device_id, fingerprint) in sorted {
        put_length_prefixed(&mut encoded, device_id)?;
        put_length_prefixed(&mut encoded, fingerprint)?;
    }
    Ok(Sha256::digest(&encoded).into())
}

/// The key commitment: HMAC-SHA-256 keyed with the content key over the ASCII string
/// `"chat-e2ee-v1 key commitment"` (no length prefix, no terminator).
#[must_use]
pub fn key_commitment(content_key: &[u8; CONTENT_KEY_LEN]) -> [u8; KEY_COMMITMENT_LEN] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(content_key)
        .expect("HMAC accepts keys of any length");
    mac.update(KEY_COMMITMENT_LABEL);
    mac.finalize().into_bytes().into()
}

fn put_length_prefixed(out: &mut Vec<u8>, item: &[u8]) -> Result<(), Error> {
    let length = u32::try_from(item.len()).map_err(|_| Error::Malformed {
        what: "an item is longer than 4 GiB",
    })?;
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(item);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(digest: &'a [u8], commitment: &'a [u8], nonce: &'a [u8]) -> Header<'a> {
        Header {
            suite: SUITE_V1,
            conversation_id: "c",
            sender_user_id: "u",
            sender_device_id: "d",
            client_message_id: "m",
            recipients_digest: digest,
            key_commitment: commitment,
            nonce,
            sender_counter: 0,
            previous_envelope_hash: &[],
            sender_time_ms: 0,
        }
    }

    #[test]
    fn the_canonical_header_is_every_item_with_a_big_endian_length() {
        let encoded = canonical_header(&header(&[0xaa], &[0xbb, 0xcc], &[])).unwrap();

        let mut expected = Vec::new();
        expected.extend_from_slice(&[0, 0, 0, 19]);
        expected.extend_from_slice(b"chat-e2ee-v1 header");
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 1]);
        for field in [b"c", b"u", b"d", b"m"] {
            expected.extend_from_slice(&[0, 0, 0, 1]);
            expected.extend_from_slice(field);
        }
        expected.extend_from_slice(&[0, 0, 0, 1, 0xaa, 0, 0, 0, 2, 0xbb, 0xcc, 0, 0, 0, 0]);
        assert_eq!(encoded, expected);
    }

    #[test]
    fn moving_a_byte_between_fields_changes_the_header() {
        let mut left = header(&[], &[], &[]);
        left.conversation_id = "ab";
        left.sender_user_id = "c";
        let mut right = left;
        right.conversation_id = "a";
        right.sender_user_id = "bc";

        assert_ne!(
            canonical_header(&left).unwrap(),
            canonical_header(&right).unwrap()
        );
    }

    #[test]
    fn the_signed_message_is_the_prefixed_header_then_the_ciphertext_hash() {
        let header = header(&[1; 32], &[2; 32], &[3; 12]);
        let canonical = canonical_header(&header).unwrap();

        let signed = signed_message(&header, b"ciphertext").unwrap();

        let length = u32::try_from(canonical.len()).unwrap().to_be_bytes();
        assert_eq!(signed[..4], length);
        assert_eq!(signed[4..4 + canonical.len()], canonical);
        assert_eq!(
            signed[4 + canonical.len()..],
            Sha256::digest(b"ciphertext")[..]
        );
    }

    #[test]
    fn the_recipients_digest_ignores_input_order_and_sorts_by_utf8_bytes() {
        // U+FF61 sorts before U+1F600 in UTF-8 (EF.. < F0..) but after it in UTF-16 (FF61 >
        // D83D): a JavaScript `sort()` on strings gets this wrong.
        let forward = [("\u{ff61}", &[1u8][..]), ("\u{1f600}", &[2u8][..])];
        let backward = [forward[1], forward[0]];

        let digest = recipients_digest(forward).unwrap();

        assert_eq!(digest, recipients_digest(backward).unwrap());
        let mut encoded = Vec::new();
        encoded.extend_from_slice(&[0, 0, 0, 3, 0xef, 0xbd, 0xa1, 0, 0, 0, 1, 1]);
        encoded.extend_from_slice(&[0, 0, 0, 4, 0xf0, 0x9f, 0x98, 0x80, 0, 0, 0, 1, 2]);
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&encoded)));
    }

    #[test]
    fn the_recipients_digest_of_no_recipient_is_the_hash_of_nothing() {
        let digest = recipients_digest(std::iter::empty()).unwrap();

        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(b"")));
    }

    #[test]
    fn the_key_commitment_is_hmac_sha256_of_the_label() {
        // Independent of the hmac crate: HMAC by its definition (RFC 2104), 64-byte blocks.
        let key = [7u8; 32];
        let mut inner = Sha256::new();
        inner.update(key.map(|b| b ^ 0x36));
        inner.update([0x36; 32]);
        inner.update(KEY_COMMITMENT_LABEL);
        let mut outer = Sha256::new();
        outer.update(key.map(|b| b ^ 0x5c));
        outer.update([0x5c; 32]);
        outer.update(inner.finalize());

        assert_eq!(key_commitment(&key), <[u8; 32]>::from(outer.finalize()));
    }

    #[test]
    fn a_v2_header_has_its_own_label_and_the_chain_items_last() {
        let previous = [9u8; 32];
        let mut v2 = header(&[1; 32], &[2; 32], &[3; 12]);
        v2.suite = SUITE_V2;
        v2.sender_counter = 0x0102;
        v2.previous_envelope_hash = &previous;
        v2.sender_time_ms = 0x0a0b;
        let mut as_v1 = v2;
        as_v1.suite = SUITE_V1;

        let encoded = canonical_header(&v2).unwrap();

        let v1_items = canonical_header(&as_v1).unwrap();
        assert_eq!(&encoded[4..23], b"chat-e2ee-v2 header");
        assert_eq!(encoded[23..35], [0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 1]);
        // Past the label and the suite, the V1 items, then the chain.
        assert_eq!(encoded[31..v1_items.len()], v1_items[31..]);
        let mut chain = vec![0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 32];
        chain.extend_from_slice(&previous);
        chain.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x0a, 0x0b]);
        assert_eq!(encoded[v1_items.len()..], chain);
    }

    #[test]
    fn a_v2_header_needs_a_32_byte_previous_hash_and_a_counter_from_1() {
        let previous = [0u8; 32];
        let mut v2 = header(&[1; 32], &[2; 32], &[3; 12]);
        v2.suite = SUITE_V2;
        v2.sender_counter = 1;
        v2.previous_envelope_hash = &previous;
        assert!(v2.check_lengths().is_ok());

        let mut short = v2;
        short.previous_envelope_hash = &previous[1..];
        let mut zero = v2;
        zero.sender_counter = 0;

        assert!(short.check_lengths().is_err());
        assert!(zero.check_lengths().is_err());
    }

    #[test]
    fn lengths_are_checked_item_by_item() {
        let (digest, commitment, nonce) = ([0; 32], [0; 32], [0; 12]);

        assert!(header(&digest, &commitment, &nonce).check_lengths().is_ok());
        assert!(
            header(&digest[1..], &commitment, &nonce)
                .check_lengths()
                .is_err()
        );
        assert!(
            header(&digest, &commitment[1..], &nonce)
                .check_lengths()
                .is_err()
        );
        assert!(
            header(&digest, &commitment, &nonce[1..])
                .check_lengths()
                .is_err()
        );
    }
}
