//! Real processes on 127.0.0.1: the sender sends only the files it listed.
//!
//! `tallow send` lists its files at startup, before it shows the code, and
//! opens each one only after the receiver has accepted. These tests swap a
//! listed file in that gap, deterministically: they wait for the sender's
//! `Code:` line, swap, and only then start the receiver.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tallow_testkit::process::*;

const CODE: &str = "4711-abacus-zoom-yodel";
/// Big enough for several frames' worth of pattern, small enough to be quick.
const SIZE: u64 = 64 * 1024;
/// `tallow send` of `paths`, watched.
fn start_sender(relay: &str, paths: &[PathBuf]) -> Watched {
    let mut cmd = tallow();
    cmd.args(["send", "--relay", relay, "--no-lan", "--code", CODE])
        .args(paths);
    Watched::spawn(cmd)
}

/// Every file under `dir`, partial files and checkpoints included.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read_dir") {
            let entry = entry.expect("entry");
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Assert no file under `out` holds any 64-byte stretch of `secret`.
fn assert_nothing_of(secret: &Path, out: &Path) {
    let secret = fs::read(secret).expect("read secret");
    const W: usize = 64;
    let pieces: HashSet<&[u8]> = secret.chunks_exact(W).collect();
    for file in all_files(out) {
        let bytes = fs::read(&file).expect("read output");
        assert!(
            !bytes.windows(W).any(|w| pieces.contains(w)),
            "{} holds bytes of the secret",
            file.display()
        );
    }
}

/// A folder `share` with `a.bin` and `b.bin`, and `outside` (same size as
/// `b.bin`) next to it; the sender has listed `share` when this returns.
fn listed_share(relay: &Relay) -> (tempfile::TempDir, PathBuf, PathBuf, Watched) {
    let src = tempfile::tempdir().unwrap();
    let share = src.path().join("share");
    fs::create_dir(&share).unwrap();
    random_file(&share, "a.bin", SIZE, 1);
    random_file(&share, "b.bin", SIZE, 2);
    let outside = random_file(src.path(), "outside.key", SIZE, 3);
    let mut s = start_sender(&relay.addr, std::slice::from_ref(&share));
    // The scan comes before the code is shown.
    s.wait_for("Code:");
    (src, share, outside, s)
}

/// Run the receiver, then check both sides: the sender gives up on b.bin
/// alone, naming it with `detail`, a.bin still arrives, and nothing of
/// `outside` reaches the output folder.
fn receive_and_check(relay: &Relay, s: Watched, share: &Path, outside: &Path, detail: &str) {
    let out = tempfile::tempdir().unwrap();
    let (r, r_err) = receiver(&relay.addr, CODE, out.path(), &["--yes"]).finish();
    let (s, s_err) = s.finish();
    assert_eq!(
        s.code(),
        Some(EXIT_PARTIAL),
        "sender: {s_err}\nreceiver: {r_err}"
    );
    assert_same_file(&share.join("a.bin"), &out.path().join("share/a.bin"));
    let named = format!(
        "{} was replaced or changed after it was listed",
        share.join("b.bin").display()
    );
    assert!(
        s_err.contains(&named) && s_err.contains(detail) && s_err.contains("send again"),
        "{s_err}"
    );
    assert_eq!(r.code(), Some(EXIT_PARTIAL), "receiver: {r_err}");
    assert!(
        r_err
            .contains("1 file could not be sent: share/b.bin (the sender could not send it: b.bin"),
        "the receiver is told which and why: {r_err}"
    );
    assert!(
        !out.path().join("share/b.bin").exists(),
        "b.bin never appears under its final name"
    );
    assert_nothing_of(outside, out.path());
}

#[test]
fn a_file_swapped_for_a_link_to_a_secret_after_listing_is_refused_and_the_secret_not_sent() {
    let relay = Relay::start(&[]);
    let (_src, share, secret, s) = listed_share(&relay);
    // Atomically, as an attacker with write access to the folder would.
    let tmp = share.join(".swap");
    std::os::unix::fs::symlink(&secret, &tmp).unwrap();
    fs::rename(&tmp, share.join("b.bin")).unwrap();
    receive_and_check(&relay, s, &share, &secret, "symbolic link");
}

#[test]
fn another_file_renamed_over_a_listed_one_after_listing_is_refused() {
    let relay = Relay::start(&[]);
    let (src, share, other, s) = listed_share(&relay);
    // Same size and modification time as the listed file: only the inode
    // tells them apart.
    let b = share.join("b.bin");
    let mtime = fs::metadata(&b).unwrap().modified().unwrap();
    fs::File::options()
        .write(true)
        .open(&other)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let copy = src.path().join("other-copy.key");
    fs::copy(&other, &copy).unwrap();
    fs::rename(&other, &b).unwrap();
    receive_and_check(&relay, s, &share, &copy, "different inode");
}

