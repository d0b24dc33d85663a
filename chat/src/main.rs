use common::config::FromEnv;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = chat::Config::from_env()?; // fail before binding anything
    let telemetry = common::telemetry::init_with_traces(
        &config.server.log_filter,
        config.server.log_format,
        config.server.trace_export.clone(),
    )?;
    let listener = TcpListener::bind(config.server.listen_addr).await?;
    let db = common::db::connect_lazy(&config.database)?;
    tracing::info!(addr = %listener.local_addr()?, "chat listening");
    let outcome = chat::run(config, db, listener, common::shutdown::signal()).await;
    // After the drain, so the spans of the last calls are exported too.
    telemetry.shutdown().await;
    outcome
}
