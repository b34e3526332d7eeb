//! `tallow relay`.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tallow_relay::{RelayConfig, RelayServer};

#[derive(Args)]
pub struct RelayArgs {
    /// Address to listen on; port 0 picks a free port (the bound address is
    /// printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9009")]
    listen: SocketAddr,
    /// Refuse a waiting client whose peer has not joined after this long.
    #[arg(long, value_name = "SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
    pair_timeout: u64,
    /// Cut a pair when no byte moved either way for this long.
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Refuse a client that has not sent its hello after this long.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    hello_timeout: u64,
}

pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = RelayConfig {
        hello_timeout: Duration::from_secs(args.hello_timeout),
        pair_timeout: Duration::from_secs(args.pair_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
    };
    let server = RelayServer::bind(args.listen, config)
        .await
        .with_context(|| format!("cannot listen on {} (is the port in use?)", args.listen))?;
    let addr = server.local_addr()?;
    println!("tallow relay listening on {addr}");
    std::io::stdout().flush()?;
    tokio::select! {
        result = server.run() => result?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
    }
    Ok(())
}
