//! The chart's Grafana dashboard and Prometheus alerts (`charts/chat/files`) query only metrics
//! the servers export: every metric name in the dashboard's queries and in the alerts'
//! expressions is in a scrape of auth, chat or group after some traffic (sends, a stream, a
//! group). The gateway's gRPC metrics have the same names as the services' (`common::metrics`).
//! promtool checks the rules' syntax and behaviour (`ci/chart-check.sh alert-rules`); this checks
//! that they watch something real.

use std::collections::BTreeSet;

use sqlx::PgPool;
use testkit::scrape_metrics;

use crate::groups::create_group;
use crate::helpers::{BidiStream, next_message, replay, spawn_app};

const DASHBOARD: &str = include_str!("../../../charts/chat/files/dashboard.json");
const RULES: &str = include_str!("../../../charts/chat/files/alerts.rules.yaml");

/// Series Prometheus makes itself, not the servers.
const FROM_PROMETHEUS: [&str; 1] = ["up"];

#[sqlx::test(migrations = "../migrations")]
async fn every_metric_the_dashboard_and_the_alerts_query_is_exported(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let mut stream = bob.subscribe_when_ready().await;
    replay(&mut stream).await;
    alice.send_text(&conversation, "hi").await.unwrap();
    next_message(&mut stream).await;
    let bidi = BidiStream::open(&alice, Vec::new()).await;
    bidi.send("r1", alice.envelope_for(&conversation, "again").await)
        .await;
    next_message(&mut stream).await;
    create_group(&app, &alice, &[&bob]).await;
    // A family shows once it has a series: end a stream (chat_streams_ended_total).
    drop(bidi);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !scrape_metrics(app.metrics)
        .await
        .contains("chat_streams_ended_total{")
    {
        assert!(tokio::time::Instant::now() < deadline, "no stream ended");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut exported = BTreeSet::new();
    for server in [app.auth_metrics, app.metrics, app.group_metrics] {
        exported.extend(exported_names(&scrape_metrics(server).await));
    }

    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut dashboard_queries = Vec::new();
    collect_queries(&dashboard, &mut dashboard_queries);
    let rule_expressions = rule_expressions(RULES);

    assert!(dashboard_queries.len() >= 15, "{dashboard_queries:?}");
    assert!(rule_expressions.len() >= 6, "{rule_expressions:?}");
    for (source, queries) in [
        ("dashboard", &dashboard_queries),
        ("alerts", &rule_expressions),
    ] {
        let queried: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
        // The extraction finds what it should (a histogram, a counter, a gauge).
        assert!(
            queried.contains("grpc_server_handled_total"),
            "{source}: {queried:?}"
        );
        assert!(
            queried.contains("chat_bus_lag_seconds_bucket"),
            "{source}: {queried:?}"
        );
        let missing: Vec<&String> = queried
            .iter()
            .filter(|name| !exported.contains(*name) && !FROM_PROMETHEUS.contains(&name.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "the {source} queries metrics no server exports: {missing:?}"
        );
    }
}

/// The names a scrape shows: each sample's, and each family's samples' names by its type. A
/// labelled family shows only once it has a series, hence the traffic above.
fn exported_names(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(descriptor) = line.strip_prefix("# TYPE ") {
            let mut fields = descriptor.split(' ');
            let (Some(name), Some(kind)) = (fields.next(), fields.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
        } else if !line.starts_with('#')
            && let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty())
        {
            names.insert(name.to_owned());
        }
    }
    names
}

/// Every `expr` of the dashboard's panels (rows included) and every query of its variables.
fn collect_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(object) => {
            for (key, field) in object {
                match (key.as_str(), field) {
                    ("expr" | "definition", serde_json::Value::String(query)) => {
                        out.push(query.clone());
                    }
                    _ => collect_queries(field, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect_queries(item, out)),
        _ => {}
    }
}

/// The `expr` of every rule in a Prometheus rule file, inline or as a block (`expr: |`).
fn rule_expressions(rules: &str) -> Vec<String> {
    let mut expressions = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let indent = line.len() - line.trim_start().len();
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if !matches!(rest, "|" | "|-" | ">" | ">-") {
            expressions.push(rest.to_owned());
            continue;
        }
        let mut block = String::new();
        while let Some(next) = lines.peek() {
            if !next.trim().is_empty() && next.len() - next.trim_start().len() <= indent {
                break;
            }
            block.push_str(next.trim());
            block.push('\n');
            lines.next();
        }
        expressions.push(block);
    }
    expressions
}

/// The metric names a PromQL query uses: identifiers with the servers' prefixes (functions,
/// keywords, label names and Grafana's `$__...` variables have none), outside quoted strings,
/// and `up`.
fn metric_names(query: &str) -> BTreeSet<String> {
    let mut outside_strings = String::new();
    let mut quoted = false;
    for c in query.chars() {
        if c == '"' {
            quoted = !quoted;
        } else if !quoted {
            outside_strings.push(c);
        }
    }
    const PREFIXES: [&str; 6] = ["grpc_", "chat_", "auth_", "group_", "db_", "http_"];
    outside_strings
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| {
            *token == "up"
                || (PREFIXES.iter().any(|prefix| token.starts_with(prefix))
                    && !matches!(*token, "group_left" | "group_right"))
        })
        .map(str::to_owned)
        .collect()
}
