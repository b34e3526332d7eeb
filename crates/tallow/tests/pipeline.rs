//! Real processes: folders with metadata, a hostile hop, the send window,
//! and memory that does not grow with the file.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tallow_testkit::process::*;

const CODE: &str = "2718-abacus-zoom-yodel";
const CHUNK: u64 = 1024 * 1024;

fn at(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

fn set_meta(path: &Path, mode: u32, mtime: SystemTime) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    fs::File::open(path).unwrap().set_modified(mtime).unwrap();
}

#[test]
fn a_tree_arrives_with_folders_empty_files_modes_and_mtimes() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let root = src.path().join("project tree");
    fs::create_dir_all(root.join("nested/deeper/deepest")).unwrap();
    fs::create_dir_all(root.join("empty folder")).unwrap();
    fs::create_dir_all(root.join("ünïcødé")).unwrap();
    fs::write(root.join("empty.txt"), b"").unwrap();
    fs::write(
        root.join("ünïcødé/naïve café.md"),
        "crème brûlée ".repeat(1000),
    )
    .unwrap();
    random_file(&root.join("nested"), "exactly-one-chunk.bin", CHUNK, 1);
    random_file(
        &root.join("nested/deeper"),
        "one-chunk-plus-one.bin",
        CHUNK + 1,
        2,
    );
    random_file(&root.join("nested/deeper/deepest"), "run me.sh", 300, 3);
    std::os::unix::fs::symlink("/etc/hostname", root.join("link-to-elsewhere")).unwrap();

    set_meta(&root.join("empty.txt"), 0o600, at(1_000_000_000, 0));
    set_meta(
        &root.join("nested/deeper/deepest/run me.sh"),
        0o755,
        at(1_600_000_000, 123_456_789),
    );
    set_meta(
        &root.join("nested/exactly-one-chunk.bin"),
        0o640,
        at(1_500_000_000, 5),
    );
    // Folders last, so writing their contents does not move their times.
    for (dir, mode, secs) in [
        ("nested/deeper/deepest", 0o700, 1_400_000_000),
        ("nested/deeper", 0o750, 1_300_000_000),
        ("nested", 0o755, 1_200_000_000),
        ("empty folder", 0o711, 1_100_000_000),
        ("ünïcødé", 0o755, 1_000_000_001),
    ] {
        set_meta(&root.join(dir), mode, at(secs, 0));
    }
    let link = root.join("link-to-elsewhere");
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
    set_meta(&root, 0o755, at(1_700_000_000, 0));

    let ((s, s_err), (r, r_err)) = transfer(
        &relay.addr,
        CODE,
        std::slice::from_ref(&root),
        out.path(),
        &["--yes"],
    );
    assert!(
        s.success() && r.success(),
        "sender: {s_err}\nreceiver: {r_err}"
    );
    assert!(
        s_err.contains("skipping 1 symbolic link") && s_err.contains("link-to-elsewhere"),
        "{s_err}"
    );
    // The receiver is told too (issue 18.11), by its name in the folder.
    assert!(
        r_err.contains("The sender left out 1 symbolic link or special file")
            && r_err.contains("project tree/link-to-elsewhere"),
        "{r_err}"
    );
    // The link is the only difference: drop it from the source and compare.
    fs::remove_file(&link).unwrap();
    fs::File::open(&root)
        .unwrap()
        .set_modified(at(1_700_000_000, 0))
        .unwrap();
    assert_same_tree(&root, &out.path().join("project tree"));
    assert!(r_err.contains("Merkle root and BLAKE3 match"), "{r_err}");
}

