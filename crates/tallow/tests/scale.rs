//! Many files through a relay (real processes), with each side's peak
//! memory printed and bounded: the offer travels in pages and nothing is
//! kept per file but its packed entry (see docs/performance.md for the
//! figures).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tallow_testkit::process::{
    finish_watching_memory, memory_tempdir, receiver, sender, signal, wait_until, Relay,
};

const CODE: &str = "7311-acid-acorn-acre";
const MIB: u64 = 1 << 20;

/// `count` files in folders of 1,000; every hundredth holds its number, the
/// others are empty (a page of tmpfs each would take gigabytes; every file
/// is verified all the same).
fn many_files(dir: &Path, count: usize) -> PathBuf {
    let root = dir.join("tree");
    for i in 0..count {
        let folder = root.join(format!("d{:04}", i / 1000));
        if i % 1000 == 0 {
            fs::create_dir_all(&folder).unwrap();
        }
        fs::write(folder.join(format!("f{i:07}")), content(i)).unwrap();
    }
    root
}

fn content(i: usize) -> String {
    match i % 100 {
        0 => i.to_string(),
        _ => String::new(),
    }
}

/// Room in memory-backed folders for `count` files: (source, output).
fn folders_for(count: usize) -> (tempfile::TempDir, tempfile::TempDir) {
    // A page per file with data, an inode per file or folder.
    let (inodes, bytes) = (
        count as u64 * 11 / 10,
        count as u64 * 4096 / 100 + (64 << 20),
    );
    (
        memory_tempdir(2 * inodes, 2 * bytes),
        memory_tempdir(inodes, bytes),
    )
}

/// Run a sender and a receiver of `root` into `out` to the end; returns
/// the peak RSS of (sender, receiver) and the receiver's messages.
fn run_to_the_end(relay: &Relay, code: &str, root: &Path, out: &Path) -> (u64, u64, String) {
    let s = sender(&relay.addr, code, &[root.to_path_buf()], &[]);
    let r = receiver(&relay.addr, code, out, &["--yes"]);
    finish_watching_memory(s, r, Duration::from_secs(1800))
}

/// Both peaks read, and under `bound`.
fn assert_under(s_peak: u64, r_peak: u64, bound: u64) {
    for (who, peak) in [("sender", s_peak), ("receiver", r_peak)] {
        assert!(peak > 0, "{who}: no reading");
        assert!(peak < bound, "{who} peaked at {peak} bytes");
    }
}

/// Every file of `count` arrived under `out` with its content.
fn check_arrived(out: &Path, count: usize) {
    for i in (0..count)
        .step_by(997)
        .chain([count - 1, (count - 1) / 100 * 100])
    {
        let path = out.join(format!("tree/d{:04}/f{i:07}", i / 1000));
        assert_eq!(fs::read_to_string(&path).unwrap(), content(i));
    }
    let arrived: usize = fs::read_dir(out.join("tree"))
        .unwrap()
        .map(|d| fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(arrived, count);
}

fn print_peaks(what: &str, took: Duration, s_peak: u64, r_peak: u64) {
    eprintln!(
        "{what} in {:.1} s; peak RSS: sender {:.1} MiB, receiver {:.1} MiB",
        took.as_secs_f64(),
        s_peak as f64 / MIB as f64,
        r_peak as f64 / MIB as f64
    );
}

/// Send `count` files; returns the peak RSS of (sender, receiver), after
/// checking that every file arrived with its content.
fn transfer_peaks(count: usize) -> (u64, u64) {
    let relay = Relay::start(&[]);
    let (src, out) = folders_for(count);
    let root = many_files(src.path(), count);
    let started = Instant::now();
    let (s_peak, r_peak, _) = run_to_the_end(&relay, CODE, &root, out.path());
    let took = started.elapsed();
    check_arrived(out.path(), count);
    print_peaks(&format!("{count} files"), took, s_peak, r_peak);
    (s_peak, r_peak)
}

#[test]
fn two_hundred_thousand_files_keep_both_sides_small() {
    let (s_peak, r_peak) = transfer_peaks(200_000);
    // Measured 17 / 15 MiB (92 / 92 MB before the offer was paged and the
    // files were packed); the bound is the issue's.
    assert_under(s_peak, r_peak, 32 * MIB);
}

/// A million files, past the old one-frame offer (about 200,000): slow on
/// two cores, so run by `.ci/run` (`-- --ignored`), not by a plain
/// `cargo test`.
#[test]
#[ignore]
fn a_million_files_go_through_a_relay() {
    let (s_peak, r_peak) = transfer_peaks(1_000_000);
    // Measured 57 / 51 MiB: about 40 bytes a file for its packed entry and
    // 8 more on the sender (see docs/performance.md).
    assert_under(s_peak, r_peak, 64 * MIB);
}

/// A million files, the receiver killed when about half of them are in:
/// the rerun (a new code) resumes, and neither side holds the progress of
/// every file twice (run by `.ci/run`, as above).
#[test]
#[ignore]
fn a_million_files_resume_after_the_receiver_is_killed() {
    let count = 1_000_000;
    let relay = Relay::start(&[]);
    let (src, out) = folders_for(count);
    let root = many_files(src.path(), count);
    let s = sender(&relay.addr, CODE, std::slice::from_ref(&root), &[]);
    let r = receiver(&relay.addr, CODE, out.path(), &["--yes"]);
    // The checkpoint grows by a 53-byte record a file once its header
    // (the offer) is written: kill when about 400,000 are recorded.
    let checkpoint_len = || {
        fs::read_dir(out.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".checkpoint"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(600), "the checkpoint", || {
        checkpoint_len() > 0
    });
    let header = checkpoint_len();
    wait_until(Duration::from_secs(600), "400,000 files recorded", || {
        checkpoint_len() > header + 400_000 * 53
    });
    signal(r.pid(), "-KILL");
    let _ = s.finish_within(Duration::from_secs(120));
    let _ = r.finish_within(Duration::from_secs(10));
    let started = Instant::now();
    let (s_peak, r_peak, r_err) = run_to_the_end(&relay, "7312-acid-acorn-acre", &root, out.path());
    let took = started.elapsed();
    assert!(r_err.contains("Resuming:"), "{r_err}");
    check_arrived(out.path(), count);
    print_peaks("resumed 1000000 files", took, s_peak, r_peak);
    // Measured 57 / 50 MiB (the receiver 199 MiB before its checkpoint was
    // read in place and gone on with).
    assert_under(s_peak, r_peak, 64 * MIB);
}
