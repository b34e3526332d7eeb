//! The relay: a rendezvous that pairs two clients and copies bytes.
//!
//! A client sends one fixed-size hello (`tallow_protocol::rendezvous`) naming
//! its role and a room id, which is a hash of the code's nameplate: the relay
//! never sees the code's words, file names or any plaintext. The first
//! sender and first receiver of a room are paired; a second client of the
//! same role, or any client of a room in use, is refused. After pairing the
//! relay parses nothing: it copies bytes both ways until both sides close,
//! one fails, or nothing moves for the idle timeout. It logs counts and
//! durations, never payloads or full room ids.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tallow_crypto::RoomId;
use tallow_protocol::rendezvous::{RelayHello, RelayStatus, MAX_PASSWORD_LEN, RELAY_HELLO_LEN};
use tallow_protocol::Role;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Bytes copied per read while forwarding, per direction.
const FORWARD_BUFFER: usize = 64 * 1024;
/// Deadline for writing a status reply to a client.
const STATUS_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one direction of a pair may go on delivering after the other
/// failed.
const ERROR_GRACE: Duration = Duration::from_secs(2);

/// Limits and deadlines of a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// A client must send its hello within this.
    pub hello_timeout: Duration,
    /// A waiting client is refused if its peer has not come by then.
    pub pair_timeout: Duration,
    /// A pair is cut when no byte moved either way for this long.
    pub idle_timeout: Duration,
    /// Rooms (waiting or paired) at once; a new room beyond is refused.
    pub max_rooms: usize,
    /// Connections at once from one IP address (0: no limit).
    pub max_conns_per_ip: usize,
    /// Clients must present this password, if set.
    pub password: Option<Vec<u8>>,
    /// Serve this room only (the sender's in-process relay).
    pub only_room: Option<RoomId>,
    /// Most bytes per second each transfer may move, each way.
    pub max_rate: Option<u64>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            hello_timeout: Duration::from_secs(10),
            pair_timeout: Duration::from_secs(15 * 60),
            idle_timeout: Duration::from_secs(10 * 60),
            max_rooms: 10_000,
            max_conns_per_ip: 32,
            password: None,
            only_room: None,
            max_rate: None,
        }
    }
}

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
}

impl Refusal {
    /// Every reason, in a fixed order (for metrics).
    pub const ALL: [Refusal; 8] = [
        Refusal::HelloTimeout,
        Refusal::Malformed,
        Refusal::Password,
        Refusal::PerIp,
        Refusal::RoomLimit,
        Refusal::RoomBusy,
        Refusal::RoomFull,
        Refusal::PairTimeout,
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
        }
    }
}

/// Counters the relay keeps; read by [`RelayServer::metrics`].
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
    refusals: [AtomicU64; 8],
}

