//! The relay: a rendezvous that pairs two clients and copies bytes.
//!
//! A client sends one fixed-size hello (`tallow_protocol::rendezvous`) naming
//! its role and a room id, which is a hash of the code's nameplate, or (a
//! sender) asking for a nameplate, which the relay chooses: the relay never
//! sees the code's words, file names or any plaintext. The first sender and
//! first receiver of a room are paired; a second client of the same role,
//! or any client of a room in use, is told the room is taken. Only senders
//! hold rooms for long, and waiting rooms and nameplate requests are
//! limited per address, so nobody can park in the rooms others will be
//! given (see `rooms`). After pairing the
//! relay parses nothing: it copies bytes both ways until both sides close,
//! one fails, or nothing moves for the idle timeout. It logs counts and
//! durations, never payloads or full room ids.
//!
//! Modules, one job each: `config` (limits), `rooms` (the room table:
//! allocation, pairing, taken, limits per address, release; pure and
//! unit-tested), `per_address` (what one address is, and the connection
//! limit per address), `fleet` (several relays behind one address: room
//! owners, forwarding to them, the member list), `connection` (one client from hello to
//! the end of its pair), `forward` (copying bytes both ways) and
//! `metrics` (counters and the `/metrics` endpoint).

mod config;
mod connection;
mod fleet;
mod forward;
mod metrics;
mod per_address;
mod rooms;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;

pub use config::RelayConfig;
pub use fleet::{FleetConfig, FleetMembers};
pub use metrics::{serve_metrics, Metrics, Refusal};

use connection::{refuse, Connection, RelayRooms};
use fleet::Fleet;
use per_address::{IpSlot, PerIp};
use rooms::{lock, RoomLimits, RoomTable};

/// A listening socket on `addr`; on the IPv6 wildcard, for IPv4 clients
/// too (as IPv4-mapped addresses).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// A bound relay, ready to [`run`](RelayServer::run).
pub struct RelayServer {
    listener: TcpListener,
    fleet: Option<Arc<Fleet>>,
    config: RelayConfig,
    rooms: RelayRooms,
    next_id: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    per_ip: PerIp,
    first_receiver: Arc<OnceLock<SocketAddr>>,
}

impl RelayServer {
    /// Bind to `addr` (port 0 picks a free port; see [`local_addr`](Self::local_addr)).
    /// The IPv6 wildcard `[::]` listens on both address families, whatever
    /// the system's default for IPv6 sockets.
    pub async fn bind(addr: SocketAddr, config: RelayConfig) -> std::io::Result<Self> {
        let listener = listen(addr)?;
        let fleet = match &config.fleet {
            Some(f) => Some(Fleet::start(f).await?),
            None => None,
        };
        let mut table = RoomTable::new(RoomLimits {
            max_rooms: config.max_rooms,
            max_waiting_per_address: config.max_waiting_per_ip,
            rooms_per_minute: config.rooms_per_minute,
        });
        if let Some(fleet) = &fleet {
            let fleet = fleet.clone();
            table = table.owned_by(Arc::new(move |room| fleet.owns(room)));
        }
        Ok(RelayServer {
            listener,
            fleet,
            rooms: Arc::new(Mutex::new(table)),
            config,
            next_id: Arc::new(AtomicU64::new(1)),
            metrics: Arc::default(),
            per_ip: Arc::default(),
            first_receiver: Arc::default(),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The relay's counters (shared; they keep counting while it runs).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The address of the receiver of the first pair, once there is one:
    /// the sender's in-process relay serves one transfer, and this is how
    /// the sender learns where its receiver is.
    pub fn first_receiver(&self) -> Arc<OnceLock<SocketAddr>> {
        self.first_receiver.clone()
    }

    /// Accept clients until the task is dropped.
    pub async fn run(self) -> std::io::Result<()> {
        self.run_until(std::future::pending(), Duration::ZERO).await
    }

    /// Accept clients until `shutdown` resolves, then stop accepting and
    /// let active pairs finish for up to `grace`.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) -> std::io::Result<()> {
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            self.metrics
                .connections_total
                .fetch_add(1, Ordering::Relaxed);
            let conn = Connection {
                config: self.config.clone(),
                rooms: self.rooms.clone(),
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                peer,
                metrics: self.metrics.clone(),
                ip_slot: None,
                first_receiver: self.first_receiver.clone(),
                fleet: self.fleet.clone(),
                per_ip: self.per_ip.clone(),
            };
            // A member forwarding clients counts each client once its
            // header names them (`Connection::serve`), not itself.
            let member = self.fleet.as_ref().is_some_and(|f| f.is_member(peer.ip()));
            let per_ip = self.per_ip.clone();
            tokio::spawn(async move {
                let mut conn = conn;
                let mut stream = stream;
                if member {
                    return conn.serve(stream).await;
                }
                match IpSlot::take(&per_ip, peer.ip(), conn.config.max_conns_per_ip) {
                    Some(slot) => conn.ip_slot = Some(slot),
                    None => {
                        conn.metrics.refused(Refusal::PerIp);
                        tracing::info!(peer = %peer.ip(), "refused: too many connections from one address");
                        refuse(
                            &mut stream,
                            "too many connections from your address; try again later",
                        )
                        .await;
                        return;
                    }
                }
                conn.serve(stream).await
            });
        }
        drop(self.listener);
        tracing::info!(
            pairs_active = self.metrics.pairs_active.load(Ordering::Relaxed),
            "no longer accepting; letting active pairs finish"
        );
        let deadline = tokio::time::Instant::now() + grace;
        // Clients forwarded to another fleet member are transfers too.
        let busy = |m: &Metrics| {
            m.pairs_active.load(Ordering::Relaxed) + m.forwards_active.load(Ordering::Relaxed)
        };
        while busy(&self.metrics) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// A function reporting rooms waiting, for [`serve_metrics`].
    pub fn rooms_gauge(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let rooms = self.rooms.clone();
        move || lock(&rooms).waiting()
    }
}
