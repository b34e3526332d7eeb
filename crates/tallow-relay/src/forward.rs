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
