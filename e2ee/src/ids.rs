//! Ids in envelopes: the chat service stores conversation, user and device ids as UUIDs and
//! delivers their canonical text, so the format requires that text from the start.

use crate::Error;

/// Whether `text` is the canonical text of a UUID: 36 characters, lowercase hexadecimal digits
/// in groups of 8-4-4-4-12 separated by hyphens (as `Uuid::to_string` and JavaScript's
/// `crypto.randomUUID()` write it). Any other spelling of the same UUID (uppercase, braces, a
/// URN, no hyphens) is refused.
#[must_use]
pub fn is_canonical_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => byte == b'-',
            _ => matches!(byte, b'0'..=b'9' | b'a'..=b'f'),
        })
}

/// [`is_canonical_uuid`] as a check.
///
/// # Errors
/// [`Error::Malformed`] with `what`, the message.
pub(crate) fn check_canonical_uuid(text: &str, what: &'static str) -> Result<(), Error> {
    if is_canonical_uuid(text) {
        Ok(())
    } else {
        Err(Error::Malformed { what })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_hyphenated_uuids_are_canonical() {
        assert!(is_canonical_uuid("a11ce000-0000-4000-8000-0000000000d1"));
        for other in [
            "A11CE000-0000-4000-8000-0000000000D1",
            "a11ce000000040008000-0000000000d1",
            "{a11ce000-0000-4000-8000-0000000000d1}",
            "urn:uuid:a11ce000-0000-4000-8000-0000000000d1",
            "a11ce00000004000800000000000000d1",
            "a11ce000-0000-4000-8000-0000000000g1",
            "a11ce000-0000-4000-8000-0000000000d1 ",
            "",
        ] {
            assert!(!is_canonical_uuid(other), "{other}");
        }
    }
}
