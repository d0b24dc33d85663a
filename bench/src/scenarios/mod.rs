//! The scenarios, and what each one is given.
//!
//! To add one: write `scenarios/<name>.rs` with a `pub const SCENARIO: Scenario`, list it in
//! [`ALL`], and describe it in `bench/README.md`. A scenario prints its figures as it goes and
//! returns its report section's body (markdown); `main` adds the date, machine and command.
//! Every loop it runs must end by a deadline and by a count, whichever comes first.

mod auth_login;
mod chat_send;
mod cross_replica;
mod dm_latency;
mod fanout_floor;
mod gateway_overhead;
mod group_fanout;
pub mod idle_streams;

use std::{fmt, future::Future, pin::Pin};

/// A scenario's report body, once measured.
pub type Outcome<'a> = Pin<Box<dyn Future<Output = anyhow::Result<String>> + 'a>>;

/// A named benchmark.
pub struct Scenario {
    /// The name on the command line and in the report's section markers, e.g. `auth-login`.
    pub name: &'static str,
    /// One line saying what it measures.
    pub title: &'static str,
    /// Runs it.
    pub run: for<'a> fn(&'a Context) -> Outcome<'a>,
}

/// Every scenario, in report order.
pub const ALL: &[Scenario] = &[
    auth_login::SCENARIO,
    gateway_overhead::SCENARIO,
    chat_send::SCENARIO,
    group_fanout::SCENARIO,
    fanout_floor::SCENARIO,
    dm_latency::SCENARIO,
    cross_replica::SCENARIO,
    idle_streams::SCENARIO,
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|scenario| scenario.name == name)
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What every scenario gets.
#[derive(Debug)]
pub struct Context {
    /// A short smoke run: use [`Context::pick`] for durations and counts.
    pub quick: bool,
    /// CPUs available to the process (`nproc`).
    pub nproc: usize,
    /// The run's migrated scratch database. Scenarios share it, so they name what they create
    /// after themselves (users `auth-login-…`).
    pub database_url: String,
}

impl Context {
    /// The context of a run.
    pub fn new(quick: bool, nproc: usize, database_url: String) -> Self {
        Self {
            quick,
            nproc,
            database_url,
        }
    }

    /// `full` normally, `quick` in a quick run.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_are_unique_and_fit_the_section_markers() {
        for (index, scenario) in ALL.iter().enumerate() {
            assert!(
                ALL[..index]
                    .iter()
                    .all(|earlier| earlier.name != scenario.name)
            );
            assert!(
                scenario
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '-')
            );
        }
    }
}
