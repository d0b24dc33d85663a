//! Keys, claims, hand-built tokens and an in-memory key source for the validation tests.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use serde_json::{Value, json};
use token::{
    AccessClaims, FeedMessage, FeedStream, Jwk, KeyRefresh, KeySet, KeySource, KeySourceError,
    RemoteValidator, Revocation, RevocationSource, Revoked, SigningKey, Subject,
    ValidationSettings, Validator,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;
use uuid::Uuid;

pub const ISSUER: &str = "https://auth.chat.test";
pub const AUDIENCE: &str = "chat-api";

/// A signing key, and the same key as raw ed25519-dalek to sign hand-built tokens with.
pub struct TestKey {
    pub key: SigningKey,
    pub raw: ed25519_dalek::SigningKey,
}

impl TestKey {
    pub fn generate() -> Self {
        let key = SigningKey::generate();
        let raw =
            ed25519_dalek::pkcs8::DecodePrivateKey::from_pkcs8_pem(&key.to_pkcs8_pem()).unwrap();
        TestKey { key, raw }
    }

    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    pub fn jwk(&self) -> Jwk {
        self.key.public_jwk()
    }

    /// A token for the given JSON header and payload, signed with this key whatever the header says.
    pub fn sign_raw(&self, header: &Value, payload: &Value) -> String {
        let signing_input = signing_input(header, payload);
        let signature = self.raw.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }

    /// The usual header of this key: `{"alg":"EdDSA","typ":"at+jwt","kid":...}`.
    pub fn header(&self) -> Value {
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": self.kid() })
    }
}

pub fn signing_input(header: &Value, payload: &Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap())
    )
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn settings() -> ValidationSettings {
    ValidationSettings::new(ISSUER, AUDIENCE)
}

/// Good claims: issued now, valid for 15 minutes.
pub fn claims() -> AccessClaims {
    let subject = Subject {
        user_id: Uuid::new_v4(),
        device_id: Uuid::new_v4(),
        session_id: Uuid::new_v4(),
    };
    AccessClaims::new(
        ISSUER,
        AUDIENCE,
        subject,
        SystemTime::now(),
        Duration::from_secs(15 * 60),
    )
}

/// Good claims as JSON, with `changes` applied; a `null` change removes the claim.
pub fn payload(changes: Value) -> Value {
    let mut payload = serde_json::to_value(claims()).unwrap();
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            payload.as_object_mut().unwrap().remove(name);
        } else {
            payload[name] = value.clone();
        }
    }
    payload
}

/// A validator with only `key`, as auth has.
pub fn static_validator(key: &TestKey) -> Validator {
    Validator::with_static_keys(settings(), KeySet::from_signing_keys(&[&key.key]))
}

/// An in-memory key source that counts its fetches, and can be made slow or failing.
#[derive(Default)]
pub struct CountingSource {
    keys: Mutex<Vec<Jwk>>,
    fetches: AtomicUsize,
    delay: Mutex<Duration>,
    failing: Mutex<bool>,
}

impl CountingSource {
    pub fn new(keys: Vec<Jwk>) -> Arc<Self> {
        let source = CountingSource::default();
        source.publish(keys);
        Arc::new(source)
    }

    pub fn publish(&self, keys: Vec<Jwk>) {
        *self.keys.lock().unwrap() = keys;
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn slow_down(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    pub fn fail(&self) {
        *self.failing.lock().unwrap() = true;
    }
}

#[token::async_trait]
impl KeySource for CountingSource {
    async fn fetch(&self) -> Result<Vec<Jwk>, KeySourceError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        if *self.failing.lock().unwrap() {
            return Err(KeySourceError::Other("the source is down".to_owned()));
        }
        Ok(self.keys.lock().unwrap().clone())
    }
}

/// Background refresh every minute; unknown-kid refetches at most every 30 s.
pub const REFRESH: KeyRefresh = KeyRefresh {
    interval: Duration::from_secs(60),
    min_refetch_interval: Duration::from_secs(30),
    fetch_timeout: Duration::from_secs(5),
};

pub async fn refreshing_validator(source: &Arc<CountingSource>) -> Arc<Validator> {
    Validator::with_key_source_and_refresh(settings(), source.clone(), REFRESH)
        .await
        .unwrap()
}

/// A revocation feed the test scripts: each `watch` records its cursor and takes the next
/// connection the test queued with [`ScriptedFeed::connect`], or fails with UNAVAILABLE.
#[derive(Default)]
pub struct ScriptedFeed {
    connections: Mutex<VecDeque<Result<mpsc::UnboundedReceiver<FeedItem>, Status>>>,
    cursors: Mutex<Vec<u64>>,
}

/// What a scripted connection sends.
pub type FeedItem = Result<FeedMessage, Status>;

impl ScriptedFeed {
    /// Queues a connection; the test sends its messages through the returned sender, and ends
    /// it by dropping the sender.
    pub fn connect(&self) -> mpsc::UnboundedSender<FeedItem> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.connections.lock().unwrap().push_back(Ok(receiver));
        sender
    }

    /// Queues a connection attempt that fails with `status`.
    pub fn refuse(&self, status: Status) {
        self.connections.lock().unwrap().push_back(Err(status));
    }

    /// The `after_event_id` of every `watch` so far.
    pub fn cursors(&self) -> Vec<u64> {
        self.cursors.lock().unwrap().clone()
    }
}

#[token::async_trait]
impl RevocationSource for ScriptedFeed {
    async fn watch(&self, after_event_id: u64) -> Result<FeedStream, Status> {
        self.cursors.lock().unwrap().push(after_event_id);
        match self.connections.lock().unwrap().pop_front() {
            Some(Ok(receiver)) => Ok(Box::pin(UnboundedReceiverStream::new(receiver))),
            Some(Err(status)) => Err(status),
            None => Err(Status::unavailable("no connection scripted")),
        }
    }
}

/// A revocation of `revoked` now, as event `event_id`.
pub fn revocation(event_id: u64, revoked: Revoked) -> FeedItem {
    Ok(FeedMessage::Revocation {
        event_id,
        revocation: Revocation {
            revoked,
            revoked_at: now(),
        },
    })
}

pub fn heartbeat(event_id: u64) -> FeedItem {
    Ok(FeedMessage::Heartbeat { event_id })
}

/// A remote validator with `key` (from a key source) and `feed`.
pub fn remote_validator(
    key: &TestKey,
    feed: &Arc<ScriptedFeed>,
    max_staleness: Duration,
) -> RemoteValidator {
    RemoteValidator::start(
        settings(),
        CountingSource::new(vec![key.jwk()]),
        feed.clone(),
        max_staleness,
    )
}

/// Polls `condition` every 10 ms until it holds, for at most 10 s.
pub async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    for _ in 0..1000 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 10 s");
}
