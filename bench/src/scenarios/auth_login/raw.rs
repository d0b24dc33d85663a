//! Raw argon2id verification with the `argon2` crate, no server: the ceiling for logins.

use std::{
    sync::{RwLock, mpsc},
    time::{Duration, Instant},
};

use anyhow::anyhow;
use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, PasswordHasher, Version,
    password_hash::{Output, SaltString, rand_core::OsRng},
};

use super::{
    ITERATIONS, MAX_OPERATIONS, MEMORY_KIB, PARALLELISM, PASSWORD, Plan, RAW_VERIFIER_THREAD, Timed,
};
use crate::{
    cpu::CpuSnapshot,
    stats::{Latencies, Throughput},
};

/// `plan.threads` OS threads verify one password until `plan.slice` has passed. Like auth, each
/// verification parses the PHC string first and runs in its thread's reused working memory (the
/// fastest the crate allows: no allocation, no page faults).
pub(super) async fn raw_verification_rate(plan: Plan) -> anyhow::Result<Timed> {
    tokio::task::spawn_blocking(move || verify_on_threads(plan.threads, plan.slice)).await?
}

/// The duration of `n` verifications, one after the other on one thread.
pub(super) fn verification_latencies(n: usize) -> anyhow::Result<Latencies> {
    let argon2 = production_argon2()?;
    let hash = production_hash(&argon2)?;
    let mut memory = Vec::new();
    let samples = (0..n)
        .map(|_| {
            let started = Instant::now();
            verify(&argon2, &hash, &mut memory);
            started.elapsed()
        })
        .collect();
    Ok(Latencies::new(samples))
}

fn verify_on_threads(threads: usize, window: Duration) -> anyhow::Result<Timed> {
    let argon2 = production_argon2()?;
    let hash = production_hash(&argon2)?;
    // Finished verifiers wait (on `release`) until the last CPU snapshot is taken, or their CPU
    // time would leave with them. Any early return drops the write guard and lets them go.
    let release = RwLock::new(());
    let (argon2, hash, release) = (&argon2, &hash, &release);
    let (finished, all_finished) = mpsc::channel::<()>();
    let cpu_before = CpuSnapshot::take();
    let started = Instant::now();
    let deadline = started + window;
    std::thread::scope(|scope| {
        let held = release
            .write()
            .map_err(|_| anyhow!("release lock poisoned"))?;
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let finished = finished.clone();
            let worker = std::thread::Builder::new()
                .name(RAW_VERIFIER_THREAD.to_owned())
                .spawn_scoped(scope, move || {
                    let mut count = 0;
                    let mut memory = Vec::new();
                    while count < MAX_OPERATIONS && Instant::now() < deadline {
                        verify(argon2, hash, &mut memory);
                        count += 1;
                    }
                    let _ = finished.send(());
                    drop(release.read());
                    count
                })?;
            workers.push(worker);
        }
        // Without this sender, a panicked verifier ends the wait below instead of blocking it.
        drop(finished);
        let _ = all_finished.iter().take(threads).count();
        let throughput = Throughput {
            count: 0,
            elapsed: started.elapsed(),
        };
        let mut timed = Timed::since(&cpu_before, throughput);
        drop(held);
        for worker in workers {
            let count = worker.join().map_err(|_| anyhow!("a verifier panicked"))?;
            timed.throughput.count += count;
        }
        Ok(timed)
    })
}

fn production_argon2() -> anyhow::Result<Argon2<'static>> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .map_err(|error| anyhow!("argon2 parameters: {error}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn production_hash(argon2: &Argon2<'_>) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon2
        .hash_password(PASSWORD.as_bytes(), &salt)
        .map_err(|error| anyhow!("argon2: {error}"))?
        .to_string())
}

fn verify(argon2: &Argon2<'_>, hash: &str, memory: &mut Vec<Block>) {
    let parsed = PasswordHash::new(hash).expect("a hash made here parses");
    let (salt, expected) = (parsed.salt.expect("salted"), parsed.hash.expect("hashed"));
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes).expect("a valid salt");
    let mut computed = vec![0u8; expected.len()];
    memory.resize(argon2.params().block_count(), Block::default());
    argon2
        .hash_password_into_with_memory(PASSWORD.as_bytes(), salt, &mut computed, &mut memory[..])
        .expect("argon2 runs");
    assert!(
        Output::new(&computed).is_ok_and(|computed| computed == expected),
        "the password verifies against its own hash"
    );
}
