//! The `idle-streams` report section.

use std::fmt::Write as _;

use super::{GOAL_KIB_PER_STREAM, Measured, Sample, memory::Resident};
use crate::server::POOL_SIZE;

/// The section's body (markdown).
pub(super) fn render(measured: &Measured) -> String {
    let plan = measured.plan;
    let Some(after) = measured.ramp.last() else {
        return "No memory reading was taken.\n".to_owned();
    };
    let before = &measured.before;
    let streams = measured.opened.max(1) as f64;
    let per_stream = |kib: i64| kib as f64 / streams;
    let (services_rss, services_anon) = after.services.growth_since(&before.services);
    let (clients_rss, _) = after.clients.growth_since(&before.clients);
    let (_, postgres_anon) = after.postgres.growth_since(&before.postgres);
    let server_side = per_stream(services_rss.max(services_anon) + postgres_anon.max(0));
    let marginal = marginal_kib_per_stream(&measured.ramp);
    let complete = measured.failed == 0 && measured.opened == plan.streams;
    let verdict = if complete && server_side <= GOAL_KIB_PER_STREAM {
        "PASS"
    } else {
        "FAIL"
    };
    let mut out = format!(
        "auth, group, chat and the gateway ran in the bench's process, each on its own tokio \
         runtime, with their production settings (pools of {POOL_SIZE}; chat's stream queue and \
         heartbeat at their defaults) and the gateway's `for_tests` limits; the **clients ran in \
         a process of their own** (the bench binary started again), so the bench process's \
         growth is the services' alone. {streams} users registered at auth (one device each, \
         {setup:.0} s), then, from a quiet start, the clients subscribed one stream per device \
         through the gateway (Subscribe from no cursor, waiting for CaughtUp, \
         {per_connection} stream(s) per HTTP/2 connection: {connections} connections from \
         {sources} source addresses, 127.0.0.2 onwards; RLIMIT_NOFILE \
         {open_files} in the bench process), and kept reading them (heartbeats only). Resident memory from \
         /proc/<pid>/status: `VmRSS`, and `RssAnon` (private heap and stacks), read {settle:?} \
         after the start and after the last stream opened. Kernel socket buffers are not in any \
         process's RSS and are not counted. The allocator keeps freed memory: what setup freed \
         may be reused by the streams, which the growth would then miss; the marginal cost over \
         the second half of the ramp does not have that bias.\n\n\
         Streams opened: **{opened}** of {streams} in {ramp:.1} s ({rate:.0}/s), {failed} \
         failed{first_failure}; {ended} ended while held.\n\n\
         | Process | Before | After | Growth | Per stream |\n|---|---|---|---|---|\n",
        streams = plan.streams,
        setup = measured.setup_seconds,
        per_connection = plan.per_connection,
        connections = plan.streams.div_ceil(plan.per_connection),
        sources = plan.sources,
        open_files = measured.open_files,
        settle = plan.settle,
        opened = measured.opened,
        ramp = measured.ramp_seconds,
        rate = measured.opened as f64 / measured.ramp_seconds.max(f64::EPSILON),
        failed = measured.failed,
        first_failure = if measured.first_failure.is_empty() {
            String::new()
        } else {
            format!(" (first: `{}`)", measured.first_failure)
        },
        ended = measured
            .ended
            .map_or("an unknown number".to_owned(), |n| n.to_string()),
    );
    let rows: [(&str, Resident, Resident, bool); 4] = [
        (
            "bench process: gateway, chat, group, auth (VmRSS)",
            before.services,
            after.services,
            false,
        ),
        (
            "bench process: gateway, chat, group, auth (RssAnon)",
            before.services,
            after.services,
            true,
        ),
        (
            "clients process (VmRSS; not the server's)",
            before.clients,
            after.clients,
            false,
        ),
        (
            "PostgreSQL backends of the scratch database (RssAnon, summed)",
            before.postgres,
            after.postgres,
            true,
        ),
    ];
    for (name, then, now, anon) in rows {
        let (rss, anon_growth) = now.growth_since(&then);
        let (then_kib, now_kib, growth) = if anon {
            (then.anon_kib, now.anon_kib, anon_growth)
        } else {
            (then.rss_kib, now.rss_kib, rss)
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {:.1} KiB |",
            mib(then_kib as i64),
            mib(now_kib as i64),
            mib(growth),
            per_stream(growth)
        );
    }
    let _ = write!(
        out,
        "| **server side** (bench process, the larger of VmRSS and RssAnon growth, + PostgreSQL \
         RssAnon growth) | | | {server_total} | **{server_side:.1} KiB** |\n\
         | all processes (server side + clients) | | | {all_total} | {all:.1} KiB |\n\n\
         Marginal cost of the services over the second half of the ramp: {marginal}.\n\n\
         | Goal | Result |\n|---|---|\n\
         | At most {GOAL_KIB_PER_STREAM:.0} KiB per idle stream (server side) | \
         {server_side:.1} KiB — **{verdict}** |\n\n\
         PostgreSQL: the {pg_processes} backends connected to the scratch database (the \
         services' pools, opened lazily: a pool's first connections open during the ramp, a \
         fixed cost rather than a per-stream one); their RSS summed went from {pg_before} to \
         {pg_after} (shared buffers counted once per backend that touched them).\n",
        server_total = mib(services_rss.max(services_anon) + postgres_anon.max(0)),
        all_total = mib(services_rss.max(services_anon) + postgres_anon.max(0) + clients_rss),
        all = server_side + per_stream(clients_rss),
        marginal = marginal.map_or("not enough samples".to_owned(), |kib| format!(
            "{kib:.1} KiB per stream (bench process VmRSS)"
        )),
        pg_processes = after.postgres.processes,
        pg_before = mib(before.postgres.rss_kib as i64),
        pg_after = mib(after.postgres.rss_kib as i64),
    );
    if !complete {
        out.push_str(
            "\n**Not every stream opened: the figures are per opened stream and the goal \
             fails.**\n",
        );
    }
    out.push_str("\n| Streams | Bench process VmRSS | Clients VmRSS | PostgreSQL RssAnon |\n|---|---|---|---|\n");
    for sample in std::iter::once(before).chain(&measured.ramp) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            sample.streams,
            mib(sample.services.rss_kib as i64),
            mib(sample.clients.rss_kib as i64),
            mib(sample.postgres.anon_kib as i64),
        );
    }
    out
}

/// The services' VmRSS growth per stream from the sample nearest half the streams to the last.
fn marginal_kib_per_stream(ramp: &[Sample]) -> Option<f64> {
    let last = ramp.last()?;
    let half = ramp
        .iter()
        .filter(|sample| sample.streams * 2 >= last.streams && sample.streams < last.streams)
        .min_by_key(|sample| sample.streams)?;
    let (growth, _) = last.services.growth_since(&half.services);
    Some(growth as f64 / (last.streams - half.streams) as f64)
}

fn mib(kib: i64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
