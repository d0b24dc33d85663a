//! The markdown report, `bench/REPORT.md`: a fixed preamble, then one section per scenario.
//!
//! Each section sits between `<!-- scenario:NAME -->` and `<!-- /scenario:NAME -->`. Writing
//! replaces only the sections of the scenarios that ran; the others are kept as they were, so
//! each section states its own date, machine and command.

use std::{fs, io, path::Path, path::PathBuf};

use crate::{machine::RunFacts, scenarios};

const PREAMBLE: &str = "\
# Benchmark report

Written by the `bench` crate (see `bench/README.md` for what each scenario measures and how to run
it). A run replaces only the sections of the scenarios it ran, so sections may come from different
days or machines: each one says when, where and with which command it was measured.
";

/// The sections measured in this run.
#[derive(Debug, Default)]
pub struct Report {
    sections: Vec<Section>,
}

/// One scenario's section, markers included.
#[derive(Debug, Clone)]
pub struct Section {
    name: String,
    text: String,
}

/// `bench/REPORT.md` in the source tree, wherever the command is run from.
pub fn default_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("REPORT.md")
}

impl Report {
    /// Adds a section, replacing one of the same scenario.
    pub fn add(&mut self, section: Section) {
        self.sections
            .retain(|existing| existing.name != section.name);
        self.sections.push(section);
    }

    /// Writes the report to `path`, keeping the sections of `path` that this run did not measure.
    ///
    /// # Errors
    /// When the existing file cannot be read (other than not existing) or the new one written.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let existing = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(error),
        };
        let order: Vec<&str> = scenarios::ALL
            .iter()
            .map(|scenario| scenario.name)
            .collect();
        fs::write(path, merge(&existing, &self.sections, &order))
    }
}

impl Section {
    /// A section for `scenario` with the run's facts above `body` (markdown).
    pub fn new(scenario: &scenarios::Scenario, facts: &RunFacts, body: &str) -> Self {
        let name = scenario.name;
        let text = format!(
            "{open}\n## {name}: {title}\n\n\
             - Date: {date}\n\
             - Machine: {nproc} CPUs (`nproc`), {cpu}, {memory} memory\n\
             - Database: {database}\n\
             - Command: `{command}`\n\n\
             {body}\n{close}\n",
            open = open_marker(name),
            close = close_marker(name),
            title = scenario.title,
            date = facts.date,
            nproc = facts.nproc,
            cpu = facts.cpu_model,
            memory = facts.memory,
            database = facts.database,
            command = facts.command,
            body = body.trim_end(),
        );
        Self {
            name: name.to_owned(),
            text,
        }
    }
}

fn open_marker(name: &str) -> String {
    format!("<!-- scenario:{name} -->")
}

fn close_marker(name: &str) -> String {
    format!("<!-- /scenario:{name} -->")
}

/// The new report: the preamble, then every section in `order` (fresh ones replacing old ones),
/// then old sections of scenarios that no longer exist, so that nothing is lost silently.
fn merge(existing: &str, fresh: &[Section], order: &[&str]) -> String {
    let mut sections = parse_sections(existing);
    for section in fresh {
        match sections.iter_mut().find(|old| old.name == section.name) {
            Some(old) => *old = section.clone(),
            None => sections.push(section.clone()),
        }
    }
    let rank = |name: &str| {
        order
            .iter()
            .position(|known| *known == name)
            .unwrap_or(order.len())
    };
    // A stable sort keeps unknown sections in their old order, after the known ones.
    sections.sort_by_key(|section| rank(&section.name));
    let mut text = String::from(PREAMBLE);
    for section in &sections {
        text.push('\n');
        text.push_str(&section.text);
    }
    text
}

/// The well-formed sections of a report, in file order. Text outside them is the preamble and is
/// rewritten; a section without its closing marker is dropped (it will be measured again).
fn parse_sections(text: &str) -> Vec<Section> {
    let mut sections = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<!-- scenario:") {
        let after_open = &rest[start + "<!-- scenario:".len()..];
        let Some(name_end) = after_open.find(" -->") else {
            break;
        };
        let name = &after_open[..name_end];
        let close = close_marker(name);
        let Some(close_at) = rest[start..].find(&close) else {
            rest = &after_open[name_end..];
            continue;
        };
        let end = start + close_at + close.len();
        sections.push(Section {
            name: name.to_owned(),
            text: format!("{}\n", &rest[start..end]),
        });
        rest = &rest[end..];
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(name: &str, body: &str) -> Section {
        Section {
            name: name.to_owned(),
            text: format!("{}\n{body}\n{}\n", open_marker(name), close_marker(name)),
        }
    }

    #[test]
    fn a_run_replaces_only_the_sections_it_measured() {
        let old = merge(
            "",
            &[section("a", "old a"), section("b", "old b")],
            &["a", "b"],
        );

        let new = merge(&old, &[section("b", "new b")], &["a", "b"]);

        assert!(new.starts_with(PREAMBLE));
        assert!(new.contains("old a"));
        assert!(new.contains("new b"));
        assert!(!new.contains("old b"));
    }

    #[test]
    fn sections_follow_the_scenario_order_and_unknown_ones_are_kept_last() {
        let old = merge(
            "",
            &[section("gone", "kept"), section("b", "b")],
            &["gone", "b"],
        );

        let new = merge(&old, &[section("a", "a")], &["a", "b"]);

        let position = |needle: &str| new.find(needle).unwrap();
        assert!(position("scenario:a ") < position("scenario:b "));
        assert!(position("scenario:b ") < position("scenario:gone "));
    }

    #[test]
    fn rewriting_a_report_with_nothing_new_changes_nothing() {
        let old = merge("", &[section("a", "x"), section("b", "y")], &["a", "b"]);

        assert_eq!(merge(&old, &[], &["a", "b"]), old);
    }

    #[test]
    fn a_section_without_its_closing_marker_is_dropped() {
        let broken = format!("{PREAMBLE}\n<!-- scenario:a -->\nhalf\n");

        assert!(parse_sections(&broken).is_empty());
    }
}
