//! The `dm-latency` report section.

use std::{fmt::Write as _, time::Duration};

use super::{
    GOAL_ABOVE_COMMIT, Measured, RSA_BITS, SEND_CONNECTIONS, STREAMS_PER_CONNECTION,
    SUSTAINED_SHARE,
};
use crate::{
    clients::{open_loop::Run, seal::MESSAGE_BYTES},
    cpu, pgbench,
    server::POOL_SIZE,
    stats::{Latencies, millis, percent},
};

/// The section's body (markdown).
pub(super) fn render(measured: &Measured) -> String {
    let phases: Vec<(String, &cpu::CpuTime)> = measured
        .runs
        .iter()
        .map(|run| (format!("{:.0}/s", run.offered), &run.cpu))
        .collect();
    let phases: Vec<(&str, &cpu::CpuTime)> = phases
        .iter()
        .map(|(name, cpu)| (name.as_str(), *cpu))
        .collect();
    let mut out = cpu::interference(&phases);
    out.push_str(&method(measured));
    out.push_str(&latency_table(measured));
    out.push_str(&load_table(measured));
    if let Some(first) = measured.runs.iter().find_map(|run| run.failures.first()) {
        let _ = writeln!(out, "\nFirst failed send: `{first}`");
    }
    if let Some(first) = measured.stream_failures.first() {
        let _ = writeln!(
            out,
            "\n{} streams ended during the run; the first: `{first}`",
            measured.stream_failures.len()
        );
    }
    let _ = write!(
        out,
        "\nOne commit: pgbench right after the rates (the services stopped), against the same \
         PostgreSQL, one client, for {seconds} s, on a table shaped like a message row:\n\n\
         ```\n{script}```\n",
        seconds = measured.plan.commit_seconds,
        script = pgbench::describe_one_commit(),
    );
    out
}

fn method(measured: &Measured) -> String {
    let plan = measured.plan;
    let windows: Vec<String> = measured
        .runs
        .iter()
        .map(|run| format!("{:.0}/s for {:?}", run.offered, run.window))
        .collect();
    format!(
        "auth, group, chat and the gateway ran in-process, each on its own tokio runtime with one \
         worker per CPU, with their production settings (pools of {POOL_SIZE} connections; \
         chat's group commit, notify window and stream settings at their defaults), no log \
         output. Two test settings: auth's password hashing is cheap (setup only) and the \
         gateway's limits are `gateway::Config::for_tests` (1,000 sends per user per second, not \
         20). {pairs} direct conversations, each with one sending and one receiving device; the \
         receivers and {idle} idle users (who receive nothing) stream through the gateway \
         (Subscribe, {STREAMS_PER_CONNECTION} streams per HTTP/2 connection, each waiting for \
         CaughtUp): {streams} streams in all, each read by its own task in the bench, which \
         stamps each message as it arrives. Messages are real envelopes ({MESSAGE_BYTES}-byte \
         plaintext, RSA-{RSA_BITS} wrapping for the recipient's one device, Ed25519 signature), \
         sealed before each rate's window on threads that are joined before it starts. The \
         senders send through the gateway ({SEND_CONNECTIONS} HTTP/2 connections) in an open \
         loop: send n is due at n / rate, goes to the next conversation in turn, and runs in its \
         own task (on tokio's 1 ms timer, so above 1,000/s they leave in bursts every \
         millisecond). Each message is timed from the start of its SendMessage to its arrival on \
         the recipient's stream. After an untimed warm-up at {first:.0}/s: {windows}. The achieved rate is messages received per second from the first arrival to the \
         last; a rate counts as sustained when the achieved rate is at least {share} of it and \
         nothing was lost or failed. The load generator and the stream readers share the {nproc} CPUs \
         with the services and PostgreSQL. Setup took {setup:.0} s.\n\n",
        pairs = plan.pairs,
        idle = plan.idle_streams,
        streams = plan.pairs + plan.idle_streams,
        first = super::RATES[0],
        windows = windows.join(", "),
        share = percent(SUSTAINED_SHARE),
        nproc = std::thread::available_parallelism().map_or(1, usize::from),
        setup = measured.setup_seconds,
    )
}

fn latency_table(measured: &Measured) -> String {
    let commit = measured.one_commit;
    let mut out = format!(
        "| Offered | Achieved | Send → receive p50 | p99 | p99.9 | max | Ack p50 | p50 − one commit ({commit}) | Goal: p50 within {goal} of one commit |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        commit = millis(commit),
        goal = millis(GOAL_ABOVE_COMMIT),
    );
    for run in &measured.runs {
        let latencies = Latencies::new(run.latencies());
        let acks = Latencies::new(run.acks.clone());
        let p50 = latencies.median();
        let sustained = sustained(run);
        let verdict = match (sustained, p50 <= commit + GOAL_ABOVE_COMMIT) {
            (false, _) => format!("**FAIL** (not sustained: {:.0}/s achieved)", run.achieved()),
            (true, true) => "**PASS**".to_owned(),
            (true, false) => "**FAIL**".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {offered:.0}/s | {achieved:.0}/s{flag} | {p50} | {p99} | {p999} | {max} | {ack} | {above} | {verdict} |",
            offered = run.offered,
            achieved = run.achieved(),
            flag = if sustained {
                ""
            } else {
                " (**not sustained**)"
            },
            p50 = millis(p50),
            p99 = millis(latencies.percentile(99.0)),
            p999 = millis(latencies.percentile(99.9)),
            max = millis(latencies.percentile(100.0)),
            ack = millis(acks.median()),
            above = signed_millis(p50, commit),
        );
    }
    out
}

fn load_table(measured: &Measured) -> String {
    let mut out = format!(
        "\n| Offered | Sends started | Received | Lost (not received within {drain:?}) | Failed sends | Generator late, p50 / p99 | CPUs busy | Others' share |\n\
         |---|---|---|---|---|---|---|---|\n",
        drain = super::DRAIN,
    );
    for run in &measured.runs {
        let lateness = Latencies::new(run.lateness.clone());
        let _ = writeln!(
            out,
            "| {offered:.0}/s | {started}{ran_out} | {received} | {lost} | {failed} | {late50} / {late99} | {busy} | {others} |",
            offered = run.offered,
            started = run.started,
            ran_out = if run.ran_out {
                " (envelopes ran out)"
            } else {
                ""
            },
            received = run.delivered.len(),
            lost = run.undelivered,
            failed = run.failures.len(),
            late50 = millis(lateness.median()),
            late99 = millis(lateness.percentile(99.0)),
            busy = run
                .cpu
                .machine
                .map_or("?".to_owned(), |machine| percent(machine.busy_share())),
            others = run.cpu.others_share().map_or("?".to_owned(), percent),
        );
    }
    out
}

/// Whether `run` kept up with its offered rate.
pub(super) fn sustained(run: &Run) -> bool {
    run.achieved() >= SUSTAINED_SHARE * run.offered
        && run.undelivered == 0
        && run.failures.is_empty()
        && !run.ran_out
}

/// `a - b` in milliseconds, with its sign.
fn signed_millis(a: Duration, b: Duration) -> String {
    let difference = a.as_secs_f64() - b.as_secs_f64();
    format!("{:+.1} ms", difference * 1000.0)
}
