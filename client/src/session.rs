//! A logged-in device: the gateway connection, tokens (refreshed automatically) and keys.

use std::{
    collections::HashMap,
    future::Future,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    chat::v1::chat_service_client::ChatServiceClient,
    group::v1::group_service_client::GroupServiceClient,
};
use secrecy::{ExposeSecret, SecretString};
use tonic::{Code, Request, Response, Status, transport::Channel};

use crate::{
    Error, Result,
    error::RawStatus,
    explain::{self, Context},
    keystore::{self, KdfParams},
    profile::{Account, Profile, Tokens},
    server::Server,
    warnings::{MembershipWarning, Warning, WarningSink},
};

/// Refresh the access token when it expires within this long.
const REFRESH_MARGIN_SECS: i64 = 60;
/// How often a call is retried while the gateway answers UNAVAILABLE, and the first delay.
const UNAVAILABLE_RETRIES: u32 = 4;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// How new devices are set up.
#[derive(Clone, Copy, Debug)]
pub struct KeyOptions {
    /// RSA modulus size of new devices' encryption keys (default 3072; tests use 2048).
    pub rsa_bits: usize,
    /// argon2id costs for the keys at rest.
    pub kdf: KdfParams,
}

impl Default for KeyOptions {
    fn default() -> Self {
        KeyOptions {
            rsa_bits: e2ee::DEFAULT_RSA_BITS,
            kdf: KdfParams::default(),
        }
    }
}

/// A device of a user, as auth publishes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// The device id.
    pub device_id: String,
    /// Its name.
    pub name: String,
    /// SHA-256 of its encryption key, hex (empty when it has no keys).
    pub encryption_fingerprint: String,
    /// SHA-256 of its signing key, hex (empty when it has no keys).
    pub signing_fingerprint: String,
    /// Whether this is the session's own device.
    pub current: bool,
}

/// See [`Session::set_decryption_hook`].
#[doc(hidden)]
pub type DecryptionHook = Arc<dyn Fn() + Send + Sync>;

/// A logged-in device. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Session {
    pub(crate) profile: Profile,
    pub(crate) account: Account,
    /// Shared with the blocking threads that do the RSA work of opening messages.
    pub(crate) keys: Option<Arc<e2ee::DeviceKeys>>,
    /// See [`Session::set_decryption_hook`].
    pub(crate) decryption_hook: std::sync::Mutex<Option<DecryptionHook>>,
    tokens: tokio::sync::Mutex<Tokens>,
    pub(crate) auth: AuthServiceClient<Channel>,
    pub(crate) chat: ChatServiceClient<Channel>,
    pub(crate) group: GroupServiceClient<Channel>,
    pub(crate) users: std::sync::Mutex<HashMap<String, auth_pb::UserWithDevices>>,
    pub(crate) warnings: std::sync::Mutex<Vec<Warning>>,
    pub(crate) warning_sink: std::sync::Mutex<Option<WarningSink>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// Creates an account (no device, no session: [`Session::login`] next).
///
/// # Errors
/// [`Error::Refused`] with ALREADY_EXISTS for a taken username; [`Error::Usage`] for a
/// username or password auth refuses; [`Error::Unavailable`].
pub async fn register(
    server: &Server,
    username: &str,
    password: &SecretString,
    display_name: &str,
) -> Result<String> {
    let auth = AuthServiceClient::new(server.channel());
    let request = auth_pb::RegisterRequest {
        username: username.to_owned(),
        password: password.expose_secret().to_owned(),
        display_name: display_name.to_owned(),
    };
    let response = retry_unavailable(server.url(), || {
        let mut auth = auth.clone();
        let request = request.clone();
        async move { auth.register(request).await }
    })
    .await?;
    Ok(response.user.map(|user| user.user_id).unwrap_or_default())
}

