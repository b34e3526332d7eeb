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
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tallow_crypto::RoomId;
use tallow_protocol::rendezvous::{RelayHello, RelayStatus, RELAY_HELLO_LEN};
use tallow_protocol::Role;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Bytes copied per read while forwarding, per direction.
const FORWARD_BUFFER: usize = 64 * 1024;
/// Deadline for writing a status reply to a client.
const STATUS_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits and deadlines of a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// A client must send its hello within this.
    pub hello_timeout: Duration,
    /// A waiting client is refused if its peer has not come by then.
    pub pair_timeout: Duration,
    /// A pair is cut when no byte moved either way for this long.
    pub idle_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            hello_timeout: Duration::from_secs(10),
            pair_timeout: Duration::from_secs(15 * 60),
            idle_timeout: Duration::from_secs(10 * 60),
        }
    }
}

enum Slot {
    /// One client waits; the other side hands its stream over this channel.
    Waiting {
        role: Role,
        id: u64,
        partner: oneshot::Sender<TcpStream>,
    },
    /// Both sides are here and bytes are flowing.
    Paired { id: u64 },
}

type Rooms = Arc<Mutex<HashMap<RoomId, Slot>>>;

/// A bound relay, ready to [`run`](RelayServer::run).
pub struct RelayServer {
    listener: TcpListener,
    config: RelayConfig,
    rooms: Rooms,
    next_id: Arc<AtomicU64>,
}

impl RelayServer {
    /// Bind to `addr` (port 0 picks a free port; see [`local_addr`](Self::local_addr)).
    pub async fn bind(addr: SocketAddr, config: RelayConfig) -> std::io::Result<Self> {
        Ok(RelayServer {
            listener: TcpListener::bind(addr).await?,
            config,
            rooms: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept clients until the task is dropped.
    pub async fn run(self) -> std::io::Result<()> {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let conn = Connection {
                config: self.config.clone(),
                rooms: self.rooms.clone(),
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                peer,
            };
            tokio::spawn(conn.serve(stream));
        }
    }
}

struct Connection {
    config: RelayConfig,
    rooms: Rooms,
    id: u64,
    peer: SocketAddr,
}

enum Joined {
    Wait(oneshot::Receiver<TcpStream>),
    Pair(oneshot::Sender<TcpStream>),
    Refuse(String),
}

impl Connection {
    async fn serve(self, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let mut hello = [0u8; RELAY_HELLO_LEN];
        match tokio::time::timeout(self.config.hello_timeout, stream.read_exact(&mut hello)).await {
            Err(_) => {
                tracing::info!(peer = %self.peer, "refused: no hello in time");
                let secs = self.config.hello_timeout.as_secs();
                refuse(&mut stream, &format!("no hello within {secs} s")).await;
                return;
            }
            Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
        let hello = match RelayHello::decode(&hello) {
            Ok(h) => h,
            Err(e) => {
                tracing::info!(peer = %self.peer, "refused: malformed hello");
                refuse(
                    &mut stream,
                    &format!("malformed hello ({e}); this port is a tallow relay, use `tallow send` or `tallow receive`"),
                )
                .await;
                return;
            }
        };
        let room = hello.room;
        match self.join(hello) {
            Joined::Refuse(reason) => {
                tracing::info!(room = %room.short(), role = %hello.role, "refused: {reason}");
                refuse(&mut stream, &reason).await;
            }
            Joined::Pair(partner) => {
                if let Err(mut stream) = partner.send(stream) {
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

    fn join(&self, hello: RelayHello) -> Joined {
        let mut rooms = lock(&self.rooms);
        match rooms.remove(&hello.room) {
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
                let reason = match &slot {
                    Slot::Waiting { role, .. } => format!(
                        "another {role} is already waiting with this code's number; start a new transfer for a new code"
                    ),
                    Slot::Paired { .. } => "a transfer with this code's number is already in progress (the room is full); start a new transfer for a new code".to_owned(),
                };
                rooms.insert(hello.room, slot);
                Joined::Refuse(reason)
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
        mut partner: oneshot::Receiver<TcpStream>,
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
            other = &mut partner => other.ok(),
            // Nothing may arrive before pairing: data or EOF both end the wait.
            _ = stream.read(&mut probe) => None,
            _ = tokio::time::sleep(self.config.pair_timeout) => {
                let secs = self.config.pair_timeout.as_secs();
                let reason = format!("no {} joined within {secs} s", hello.role.peer());
                self.release(room);
                // A partner may have arrived in the same instant.
                if let Ok(mut other) = partner.try_recv() {
                    refuse(&mut other, "the other side timed out just as you joined; start again").await;
                }
                tracing::info!(room = %room.short(), "pairing timed out");
                refuse(&mut stream, &reason).await;
                return;
            }
        };
        let Some(mut other) = other else {
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
        let (a_to_b, b_to_a, outcome) = forward(stream, other, self.config.idle_timeout).await;
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
async fn forward(a: TcpStream, b: TcpStream, idle: Duration) -> (u64, u64, &'static str) {
    let start = Instant::now();
    let last_activity = AtomicU64::new(0);
    let a_to_b = AtomicU64::new(0);
    let b_to_a = AtomicU64::new(0);
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let pumps = async {
        tokio::try_join!(
            pump(ar, bw, &a_to_b, &last_activity, start),
            pump(br, aw, &b_to_a, &last_activity, start)
        )
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

async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    counter: &AtomicU64,
    last_activity: &AtomicU64,
    start: Instant,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; FORWARD_BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Pass the half-close on; the other direction may still flow.
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        last_activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}
