//! Accounts: the rules for usernames, passwords and display names, and the `auth.users` queries.

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Error;

/// A username that follows the rules: 3 to 32 characters of `a-z 0-9 _ . -`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Checks `value` against the rules. Nothing is normalised: `Alice` is refused, not lowered.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] saying which rule is broken.
    pub fn parse(value: String) -> Result<Self, Error> {
        let length = value.chars().count();
        if !(3..=32).contains(&length) {
            return Err(Error::InvalidArgument(
                "username must be 3 to 32 characters".into(),
            ));
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c);
        if !value.chars().all(allowed) {
            return Err(Error::InvalidArgument(
                "username may contain only lowercase letters, digits, '_', '.' and '-'".into(),
            ));
        }
        Ok(Self(value))
    }

    /// The username.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a new password: 8 to 128 characters (Unicode scalar values). It is never truncated,
/// trimmed or case-folded.
///
/// # Errors
/// [`Error::InvalidArgument`] when too short or too long.
pub fn check_new_password(password: &str) -> Result<(), Error> {
    let length = password.chars().count();
    if length < 8 {
        return Err(Error::InvalidArgument(
            "password must be at least 8 characters".into(),
        ));
    }
    if length > 128 {
        return Err(Error::InvalidArgument(
            "password must be at most 128 characters".into(),
        ));
    }
    Ok(())
}

/// Checks a display or device name: at most 64 characters and no control characters.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `what`.
pub fn check_name(what: &str, value: &str) -> Result<(), Error> {
    if value.chars().count() > 64 {
        return Err(Error::InvalidArgument(format!(
            "{what} must be at most 64 characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

/// An account as others see it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    /// Stable id.
    pub id: Uuid,
    /// Login name.
    pub username: String,
    /// Name to show; may be empty.
    pub display_name: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// Stores a new account.
///
/// # Errors
/// [`Error::UsernameTaken`] when the username exists.
pub async fn insert_user(
    db: &PgPool,
    username: &Username,
    display_name: &str,
    password_hash: &str,
) -> Result<User, Error> {
    sqlx::query_as(
        "insert into auth.users (id, username, display_name, password_hash)
         values ($1, $2, $3, $4)
         returning id, username, display_name, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(username.as_str())
    .bind(display_name)
    .bind(password_hash)
    .fetch_one(db)
    .await
    .map_err(
        |error| match error.as_database_error().and_then(|e| e.constraint()) {
            Some("users_username_key") => Error::UsernameTaken,
            _ => Error::Db(error),
        },
    )
}

/// The account and password hash for a login, if the username exists.
pub async fn find_credentials(
    db: &PgPool,
    username: &str,
) -> Result<Option<(User, String)>, Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: User,
        password_hash: String,
    }
    let row: Option<Row> = sqlx::query_as(
        "select id, username, display_name, created_at, password_hash
         from auth.users where username = $1",
    )
    .bind(username)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| (row.user, row.password_hash)))
}

/// The accounts with these ids or usernames, each once, ordered by username.
pub async fn find_users(
    db: &PgPool,
    ids: &[Uuid],
    usernames: &[String],
) -> Result<Vec<User>, Error> {
    Ok(sqlx::query_as(
        "select id, username, display_name, created_at from auth.users
         where id = any($1) or username = any($2) order by username",
    )
    .bind(ids)
    .bind(usernames)
    .fetch_all(db)
    .await?)
}

/// The account with this id.
///
/// # Errors
/// [`Error::InvalidCredentials`] when it no longer exists (a token outliving its user).
pub async fn get_user(db: &PgPool, id: Uuid) -> Result<User, Error> {
    sqlx::query_as("select id, username, display_name, created_at from auth.users where id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(Error::InvalidCredentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_rules_and_are_never_lowered() {
        assert!(Username::parse("alice_01.x-y".into()).is_ok());
        assert!(Username::parse("ab".into()).is_err());
        assert!(Username::parse("a".repeat(33)).is_err());
        assert!(Username::parse("Alice".into()).is_err());
        assert!(Username::parse("al ice".into()).is_err());
        assert!(Username::parse("ålice".into()).is_err());
    }

    #[test]
    fn passwords_are_counted_in_characters_not_bytes() {
        assert!(check_new_password("1234567").is_err());
        assert!(check_new_password("12345678").is_ok());
        assert!(check_new_password(&"é".repeat(128)).is_ok());
        assert!(check_new_password(&"é".repeat(129)).is_err());
    }

    #[test]
    fn names_refuse_control_characters_and_long_values() {
        assert!(check_name("display name", "Alice Liddell").is_ok());
        assert!(check_name("display name", "bad\nname").is_err());
        assert!(check_name("display name", &"x".repeat(65)).is_err());
    }
}
