//! The `gateway-overhead` report section.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use super::{
    CONCURRENCY, CONNECTIONS, Figures, GOAL_ADDED_P50, GOAL_THROUGHPUT_SHARE, Kind, METHOD, RATE,
    Reference, Target, Timed,
};
use crate::{
    cpu,
    stats::{Latencies, percent},
};

/// Beyond this share of the CPUs' time used by others (or stolen by the hypervisor), the section
/// carries a warning.
const INTERFERENCE_LIMIT: f64 = 0.03;
/// The same for others during the latency rounds. At 1,000 calls/s the CPUs are mostly idle, and
/// the kernel then handles the calls' own loopback packets in interrupt context, charged to no
/// thread: a few per cent of "others" that are the bench's own traffic.
const LATENCY_OTHERS_LIMIT: f64 = 0.10;

impl Figures {
    /// The section's body (markdown).
    pub(super) fn render(&self) -> String {
        let mut text = self.interference();
        text.push_str(&self.setup());
        text.push_str(&self.goals());
        text.push_str(&self.latency());
        text.push_str(&self.throughput());
        text.push_str(&self.cpu_time());
        text.push_str(&self.nginx());
        text
    }

    fn target(&self, kind: Kind) -> Option<&Target> {
        self.targets.iter().find(|target| target.kind == kind)
    }

    /// A warning when something else used the CPUs, or the hypervisor took them, during the
    /// latency or the throughput rounds.
    fn interference(&self) -> String {
        let phases = [
            (
                "latency",
                Timed::sum(self.targets.iter().flat_map(|target| &target.latency)),
                LATENCY_OTHERS_LIMIT,
            ),
            (
                "throughput",
                Timed::sum(self.targets.iter().flat_map(|target| &target.throughput)),
                INTERFERENCE_LIMIT,
            ),
        ];
        let mut noisy = Vec::new();
        for (phase, total, others_limit) in &phases {
            let others = total.others_share().unwrap_or(0.0);
            let stolen = total
                .cpu
                .machine
                .map_or(0.0, |machine| machine.steal_share());
            if others > *others_limit || stolen > INTERFERENCE_LIMIT {
                noisy.push(format!(
                    "during the {phase} rounds other processes or interrupts used {} of the \
                     CPUs' time (limit {}) and the hypervisor took {} (limit {})",
                    percent(others),
                    percent(*others_limit),
                    percent(stolen),
                    percent(INTERFERENCE_LIMIT)
                ));
            }
        }
        if noisy.is_empty() {
            return String::new();
        }
        format!(
            "**Warning: {}: these figures are not reliable; run again on a quiet machine.**\n\n",
            noisy.join("; "),
        )
    }

    fn setup(&self) -> String {
        let reference = match &self.reference {
            Reference::Ran { version, .. } => format!(
                "(3) **through nginx** ({version} from Debian, one process, `grpc_pass` to auth \
                 with kept-alive upstream connections; its configuration is at the end)"
            ),
            Reference::Skipped(reason) => format!("(3) nginx was **skipped**: {reason}"),
        };
        format!(
            "The call is `{METHOD}`: public (the gateway checks no token), no database, a small \
             answer, so it is almost pure request/response cost. Three targets answer it: \
             (1) **direct to auth**, (2) **through the gateway** (`gateway::Config::for_tests`, \
             its auth upstream at auth), {reference}. auth and the gateway run in this process, \
             each on its own tokio runtime with one worker per CPU, without a tracing subscriber \
             (no log output).\n\n\
             The load generator is a tonic client on the bench's own runtime with {CONNECTIONS} \
             HTTP/2 connections to each target. **It shares the {nproc} CPUs with auth, the \
             gateway and nginx**, so its own cost is in every figure, and under maximum load the \
             servers compete with it for CPU. Targets are measured in rounds, each round visiting \
             every target in turn (starting with the next one each round), so the machine's \
             drift affects them alike.\n\n",
            nproc = std::thread::available_parallelism().map_or(1, usize::from),
        )
    }

