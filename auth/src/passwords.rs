//! Password hashing with argon2id, off the async runtime on a fixed pool of hashing threads.
//!
//! Hashing is deliberately expensive (19 MiB and two passes by default), so it runs on
//! `concurrency` dedicated threads fed by a bounded queue: a login flood then costs bounded memory
//! (`concurrency` hashes at once) and leaves the runtime's threads free for other requests. A
//! caller that cannot enqueue within [`QUEUE_TIMEOUT`] gets [`Error::Busy`] instead of waiting
//! without bound. Dedicated threads, rather than a semaphore in front of `spawn_blocking`, keep
//! the CPUs busy: the bench measured the semaphore hand-off at 88 % of raw argon2 throughput on
//! two CPUs, a fixed pool at 98 % (bench/REPORT.md, auth-login).
//!
//! Each hashing thread keeps its argon2 working memory (`memory_kib`) between verifications.
//! Allocating it per hash let the allocator hand the pages back to the kernel, which then faulted
//! in and zeroed 19 MiB on every login: about 15 % of a hash's CPU time in a profile of the bench.
//! The memory bound is unchanged: `concurrency` hashes' worth, now held for the process's life.

use std::{
    cell::RefCell,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, PasswordHasher, Version,
    password_hash::{Output, SaltString, rand_core::OsRng},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{mpsc, oneshot};

use crate::{Error, config::PasswordSettings, metrics::PasswordTimings};

/// How long a hash may wait for a free slot before the call fails with [`Error::Busy`].
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// Hashes and verifies passwords. Cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    argon2: Arc<Argon2<'static>>,
    jobs: mpsc::Sender<Job>,
    /// A hash of a random password, verified against when the user does not exist, so that an
    /// unknown username costs the same work as a wrong password.
    dummy_hash: Arc<str>,
    /// Queue wait and argon2 work of every job, for the metrics.
    timings: PasswordTimings,
}

impl Passwords {
    /// Builds the hasher and the dummy hash (one hash, done once at start).
    ///
    /// # Errors
    /// When the argon2 parameters are invalid.
    pub fn new(settings: &PasswordSettings) -> Result<Self, Error> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|error| Error::Internal(format!("argon2 parameters: {error}")))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_password = SaltString::generate(&mut OsRng);
        let dummy_hash = hash_with(&argon2, dummy_password.as_str())?;
        Ok(Self {
            argon2: Arc::new(argon2),
            jobs: start_hashing_threads(settings.concurrency),
            dummy_hash: dummy_hash.into(),
            timings: PasswordTimings::default(),
        })
    }

    /// The PHC string (`$argon2id$v=19$m=...`) of `password` with a fresh salt.
    ///
    /// # Errors
    /// [`Error::Busy`] when no slot frees up in time.
    pub async fn hash(&self, password: SecretString) -> Result<String, Error> {
        let argon2 = self.argon2.clone();
        self.run(move || hash_with(&argon2, password.expose_secret()))
            .await?
    }

    /// Whether `password` matches `stored` (a PHC string). With `stored` = `None` (no such user)
    /// it does the same work against a dummy hash and answers false.
    ///
    /// # Errors
    /// [`Error::Busy`] when no slot frees up in time.
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<bool, Error> {
        let user_exists = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = self
            .run(move || verify_with(password.expose_secret().as_bytes(), &stored))
            .await?;
        Ok(user_exists && matches)
    }

    /// The timings every job records into (registered by `crate::metrics`).
    pub fn timings(&self) -> PasswordTimings {
        self.timings.clone()
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        let timings = self.timings.clone();
        let submitted = Instant::now();
        let job: Job = Box::new(move || {
            let started = Instant::now();
            timings
                .queue_wait
                .observe(started.duration_since(submitted).as_secs_f64());
            let result = work();
            timings.work.observe(started.elapsed().as_secs_f64());
            // The caller may have given up (timeout, cancelled call); then nobody needs the result.
            let _ = reply.send(result);
        });
        tokio::time::timeout(QUEUE_TIMEOUT, self.jobs.send(job))
            .await
            .map_err(|_| Error::Busy)?
            .map_err(|_| Error::Internal("password hashing threads are gone".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("a password hashing job panicked".into()))
    }
}

/// One unit of hashing work.
type Job = Box<dyn FnOnce() + Send>;

/// Starts `count` hashing threads sharing one queue that holds at most `count` waiting jobs, and
/// returns its sending side. The threads end when every sender is dropped.
fn start_hashing_threads(count: usize) -> mpsc::Sender<Job> {
    let (jobs, queue) = mpsc::channel::<Job>(count.max(1));
    let queue = Arc::new(Mutex::new(queue));
    for index in 0..count.max(1) {
        let queue = queue.clone();
        std::thread::Builder::new()
            .name(format!("argon2-{index}"))
            .spawn(move || {
                loop {
                    // Holding the lock while waiting is fine: whoever holds it takes the next job.
                    let next = queue.lock().map(|mut queue| queue.blocking_recv());
                    match next {
                        // A panicking job must not take the thread (and the pool) down with it;
                        // its caller sees the dropped reply as an internal error.
                        Ok(Some(job)) => {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                        _ => return,
                    }
                }
            })
            .expect("spawning a password hashing thread");
    }
    jobs
}

thread_local! {
    /// This thread's argon2 working memory, reused by every verification it runs (module docs).
    static WORKING_MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Whether `password` matches the PHC string `stored`, computed with the parameters and salt
/// that `stored` names (so hashes made under older settings still verify) in this thread's
/// reused working memory, and compared in constant time.
fn verify_with(password: &[u8], stored: &str) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) =
        (Algorithm::try_from(hash.algorithm), Params::try_from(&hash))
    else {
        return false;
    };
    let Ok(version) = Version::try_from(hash.version.unwrap_or(Version::V0x13.into())) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut computed = vec![0u8; expected.len()];
    let hashed = WORKING_MEMORY.with_borrow_mut(|blocks| {
        blocks.resize(params.block_count(), Block::default());
        Argon2::new(algorithm, version, params).hash_password_into_with_memory(
            password,
            salt,
            &mut computed,
            &mut blocks[..],
        )
    });
    // `Output`'s equality is constant-time.
    hashed.is_ok() && Output::new(&computed).is_ok_and(|computed| computed == expected)
}

fn hash_with(argon2: &Argon2<'_>, password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| Error::Internal(format!("argon2: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Passwords {
        Passwords::new(&PasswordSettings {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
            concurrency: 1,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_password_verifies_against_its_own_hash_only() {
        let passwords = cheap();

        let hash = passwords.hash("correct horse".into()).await.unwrap();

        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(
            passwords
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("Correct horse".into(), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_hash_made_under_other_parameters_still_verifies() {
        let older = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(2048, 2, 1, None).unwrap(),
        );
        let hash = hash_with(&older, "correct horse").unwrap();

        let passwords = cheap();

        assert!(hash.starts_with("$argon2id$v=19$m=2048,t=2,p=1$"));
        assert!(
            passwords
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("correct horsE".into(), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies_even_with_the_dummy_password() {
        let passwords = cheap();

        let verified = passwords.verify("anything".into(), None).await.unwrap();

        assert!(!verified);
    }

    #[tokio::test]
    async fn a_garbled_stored_hash_does_not_verify() {
        let passwords = cheap();

        let verified = passwords
            .verify("x".into(), Some("not a phc string".into()))
            .await
            .unwrap();

        assert!(!verified);
    }
}
