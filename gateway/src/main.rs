use common::config::FromEnv;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = gateway::Config::from_env()?; // fail before binding anything
    common::telemetry::init(&config.server.log_filter, config.server.log_format)?;
    let listener = gateway::server::bind(config.server.listen_addr)?;
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    gateway::run(config, listener, common::shutdown::signal()).await
}
