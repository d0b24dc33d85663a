//! The `auth-login` report section.

use std::fmt::Write as _;

use super::{
    Figures, GOAL, ITERATIONS, MEMORY_KIB, N_USERS, PARALLELISM, POOL_SIZE, RAW_VERIFIER_THREAD,
    SAME_COST_TOLERANCE, Timed,
};
use crate::{
    cpu,
    stats::{millis, percent},
};

impl Figures {
    /// The section's body (markdown).
    pub(super) fn render(&self) -> String {
        let mut text = self.interference();
        text.push_str(&self.setup());
        text.push_str(&self.rates());
        text.push_str(&self.timing_leak());
        text.push_str(&self.cpu_time());
        text
    }

    /// A warning when something else used the CPUs during the timed rounds.
    fn interference(&self) -> String {
        let shares = [&self.raw, &self.logins].map(|rounds| others_share(&Timed::total(rounds)));
        match shares {
            [Some(raw), Some(logins)] if raw.max(logins) > INTERFERENCE_LIMIT => format!(
                "**Warning: other processes or interrupts used {} of the CPUs' time during raw \
                 verification and {} during logins (more than {}): these figures are not \
                 reliable; run again on a quiet machine.**\n\n",
                percent(raw),
                percent(logins),
                percent(INTERFERENCE_LIMIT)
            ),
            _ => String::new(),
        }
    }

    fn setup(&self) -> String {
        format!(
            "auth ran in-process on its own tokio runtime (one worker per CPU, as `#[tokio::main]` \
             builds it) with the production password settings: argon2id m={MEMORY_KIB} KiB, \
             t={ITERATIONS}, p={PARALLELISM}, at most {nproc} hashes at once \
             (`AUTH_PASSWORD_HASHING_CONCURRENCY`'s default, `nproc`), a pool of {POOL_SIZE} \
             connections, no log output, and throttling limits too high to reach. The clients, \
             auth and PostgreSQL share the machine and talk over 127.0.0.1.\n\n",
            nproc = self.plan.threads,
        )
    }

    /// The goal: logins per second against raw verifications per second.
    fn rates(&self) -> String {
        let plan = &self.plan;
        let (raw, logins) = (Timed::total(&self.raw), Timed::total(&self.logins));
        let ratio = logins.throughput.per_second() / raw.throughput.per_second();
        let verdict = if ratio >= GOAL { "PASS" } else { "FAIL" };
        let failures = if self.failures.is_empty() {
            "none failed".to_owned()
        } else {
            let by_code: Vec<String> = self
                .failures
                .iter()
                .map(|(code, count)| format!("{count} {code}"))
                .collect();
            format!("failed: {}", by_code.join(", "))
        };
        let mut text = format!(
            "Raw verification ({threads} OS threads verifying one password with the `argon2` \
             crate) and logins ({clients} clients over {connections} HTTP/2 connections, each \
             resuming its user's device, {N_USERS} users) took turns, {slice} s each, {rounds} \
             times.\n\n\
             | Measurement | Result |\n|---|---|\n\
             | Raw argon2id verifications | **{raw_rate:.1}/s** ({raw_count} in {raw_time:.1} s) |\n\
             | Logins | **{login_rate:.1}/s** ({login_count} in {login_time:.1} s; {failures}) |\n\
             | Login latency under load, p50 / p99 | {p50} / {p99} |\n\
             | Logins / raw verifications | **{ratio}** |\n\
             | Goal: at least {goal} | **{verdict}** |\n\n\
             | Round | Verifications/s | Logins/s | Ratio |\n|---|---|---|---|\n",
            threads = plan.threads,
            clients = plan.clients,
            connections = plan.connections,
            slice = plan.slice.as_secs_f64(),
            rounds = plan.rounds,
            raw_rate = raw.throughput.per_second(),
            raw_count = raw.throughput.count,
            raw_time = raw.throughput.elapsed.as_secs_f64(),
            login_rate = logins.throughput.per_second(),
            login_count = logins.throughput.count,
            login_time = logins.throughput.elapsed.as_secs_f64(),
            p50 = millis(self.login_latency.median()),
            p99 = millis(self.login_latency.percentile(99.0)),
            ratio = percent(ratio),
            goal = percent(GOAL),
        );
        for (round, (raw, logins)) in self.raw.iter().zip(&self.logins).enumerate() {
            let (raw, logins) = (raw.throughput.per_second(), logins.throughput.per_second());
            let _ = writeln!(
                text,
                "| {} | {raw:.1} | {logins:.1} | {} |",
                round + 1,
                percent(logins / raw)
            );
        }
        text.push('\n');
        text
    }

