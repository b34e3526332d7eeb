//! The transfer machines on a simulated link: what the window, the acks and
//! the sender's patience do, in simulated time (exact, and instant to run).

use std::time::Duration;

use tallow_protocol::limits::{Deadlines, ACK_INTERVAL, KEEPALIVE_INTERVAL};
use tallow_protocol::machine::PeerMisbehaved;
use tallow_protocol::manifest::Manifest;
use tallow_testkit::messages::{entry, manifest};
use tallow_testkit::sim::{transfer, Ending, Link};

const MIB: u64 = 1024 * 1024;
const CHUNK: u32 = 256 * 1024;

/// Files of these sizes, in 256 KiB chunks.
fn files(sizes: &[u64]) -> Manifest {
    manifest(
        CHUNK,
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| entry(&format!("f{i}"), size))
            .collect(),
    )
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_clean_link_delivers_everything_at_its_bandwidth() {
    let m = files(&[40 * MIB, 0, 3, 24 * MIB + 1]);
    let link = Link::new(ms(5), 100 * MIB);
    let out = transfer(&m, 32 * MIB, link, Deadlines::default());
    assert_eq!(out.ending, Ending::Done);
    // 64 MiB at 100 MiB/s is 0.64 s of wire time; latency and the last
    // ack add a little.
    let wire = Duration::from_secs_f64(m.total_size() as f64 / (100 * MIB) as f64);
    assert!(out.elapsed >= wire, "{:?}", out.elapsed);
    assert!(out.elapsed < wire + ms(100), "{:?}", out.elapsed);
    assert!(out.peak_unacked <= 32 * MIB + u64::from(CHUNK));
}

#[test]
fn on_a_long_link_the_window_bounds_the_speed() {
    // 1 GiB/s with a 200 ms round trip: 32 MiB in flight allow about
    // 32 MiB / 0.25 s (the round trip plus the ack timer), far below the
    // link; four times the window is about four times as fast.
    let m = files(&[512 * MIB]);
    let link = Link::new(ms(100), 1024 * MIB);
    let small = transfer(&m, 32 * MIB, link, Deadlines::default());
    let large = transfer(&m, 128 * MIB, link, Deadlines::default());
    assert_eq!(small.ending, Ending::Done);
    assert_eq!(large.ending, Ending::Done);
    let rate = |d: Duration| (m.total_size() / MIB) as f64 / d.as_secs_f64();
    let (small_rate, large_rate) = (rate(small.elapsed), rate(large.elapsed));
    eprintln!("window 32 MiB: {small_rate:.0} MiB/s, 128 MiB: {large_rate:.0} MiB/s on a 200 ms round trip");
    let round_trip = (ms(200) + ACK_INTERVAL).as_secs_f64();
    assert!(
        small_rate <= 32.0 / 0.2 && small_rate >= 0.8 * 32.0 / round_trip,
        "{small_rate:.0} MiB/s"
    );
    assert!(
        large_rate > 3.0 * small_rate,
        "{large_rate:.0} vs {small_rate:.0} MiB/s"
    );
}

#[test]
fn a_lost_or_reordered_chunk_is_refused_by_the_receiver() {
    let m = files(&[4 * MIB]);
    for (drop, swap) in [(Some(3), None), (None, Some(5))] {
        let link = Link {
            drop_frame: drop,
            swap_frame: swap,
            ..Link::new(ms(10), 100 * MIB)
        };
        let out = transfer(&m, 32 * MIB, link, Deadlines::default());
        let (index, expected) = match (drop, swap) {
            (Some(lost), _) => (lost as u64 + 1, lost as u64),
            (_, Some(late)) => (late as u64 + 1, late as u64),
            _ => unreachable!(),
        };
        assert_eq!(
            out.ending,
            Ending::ReceiverRefused(PeerMisbehaved::ChunkOutOfOrder {
                file: 0,
                index,
                expected_file: 0,
                expected_index: expected,
            })
        );
    }
}

#[test]
fn a_hung_disk_is_kept_alive_for_the_stall_limit_then_the_sender_gives_up() {
    let m = files(&[64 * MIB]);
    let stops = 8 * MIB;
    let link = Link {
        disk_stops_after: Some(stops),
        ..Link::new(ms(10), 100 * MIB)
    };
    let deadlines = Deadlines {
        idle: Duration::from_secs(30),
        ..Deadlines::default()
    };
    let out = transfer(&m, 32 * MIB, link, deadlines);
    assert_eq!(out.ending, Ending::SenderTimedOut);
    // The disk stopped at about 0.1 s; keepalives go on while it wrote
    // something within the stall limit (ten idle periods), so the last is
    // up to one keepalive interval before the limit; then the sender waits
    // one idle period. (The real receiver's own stall check ends it at the
    // limit with a better reason; this is the sender's backstop.)
    let limit = deadlines.disk_stall() + deadlines.idle;
    assert!(
        out.elapsed >= limit - KEEPALIVE_INTERVAL && out.elapsed <= limit + ms(500),
        "{:?}",
        out.elapsed
    );
    // One ack per keepalive interval while the disk looked alive, not one
    // per tick.
    let keepalives = (deadlines.disk_stall().as_secs() / KEEPALIVE_INTERVAL.as_secs()) as usize;
    assert!(
        out.acks <= keepalives + 40,
        "{} acks for {keepalives} keepalives",
        out.acks
    );
}