#[test]
fn a_link_named_on_the_command_line_is_still_sent() {
    // Opening never follows a link; one named by the user is resolved when
    // listed, so it still works.
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = random_file(src.path(), "target.bin", SIZE, 4);
    let link = src.path().join("named.bin");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let ((s, s_err), (r, r_err)) = transfer(
        &relay.addr,
        CODE,
        std::slice::from_ref(&link),
        out.path(),
        &["--yes"],
    );
    assert!(
        s.success() && r.success(),
        "sender: {s_err}\nreceiver: {r_err}"
    );
    assert_same_file(&target, &out.path().join("named.bin"));
}

/// Issue 14.5: a file that changes while it is being sent fails that file
/// alone, named on both sides; the others arrive and verify, and the exit
/// status says the transfer succeeded in part.
#[test]
fn a_file_that_shrinks_while_it_is_sent_fails_alone_and_the_rest_arrives() {
    const MIB: u64 = 1024 * 1024;
    // 32 MiB/s through the relay: the sender reads at most a window (32
    // MiB) ahead of the receiver, so the cut below is ahead of its reading.
    let relay = Relay::start(&["--max-rate", &(32 * MIB).to_string()]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let set = src.path().join("set");
    fs::create_dir(&set).unwrap();
    random_file(&set, "a.bin", MIB, 1);
    let log = random_file(&set, "b.log", 160 * MIB, 2);
    random_file(&set, "c.bin", MIB + 7, 3);
    let s = sender(
        &relay.addr,
        CODE,
        std::slice::from_ref(&set),
        &["--compress", "none"],
    );
    let r = receiver(&relay.addr, CODE, out.path(), &["--yes"]);
    let partial = out.path().join("set/b.log.tallow-partial");
    wait_until(Duration::from_secs(60), "b.log under way", || {
        fs::metadata(&partial).is_ok_and(|m| m.len() >= 8 * MIB)
    });
    // Someone truncates the log while it is read.
    fs::File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(100 * MIB)
        .unwrap();
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert_eq!(s_status.code(), Some(EXIT_PARTIAL), "sender: {s_err}");
    assert_eq!(r_status.code(), Some(EXIT_PARTIAL), "receiver: {r_err}");
    assert!(
        s_err.contains("Sent 2 files")
            && s_err.contains("1 file could not be sent: set/b.log (")
            && s_err.contains("b.log changed while it was being sent"),
        "{s_err}"
    );
    assert!(
        r_err.contains("Received 2 files")
            && r_err.contains(
                "1 file could not be sent: set/b.log (the sender could not send it: b.log changed while it was being sent"
            )
            && r_err.contains("Every other file arrived and was verified"),
        "{r_err}"
    );
    assert_same_file(&set.join("a.bin"), &out.path().join("set/a.bin"));
    assert_same_file(&set.join("c.bin"), &out.path().join("set/c.bin"));
    assert!(
        !out.path().join("set/b.log").exists() && !partial.exists(),
        "nothing of b.log stays: {:?}",
        list_dir(&out.path().join("set"))
    );
    // Sent again (a new code, the log now 100 MiB: another offer), only the
    // log travels: the two files that arrived are kept, without a question.
    let relay = Relay::start(&[]);
    let hop = Hop::start(&relay.addr, HopBehaviour::default());
    let code = "4712-abacus-zoom-yodel";
    let s = sender(
        &hop.addr,
        code,
        std::slice::from_ref(&set),
        &["--compress", "none", "--relay-only"],
    );
    let r = receiver(&relay.addr, code, out.path(), &["--yes"]);
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(
        s_status.success() && r_status.success(),
        "sender: {s_err}\nreceiver: {r_err}"
    );
    assert!(
        r_err.contains("Some files changed since the interrupted transfer")
            && r_err.contains("the 2 files that did not are here already and are kept"),
        "{r_err}"
    );
    assert!(
        s_err.contains("The receiver keeps 2 files it already has"),
        "{s_err}"
    );
    let sent = hop.upstream_bytes();
    assert!(
        (100 * MIB..101 * MIB).contains(&sent),
        "only the log was sent: {sent} bytes"
    );
    for name in ["a.bin", "b.log", "c.bin"] {
        assert_same_file(&set.join(name), &out.path().join("set").join(name));
    }
    assert_eq!(
        list_dir(&out.path().join("set")).len(),
        3,
        "no partial or checkpoint left: {:?}",
        list_dir(out.path())
    );
}
