use common::config::FromEnv;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = gateway::Config::from_env()?; // fail before binding anything
    let telemetry = common::telemetry::init_with_traces(
        &config.server.log_filter,
        config.server.log_format,
        config.server.trace_export.clone(),
    )?;
    let listener = gateway::server::bind(config.server.listen_addr)?;
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    let outcome = gateway::run(config, listener, common::shutdown::signal()).await;
    // After the drain, so the spans of the last calls are exported too.
    telemetry.shutdown().await;
    outcome
}