impl Session {
    /// Logs in as `username`. When the profile already holds a device of this user on this
    /// server, resumes it (its keys open with `passphrase`); otherwise creates a new device:
    /// generates its keys, uploads their public halves and saves the private keys sealed with
    /// the passphrase. The passphrase must not be the password, which the server receives at
    /// every login.
    ///
    /// # Errors
    /// [`Error::Auth`] for wrong credentials or a wrong passphrase; [`Error::Unavailable`] or
    /// [`Error::Tls`]; [`Error::Profile`]; [`Error::Usage`] for a passphrase equal to the
    /// password, KDF costs below the floor ([`KdfParams::check`]), or a plaintext login to a host
    /// the profile reached over TLS ([`Server::check_no_downgrade`]).
    pub async fn login(
        profile: Profile,
        server: &Server,
        username: &str,
        password: &SecretString,
        passphrase: &SecretString,
        options: KeyOptions,
    ) -> Result<Session> {
        server.check_no_downgrade(&profile)?;
        options.kdf.check()?;
        if passphrase.expose_secret() == password.expose_secret() {
            return Err(Error::usage(
                "the passphrase of the device keys must not be the account password (the \
                 server receives the password at every login): choose another one"
                    .to_owned(),
            ));
        }
        let passphrase = passphrase.expose_secret().as_bytes();
        let channel = server.channel();
        let auth = AuthServiceClient::new(channel.clone());
        let existing = profile.account()?.filter(|account| {
            account.server == server.url()
                && crate::profile::same_username(&account.username, username)
        });
        let (device_id, keys) = match (&existing, profile.sealed_keys()?) {
            (Some(account), Some(sealed)) => (
                account.device_id.clone(),
                Some(open_and_upgrade(
                    &profile,
                    &sealed,
                    passphrase,
                    options.kdf,
                )?),
            ),
            _ => (String::new(), None),
        };
        let mut request = auth_pb::LoginRequest {
            username: username.to_owned(),
            password: password.expose_secret().to_owned(),
            device_id,
            device_name: device_name(),
        };
        let login_once = |request: auth_pb::LoginRequest| {
            let auth = auth.clone();
            retry_unavailable(server.url(), move || {
                let mut auth = auth.clone();
                let request = request.clone();
                async move { auth.login(request).await }
            })
        };
        let (login, keys) = match login_once(request.clone()).await {
            // The profile's device was revoked: log in as a new device, with new keys.
            Err(Error::NotFound(..)) if !request.device_id.is_empty() => {
                request.device_id.clear();
                (login_once(request).await?, None)
            }
            result => (result?, keys),
        };
        let user = login.user.unwrap_or_default();
        let device = login.device.unwrap_or_default();
        let tokens = tokens_from(login.tokens.unwrap_or_default());
        let keys = match keys {
            Some(keys) => {
                // The server lost or replaced this device's keys: publish ours again.
                let published = device.keys.as_ref().map(|k| &k.encryption_public_key);
                if published != Some(&keys.public_keys().encryption_spki) {
                    upload_keys(&auth, &tokens.access_token, &keys).await?;
                }
                keys
            }
            None => {
                let keys = tokio::task::spawn_blocking(move || {
                    e2ee::DeviceKeys::generate(options.rsa_bits)
                })
                .await
                .map_err(|_| Error::Crypto("key generation panicked".to_owned()))??;
                upload_keys(&auth, &tokens.access_token, &keys).await?;
                profile.save_sealed_keys(&keystore::seal_keys(&keys, passphrase, options.kdf)?)?;
                if existing.is_none() {
                    // A new account in this profile: forget the previous one's pins and cursors.
                    profile.save_contacts(&Default::default())?;
                    profile.save_cursors(&Default::default())?;
                    profile.save_groups(&Default::default())?;
                    profile.remove_seen()?;
                }
                keys
            }
        };
        let account = Account {
            server: server.url().to_owned(),
            username: user.username,
            user_id: user.user_id,
            device_id: device.device_id,
        };
        profile.save_account(&account)?;
        profile.save_tokens(&tokens)?;
        Ok(Session::with(profile, account, tokens, Some(keys), channel))
    }

