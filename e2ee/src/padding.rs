//! Padding of suite V2: the plaintext is prefixed by its length and padded with zeros so that
//! the ciphertext (padded plaintext and 16-byte tag) is a power of two of at least 256 bytes.
//! The server, and anyone who sees the ciphertext, learns the bucket, not the length.

use crate::{Error, format::TAG_LEN};

/// The smallest ciphertext of suite V2, in bytes.
pub const MIN_PADDED_CIPHERTEXT: usize = 256;

/// The ciphertext length of a V2 message whose plaintext has `plaintext_len` bytes: the
/// smallest power of two, at least [`MIN_PADDED_CIPHERTEXT`], that holds the 4-byte length,
/// the plaintext and the tag.
#[must_use]
pub fn padded_ciphertext_len(plaintext_len: usize) -> usize {
    (4 + plaintext_len + TAG_LEN)
        .max(MIN_PADDED_CIPHERTEXT)
        .next_power_of_two()
}

/// `u32be(len) || plaintext || zeros`, [`padded_ciphertext_len`] minus the tag long.
///
/// # Errors
/// [`Error::EncryptFailed`] for a plaintext of 4 GiB or more.
pub fn pad(plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    let length = u32::try_from(plaintext.len()).map_err(|_| Error::EncryptFailed {
        what: "the plaintext is too long",
    })?;
    let mut padded = Vec::with_capacity(padded_ciphertext_len(plaintext.len()) - TAG_LEN);
    padded.extend_from_slice(&length.to_be_bytes());
    padded.extend_from_slice(plaintext);
    padded.resize(padded_ciphertext_len(plaintext.len()) - TAG_LEN, 0);
    Ok(padded)
}

/// The plaintext inside a padded one. Only the padding [`pad`] writes is accepted: the length
/// must fit, the padding must be zeros and the total the bucket of that length, so that one
/// message has one encoding.
///
/// # Errors
/// [`Error::BadPadding`] otherwise.
pub fn unpad(mut padded: Vec<u8>) -> Result<Vec<u8>, Error> {
    let Some(prefix) = padded.first_chunk::<4>() else {
        return Err(Error::BadPadding);
    };
    let length = usize::try_from(u32::from_be_bytes(*prefix)).map_err(|_| Error::BadPadding)?;
    if length > padded.len() - 4
        || padded.len() + TAG_LEN != padded_ciphertext_len(length)
        || padded[4 + length..].iter().any(|byte| *byte != 0)
    {
        return Err(Error::BadPadding);
    }
    padded.truncate(4 + length);
    padded.drain(..4);
    Ok(padded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ciphertexts_come_in_powers_of_two_from_256_bytes() {
        let cases = [
            (0, 256),
            (236, 256),
            (237, 512),
            (1000, 1024),
            (65_516, 65_536),
            (65_517, 131_072),
        ];
        for (plaintext_len, expected) in cases {
            assert_eq!(
                padded_ciphertext_len(plaintext_len),
                expected,
                "{plaintext_len}"
            );
            assert_eq!(
                pad(&vec![7; plaintext_len]).unwrap().len() + TAG_LEN,
                expected
            );
        }
    }

    #[test]
    fn padding_round_trips() {
        for length in [0, 1, 236, 237, 5000] {
            let plaintext: Vec<u8> = (0..length).map(|i| (i % 251) as u8 + 1).collect();

            assert_eq!(unpad(pad(&plaintext).unwrap()), Ok(plaintext));
        }
    }

    #[test]
    fn only_the_canonical_padding_is_accepted() {
        let padded = pad(b"hello").unwrap();
        let mut nonzero = padded.clone();
        *nonzero.last_mut().unwrap() = 1;
        let mut too_long = padded.clone();
        too_long[3] = 250;
        let mut other_bucket = padded.clone();
        other_bucket.resize(padded.len() + 256, 0);

        for bad in [nonzero, too_long, other_bucket, vec![0, 0, 0], Vec::new()] {
            assert_eq!(unpad(bad), Err(Error::BadPadding));
        }
    }
}
