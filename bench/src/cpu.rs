//! Where CPU time goes between two snapshots: the whole machine (the `cpu` line of /proc/stat),
//! and within it this process's threads by name and PostgreSQL's processes. Linux only;
//! elsewhere the figures are simply absent.
//!
//! Threads or processes that exit between two snapshots take their time with them, so a
//! scenario should take snapshots around phases in which its threads stay up.

use std::{collections::BTreeMap, fs};

/// The kernel reports CPU time in ticks of USER_HZ, which is 100 on every architecture Linux
/// supports (reading it with `sysconf(_SC_CLK_TCK)` would need unsafe code).
const TICKS_PER_SECOND: f64 = 100.0;
/// Beyond this share of the CPUs' time used by others (or stolen by the hypervisor), a section
/// carries a warning.
pub const INTERFERENCE_LIMIT: f64 = 0.03;
/// The consumer that stands for every PostgreSQL process on this machine.
pub const POSTGRES: &str = "postgres";

/// Cumulative CPU ticks at one moment.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    machine: Option<MachineTicks>,
    consumers: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct MachineTicks {
    busy: u64,
    idle: u64,
    steal: u64,
}

/// CPU seconds spent between two snapshots. Additive, so that phases can be summed.
#[derive(Debug, Clone, Default)]
pub struct CpuTime {
    /// All CPUs together; `None` where /proc/stat cannot be read.
    pub machine: Option<MachineTime>,
    /// By consumer: [`POSTGRES`], or the name of one of this process's threads (all threads of
    /// that name together).
    pub by_consumer: BTreeMap<String, f64>,
}

/// All CPUs' time, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineTime {
    /// Running anything: user, nice, system, irq, softirq.
    pub busy: f64,
    /// Idle, including waiting for I/O.
    pub idle: f64,
    /// Taken by the hypervisor for other guests.
    pub steal: f64,
}

impl CpuSnapshot {
    /// The ticks now.
    pub fn take() -> Self {
        let mut consumers = BTreeMap::new();
        for (name, ticks) in own_threads().into_iter().chain(postgres_processes()) {
            *consumers.entry(name).or_default() += ticks;
        }
        Self {
            machine: fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|stat| parse_machine(&stat)),
            consumers,
        }
    }

    /// The time spent from this snapshot until `later`.
    pub fn until(&self, later: &Self) -> CpuTime {
        let seconds = |ticks: u64| ticks as f64 / TICKS_PER_SECOND;
        let machine = self
            .machine
            .zip(later.machine)
            .map(|(before, after)| MachineTime {
                busy: seconds(after.busy.saturating_sub(before.busy)),
                idle: seconds(after.idle.saturating_sub(before.idle)),
                steal: seconds(after.steal.saturating_sub(before.steal)),
            });
        let by_consumer = later
            .consumers
            .iter()
            .map(|(name, after)| {
                let before = self.consumers.get(name).copied().unwrap_or(0);
                (name.clone(), seconds(after.saturating_sub(before)))
            })
            .collect();
        CpuTime {
            machine,
            by_consumer,
        }
    }
}

impl CpuTime {
    /// Adds `other` (another phase) to this.
    pub fn add(&mut self, other: &CpuTime) {
        self.machine = match (self.machine, other.machine) {
            (Some(mine), Some(theirs)) => Some(MachineTime {
                busy: mine.busy + theirs.busy,
                idle: mine.idle + theirs.idle,
                steal: mine.steal + theirs.steal,
            }),
            _ => None,
        };
        for (name, seconds) in &other.by_consumer {
            *self.by_consumer.entry(name.clone()).or_default() += seconds;
        }
    }

    /// The share of all CPUs' time used by neither this process nor PostgreSQL (other processes,
    /// interrupts); `None` without /proc/stat.
    pub fn others_share(&self) -> Option<f64> {
        let machine = self.machine?;
        let accounted = self.consumed_by(|_| true);
        Some((machine.busy - accounted).max(0.0) / machine.total())
    }

