//! One `tracing` subscriber per binary.

use std::{io::IsTerminal, str::FromStr};

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    Pretty,
    /// One JSON object per line, for log collectors in a cluster.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!("expected \"pretty\" or \"json\", got {other:?}")),
        }
    }
}

/// Installs the global subscriber writing to stderr.
///
/// `filter` uses `RUST_LOG` syntax (e.g. `info,sqlx=warn`). Call once, first thing in `main`; a
/// second call (as in tests that start several services) keeps the first subscriber.
///
/// # Errors
/// When `filter` is not a valid filter directive.
pub fn init(filter: &str, format: LogFormat) -> Result<(), tracing_subscriber::filter::ParseError> {
    let filter = EnvFilter::try_new(filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // An error here only means a subscriber is already installed, which is fine.
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}