    fn goals(&self) -> String {
        let mut text = String::from("### Goals\n\n| Goal | Measured | Verdict |\n|---|---|---|\n");
        let (Some(direct), Some(gateway)) = (self.target(Kind::Direct), self.target(Kind::Gateway))
        else {
            return text;
        };
        let added_p50 = added(gateway, direct, 50.0);
        let _ = writeln!(
            text,
            "| The gateway adds at most {} at p50 at {RATE} calls/s | {} | **{}** |",
            micros(GOAL_ADDED_P50),
            signed_micros(added_p50),
            verdict(added_p50 <= GOAL_ADDED_P50.as_secs_f64()),
        );
        let share = gateway.rate() / direct.rate();
        let _ = writeln!(
            text,
            "| The gateway reaches at least {} of the direct maximum throughput | {} ({:.0} vs \
             {:.0} calls/s) | **{}** |",
            percent(GOAL_THROUGHPUT_SHARE),
            percent(share),
            gateway.rate(),
            direct.rate(),
            verdict(share >= GOAL_THROUGHPUT_SHARE),
        );
        let gateway_p99 = added(gateway, direct, 99.0);
        match self.target(Kind::Nginx) {
            Some(nginx) => {
                let nginx_p99 = added(nginx, direct, 99.0);
                let _ = writeln!(
                    text,
                    "| The gateway's added p99 is no worse than nginx's | gateway {}, nginx {} | \
                     **{}** |",
                    signed_micros(gateway_p99),
                    signed_micros(nginx_p99),
                    verdict(gateway_p99 <= nginx_p99),
                );
            }
            None => {
                let _ = writeln!(
                    text,
                    "| The gateway's added p99 is no worse than nginx's | gateway {}, nginx not \
                     run | **SKIPPED** |",
                    signed_micros(gateway_p99),
                );
            }
        }
        if let Some(nginx) = self.target(Kind::Nginx) {
            let _ = write!(
                text,
                "\nFor comparison, nginx adds {} at p50 and reaches {} of the direct throughput.\n",
                signed_micros(added(nginx, direct, 50.0)),
                percent(nginx.rate() / direct.rate()),
            );
        }
        text.push('\n');
        text
    }

    fn latency(&self) -> String {
        let plan = &self.plan;
        let mut text = format!(
            "### Latency at {RATE} calls/s\n\n\
             Open loop: calls leave on a fixed schedule ({RATE}/s, round-robin over the \
             connections), each in its own task, whatever the earlier ones are doing; {rounds} \
             rounds of {slice} s per target. A latency runs from just before the call is made to \
             its answer; \"added\" is the target's percentile minus the direct one. Send lag is \
             how late the generator sent calls against the schedule (tokio's timer has 1 ms \
             resolution; a large lag means the generator could not keep up).\n\n\
             | Target | p50 | p99 | p99.9 | Added p50 | Added p99 | Added p99.9 | Calls (failed) | \
             Send lag p50 / p99 |\n|---|---|---|---|---|---|---|---|---|\n",
            rounds = plan.latency_rounds,
            slice = plan.latency_slice.as_secs_f64(),
        );
        let Some(direct) = self.target(Kind::Direct) else {
            return text;
        };
        for target in &self.targets {
            let latencies = target.latencies();
            let lag = Latencies::new(
                target
                    .latency
                    .iter()
                    .flat_map(|round| round.load.send_lag.iter().copied())
                    .collect(),
            );
            let failed: u64 = target
                .latency
                .iter()
                .flat_map(|round| round.load.failures.values())
                .sum();
            let added_cell = |p: f64| {
                if target.kind == Kind::Direct {
                    "".to_owned()
                } else {
                    signed_micros(added(target, direct, p))
                }
            };
            let _ = writeln!(
                text,
                "| {} | {} | {} | {} | {} | {} | {} | {} ({failed}) | {} / {} |",
                target.kind.label(),
                micros(latencies.median()),
                micros(latencies.percentile(99.0)),
                micros(latencies.percentile(99.9)),
                added_cell(50.0),
                added_cell(99.0),
                added_cell(99.9),
                target
                    .latency
                    .iter()
                    .map(|round| round.load.successes())
                    .sum::<u64>()
                    + failed,
                micros(lag.median()),
                micros(lag.percentile(99.0)),
            );
        }
        text.push_str(
            &self.per_round("p50 latency", self.plan.latency_rounds, |target, round| {
                let slice = &target.latency.get(round)?.load;
                Some(micros(Latencies::new(slice.latencies.clone()).median()))
            }),
        );
        text.push_str(&failures_line(self.targets.iter().map(|target| {
            (target.kind, target.latency.iter().map(|r| &r.load.failures))
        })));
        text
    }