    /// Resumes the session saved in `profile`, on the server it logged in to (trusting the
    /// certificates of `ca_file` for an `https://` server, as [`Server::new`]). Keys are opened
    /// only when `passphrase` is given (commands that neither send nor read messages do not
    /// need them).
    ///
    /// # Errors
    /// [`Error::Auth`] when the profile is not logged in or the passphrase is wrong; as
    /// [`Server::new`].
    pub fn resume(
        profile: Profile,
        passphrase: Option<&SecretString>,
        ca_file: Option<&Path>,
    ) -> Result<Session> {
        let open = passphrase.map(|passphrase| {
            move |profile: &Profile, sealed: &keystore::SealedKeys| {
                open_and_upgrade(
                    profile,
                    sealed,
                    passphrase.expose_secret().as_bytes(),
                    KdfParams::default(),
                )
            }
        });
        Session::resume_with(profile, open, ca_file)
    }

    /// As [`Session::resume`], the keys opened with the key `chat unlock` kept
    /// ([`crate::unlock::unlocked_key`]) instead of the passphrase.
    ///
    /// # Errors
    /// As [`Session::resume`]; [`Error::Auth`] when the key no longer opens the keys.
    pub fn resume_unlocked(
        profile: Profile,
        key: &[u8; 32],
        ca_file: Option<&Path>,
    ) -> Result<Session> {
        let open =
            |_: &Profile, sealed: &keystore::SealedKeys| keystore::open_keys_with(sealed, key);
        Session::resume_with(profile, Some(open), ca_file)
    }

    fn resume_with(
        profile: Profile,
        open: Option<impl FnOnce(&Profile, &keystore::SealedKeys) -> Result<e2ee::DeviceKeys>>,
        ca_file: Option<&Path>,
    ) -> Result<Session> {
        let not_logged_in = || Error::auth("not logged in: run `chat login` first".to_owned());
        let account = profile.account()?.ok_or_else(not_logged_in)?;
        let tokens = profile.tokens()?.ok_or_else(not_logged_in)?;
        let keys = match open {
            Some(open) => {
                let sealed = profile.sealed_keys()?.ok_or_else(not_logged_in)?;
                Some(open(&profile, &sealed)?)
            }
            None => None,
        };
        let channel = Server::new(&account.server, ca_file)?.channel();
        Ok(Session::with(profile, account, tokens, keys, channel))
    }

    fn with(
        profile: Profile,
        account: Account,
        tokens: Tokens,
        keys: Option<e2ee::DeviceKeys>,
        channel: Channel,
    ) -> Session {
        Session {
            profile,
            account,
            keys: keys.map(Arc::new),
            decryption_hook: Default::default(),
            tokens: tokio::sync::Mutex::new(tokens),
            auth: AuthServiceClient::new(channel.clone()),
            chat: ChatServiceClient::new(channel.clone()),
            group: GroupServiceClient::new(channel),
            users: Default::default(),
            warnings: Default::default(),
            warning_sink: Default::default(),
        }
    }

    /// The account.
    #[must_use]
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// The profile.
    #[must_use]
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// This device's public keys, when the keys are open.
    #[must_use]
    pub fn public_keys(&self) -> Option<&e2ee::PublicDeviceKeys> {
        self.keys.as_deref().map(e2ee::DeviceKeys::public_keys)
    }

    pub(crate) fn keys(&self) -> Result<&e2ee::DeviceKeys> {
        self.shared_keys().map(|keys| &**keys)
    }

    /// The keys, to move into a blocking task.
    pub(crate) fn shared_keys(&self) -> Result<&Arc<e2ee::DeviceKeys>> {
        self.keys.as_ref().ok_or_else(|| {
            Error::usage("this needs the device keys: give the passphrase".to_owned())
        })
    }

    /// Test hook: `hook` runs where the RSA work of opening a message begins, on the thread
    /// that does it, so that a test can make opening slow (or hang) and check that nothing the
    /// server sees waits for it. `None` removes it.
    #[doc(hidden)]
    pub fn set_decryption_hook(&self, hook: Option<DecryptionHook>) {
        *self.decryption_hook.lock().expect("not poisoned") = hook;
    }