impl Metrics {
    fn refused(&self, why: Refusal) {
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

enum Slot {
    /// One client waits; the other side hands its stream over this channel.
    Waiting {
        role: Role,
        id: u64,
        partner: oneshot::Sender<Joiner>,
    },
    /// Both sides are here and bytes are flowing.
    Paired { id: u64 },
}

type Rooms = Arc<Mutex<HashMap<RoomId, Slot>>>;

type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A bound relay, ready to [`run`](RelayServer::run).
pub struct RelayServer {
    listener: TcpListener,
    config: RelayConfig,
    rooms: Rooms,
    next_id: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    per_ip: PerIp,
}

impl RelayServer {
    /// Bind to `addr` (port 0 picks a free port; see [`local_addr`](Self::local_addr)).
    pub async fn bind(addr: SocketAddr, config: RelayConfig) -> std::io::Result<Self> {
        Ok(RelayServer {
            listener: TcpListener::bind(addr).await?,
            config,
            rooms: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            metrics: Arc::default(),
            per_ip: Arc::default(),
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

    /// The Prometheus text exposition of the counters, and rooms waiting.
    pub fn metrics_text(metrics: &Metrics, rooms_waiting: u64) -> String {
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

    /// Clients waiting for their peer now.
    fn rooms_waiting(rooms: &Rooms) -> u64 {
        lock(rooms)
            .values()
            .filter(|s| matches!(s, Slot::Waiting { .. }))
            .count() as u64
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
                _ip_slot: None,
            };
            let per_ip = self.per_ip.clone();
            tokio::spawn(async move {
                let mut conn = conn;
                let mut stream = stream;
                match IpSlot::take(&per_ip, peer.ip(), conn.config.max_conns_per_ip) {
                    Some(slot) => conn._ip_slot = Some(slot),
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
        while self.metrics.pairs_active.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
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
                    "/metrics" => (
                        "200 OK",
                        RelayServer::metrics_text(&metrics, rooms_waiting()),
                    ),
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

    /// A function reporting rooms waiting, for [`serve_metrics`](Self::serve_metrics).
    pub fn rooms_gauge(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let rooms = self.rooms.clone();
        move || RelayServer::rooms_waiting(&rooms)
    }
}

/// One connection's place in the per-address count; freed on drop.
struct IpSlot {
    per_ip: PerIp,
    ip: IpAddr,
}

impl IpSlot {
    fn take(per_ip: &PerIp, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut counts = per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if max != 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            per_ip: per_ip.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = counts.get_mut(&self.ip) {
            *c -= 1;
            if *c == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// The second client of a room, handed to the first one's task.
struct Joiner {
    stream: TcpStream,
    _slot: Option<IpSlot>,
}

struct Connection {
    config: RelayConfig,
    rooms: Rooms,
    id: u64,
    peer: SocketAddr,
    metrics: Arc<Metrics>,
    _ip_slot: Option<IpSlot>,
}

enum Joined {
    Wait(oneshot::Receiver<Joiner>),
    Pair(oneshot::Sender<Joiner>),
    Refuse(Refusal, String),
}

impl Connection {
    async fn serve(mut self, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        // The fixed part is checked before the password is read, so a
        // stranger (a browser, a port scan) is told at once what this is.
        let deadline = tokio::time::Instant::now() + self.config.hello_timeout;
        let mut fixed = [0u8; RELAY_HELLO_LEN];
        let hello = match tokio::time::timeout_at(deadline, stream.read_exact(&mut fixed)).await {
            Err(_) => return self.refuse_slow(&mut stream).await,
            Ok(Err(_)) => return,
            Ok(Ok(_)) => match RelayHello::decode(&fixed) {
                Ok(h) => h,
                Err(e) => {
                    let reason = format!(
                        "malformed hello ({e}); this port is a tallow relay, use `tallow send` or `tallow receive`"
                    );
                    self.refuse(&mut stream, Refusal::Malformed, &reason).await;
                    return;
                }
            },
        };
        let read_password = async {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await?;
            let mut password = vec![0u8; (len[0] as usize).min(MAX_PASSWORD_LEN)];
            stream.read_exact(&mut password).await?;
            Ok::<_, std::io::Error>(password)
        };
        let password = match tokio::time::timeout_at(deadline, read_password).await {
            Err(_) => return self.refuse_slow(&mut stream).await,
            Ok(Err(_)) => return,
            Ok(Ok(p)) => p,
        };
        if let Some(expected) = &self.config.password {
            if !bool::from(expected.as_slice().ct_eq(password.as_slice())) {
                self.refuse(
                    &mut stream,
                    Refusal::Password,
                    "this relay needs a password: pass --relay-password or set TALLOW_RELAY_PASSWORD",
                )
                .await;
                return;
            }
        }
        let room = hello.room;
        if self.config.only_room.is_some_and(|only| only != room) {
            self.refuse(
                &mut stream,
                Refusal::RoomLimit,
                "this relay serves one transfer only",
            )
            .await;
            return;
        }
        match self.join(hello) {
            Joined::Refuse(why, reason) => {
                tracing::info!(room = %room.short(), role = %hello.role, "refused: {reason}");
                self.refuse(&mut stream, why, &reason).await;
            }
            Joined::Pair(partner) => {
                // The joiner's connection (and its place in the per-address
                // count) now belongs to the waiting side's task.
                let joiner = Joiner {
                    stream,
                    _slot: self._ip_slot.take(),
                };
                if let Err(Joiner { mut stream, .. }) = partner.send(joiner) {
                    self.release(room);
                    refuse(
                        &mut stream,
                        "the other side left just as you joined; start again",
                    )
                    .await;
                }
            }
            Joined::Wait(partner) => self.wait_and_forward(stream, hello, partner).await,
        }
    }

    async fn refuse_slow(&self, stream: &mut TcpStream) {
        let secs = self.config.hello_timeout.as_secs();
        self.refuse(
            stream,
            Refusal::HelloTimeout,
            &format!("no hello within {secs} s"),
        )
        .await;
    }

    async fn refuse(&self, stream: &mut TcpStream, why: Refusal, reason: &str) {
        self.metrics.refused(why);
        tracing::info!(peer = %self.peer.ip(), reason = why.label(), "refused");
        refuse(stream, reason).await;
    }

    fn join(&self, hello: RelayHello) -> Joined {
        let mut rooms = lock(&self.rooms);
        match rooms.remove(&hello.room) {
            None if rooms.len() >= self.config.max_rooms => Joined::Refuse(
                Refusal::RoomLimit,
                "the relay is full (too many transfers at once); try again later".to_owned(),
            ),
            None => {
                let (tx, rx) = oneshot::channel();
                rooms.insert(
                    hello.room,
                    Slot::Waiting {
                        role: hello.role,
                        id: self.id,
                        partner: tx,
                    },
                );
                Joined::Wait(rx)
            }
            Some(Slot::Waiting { role, id, partner }) if role != hello.role => {
                rooms.insert(hello.room, Slot::Paired { id });
                Joined::Pair(partner)
            }
            Some(slot) => {
                let refusal = match &slot {
                    Slot::Waiting { role, .. } => (Refusal::RoomBusy, format!(
                        "another {role} is already waiting with this code's number; start a new transfer for a new code"
                    )),
                    Slot::Paired { .. } => (Refusal::RoomFull, "a transfer with this code's number is already in progress (the room is full); start a new transfer for a new code".to_owned()),
                };
                rooms.insert(hello.room, slot);
                Joined::Refuse(refusal.0, refusal.1)
            }
        }
    }

    /// Remove the room if it is still ours.
    fn release(&self, room: RoomId) {
        let mut rooms = lock(&self.rooms);
        let ours = match rooms.get(&room) {
            Some(Slot::Waiting { id, .. }) | Some(Slot::Paired { id }) => *id == self.id,
            None => false,
        };
        if ours {
            rooms.remove(&room);
        }
    }

    async fn wait_and_forward(
        self,
        mut stream: TcpStream,
        hello: RelayHello,
        mut partner: oneshot::Receiver<Joiner>,
    ) {
        let room = hello.room;
        if !write_status(&mut stream, &RelayStatus::Waiting).await {
            self.release(room);
            return;
        }
        tracing::info!(room = %room.short(), role = %hello.role, "waiting for peer");
        let waited = Instant::now();
        let mut probe = [0u8; 1];
        let other = tokio::select! {
            biased;
            other = &mut partner => other.ok().map(|j| (j.stream, j._slot)),
            // Nothing may arrive before pairing: data or EOF both end the wait.
            _ = stream.read(&mut probe) => None,
            _ = tokio::time::sleep(self.config.pair_timeout) => {
                let secs = self.config.pair_timeout.as_secs();
                let reason = format!("no {} joined within {secs} s", hello.role.peer());
                self.release(room);
                // A partner may have arrived in the same instant.
                if let Ok(Joiner { stream: mut other, .. }) = partner.try_recv() {
                    refuse(&mut other, "the other side timed out just as you joined; start again").await;
                }
                tracing::info!(room = %room.short(), "pairing timed out");
                self.refuse(&mut stream, Refusal::PairTimeout, &reason).await;
                return;
            }
        };
        let Some((mut other, _other_slot)) = other else {
            self.release(room);
            tracing::info!(room = %room.short(), "waiting client left");
            return;
        };
        // Our own id marks the Paired slot; released when forwarding ends.
        let _guard = ReleaseOnDrop {
            rooms: self.rooms.clone(),
            room,
            id: self.id,
        };
        if !write_status(&mut stream, &RelayStatus::Paired).await
            || !write_status(&mut other, &RelayStatus::Paired).await
        {
            return;
        }
        tracing::info!(room = %room.short(), waited_ms = waited.elapsed().as_millis() as u64, "paired");
        let started = Instant::now();
        self.metrics.pairs_total.fetch_add(1, Ordering::Relaxed);
        self.metrics.pairs_active.fetch_add(1, Ordering::Relaxed);
        let (a_to_b, b_to_a, outcome) = forward(
            stream,
            other,
            self.config.idle_timeout,
            self.config.max_rate,
        )
        .await;
        self.metrics.pairs_active.fetch_sub(1, Ordering::Relaxed);
        self.metrics
            .bytes_forwarded_total
            .fetch_add(a_to_b + b_to_a, Ordering::Relaxed);
        tracing::info!(
            room = %room.short(),
            bytes_from_waiting_side = a_to_b,
            bytes_from_joining_side = b_to_a,
            duration_ms = started.elapsed().as_millis() as u64,
            outcome,
            "pair finished"
        );
    }
}

/// Frees a paired room when its forwarding task ends, however it ends.
struct ReleaseOnDrop {
    rooms: Rooms,
    room: RoomId,
    id: u64,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let mut rooms = lock(&self.rooms);
        if matches!(rooms.get(&self.room), Some(Slot::Paired { id }) if *id == self.id) {
            rooms.remove(&self.room);
        }
    }
}

fn lock(rooms: &Rooms) -> std::sync::MutexGuard<'_, HashMap<RoomId, Slot>> {
    // A panic while holding the lock leaves the map consistent (each
    // critical section is a single insert/remove), so keep serving.
    rooms
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn write_status(stream: &mut TcpStream, status: &RelayStatus) -> bool {
    matches!(
        tokio::time::timeout(STATUS_WRITE_TIMEOUT, stream.write_all(&status.encode())).await,
        Ok(Ok(()))
    )
}

async fn refuse(stream: &mut TcpStream, reason: &str) {
    write_status(stream, &RelayStatus::Refused(reason.to_owned())).await;
    let _ = stream.shutdown().await;
}

/// Copy both ways until both sides finish, one fails, or all is idle.
/// Returns the bytes copied each way and how it ended.
async fn forward(
    a: TcpStream,
    b: TcpStream,
    idle: Duration,
    max_rate: Option<u64>,
) -> (u64, u64, &'static str) {
    let start = Instant::now();
    let last_activity = AtomicU64::new(0);
    let a_to_b = AtomicU64::new(0);
    let b_to_a = AtomicU64::new(0);
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let pumps = async {
        let there = pump(ar, bw, &a_to_b, &last_activity, start, max_rate);
        let back = pump(br, aw, &b_to_a, &last_activity, start, max_rate);
        tokio::pin!(there, back);
        tokio::select! {
            r = &mut there => then_the_other(r, back).await,
            r = &mut back => then_the_other(r, there).await,
        }
    };
    let watchdog = async {
        loop {
            let last = Duration::from_millis(last_activity.load(Ordering::Relaxed));
            let quiet = start.elapsed().saturating_sub(last);
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    let outcome = tokio::select! {
        r = pumps => if r.is_ok() { "closed" } else { "connection error" },
        _ = watchdog => "idle timeout",
    };
    (
        a_to_b.load(Ordering::Relaxed),
        b_to_a.load(Ordering::Relaxed),
        outcome,
    )
}

/// After one direction of a pair ended with `first`, the other.
async fn then_the_other(
    first: std::io::Result<()>,
    rest: std::pin::Pin<&mut impl std::future::Future<Output = std::io::Result<()>>>,
) -> std::io::Result<()> {
    match first {
        // A half-close: the other direction may go on as long as it likes.
        Ok(()) => rest.await,
        // One side is gone (a peer that stops with unread data resets the
        // connection). What it sent just before, often its last message
        // saying why, may still be on its way the other way: let that
        // direction finish, for a moment.
        Err(e) => {
            let _ = tokio::time::timeout(ERROR_GRACE, rest).await;
            Err(e)
        }
    }
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    counter: &AtomicU64,
    last_activity: &AtomicU64,
    start: Instant,
    max_rate: Option<u64>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; FORWARD_BUFFER];
    let mut moved = 0u64;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Pass the half-close on; the other direction may still flow.
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        last_activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        moved += n as u64;
        if let Some(rate) = max_rate.filter(|r| *r > 0) {
            // Ahead of the cap: wait until the bytes moved fit it.
            let due = Duration::from_secs_f64(moved as f64 / rate as f64);
            if let Some(ahead) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(ahead).await;
            }
        }
    }
}
