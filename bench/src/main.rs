//! The project's benchmark harness. `cargo run --release -p bench -- [--quick] [SCENARIO...]` runs
//! the named scenarios (all by default) against the real services, started in-process on loopback
//! against a scratch database, prints their figures, and rewrites their sections of
//! `bench/REPORT.md` (sections of scenarios that did not run are kept).
//!
//! It measures the services as configured for production; it never tunes them to look better.
//! Start reading at `scenarios/mod.rs` (the list of scenarios and the `Context` each gets), then
//! one scenario such as `scenarios/auth_login.rs`. `report.rs` writes the report, `server.rs`
//! starts a service, `scratch_db.rs` owns the database.

mod clients;
mod cpu;
mod machine;
mod pgbench;
mod report;
mod scenarios;
mod scratch_db;
mod server;
mod stats;

use std::path::PathBuf;

use anyhow::{Context as _, bail};

use crate::{
    machine::RunFacts,
    report::{Report, Section},
    scenarios::{Context, Scenario},
    scratch_db::ScratchDb,
};

const USAGE: &str = "\
usage: cargo run --release -p bench -- [OPTIONS] [SCENARIO...]

Runs the named scenarios (all when none is named) and writes their sections of bench/REPORT.md.
Needs DATABASE_URL: a PostgreSQL server where a scratch database may be created and dropped.

options:
  --quick          a short smoke run (a few seconds per scenario); writes no report unless
                   --report is given
  --report PATH    write the report to PATH instead of bench/REPORT.md
  --no-report      print the figures only
  --list           list the scenarios
  -h, --help       show this help";

/// What the command line asks for.
#[derive(Debug)]
struct Args {
    quick: bool,
    scenarios: Vec<&'static Scenario>,
    /// Where to write the report, if anywhere.
    report_path: Option<PathBuf>,
}

/// The outcome of parsing the command line.
#[derive(Debug)]
enum Command {
    Run(Args),
    List,
    Help,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The services run without log output; a failing scenario can be looked into with their
    // logs on stderr.
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        common::telemetry::init(&filter, common::telemetry::LogFormat::Pretty)?;
    }
    let raw_args: Vec<String> = std::env::args().skip(1).collect();
    // `idle-streams` starts this binary again as its clients' process.
    if raw_args.first().map(String::as_str) == Some(scenarios::idle_streams::CLIENT_ARG) {
        return scenarios::idle_streams::client_main(&raw_args[1..]).await;
    }
    let args = match parse_args(&raw_args)? {
        Command::Run(args) => args,
        Command::List => {
            for scenario in scenarios::ALL {
                println!("{:<16} {}", scenario.name, scenario.title);
            }
            return Ok(());
        }
        Command::Help => {
            println!("{USAGE}");
            return Ok(());
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; the figures mean little (use cargo run --release)");
    }
    let admin_url = std::env::var("DATABASE_URL").context(
        "DATABASE_URL must name a PostgreSQL server where the bench may create a scratch \
         database (e.g. postgres://postgres@127.0.0.1:5432/postgres, or run under ci/postgres.sh)",
    )?;
    let facts = RunFacts::collect(&raw_args, &admin_url).await;
    println!("{}", facts.summary());

    let scratch = ScratchDb::create(&admin_url).await?;
    println!("scratch database {}", scratch.name());
    let context = Context::new(args.quick, facts.nproc, scratch.url().to_owned());
    // Ctrl-C stops the run but still drops the scratch database.
    let outcome = tokio::select! {
        outcome = run_scenarios(&args.scenarios, &context, &facts) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let dropped = scratch.drop_database().await;
    let report = outcome?;
    dropped?;

    match &args.report_path {
        Some(path) => {
            report.write(path)?;
            println!("wrote {}", path.display());
        }
        None => println!("no report written"),
    }
    Ok(())
}

/// Runs each scenario in turn; the first failure stops the run.
async fn run_scenarios(
    scenarios: &[&'static Scenario],
    context: &Context,
    facts: &RunFacts,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    for scenario in scenarios {
        println!("\n== {}: {}", scenario.name, scenario.title);
        let body = (scenario.run)(context)
            .await
            .with_context(|| format!("scenario {}", scenario.name))?;
        report.add(Section::new(scenario, facts, &body));
    }
    Ok(report)
}

fn parse_args(raw_args: &[String]) -> anyhow::Result<Command> {
    let mut quick = false;
    let mut report_path = None;
    let mut no_report = false;
    let mut scenarios: Vec<&'static Scenario> = Vec::new();
    let mut rest = raw_args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--list" => return Ok(Command::List),
            "--quick" => quick = true,
            "--no-report" => no_report = true,
            "--report" => {
                let path = rest.next().context("--report needs a path")?;
                report_path = Some(PathBuf::from(path));
            }
            flag if flag.starts_with('-') => bail!("unknown option {flag}\n\n{USAGE}"),
            name => {
                let Some(scenario) = scenarios::find(name) else {
                    bail!("unknown scenario {name}; --list shows them");
                };
                if !scenarios.iter().any(|chosen| chosen.name == scenario.name) {
                    scenarios.push(scenario);
                }
            }
        }
    }
    if scenarios.is_empty() {
        scenarios = scenarios::ALL.iter().collect();
    }
    // A quick run is a smoke test: its figures must not replace the committed ones by accident.
    let report_path = match (no_report, report_path, quick) {
        (true, _, _) => None,
        (false, Some(path), _) => Some(path),
        (false, None, true) => None,
        (false, None, false) => Some(report::default_path()),
    };
    Ok(Command::Run(Args {
        quick,
        scenarios,
        report_path,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Command {
        let owned: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        parse_args(&owned).unwrap()
    }

    #[test]
    fn no_scenario_means_every_scenario_and_the_committed_report() {
        let Command::Run(args) = parse(&[]) else {
            panic!("expected a run")
        };

        assert_eq!(args.scenarios.len(), scenarios::ALL.len());
        assert_eq!(args.report_path, Some(report::default_path()));
    }

    #[test]
    fn a_quick_run_writes_no_report_unless_asked() {
        let Command::Run(quick) = parse(&["--quick", "auth-login"]) else {
            panic!()
        };
        let Command::Run(quick_to_file) = parse(&["--quick", "--report", "/tmp/r.md"]) else {
            panic!()
        };

        assert!(quick.quick);
        assert_eq!(quick.report_path, None);
        assert_eq!(quick_to_file.report_path, Some(PathBuf::from("/tmp/r.md")));
    }

    #[test]
    fn unknown_scenarios_and_options_are_refused() {
        assert!(parse_args(&["no-such-scenario".to_owned()]).is_err());
        assert!(parse_args(&["--fast".to_owned()]).is_err());
    }
}