    /// Key-change warnings queued since the last call (see [`crate::KeyWarning`]); membership
    /// warnings stay queued.
    pub fn take_warnings(&self) -> Vec<crate::KeyWarning> {
        let mut queue = self.warnings.lock().expect("not poisoned");
        let (keys, rest): (Vec<Warning>, Vec<Warning>) = std::mem::take(&mut *queue)
            .into_iter()
            .partition(|warning| matches!(warning, Warning::KeyWarning(_)));
        *queue = rest;
        keys.into_iter()
            .filter_map(|warning| match warning {
                Warning::KeyWarning(warning) => Some(warning),
                Warning::MembershipWarning(_) => None,
            })
            .collect()
    }

    /// Membership warnings queued since the last call (see [`MembershipWarning`]); key
    /// warnings stay queued.
    pub fn take_membership_warnings(&self) -> Vec<MembershipWarning> {
        let mut queue = self.warnings.lock().expect("not poisoned");
        let (members, rest): (Vec<Warning>, Vec<Warning>) = std::mem::take(&mut *queue)
            .into_iter()
            .partition(|warning| matches!(warning, Warning::MembershipWarning(_)));
        *queue = rest;
        members
            .into_iter()
            .filter_map(|warning| match warning {
                Warning::MembershipWarning(warning) => Some(warning),
                Warning::KeyWarning(_) => None,
            })
            .collect()
    }

    /// Every warning queued since the last call, in order.
    pub fn take_all_warnings(&self) -> Vec<Warning> {
        std::mem::take(&mut *self.warnings.lock().expect("not poisoned"))
    }

    /// Sends every warning from now on to `sink` as soon as it is found (before anything is
    /// sealed for what changed) instead of queueing it; `None` queues them again.
    pub fn set_warning_sink(&self, sink: Option<WarningSink>) {
        *self.warning_sink.lock().expect("not poisoned") = sink;
    }

    /// The current user and device, from auth.
    ///
    /// # Errors
    /// [`Error::Auth`] when the session ended; [`Error::Unavailable`].
    pub async fn whoami(&self) -> Result<(auth_pb::User, DeviceInfo)> {
        let response = self
            .call(auth_pb::GetCurrentUserRequest {}, |request| {
                let mut auth = self.auth.clone();
                async move { auth.get_current_user(request).await }
            })
            .await
            // NOT_FOUND for the token's own device: it was revoked (its token still works for
            // a second or so after).
            .map_err(|error| {
                error.in_context(Context {
                    server: Some(&self.account.server),
                    own_device: true,
                })
            })?;
        let device = device_info(response.device.unwrap_or_default(), &self.account.device_id);
        Ok((response.user.unwrap_or_default(), device))
    }

    /// The user's active devices.
    ///
    /// # Errors
    /// As [`Session::whoami`].
    pub async fn devices(&self) -> Result<Vec<DeviceInfo>> {
        let response = self
            .call(auth_pb::ListDevicesRequest {}, |request| {
                let mut auth = self.auth.clone();
                async move { auth.list_devices(request).await }
            })
            .await?;
        Ok(response
            .devices
            .into_iter()
            .map(|device| device_info(device, &self.account.device_id))
            .collect())
    }

    /// Revokes one of the user's devices (possibly this one).
    ///
    /// # Errors
    /// [`Error::NotFound`] for a device that is not an active device of the user.
    pub async fn revoke_device(&self, device_id: &str) -> Result<()> {
        let request = auth_pb::RevokeDeviceRequest {
            device_id: device_id.to_owned(),
        };
        self.call(request, |request| {
            let mut auth = self.auth.clone();
            async move { auth.revoke_device(request).await }
        })
        .await?;
        Ok(())
    }