    /// Whether a refused login's timing tells if the username exists.
    fn timing_leak(&self) -> String {
        let probes = &self.probes;
        let wrong = probes.wrong_password.median();
        let unknown = probes.unknown_user.median();
        let ratio = unknown.as_secs_f64() / wrong.as_secs_f64().max(f64::EPSILON);
        let same = if (ratio - 1.0).abs() <= SAME_COST_TOLERANCE {
            "the same cost"
        } else {
            "DIFFERENT costs"
        };
        format!(
            "### Unknown usernames cost what wrong passwords cost\n\n\
             Sequential refused logins, {n} of each, interleaved, over the same {N_USERS} users:\n\n\
             | Refused login | Median |\n|---|---|\n\
             | Wrong password | {wrong} |\n\
             | Unknown username | {unknown} |\n\
             | Unknown / wrong | {ratio:.2}: {same} (tolerance ±{tolerance}) |\n\n",
            n = self.plan.probes,
            wrong = millis(wrong),
            unknown = millis(unknown),
            tolerance = percent(SAME_COST_TOLERANCE),
        )
    }

    /// What a login costs beyond its hash, in latency and in CPU time.
    fn cpu_time(&self) -> String {
        let probes = &self.probes;
        let added_latency = probes.one_login.median().as_secs_f64()
            - probes.one_verification.median().as_secs_f64();
        let mut text = format!(
            "### What a login adds to its hash\n\n\
             One at a time, {n} of each:\n\n\
             | Sequential | Median |\n|---|---|\n\
             | One argon2id verification, one thread, no server | {verification} |\n\
             | One correct login resuming a device (gRPC, database, verification) | {login} |\n\
             | Added by the login path | {added:+.1} ms |\n\n\
             CPU time per operation during the timed rounds, by consumer (threads of this \
             process by name, PostgreSQL's processes, and the rest of the machine from \
             /proc/stat):\n\n\
             | Consumer | Per raw verification | Per login |\n|---|---|---|\n",
            n = self.plan.probes,
            verification = millis(probes.one_verification.median()),
            login = millis(probes.one_login.median()),
            added = added_latency * 1000.0,
        );
        let (raw, logins) = (Timed::total(&self.raw), Timed::total(&self.logins));
        let Some((raw_machine, login_machine)) = raw.cpu.machine.zip(logins.cpu.machine) else {
            text.push_str("| (no /proc/stat on this machine) | | |\n");
            return text;
        };
        let named = |name: &str| CONSUMERS.iter().any(|(_, matches)| matches(name));
        let mut rows: Vec<(&str, f64, f64)> = CONSUMERS
            .iter()
            .map(|(label, matches)| {
                (
                    *label,
                    raw.cpu.consumed_by(matches),
                    logins.cpu.consumed_by(matches),
                )
            })
            .collect();
        rows.push((
            "bench: other threads (clients, tokio)",
            raw.cpu.consumed_by(|name| !named(name)),
            logins.cpu.consumed_by(|name| !named(name)),
        ));
        let accounted = |timed: &Timed| timed.cpu.consumed_by(|_| true);
        rows.push((
            "rest of the machine (kernel interrupts, other processes)",
            raw_machine.busy - accounted(&raw),
            login_machine.busy - accounted(&logins),
        ));
        rows.push(("**whole machine**", raw_machine.busy, login_machine.busy));
        for (label, raw_seconds, login_seconds) in rows {
            let _ = writeln!(
                text,
                "| {label} | {:.1} ms | {:.1} ms |",
                raw.millis_per_operation(raw_seconds),
                logins.millis_per_operation(login_seconds)
            );
        }
        let extra = logins.millis_per_operation(login_machine.busy)
            - raw.millis_per_operation(raw_machine.busy);
        let _ = write!(
            text,
            "\nCPUs busy: {raw_busy} during raw verification, {login_busy} during logins; stolen \
             by the hypervisor: {raw_steal} and {login_steal}. A login costs {extra:+.2} ms of \
             machine CPU time beyond a raw verification. CPU time is counted in 10 ms ticks, so \
             small rows are rough.\n",
            raw_busy = percent(raw_machine.busy_share()),
            login_busy = percent(login_machine.busy_share()),
            raw_steal = percent(raw_machine.steal_share()),
            login_steal = percent(login_machine.steal_share()),
        );
        text
    }
}

/// Beyond this share of the CPUs' time used by others, the section carries a warning.
const INTERFERENCE_LIMIT: f64 = 0.03;

/// The share of all CPUs' time that neither this process nor PostgreSQL used, but was busy.
fn others_share(timed: &Timed) -> Option<f64> {
    let machine = timed.cpu.machine?;
    let ours = timed.cpu.consumed_by(|_| true);
    Some(((machine.busy - ours) / machine.total()).max(0.0))
}

/// Whether a thread or process name belongs to a consumer.
type IsConsumer = fn(&str) -> bool;

/// The consumers shown by name, by thread name or process (see `server.rs` and `cpu.rs`).
const CONSUMERS: &[(&str, IsConsumer)] = &[
    ("bench: raw verifier threads", |name| {
        name == RAW_VERIFIER_THREAD
    }),
    ("auth: hashing threads (argon2)", |name| {
        name.starts_with("argon2-")
    }),
    ("auth: async workers (gRPC, queries, tokens)", |name| {
        name.starts_with("auth-worker")
    }),
    ("PostgreSQL", |name| name == cpu::POSTGRES),
];
