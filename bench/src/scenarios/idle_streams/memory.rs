//! Resident memory from /proc, and the open-file limit. Linux only; elsewhere the figures are
//! absent.

use std::fs;

/// Resident memory of one process or a set of them, in KiB (`/proc/<pid>/status`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Resident {
    /// `VmRSS`: everything resident, shared pages included.
    pub rss_kib: u64,
    /// `RssAnon`: private anonymous memory (heap, stacks): what the process itself allocated.
    pub anon_kib: u64,
    /// Processes counted.
    pub processes: usize,
}

impl Resident {
    /// This process.
    pub(super) fn own() -> Option<Self> {
        Self::of("self")
    }

    /// Process `pid` (a number, or `self`).
    pub(super) fn of(pid: &str) -> Option<Self> {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(Self {
            rss_kib: field_kib(&status, "VmRSS:")?,
            anon_kib: field_kib(&status, "RssAnon:")?,
            processes: 1,
        })
    }

    /// The PostgreSQL backends connected to `database` together (a backend's command line is
    /// `postgres: <cluster>: <user> <database> <client> <state>`), so that other databases'
    /// clients on the same server are not counted. Each backend's RSS counts the shared buffers
    /// it has touched, so their sum overstates; `anon_kib` is private memory and adds up.
    pub(super) fn postgres(database: &str) -> Self {
        let marker = format!(" {database} ");
        let Ok(processes) = fs::read_dir("/proc") else {
            return Self::default();
        };
        processes
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
            .filter(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim_end() == crate::cpu::POSTGRES)
                    && fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                        String::from_utf8_lossy(&cmdline)
                            .replace('\0', " ")
                            .contains(&marker)
                    })
            })
            .filter_map(|pid| Self::of(&pid))
            .fold(Self::default(), |total, one| Self {
                rss_kib: total.rss_kib + one.rss_kib,
                anon_kib: total.anon_kib + one.anon_kib,
                processes: total.processes + 1,
            })
    }

    /// The growth from `before` to this, in KiB (negative when memory was returned).
    pub(super) fn growth_since(&self, before: &Self) -> (i64, i64) {
        (
            self.rss_kib as i64 - before.rss_kib as i64,
            self.anon_kib as i64 - before.anon_kib as i64,
        )
    }
}

/// Raises this process's open-file limit to at least `wanted` (the hard limit too, which root
/// may do). Returns the soft limit in force afterwards.
pub(super) fn raise_open_files(wanted: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(u64::MAX);
    if soft >= wanted {
        return soft;
    }
    let maximum = current.maximum.map(|hard| hard.max(wanted));
    let raised = Rlimit {
        current: Some(wanted),
        maximum,
    };
    if setrlimit(Resource::Nofile, raised).is_ok() {
        return wanted;
    }
    // Not allowed past the hard limit: go as far as it.
    let hard = current.maximum.unwrap_or(u64::MAX).min(wanted);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: current.maximum,
        },
    );
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

fn field_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_kib() {
        let status = "Name:\tbench\nVmRSS:\t  123456 kB\nRssAnon:\t   100000 kB\n";

        assert_eq!(field_kib(status, "VmRSS:"), Some(123_456));
        assert_eq!(field_kib(status, "RssAnon:"), Some(100_000));
        assert_eq!(field_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_is_resident_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(Resident::own().is_some_and(|own| own.rss_kib > 0));
        }
    }
}
