use common::config::FromEnv;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = group::Config::from_env()?; // fail before binding anything
    common::telemetry::init(&config.server.log_filter, config.server.log_format)?;
    let listener = TcpListener::bind(config.server.listen_addr).await?;
    let db = common::db::connect_lazy(&config.database)?;
    tracing::info!(addr = %listener.local_addr()?, "group listening");
    group::run(config, db, listener, common::shutdown::signal()).await
}
