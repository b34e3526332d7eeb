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
    /// printed on stdout). `[::]` listens on IPv6 and IPv4 both (on a host
    /// without IPv6, the default falls back to 0.0.0.0).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Refuse a waiting sender whose receiver has not joined after this long.
    #[arg(long, value_name = "SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
    pair_timeout: u64,
    /// A receiver that comes before its sender (both using a code of their
    /// own) waits this long, then is told there is no such transfer. Short,
    /// so nobody can hold rooms as a receiver.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    receiver_first_wait: u64,
    /// Cut a pair when no byte moved either way for this long.
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Refuse a client that has not sent its hello after this long.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    hello_timeout: u64,
    /// Most transfers (rooms, waiting or active) at once.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_rooms: usize,
    /// Most connections at once from one IPv4 address or IPv6 /64 (0: no
    /// limit).
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_conns_per_ip: usize,
    /// Most transfers waiting for their other side at once from one IPv4
    /// address or IPv6 /64 (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 16)]
    max_waiting_per_ip: usize,
    /// Most rooms asked for per minute from one IPv4 address or IPv6 /64:
    /// code numbers handed out, and rooms named by a code, joining included
    /// (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 60)]
    rooms_per_minute: u32,
    /// Require clients to present this password (they pass
    /// --relay-password or set TALLOW_RELAY_PASSWORD). Given here it is
    /// hidden from the process list once the relay starts (Linux), not
    /// before; TALLOW_RELAY_PASSWORD keeps it out entirely.
    #[arg(
        long,
        env = "TALLOW_RELAY_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true,
        value_parser = crate::relay_password
    )]
    password: Option<String>,
    /// Most bytes per second each transfer may move, each way (0: no cap).
    #[arg(long, value_name = "BYTES_PER_SEC", default_value_t = 0)]
    max_rate: u64,
    /// Be one of a fleet of relays behind one address: MEMBERS is a list of
    /// IP:PORT (every member's --advertise address, this one's included) or
    /// dns:NAME:PORT (every address NAME resolves to: a Kubernetes headless
    /// Service). A client may reach any member; each room is served by its
    /// owner, chosen by rendezvous hashing, to which the others forward.
    #[arg(long, value_name = "MEMBERS", value_parser = tallow_relay::FleetMembers::parse)]
    fleet: Option<tallow_relay::FleetMembers>,
    /// This relay's address as the other members reach it (needed with
    /// --fleet when --listen is a wildcard; in Kubernetes, the pod's IP).
    #[arg(long, value_name = "IP:PORT", requires = "fleet")]
    advertise: Option<SocketAddr>,
    /// How often a dns: fleet's members are looked up again.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    fleet_refresh: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics and a health check at
    /// http://ADDR/healthz.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// On SIGTERM or Ctrl-C, stop accepting and let active transfers run
    /// this long before exiting.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    shutdown_grace: u64,
}

pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let fleet = match args.fleet {
        None => None,
        Some(members) => {
            let me = match args.advertise {
                Some(me) => me,
                None if !args.listen.ip().is_unspecified() && args.listen.port() != 0 => args.listen,
                None => {
                    return Err(crate::exit::UsageError::new(format!(
                        "--fleet needs this relay's own address as the members reach it: pass --advertise IP:PORT (with --listen {} it cannot be known)",
                        args.listen
                    ))
                    .into())
                }
            };
            Some(tallow_relay::FleetConfig {
                members,
                me,
                refresh: Duration::from_secs(args.fleet_refresh),
            })
        }
    };
    let config = RelayConfig {
        hello_timeout: Duration::from_secs(args.hello_timeout),
        pair_timeout: Duration::from_secs(args.pair_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        max_rooms: args.max_rooms,
        receiver_first_wait: Duration::from_secs(args.receiver_first_wait),
        max_conns_per_ip: args.max_conns_per_ip,
        max_waiting_per_ip: args.max_waiting_per_ip,
        rooms_per_minute: args.rooms_per_minute,
        password: args.password.map(String::into_bytes),
        only_room: None,
        max_rate: (args.max_rate > 0).then_some(args.max_rate),
        fleet,
    };
    let bound = match RelayServer::bind(args.listen, config.clone()).await {
        // No IPv6 on this host: the default's IPv4 half still serves.
        Err(e) if args.listen.to_string() == DEFAULT_LISTEN && no_ipv6(&e) => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], args.listen.port()));
            tracing::warn!(error = %e, "no IPv6 here; listening on {v4} only");
            RelayServer::bind(v4, config).await
        }
        other => other,
    };
    let server = bound.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (is the port in use?)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot start the relay on {}{hint}: {e}", args.listen)
    })?;
    let addr = server.local_addr()?;
    let metrics_listener = match args.metrics {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot serve metrics on {at} (is the port in use?)"))?,
        ),
        None => None,
    };
    // Both are listening before either is announced.
    // stdout may be closed by whoever read the address: never fail on it.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "tallow relay listening on {addr}");
    let _metrics = match metrics_listener {
        Some(listener) => {
            let _ = writeln!(
                out,
                "tallow relay metrics on http://{}/metrics",
                listener.local_addr()?
            );
            let (metrics, rooms) = (server.metrics(), server.rooms_gauge());
            Some(AbortOnDrop(tokio::spawn(tallow_relay::serve_metrics(
                listener, metrics, rooms,
            ))))
        }
        None => None,
    };
    let _ = out.flush();
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        tracing::info!("shutting down: no new clients");
    };
    server
        .run_until(shutdown, Duration::from_secs(args.shutdown_grace))
        .await?;
    Ok(())
}

/// Both address families, on the usual port.
const DEFAULT_LISTEN: &str = "[::]:9009";

/// Whether binding failed because the host has no IPv6.
fn no_ipv6(e: &std::io::Error) -> bool {
    let unsupported = rustix::io::Errno::AFNOSUPPORT.raw_os_error();
    e.raw_os_error() == Some(unsupported) || e.kind() == std::io::ErrorKind::AddrNotAvailable
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
