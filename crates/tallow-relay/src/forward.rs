//! Copying a pair's bytes both ways: half-closes passed on, an idle
//! watchdog, an optional rate cap, and a grace period so a side's last
//! message still arrives after the other side failed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes copied per read while forwarding, per direction.
const FORWARD_BUFFER: usize = 64 * 1024;
/// How long one direction of a pair may go on delivering after the other
/// failed.
const ERROR_GRACE: Duration = Duration::from_secs(2);

/// Copy both ways until both sides finish, one fails, or all is idle.
/// Returns the bytes copied each way and how it ended.
pub(crate) async fn forward(
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
    let mut pacer = max_rate
        .filter(|r| *r > 0)
        .map(|rate| RatePacer::new(rate, Instant::now()));
    loop {
        let n = match from.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                // `from` is gone: what it sent is queued for `to`; end the
                // stream after it rather than let a reset drop it.
                let _ = to.shutdown().await;
                return Err(e);
            }
        };
        if n == 0 {
            // Pass the half-close on; the other direction may still flow.
            return to.shutdown().await;
        }
        if let Err(e) = to.write_all(&buf[..n]).await {
            // `to` is gone. Keep reading `from` (discarding) until it
            // closes: closing with its bytes unread would reset it and
            // throw away what the other direction still has queued for it,
            // often its peer's last message saying why. For a moment only.
            let drain = async { while let Ok(1..) = from.read(&mut buf).await {} };
            let _ = tokio::time::timeout(ERROR_GRACE, drain).await;
            return Err(e);
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        last_activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if let Some(pacer) = &mut pacer {
            // Ahead of the cap: wait until the bytes moved fit it.
            let ahead = pacer.after(n, Instant::now());
            if !ahead.is_zero() {
                tokio::time::sleep(ahead).await;
            }
        }
    }
}

/// Allowance under `--max-rate` left unused that may still be spent at
/// once: a pause (a person reading the offer before saying yes) must not
/// buy a burst at full speed afterwards.
const RATE_BURST: Duration = Duration::from_millis(100);

/// Spaces one direction's bytes to a rate: a token bucket holding at most
/// `RATE_BURST` of allowance.
struct RatePacer {
    rate: f64,
    /// When the bytes moved so far fit the rate.
    due: Instant,
}

impl RatePacer {
    fn new(rate: u64, now: Instant) -> Self {
        RatePacer {
            rate: rate as f64,
            due: now,
        }
    }

    /// `n` more bytes moved at `now`: how long to wait before the next.
    fn after(&mut self, n: usize, now: Instant) -> Duration {
        let unspent_from = now.checked_sub(RATE_BURST).unwrap_or(now);
        self.due = self.due.max(unspent_from) + Duration::from_secs_f64(n as f64 / self.rate);
        self.due.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn the_rate_cap_spaces_bytes_and_a_pause_buys_no_burst() {
        let t0 = Instant::now();
        let mut pacer = RatePacer::new(1_000_000, t0);
        // 100 KB at 1 MB/s: 0.1 s before the next.
        assert_eq!(pacer.after(100_000, t0), Duration::from_millis(100));
        // Ten seconds of nothing (the receiver reading the offer), then a
        // megabyte: it still takes about a second, less the burst kept.
        let later = t0 + Duration::from_secs(10);
        let wait = pacer.after(1_000_000, later);
        assert_eq!(wait, Duration::from_secs(1) - RATE_BURST);
        // Steady flow keeps to the rate.
        let mut now = later + wait;
        for _ in 0..10 {
            let wait = pacer.after(100_000, now);
            assert_eq!(wait, Duration::from_millis(100));
            now += wait;
        }
    }

    /// Two connected streams: (the client's end, the relay's end).
    async fn connection(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (relay_end, _) = listener.accept().await.unwrap();
        (client, relay_end)
    }

    /// One peer streams and then vanishes with a reset; the other, slow to
    /// read and still talking, gets every byte the relay took from the
    /// first and then a clean end, not a reset that would drop them.
    #[tokio::test]
    async fn a_peer_that_resets_does_not_cost_the_other_its_last_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        // A small receive buffer: what the relay has for this peer waits in
        // the relay's own send buffer.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(32 * 1024).unwrap();
        let mut slow = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (slow_at_relay, _) = listener.accept().await.unwrap();
        let (mut gone, gone_at_relay) = connection(&listener).await;
        let relay = tokio::spawn(forward(
            slow_at_relay,
            gone_at_relay,
            Duration::from_secs(30),
            None,
        ));
        // The slow peer talks (acks, say); the other streams until every
        // buffer on the way is full, since the slow one does not read yet.
        slow.write_all(&[1u8; 1024]).await.unwrap();
        let block = vec![2u8; 64 * 1024];
        let streaming = async {
            loop {
                if gone.write_all(&block).await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(300), streaming).await;
        // It vanishes: a reset, whatever it had queued lost.
        socket2::SockRef::from(&gone)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(gone);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The slow peer still says something (the relay cannot pass it on
        // now), and again, then reads. A relay that closed at once would
        // answer the second with a reset, dropping what it had queued.
        slow.write_all(&[3u8; 1024]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        slow.write_all(&[4u8; 1024]).await.unwrap();
        let mut got = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let end = loop {
            match slow.read(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(n) => got += n as u64,
                Err(e) => break Err(e),
            }
        };
        drop(slow);
        let (_, from_gone, _) = relay.await.unwrap();
        assert!(end.is_ok(), "{end:?} after {got} bytes");
        assert!(got > 0);
        assert_eq!(got, from_gone);
    }
}