    /// Renames one of the user's devices (auth trims the name; 1 to 64 characters).
    ///
    /// # Errors
    /// [`Error::NotFound`] for a device that is not an active device of the user; a refused
    /// name ([`Error::Refused`], INVALID_ARGUMENT) says why.
    pub async fn rename_device(&self, device_id: &str, name: &str) -> Result<DeviceInfo> {
        let request = auth_pb::RenameDeviceRequest {
            device_id: device_id.to_owned(),
            name: name.to_owned(),
        };
        let response = self
            .call(request, |request| {
                let mut auth = self.auth.clone();
                async move { auth.rename_device(request).await }
            })
            .await?;
        Ok(device_info(
            response.device.unwrap_or_default(),
            &self.account.device_id,
        ))
    }

    /// Ends the session on the server and forgets the tokens (the device and its keys stay, so
    /// a later login resumes this device).
    ///
    /// # Errors
    /// [`Error::Unavailable`] or [`Error::Profile`]; an already ended session is not an error.
    pub async fn logout(&self) -> Result<()> {
        let result = self
            .call(auth_pb::LogoutRequest {}, |request| {
                let mut auth = self.auth.clone();
                async move { auth.logout(request).await }
            })
            .await;
        match result {
            Ok(_) | Err(Error::Auth(..)) => self.profile.remove_tokens(),
            Err(error) => Err(error),
        }
    }

    /// Calls an RPC with a valid access token: refreshes it first when it is about to expire,
    /// and once more after UNAUTHENTICATED; retries a few times while the server is
    /// UNAVAILABLE.
    pub(crate) async fn call<Req, Resp, F, Fut>(&self, message: Req, rpc: F) -> Result<Resp>
    where
        Req: Clone,
        F: Fn(Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let server = self.account.server.as_str();
        let token = self.access_token().await?;
        let first = retry_unavailable(server, || rpc(authorized(message.clone(), &token))).await;
        match first {
            // Only a refused token: a revoked device or a throttled login are Auth errors too,
            // which a new token does not cure.
            Err(error) if error.status_code() == Some(Code::Unauthenticated) => {
                self.refresh_after_rejection(&token).await?;
                let token = self.access_token().await?;
                retry_unavailable(server, || rpc(authorized(message.clone(), &token))).await
            }
            other => other,
        }
    }

    /// A valid access token, refreshed first when it expires within a minute.
    pub(crate) async fn access_token(&self) -> Result<String> {
        let mut tokens = self.tokens.lock().await;
        if tokens.access_expires_at - now() < REFRESH_MARGIN_SECS {
            self.refresh(&mut tokens).await?;
        }
        Ok(tokens.access_token.clone())
    }

    /// The server refused `rejected_token`: refresh unless another task already did.
    pub(crate) async fn refresh_after_rejection(&self, rejected_token: &str) -> Result<()> {
        let mut tokens = self.tokens.lock().await;
        if tokens.access_token == rejected_token {
            self.refresh(&mut tokens).await?;
        }
        Ok(())
    }

    async fn refresh(&self, tokens: &mut Tokens) -> Result<()> {
        let request = auth_pb::RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        };
        // A refused refresh token reads "the session ended ...: log in again" (`explain.rs`).
        let response = retry_unavailable(&self.account.server, || {
            let mut auth = self.auth.clone();
            let request = request.clone();
            async move { auth.refresh(request).await }
        })
        .await?;
        let fresh = tokens_from(response.tokens.unwrap_or_default());
        // Saved before use: a crash after the server rotated the token must not lose it.
        self.profile.save_tokens(&fresh)?;
        *tokens = fresh;
        Ok(())
    }

    /// A valid access token (refreshed when needed), for tests that call the API directly, such
    /// as a `Subscribe` receiver, which this library does not offer.
    ///
    /// # Errors
    /// [`Error::Auth`] when the session ended; [`Error::Unavailable`].
    #[doc(hidden)]
    pub async fn access_token_for_tests(&self) -> Result<String> {
        self.access_token().await
    }

    /// Forces the next call to refresh the access token (for tests of the refresh path).
    #[doc(hidden)]
    pub async fn expire_access_token(&self) {
        self.tokens.lock().await.access_expires_at = 0;
    }

    /// Replaces the access token by garbage, as if the server had stopped accepting it.
    #[doc(hidden)]
    pub async fn corrupt_access_token(&self) {
        self.tokens.lock().await.access_token = "not-a-token".to_owned();
    }
}

