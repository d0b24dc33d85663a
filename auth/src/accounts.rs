//! Accounts: the rules for usernames, passwords and display names, and the `auth.users` queries.

use sqlx::PgPool;
use time::OffsetDateTime;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

use crate::Error;

/// A username that follows the rules: 3 to 32 characters of `A-Z a-z 0-9 _ . -` once in NFKC.
///
/// It has two forms. The display form is the name as registered, NFKC-normalised so that
/// compatibility look-alikes (full-width `ＢＯＢ`, ligatures, the Kelvin sign) become the plain
/// letters, with its case kept (`Bob`). The canonical form is the display form in lowercase
/// (`bob`): the only form names are compared in, for uniqueness, logins, lookups and throttling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    display: String,
    canonical: String,
}

impl Username {
    /// Normalises `value` (NFKC) and checks it against the rules.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] saying which rule is broken.
    pub fn parse(value: &str) -> Result<Self, Error> {
        // No character normalises to nothing, so a valid name is at most 32 characters before
        // NFKC too: refuse longer input before spending work on it.
        if value.len() > 32 * 4 {
            return Err(Error::InvalidArgument(
                "username must be 3 to 32 characters".into(),
            ));
        }
        let display: String = value.nfkc().collect();
        let length = display.chars().count();
        if !(3..=32).contains(&length) {
            return Err(Error::InvalidArgument(
                "username must be 3 to 32 characters".into(),
            ));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
        if !display.chars().all(allowed) {
            return Err(Error::InvalidArgument(
                "username may contain only letters a-z (any case), digits, '_', '.' and '-'".into(),
            ));
        }
        // All ASCII now, so lowercase is the whole case folding.
        let canonical = display.to_ascii_lowercase();
        Ok(Self { display, canonical })
    }

    /// The display form: as registered, after NFKC.
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The canonical form: the key of uniqueness and lookups.
    pub fn canonical(&self) -> &str {
        &self.canonical
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
    /// Login name, as registered (the display form).
    pub username: String,
    /// Name to show; may be empty.
    pub display_name: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// Stores a new account.
///
/// # Errors
/// [`Error::UsernameTaken`] when the username exists in any case.
pub async fn insert_user(
    db: &PgPool,
    username: &Username,
    display_name: &str,
    password_hash: &str,
) -> Result<User, Error> {
    sqlx::query_as(
        "insert into auth.users (id, username, username_canonical, display_name, password_hash)
         values ($1, $2, $3, $4, $5)
         returning id, username, display_name, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(username.as_str())
    .bind(username.canonical())
    .bind(display_name)
    .bind(password_hash)
    .fetch_one(db)
    .await
    .map_err(
        |error| match error.as_database_error().and_then(|e| e.constraint()) {
            Some("users_username_key" | "users_username_canonical_key") => Error::UsernameTaken,
            _ => Error::Db(error),
        },
    )
}

/// The account and password hash for a login, if the username exists in any case. An account
/// without a canonical form (see the migration `auth_username_canonical`) matches only its exact
/// username.
pub async fn find_credentials(
    db: &PgPool,
    username: &Username,
) -> Result<Option<(User, String)>, Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: User,
        password_hash: String,
    }
    let row: Option<Row> = sqlx::query_as(
        "select id, username, display_name, created_at, password_hash
         from auth.users
         where username_canonical = $1 or (username_canonical is null and username = $2)
         order by username = $2 desc limit 1",
    )
    .bind(username.canonical())
    .bind(username.as_str())
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| (row.user, row.password_hash)))
}

/// The accounts with these ids or usernames (matched as in [`find_credentials`]), each once,
/// ordered by canonical username.
pub async fn find_users(
    db: &PgPool,
    ids: &[Uuid],
    usernames: &[Username],
) -> Result<Vec<User>, Error> {
    let canonical: Vec<&str> = usernames.iter().map(Username::canonical).collect();
    let exact: Vec<&str> = usernames.iter().map(Username::as_str).collect();
    // One account per name, preferring the exact one where an old collision left two.
    Ok(sqlx::query_as(
        "with named as (
             select distinct on (wanted.position) users.id
             from unnest($2::text[], $3::text[]) with ordinality
                  as wanted(canonical, exact, position)
             join auth.users users
               on users.username_canonical = wanted.canonical
               or (users.username_canonical is null and users.username = wanted.exact)
             order by wanted.position, users.username = wanted.exact desc
         )
         select id, username, display_name, created_at from auth.users
         where id = any($1) or id in (select id from named)
         order by lower(username), username",
    )
    .bind(ids)
    .bind(canonical)
    .bind(exact)
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
    fn usernames_follow_the_rules() {
        assert!(Username::parse("alice_01.x-y").is_ok());
        assert!(Username::parse("ab").is_err());
        assert!(Username::parse(&"a".repeat(33)).is_err());
        assert!(Username::parse("al ice").is_err());
        assert!(Username::parse("a/b").is_err());
        assert!(Username::parse("ålice").is_err(), "not ASCII once in NFKC");
        assert!(
            Username::parse(&"\u{fdfa}".repeat(100)).is_err(),
            "long before NFKC"
        );
    }

    #[test]
    fn usernames_keep_their_case_for_display_and_compare_in_lowercase() {
        let bob = Username::parse("BoB").unwrap();

        assert_eq!((bob.as_str(), bob.canonical()), ("BoB", "bob"));
    }

    #[test]
    fn compatibility_look_alikes_normalise_to_plain_letters() {
        let full_width = Username::parse("\u{ff22}\u{ff4f}\u{ff42}").unwrap(); // full-width "Ｂｏｂ"
        let kelvin = Username::parse("\u{212a}im").unwrap(); // Kelvin sign, then "im"
        let ligature = Username::parse("\u{fb01}sh").unwrap(); // "ﬁ" ligature, then "sh"

        assert_eq!(
            (full_width.as_str(), full_width.canonical()),
            ("Bob", "bob")
        );
        assert_eq!(kelvin.canonical(), "kim");
        assert_eq!(ligature.canonical(), "fish");
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