    /// Seconds spent by the consumers whose names `matches`.
    pub fn consumed_by(&self, matches: impl Fn(&str) -> bool) -> f64 {
        self.by_consumer
            .iter()
            .filter(|(name, _)| matches(name))
            // A fold from +0.0: an empty f64 sum is -0.0, which prints as "-0.0 ms".
            .fold(0.0, |total, (_, seconds)| total + seconds)
    }
}

impl MachineTime {
    /// The busy share of all CPUs' time.
    pub fn busy_share(&self) -> f64 {
        self.busy / self.total()
    }

    /// The stolen share of all CPUs' time.
    pub fn steal_share(&self) -> f64 {
        self.steal / self.total()
    }

    /// All CPUs' time: busy, idle and stolen.
    pub fn total(&self) -> f64 {
        (self.busy + self.idle + self.steal).max(f64::EPSILON)
    }
}

fn parse_machine(stat: &str) -> Option<MachineTicks> {
    let fields: Vec<u64> = stat
        .lines()
        .find_map(|line| line.strip_prefix("cpu "))?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal; guest time is already counted in user.
    let field = |index: usize| fields.get(index).copied().unwrap_or(0);
    Some(MachineTicks {
        busy: field(0) + field(1) + field(2) + field(5) + field(6),
        idle: field(3) + field(4),
        steal: field(7),
    })
}

/// The name and user + system ticks of a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat`.
fn parse_task(stat: &str) -> Option<(String, u64)> {
    // The name sits in parentheses and may itself contain spaces or parentheses.
    let name_start = stat.find('(')? + 1;
    let name_end = stat.rfind(')')?;
    let name = stat.get(name_start..name_end)?.to_owned();
    let fields: Vec<&str> = stat.get(name_end + 1..)?.split_whitespace().collect();
    // After the name: state is field 3 of proc(5), utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

fn own_threads() -> Vec<(String, u64)> {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| parse_task(&stat))
        .collect()
}

fn postgres_processes() -> Vec<(String, u64)> {
    let Ok(processes) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    processes
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|entry| fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|stat| parse_task(&stat))
        .filter(|(name, _)| name == POSTGRES)
        .collect()
}

/// A warning (markdown, empty when quiet) when others used the CPUs, or the hypervisor took
/// them, beyond [`INTERFERENCE_LIMIT`] during any of the timed `phases`.
pub fn interference(phases: &[(&str, &CpuTime)]) -> String {
    let noisy: Vec<String> = phases
        .iter()
        .filter_map(|(phase, cpu)| {
            let others = cpu.others_share()?;
            let stolen = cpu.machine?.steal_share();
            (others > INTERFERENCE_LIMIT || stolen > INTERFERENCE_LIMIT).then(|| {
                format!(
                    "during {phase} other processes or interrupts used {} of the CPUs' time and \
                     the hypervisor took {} (limit {} each)",
                    crate::stats::percent(others),
                    crate::stats::percent(stolen),
                    crate::stats::percent(INTERFERENCE_LIMIT)
                )
            })
        })
        .collect();
    if noisy.is_empty() {
        return String::new();
    }
    format!(
        "**Warning: {}: these figures are not reliable; run again on a quiet machine.**\n\n",
        noisy.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_time_counts_iowait_as_idle_and_steal_apart() {
        let before = parse_machine("cpu  100 0 50 1000 10 0 0 0 0 0\ncpu0 1 2 3\n").unwrap();
        let after = parse_machine("cpu  160 0 70 1100 20 5 5 10 0 0\n").unwrap();
        let snapshot = |machine| CpuSnapshot {
            machine: Some(machine),
            consumers: BTreeMap::new(),
        };

        let used = snapshot(before).until(&snapshot(after)).machine.unwrap();

        assert!((used.busy - 0.9).abs() < 1e-9);
        assert!((used.busy_share() - 90.0 / 210.0).abs() < 1e-9);
        assert!((used.steal_share() - 10.0 / 210.0).abs() < 1e-9);
    }

    #[test]
    fn task_names_may_hold_spaces_and_parentheses() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1";

        assert_eq!(parse_task(stat), Some(("a (b) c".to_owned(), 300)));
    }

    #[test]
    fn this_process_is_seen_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(CpuSnapshot::take().machine.is_some());
            assert!(!own_threads().is_empty());
        }
    }
}
