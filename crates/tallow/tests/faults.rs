//! Real processes: a peer that dies, stalls or never comes ends the other
//! side within its deadline, non-zero, with a message naming who stopped.

use std::fs;
use std::path::Path;
use std::time::Duration;

use tallow_testkit::process::*;

const CODE: &str = "5150-abacus-zoom-yodel";

/// A file big enough that the transfer is still running when we act on it.
fn big_file(dir: &Path) -> std::path::PathBuf {
    mostly_empty_file(dir, "big.bin", 8 << 30)
}

fn partial_len(out: &Path) -> u64 {
    fs::metadata(out.join("big.bin.tallow-partial"))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// A big transfer under way: relay, folders, sender and receiver, with
/// data already arriving.
struct UnderWay {
    relay: Relay,
    _src: tempfile::TempDir,
    out: tempfile::TempDir,
    s: Running,
    r: Running,
}

fn under_way(sender_extra: &[&str], receiver_extra: &[&str]) -> UnderWay {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = big_file(src.path());
    let s = sender(&relay.addr, CODE, &[file], sender_extra);
    let mut r_args = vec!["--yes"];
    r_args.extend_from_slice(receiver_extra);
    let r = receiver(&relay.addr, CODE, out.path(), &r_args);
    wait_until(Duration::from_secs(60), "data to arrive", || {
        partial_len(out.path()) > 4 << 20
    });
    UnderWay {
        relay,
        _src: src,
        out,
        s,
        r,
    }
}

#[test]
fn killing_the_receiver_mid_transfer_ends_the_sender_promptly() {
    let UnderWay {
        relay: _relay,
        _src,
        out,
        s,
        r,
    } = under_way(&["--idle-timeout", "20"], &[]);
    signal(r.pid(), "-KILL");
    let (status, err, took) = s.finish_within(Duration::from_secs(40));
    assert!(!status.success());
    assert!(err.contains("receiver"), "names the receiver: {err}");
    assert!(took < Duration::from_secs(30), "ended in {took:?}");
    drop(r);
    assert!(
        !out.path().join("big.bin").exists(),
        "no file under its final name"
    );
}

#[test]
fn killing_the_sender_mid_transfer_ends_the_receiver_and_leaves_no_final_file() {
    let UnderWay {
        relay: _relay,
        _src,
        out,
        s,
        r,
    } = under_way(&[], &["--idle-timeout", "20"]);
    signal(s.pid(), "-KILL");
    let (status, err, took) = r.finish_within(Duration::from_secs(40));
    assert!(!status.success());
    assert!(err.contains("sender closed the connection"), "{err}");
    assert!(took < Duration::from_secs(30), "ended in {took:?}");
    let left = list_dir(out.path());
    assert!(
        !left.contains(&"big.bin".to_string())
            && left.contains(&"big.bin.tallow-partial".to_string()),
        "no file under its final name; the unverified data stays a partial file: {left:?}"
    );
    drop(s);
}

#[test]
fn a_stalled_receiver_ends_the_sender_after_its_idle_timeout() {
    let UnderWay {
        relay: _relay,
        _src,
        out: _out,
        s,
        r,
    } = under_way(&["--idle-timeout", "3"], &[]);
    signal(r.pid(), "-STOP");
    let (status, err, took) = s.finish_within(Duration::from_secs(60));
    signal(r.pid(), "-CONT");
    assert!(!status.success());
    // Either the socket stalls or the window fills without acks first.
    assert!(
        err.contains("receiver stopped taking data for 3 s")
            || err.contains("receiver sent nothing for 3 s"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "ended in {took:?}");
}

#[test]
fn a_stalled_sender_ends_the_receiver_after_its_idle_timeout() {
    let UnderWay {
        relay: _relay,
        _src,
        out,
        s,
        r,
    } = under_way(&[], &["--idle-timeout", "3"]);
    signal(s.pid(), "-STOP");
    let (status, err, _) = r.finish_within(Duration::from_secs(60));
    signal(s.pid(), "-CONT");
    assert!(!status.success());
    assert!(err.contains("sender sent nothing for 3 s"), "{err}");
    assert!(!out.path().join("big.bin").exists());
}

#[test]
fn a_receiver_that_never_comes_times_out_at_the_relay_and_at_the_sender() {
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "f.bin", 10, 1);

    let relay = Relay::start(&["--pair-timeout", "1"]);
    let s = sender(&relay.addr, CODE, std::slice::from_ref(&file), &[]);
    let (status, err, _) = s.finish_within(Duration::from_secs(30));
    assert!(!status.success());
    assert!(err.contains("no receiver joined within 1 s"), "{err}");

    let relay = Relay::start(&[]);
    let s = sender(&relay.addr, CODE, &[file], &["--wait-timeout", "1"]);
    let (status, err, _) = s.finish_within(Duration::from_secs(30));
    assert!(!status.success());
    assert!(err.contains("no receiver joined within 1 s"), "{err}");
}

#[test]
fn killing_the_relay_mid_transfer_ends_both_sides() {
    let UnderWay {
        relay,
        _src,
        out,
        s,
        r,
    } = under_way(&["--relay-only"], &[]);
    drop(relay);
    let (s_status, s_err, _) = s.finish_within(Duration::from_secs(40));
    let (r_status, r_err, _) = r.finish_within(Duration::from_secs(40));
    assert!(!s_status.success() && s_err.contains("receiver"), "{s_err}");
    assert!(!r_status.success() && r_err.contains("sender"), "{r_err}");
    assert!(!out.path().join("big.bin").exists());
}