    fn throughput(&self) -> String {
        let plan = &self.plan;
        let mut text = format!(
            "### Maximum throughput\n\n\
             Closed loop: {CONCURRENCY} calls in flight over {CONNECTIONS} connections, each \
             worker making its next call when the last one answers; {rounds} rounds of {slice} s \
             per target.\n\n\
             | Target | Calls/s | Share of direct | p50 under load | p99 under load | Failed \
             |\n|---|---|---|---|---|---|\n",
            rounds = plan.throughput_rounds,
            slice = plan.throughput_slice.as_secs_f64(),
        );
        let Some(direct) = self.target(Kind::Direct) else {
            return text;
        };
        for target in &self.targets {
            let latencies = Latencies::new(
                target
                    .throughput
                    .iter()
                    .flat_map(|round| round.load.latencies.iter().copied())
                    .collect(),
            );
            let failed: u64 = target
                .throughput
                .iter()
                .flat_map(|round| round.load.failures.values())
                .sum();
            let _ = writeln!(
                text,
                "| {} | **{:.0}** | {} | {} | {} | {failed} |",
                target.kind.label(),
                target.rate(),
                percent(target.rate() / direct.rate()),
                micros(latencies.median()),
                micros(latencies.percentile(99.0)),
            );
        }
        text.push_str(
            &self.per_round("calls/s", self.plan.throughput_rounds, |target, round| {
                let load = &target.throughput.get(round)?.load;
                Some(format!("{:.0}", load.rate()))
            }),
        );
        text.push_str(&failures_line(self.targets.iter().map(|target| {
            (
                target.kind,
                target.throughput.iter().map(|round| &round.load.failures),
            )
        })));
        text
    }

    /// CPU time per call by consumer, during the throughput rounds.
    fn cpu_time(&self) -> String {
        let mut text = String::from(
            "### CPU time per call at maximum throughput\n\n\
             From /proc: this process's threads by name, nginx's process, and the rest of the \
             machine; in 10 ms ticks over the throughput rounds, so small cells are rough.\n\n",
        );
        let header: Vec<&str> = self.targets.iter().map(|t| t.kind.label()).collect();
        let _ = writeln!(
            text,
            "| Consumer | {} |\n|---|{}",
            header.join(" | "),
            "---|".repeat(header.len())
        );
        let totals: Vec<Timed> = self.targets.iter().map(Target::total).collect();
        if totals.iter().any(|total| total.cpu.machine.is_none()) {
            text.push_str("| (no /proc/stat on this machine) |\n\n");
            return text;
        }
        type Row = (&'static str, fn(&Timed) -> f64);
        let rows: [Row; 7] = [
            ("auth (all its threads)", |t| {
                t.cpu.consumed_by(|name| name.starts_with("auth-"))
            }),
            ("gateway (all its threads)", |t| {
                t.cpu.consumed_by(|name| name.starts_with("gateway-"))
            }),
            ("nginx", |t| t.nginx_cpu),
            ("load generator (the bench's other threads)", |t| {
                t.cpu.consumed_by(|name| {
                    !name.starts_with("auth-")
                        && !name.starts_with("gateway-")
                        && name != cpu::POSTGRES
                })
            }),
            ("PostgreSQL", |t| {
                t.cpu.consumed_by(|name| name == cpu::POSTGRES)
            }),
            ("rest of the machine (kernel, other processes)", |t| {
                t.cpu.machine.map_or(0.0, |m| m.busy) - t.cpu.consumed_by(|_| true) - t.nginx_cpu
            }),
            ("**whole machine**", |t| {
                t.cpu.machine.map_or(0.0, |m| m.busy)
            }),
        ];
        for (label, seconds) in rows {
            let cells: Vec<String> = totals
                .iter()
                .map(|total| format!("{:.1} µs", total.micros_per_call(seconds(total))))
                .collect();
            let _ = writeln!(text, "| {label} | {} |", cells.join(" | "));
        }
        let busy: Vec<String> = totals
            .iter()
            .zip(&self.targets)
            .map(|(total, target)| {
                let machine = total.cpu.machine.unwrap_or_default();
                format!(
                    "{} {} busy ({} stolen)",
                    target.kind.label(),
                    percent(machine.busy_share()),
                    percent(machine.steal_share())
                )
            })
            .collect();
        let _ = write!(text, "\nCPUs: {}.\n\n", busy.join("; "));
        text.push_str(&self.cpu_budget(&totals));
        text
    }

    /// What the throughput goal means in CPU time, when the CPUs are the limit (as here, where
    /// the load generator, auth and the proxy share them).
    fn cpu_budget(&self, totals: &[Timed]) -> String {
        let whole = |kind: Kind| {
            self.targets
                .iter()
                .zip(totals)
                .find(|(target, _)| target.kind == kind)
                .and_then(|(_, total)| {
                    let busy = total.cpu.machine?.busy;
                    Some(total.micros_per_call(busy))
                })
        };
        let (Some(direct), Some(gateway)) = (whole(Kind::Direct), whole(Kind::Gateway)) else {
            return String::new();
        };
        let budget = direct * (1.0 / GOAL_THROUGHPUT_SHARE - 1.0);
        let nginx = whole(Kind::Nginx).map_or(String::new(), |nginx| {
            format!(", nginx {:+.1} µs", nginx - direct)
        });
        format!(
            "With the CPUs saturated, the throughput share is roughly the ratio of machine CPU \
             time per call: a direct call costs {direct:.1} µs of it here, so a proxy on the same \
             CPUs reaches {goal} of the direct rate only if it adds at most {budget:.1} µs per \
             call, everything included (its own work, and what it makes auth and the client \
             spend). Added per call: the gateway {added:+.1} µs{nginx}.\n\n",
            goal = percent(GOAL_THROUGHPUT_SHARE),
            added = gateway - direct,
        )
    }

    fn nginx(&self) -> String {
        match &self.reference {
            Reference::Ran { version, config } => format!(
                "### nginx's configuration\n\n{version}, started as `nginx -p <dir>/ -c \
                 <dir>/nginx.conf -e <dir>/error.log` in a scratch directory. Upstream keepalive \
                 matters: nginx sends one call at a time per upstream HTTP/2 connection, and \
                 without `keepalive` it would open a connection per call. The limit on calls per \
                 connection is lifted (its default of 1,000 would make clients reconnect every \
                 second under load).\n\n```nginx\n{}\n```\n",
                config.trim_end()
            ),
            Reference::Skipped(reason) => format!(
                "### nginx\n\nNot run: {reason}. The comparison needs nginx with HTTP/2 and gRPC \
                 proxying (`bench/README.md` says how to install it).\n"
            ),
        }
    }

    /// A table with one row per round and one column per target.
    fn per_round(
        &self,
        title: &str,
        rounds: usize,
        cell: impl Fn(&Target, usize) -> Option<String>,
    ) -> String {
        let labels: Vec<&str> = self.targets.iter().map(|t| t.kind.label()).collect();
        let mut text = format!(
            "\n| Round ({title}) | {} |\n|---|{}\n",
            labels.join(" | "),
            "---|".repeat(labels.len())
        );
        for round in 0..rounds {
            let cells: Vec<String> = self
                .targets
                .iter()
                .map(|target| cell(target, round).unwrap_or_default())
                .collect();
            let _ = writeln!(text, "| {} | {} |", round + 1, cells.join(" | "));
        }
        text.push('\n');
        text
    }
}

impl Target {
    /// Every successful open-loop latency.
    fn latencies(&self) -> Latencies {
        Latencies::new(
            self.latency
                .iter()
                .flat_map(|round| round.load.latencies.iter().copied())
                .collect(),
        )
    }