/// Opens sealed keys; when they were sealed with costs below today's floor, seals them again
/// with `kdf` (the same passphrase) so that the file on disk meets it from now on.
fn open_and_upgrade(
    profile: &Profile,
    sealed: &keystore::SealedKeys,
    passphrase: &[u8],
    kdf: KdfParams,
) -> Result<e2ee::DeviceKeys> {
    let keys = keystore::open_keys(sealed, passphrase)?;
    if keystore::below_floor(sealed) {
        profile.save_sealed_keys(&keystore::seal_keys(&keys, passphrase, kdf)?)?;
    }
    Ok(keys)
}

async fn upload_keys(
    auth: &AuthServiceClient<Channel>,
    access_token: &str,
    keys: &e2ee::DeviceKeys,
) -> Result<()> {
    let upload = auth_pb::UploadDeviceKeysRequest {
        keys: Some(auth_pb::DeviceKeys {
            encryption_public_key: keys.public_keys().encryption_spki.clone(),
            signing_public_key: keys.public_keys().signing_public_key.to_vec(),
        }),
    };
    auth.clone()
        .upload_device_keys(authorized(upload, access_token))
        .await?;
    Ok(())
}

/// Calls `rpc`, again a few times while `server` answers UNAVAILABLE; a status that remains is
/// explained naming `server`.
async fn retry_unavailable<Resp, F, Fut>(server: &str, mut rpc: F) -> Result<Resp>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    let explained = |status: Status| {
        let context = Context {
            server: Some(server),
            own_device: false,
        };
        explain::explain(RawStatus::of(&status), context)
    };
    let mut delay = FIRST_RETRY_DELAY;
    for _ in 0..UNAVAILABLE_RETRIES {
        match rpc().await {
            // A TLS failure does not heal by itself: report it at once.
            Err(status)
                if status.code() == Code::Unavailable
                    && !crate::explain::is_tls_failure(status.message()) =>
            {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            result => return result.map(Response::into_inner).map_err(explained),
        }
    }
    rpc().await.map(Response::into_inner).map_err(explained)
}

pub(crate) fn authorized<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    bearer(&mut request, token);
    request
}

fn bearer<T>(request: &mut Request<T>, token: &str) {
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
}

fn tokens_from(pair: auth_pb::TokenPair) -> Tokens {
    let seconds = |timestamp: Option<prost_types::Timestamp>| timestamp.map_or(0, |t| t.seconds);
    Tokens {
        access_token: pair.access_token,
        access_expires_at: seconds(pair.access_token_expires_at),
        refresh_token: pair.refresh_token,
        refresh_expires_at: seconds(pair.refresh_token_expires_at),
    }
}

/// A device as shown to the user, its fingerprints computed here from the key bytes (the ones
/// the server sends are not trusted).
pub(crate) fn device_info(device: auth_pb::Device, current_device_id: &str) -> DeviceInfo {
    let fingerprint = |key: &[u8]| hex::encode(e2ee::fingerprint(key));
    let (encryption_fingerprint, signing_fingerprint) = device.keys.as_ref().map_or_else(
        || (String::new(), String::new()),
        |keys| {
            (
                fingerprint(&keys.encryption_public_key),
                fingerprint(&keys.signing_public_key),
            )
        },
    );
    DeviceInfo {
        current: device.device_id == current_device_id,
        device_id: device.device_id,
        name: device.name,
        encryption_fingerprint,
        signing_fingerprint,
    }
}

/// "chat cli on <host>", so that the devices of one user tell apart in `chat devices` and in
/// the page (auth has no RPC to rename a device later). The host is the kernel's (uname), which
/// unlike `$HOSTNAME` is set outside interactive shells too.
fn device_name() -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .trim()
        .to_owned();
    let name = if host.is_empty() || host == "(none)" {
        "chat cli".to_owned()
    } else {
        format!("chat cli on {host}")
    };
    name.chars().take(64).collect()
}

/// Unix seconds by this machine's clock.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}