#[test]
fn a_bit_flipped_by_the_network_is_caught_and_nothing_is_saved() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "payload.bin", 3 * CHUNK, 7);
    // Past the hello and handshake, inside the first chunk's ciphertext.
    let hop = Hop::start(
        &relay.addr,
        HopBehaviour {
            flip_at: Some(500_000),
            ..HopBehaviour::default()
        },
    );
    let s = sender(
        &hop.addr,
        CODE,
        &[file],
        &["--compress", "none", "--relay-only"],
    );
    let r = receiver(&relay.addr, CODE, out.path(), &["--yes"]);
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(!r_status.success(), "receiver must fail");
    assert!(r_err.contains("failed authentication"), "{r_err}");
    assert!(!s_status.success(), "sender must fail: {s_err}");
    assert!(
        !out.path().join("payload.bin").exists(),
        "no file under its final name"
    );
}

#[test]
fn the_sender_keeps_many_chunks_in_flight_across_a_slow_link() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "stream.bin", 48 * CHUNK, 11);
    // 50 ms each way: stop-and-wait could move one chunk per 100 ms.
    let hop = Hop::start(
        &relay.addr,
        HopBehaviour {
            delay: Duration::from_millis(50),
            ..HopBehaviour::default()
        },
    );
    let s = sender(
        &hop.addr,
        CODE,
        std::slice::from_ref(&file),
        &["--compress", "none", "--relay-only"],
    );
    let r = receiver(&relay.addr, CODE, out.path(), &["--yes"]);
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(
        s_status.success() && r_status.success(),
        "sender: {s_err}\nreceiver: {r_err}"
    );
    assert_same_file(&file, &out.path().join("stream.bin"));

    // Most bytes the sender pushed within any one round trip.
    let events = hop.events.lock().unwrap();
    let upstream: Vec<_> = events.iter().filter(|e| e.1).collect();
    let rtt = Duration::from_millis(100);
    let mut best = 0usize;
    let mut start = 0;
    let mut sum = 0usize;
    for end in 0..upstream.len() {
        sum += upstream[end].2;
        while upstream[end].0.duration_since(upstream[start].0) > rtt {
            sum -= upstream[start].2;
            start += 1;
        }
        best = best.max(sum);
    }
    eprintln!("most bytes sent within one 100 ms round trip: {best}");
    assert!(
        best as u64 > 4 * CHUNK,
        "only {best} bytes in flight per round trip; stop-and-wait allows one chunk ({CHUNK})"
    );
}

/// Peak RSS of (sender, receiver) for one transfer of `size` bytes.
fn transfer_peaks(size: u64) -> (u64, u64) {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = mostly_empty_file(src.path(), "big.bin", size);
    let s = sender(&relay.addr, CODE, &[file], &["--compress", "none"]);
    let r = receiver(&relay.addr, CODE, out.path(), &["--yes"]);
    let (s_peak, r_peak, _) = finish_watching_memory(s, r, PROCESS_DEADLINE);
    assert_eq!(
        fs::metadata(out.path().join("big.bin")).unwrap().len(),
        size
    );
    (s_peak, r_peak)
}

#[test]
fn memory_stays_bounded_and_does_not_grow_with_the_file() {
    let (s_small, r_small) = transfer_peaks(64 << 20);
    let (s_big, r_big) = transfer_peaks(1 << 30);
    eprintln!("peak RSS: 64 MiB: sender {s_small} receiver {r_small}; 1 GiB: sender {s_big} receiver {r_big}");
    for (who, peak) in [("sender", s_big), ("receiver", r_big)] {
        assert!(peak > 0, "{who}: no reading");
        assert!(peak < 50 << 20, "{who} peaked at {peak} bytes for 1 GiB");
    }
    assert!(
        s_big < s_small + (8 << 20),
        "sender grew: {s_small} -> {s_big}"
    );
    assert!(
        r_big < r_small + (8 << 20),
        "receiver grew: {r_small} -> {r_big}"
    );
}

/// The 4 GiB figure of the issue; slow in debug builds, so not run in CI:
/// `cargo test --release -p tallow --test pipeline -- --ignored`.
#[test]
#[ignore]
fn memory_stays_under_50_mb_for_4_gib() {
    let (s, r) = transfer_peaks(4 << 30);
    eprintln!("peak RSS for 4 GiB: sender {s} receiver {r}");
    assert!(s < 50 << 20 && r < 50 << 20);
}