    /// Successful calls per second over all throughput rounds.
    fn rate(&self) -> f64 {
        self.total().load.rate()
    }

    /// The throughput rounds together.
    fn total(&self) -> Timed {
        Timed::sum(&self.throughput)
    }
}

impl Timed {
    /// Slices together: calls, elapsed and CPU times add up.
    fn sum<'a>(slices: impl IntoIterator<Item = &'a Timed>) -> Timed {
        let mut total = Timed::default();
        // Machine time is summed only when every slice has it (see `CpuTime::add`).
        total.cpu.machine = Some(Default::default());
        for slice in slices {
            total.load.extend(slice.load.clone());
            total.cpu.add(&slice.cpu);
            total.nginx_cpu += slice.nginx_cpu;
        }
        total
    }

    fn micros_per_call(&self, seconds: f64) -> f64 {
        seconds * 1e6 / self.load.successes().max(1) as f64
    }

    /// The share of all CPUs' time that was busy but not spent by this process, PostgreSQL or
    /// nginx.
    fn others_share(&self) -> Option<f64> {
        let machine = self.cpu.machine?;
        let ours = self.cpu.consumed_by(|_| true) + self.nginx_cpu;
        Some(((machine.busy - ours) / machine.total()).max(0.0))
    }
}

/// `target`'s `p`-th percentile latency minus `direct`'s, in seconds.
fn added(target: &Target, direct: &Target, p: f64) -> f64 {
    target.latencies().percentile(p).as_secs_f64() - direct.latencies().percentile(p).as_secs_f64()
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

/// `87 µs`.
fn micros(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}

/// `+12 µs` from seconds.
fn signed_micros(seconds: f64) -> String {
    format!("{:+.0} µs", seconds * 1e6)
}

/// "Failed calls: …" when any failed, by target and gRPC code.
fn failures_line<'a>(
    by_target: impl Iterator<Item = (Kind, impl Iterator<Item = &'a BTreeMap<String, u64>>)>,
) -> String {
    let mut parts = Vec::new();
    for (kind, rounds) in by_target {
        let mut codes = BTreeMap::<&str, u64>::new();
        for failures in rounds {
            for (code, count) in failures {
                *codes.entry(code).or_default() += count;
            }
        }
        if !codes.is_empty() {
            let codes: Vec<String> = codes
                .iter()
                .map(|(code, count)| format!("{count} {code}"))
                .collect();
            parts.push(format!("{}: {}", kind.label(), codes.join(", ")));
        }
    }
    if parts.is_empty() {
        "No call failed.\n\n".to_owned()
    } else {
        format!("Failed calls: {}.\n\n", parts.join("; "))
    }
}
