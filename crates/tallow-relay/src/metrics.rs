//! What a relay counts (never payloads or room ids), and the Prometheus
//! `/metrics` and `/healthz` endpoint that shows it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Why a client was refused, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No hello in time.
    HelloTimeout,
    /// The hello did not parse.
    Malformed,
    /// Missing or wrong password.
    Password,
    /// Too many connections from one address.
    PerIp,
    /// Too many rooms.
    RoomLimit,
    /// Another client of the same role waits in the room.
    RoomBusy,
    /// The room's pair is already transferring.
    RoomFull,
    /// The peer did not come in time.
    PairTimeout,
    /// A receiver waited for a room no sender took.
    NoSuchRoom,
    /// Too many rooms waiting from one address.
    WaitingLimit,
    /// Too many nameplate requests from one address.
    RoomRate,
}

impl Refusal {
    /// Every reason, in a fixed order (for metrics).
    pub const ALL: [Refusal; 11] = [
        Refusal::HelloTimeout,
        Refusal::Malformed,
        Refusal::Password,
        Refusal::PerIp,
        Refusal::RoomLimit,
        Refusal::RoomBusy,
        Refusal::RoomFull,
        Refusal::PairTimeout,
        Refusal::NoSuchRoom,
        Refusal::WaitingLimit,
        Refusal::RoomRate,
    ];

    /// The label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::HelloTimeout => "hello_timeout",
            Refusal::Malformed => "malformed",
            Refusal::Password => "password",
            Refusal::PerIp => "per_ip_limit",
            Refusal::RoomLimit => "room_limit",
            Refusal::RoomBusy => "room_busy",
            Refusal::RoomFull => "room_full",
            Refusal::PairTimeout => "pair_timeout",
            Refusal::NoSuchRoom => "no_such_room",
            Refusal::WaitingLimit => "waiting_limit",
            Refusal::RoomRate => "room_rate",
        }
    }
}

/// Counters the relay keeps; read by [`RelayServer::metrics`](crate::RelayServer::metrics).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted.
    pub connections_total: AtomicU64,
    /// Pairs formed.
    pub pairs_total: AtomicU64,
    /// Pairs forwarding now.
    pub pairs_active: AtomicU64,
    /// Bytes forwarded, both ways, all pairs.
    pub bytes_forwarded_total: AtomicU64,
    /// Clients handed to the fleet member that owns their room.
    pub fleet_forwards_total: AtomicU64,
    /// Clients whose bytes this member copies to their room's owner now.
    pub forwards_active: AtomicU64,
    refusals: [AtomicU64; Refusal::ALL.len()],
}

impl Metrics {
    pub(crate) fn refused(&self, why: Refusal) {
        if let Some(i) = Refusal::ALL.iter().position(|r| *r == why) {
            self.refusals[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refusals so far for a reason.
    pub fn refusals(&self, why: Refusal) -> u64 {
        Refusal::ALL
            .iter()
            .position(|r| *r == why)
            .map_or(0, |i| self.refusals[i].load(Ordering::Relaxed))
    }
}

impl Metrics {
    /// The Prometheus text exposition of the counters, and rooms waiting.
    pub fn text(&self, rooms_waiting: u64) -> String {
        let metrics = self;
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# HELP tallow_relay_{name} {help}\n# TYPE tallow_relay_{name} {kind}\ntallow_relay_{name} {value}\n"
            ));
        };
        put(
            "rooms_waiting",
            "gauge",
            "Clients waiting for their peer.",
            rooms_waiting,
        );
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        put(
            "pairs_active",
            "gauge",
            "Pairs forwarding bytes now.",
            load(&metrics.pairs_active),
        );
        put(
            "pairs_total",
            "counter",
            "Pairs formed.",
            load(&metrics.pairs_total),
        );
        put(
            "connections_total",
            "counter",
            "Connections accepted.",
            load(&metrics.connections_total),
        );
        put(
            "bytes_forwarded_total",
            "counter",
            "Bytes forwarded, both ways.",
            load(&metrics.bytes_forwarded_total),
        );
        put(
            "fleet_forwards_total",
            "counter",
            "Clients handed to the fleet member that owns their room.",
            load(&metrics.fleet_forwards_total),
        );
        out.push_str("# HELP tallow_relay_refusals_total Clients refused, by reason.\n# TYPE tallow_relay_refusals_total counter\n");
        for r in Refusal::ALL {
            out.push_str(&format!(
                "tallow_relay_refusals_total{{reason=\"{}\"}} {}\n",
                r.label(),
                metrics.refusals(r)
            ));
        }
        out
    }
}

/// Serve `GET /metrics` (Prometheus text) and `GET /healthz` on
/// `listener` until dropped.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    rooms_waiting: impl Fn() -> u64 + Send + Sync + 'static,
) {
    let rooms_waiting = Arc::new(rooms_waiting);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, rooms_waiting) = (metrics.clone(), rooms_waiting.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
            else {
                return;
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match path {
                "/metrics" => ("200 OK", metrics.text(rooms_waiting())),
                "/healthz" => ("200 OK", "ok\n".to_owned()),
                _ => ("404 Not Found", "try /metrics or /healthz\n".to_owned()),
            };
            let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                stream.write_all(response.as_bytes()),
            )
            .await;
        });
    }
}
