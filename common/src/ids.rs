//! Parsing ids out of requests. Each service wraps the UUID in its own id newtype at its API
//! boundary; the parsing and the message a client gets for a malformed id are the same
//! everywhere.

use uuid::Uuid;

/// A request field that should hold a UUID and does not. Each crate turns it into its own
/// `Error::InvalidArgument`; its message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be a UUID")]
pub struct InvalidUuid {
    /// The field, as the API names it.
    pub field: String,
}

/// Parses a required UUID field (any spelling `uuid` accepts); `field` names it in the error.
///
/// # Errors
/// [`InvalidUuid`] when `value` is not a UUID.
pub fn parse_uuid(field: &str, value: &str) -> Result<Uuid, InvalidUuid> {
    Uuid::try_parse(value).map_err(|_| InvalidUuid {
        field: field.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_id_is_refused_with_its_fields_name() {
        let id = Uuid::now_v7();

        let parsed = parse_uuid("user_id", &id.to_string());
        let refused = parse_uuid("user_id", "not-a-uuid").unwrap_err();

        assert_eq!(parsed, Ok(id));
        assert_eq!(refused.to_string(), "user_id must be a UUID");
    }
}
