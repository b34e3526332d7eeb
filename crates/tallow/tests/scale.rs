//! Many files through a relay (real processes), with each side's peak
//! memory printed and bounded: the offer travels in pages and nothing is
//! kept per file but its packed entry (see docs/performance.md for the
//! figures).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tallow_testkit::process::{memory_tempdir, peak_rss_until_exit, receiver, sender, Relay};

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

/// Send `count` files; returns the peak RSS of (sender, receiver), after
/// checking that every file arrived with its content.
fn transfer_peaks(count: usize) -> (u64, u64) {
    let relay = Relay::start(&[]);
    // A page per file with data, an inode per file or folder.
    let (inodes, bytes) = (
        count as u64 * 11 / 10,
        count as u64 * 4096 / 100 + (64 << 20),
    );
    let src = memory_tempdir(2 * inodes, 2 * bytes);
    let out = memory_tempdir(inodes, bytes);
    let root = many_files(src.path(), count);
    let started = Instant::now();
    let s = sender(&relay.addr, CODE, &[root], &[]);
    let r = receiver(&relay.addr, CODE, out.path(), &["--yes"]);
    let deadline = Duration::from_secs(1800);
    let (spid, rpid) = (s.pid(), r.pid());
    let watch_s = std::thread::spawn(move || peak_rss_until_exit(spid, deadline));
    let watch_r = std::thread::spawn(move || peak_rss_until_exit(rpid, deadline));
    let (s_peak, r_peak) = (watch_s.join().unwrap(), watch_r.join().unwrap());
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(
        s_status.success() && r_status.success(),
        "sender: {s_err}\nreceiver: {r_err}"
    );
    let took = started.elapsed();
    for i in (0..count)
        .step_by(997)
        .chain([count - 1, (count - 1) / 100 * 100])
    {
        let path = out.path().join(format!("tree/d{:04}/f{i:07}", i / 1000));
        assert_eq!(fs::read_to_string(&path).unwrap(), content(i));
    }
    let arrived: usize = fs::read_dir(out.path().join("tree"))
        .unwrap()
        .map(|d| fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(arrived, count);
    eprintln!(
        "{count} files in {:.1} s; peak RSS: sender {:.1} MiB, receiver {:.1} MiB",
        took.as_secs_f64(),
        s_peak as f64 / MIB as f64,
        r_peak as f64 / MIB as f64
    );
    (s_peak, r_peak)
}

#[test]
fn two_hundred_thousand_files_keep_both_sides_small() {
    let (s_peak, r_peak) = transfer_peaks(200_000);
    for (who, peak) in [("sender", s_peak), ("receiver", r_peak)] {
        assert!(peak > 0, "{who}: no reading");
        // Measured 17 / 15 MiB (92 / 92 MB before the offer was paged and
        // the files were packed); the bound is the issue's.
        assert!(peak < 32 * MIB, "{who} peaked at {peak} bytes");
    }
}

/// A million files, past the old one-frame offer (about 200,000): slow on
/// two cores, so run by `.ci/run` (`-- --ignored`), not by a plain
/// `cargo test`.
#[test]
#[ignore]
fn a_million_files_go_through_a_relay() {
    let (s_peak, r_peak) = transfer_peaks(1_000_000);
    for (who, peak) in [("sender", s_peak), ("receiver", r_peak)] {
        assert!(peak > 0, "{who}: no reading");
        // Measured 57 / 51 MiB: about 40 bytes a file for its packed
        // entry and 8 more on the sender (see docs/performance.md).
        assert!(peak < 64 * MIB, "{who} peaked at {peak} bytes");
    }
}
