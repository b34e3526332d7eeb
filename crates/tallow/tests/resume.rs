//! Real processes: an interrupted transfer resumes with a new code and sends
//! only what is missing; altered partials and changed sources are handled.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tallow_testkit::process::*;

const MIB: u64 = 1024 * 1024;
/// The sender's window: how far past the receiver's last ack it may run.
const WINDOW: u64 = 32 * MIB;

fn partial_len(out: &Path, name: &str) -> u64 {
    fs::metadata(out.join(format!("{name}.tallow-partial")))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Bytes the sender pushed towards the relay through `hop`.
/// Send `file` through a counting hop and receive it into `out`; returns the
/// two processes and the hop so the caller can interrupt and measure.
fn start(relay: &Relay, code: &str, file: &Path, out: &Path) -> (Running, Running, Hop) {
    let hop = Hop::start(&relay.addr, HopBehaviour::default());
    let s = sender(
        &hop.addr,
        code,
        &[file.to_path_buf()],
        &["--compress", "none", "--relay-only"],
    );
    let r = receiver(&relay.addr, code, out, &["--yes"]);
    (s, r, hop)
}

/// Run a second, uninterrupted transfer with a new code; returns the bytes
/// the sender sent and the receiver's stderr.
fn finish_with_new_code(relay: &Relay, file: &Path, out: &Path) -> (u64, String) {
    let (s, r, hop) = start(relay, "9911-second-run-code", file, out);
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(
        s_status.success() && r_status.success(),
        "sender: {s_err}\nreceiver: {r_err}"
    );
    (hop.upstream_bytes(), r_err)
}

fn interrupted(kill: &str) -> (tempfile::TempDir, tempfile::TempDir, PathBuf, u64) {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let size = 200 * MIB;
    let file = random_file(src.path(), "big.bin", size, 42);
    let (s, r, _hop) = start(&relay, "9910-first-run-code", &file, out.path());
    wait_until(Duration::from_secs(120), "half the file", || {
        partial_len(out.path(), "big.bin") >= size / 2
    });
    let at = partial_len(out.path(), "big.bin");
    match kill {
        "receiver" => {
            signal(r.pid(), "-KILL");
            let _ = s.finish_within(Duration::from_secs(60));
        }
        "sender" => {
            signal(s.pid(), "-KILL");
            let _ = r.finish_within(Duration::from_secs(60));
        }
        _ => {
            drop(relay);
            let _ = s.finish_within(Duration::from_secs(60));
            let _ = r.finish_within(Duration::from_secs(60));
        }
    }
    (src, out, file, at)
}

fn check_resumed(kill: &str) {
    let (_src, out, file, at) = interrupted(kill);
    assert!(!out.path().join("big.bin").exists());
    let relay = Relay::start(&[]);
    let (sent, r_err) = finish_with_new_code(&relay, &file, out.path());
    assert_same_file(&file, &out.path().join("big.bin"));
    let size = fs::metadata(&file).unwrap().len();
    eprintln!("{kill} killed at {at} bytes; second run sent {sent} of {size}");
    assert!(r_err.contains("Resuming:"), "{r_err}");
    // The summary's speed is that of what moved, and says the rest did not.
    assert!(r_err.contains("of it was there from before)"), "{r_err}");
    // Everything after the kill point, plus at most one window of work
    // that was not yet durable, plus framing.
    assert!(
        sent <= size - at + WINDOW + MIB,
        "second run sent {sent} bytes; at most {} expected",
        size - at + WINDOW
    );
    assert!(
        !list_dir(out.path())
            .iter()
            .any(|n| n.starts_with(".tallow-") || n.ends_with(".tallow-partial")),
        "checkpoint and partial removed: {:?}",
        list_dir(out.path())
    );
}

/// Interrupted, then a file of the same name appears: kept with
/// --skip-existing, the partial goes and nothing more of it is sent.
#[test]
fn a_file_kept_with_skip_existing_drops_its_partial_and_is_not_sent() {
    let (_src, out, file, _) = interrupted("receiver");
    fs::write(out.path().join("big.bin"), b"mine").unwrap();
    let relay = Relay::start(&[]);
    let hop = Hop::start(&relay.addr, HopBehaviour::default());
    let code = "9912-third-run-code";
    let s = sender(&hop.addr, code, &[file], &["--relay-only"]);
    let r = receiver(&relay.addr, code, out.path(), &["--yes", "--skip-existing"]);
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(s_status.success() && r_status.success(), "{s_err}\n{r_err}");
    assert_eq!(fs::read(out.path().join("big.bin")).unwrap(), b"mine");
    assert!(r_err.contains("Keeping 1 file already here"), "{r_err}");
    assert!(
        hop.upstream_bytes() < MIB,
        "{} bytes sent",
        hop.upstream_bytes()
    );
    assert_eq!(
        list_dir(out.path()),
        ["big.bin"],
        "partial and checkpoint gone"
    );
}

/// Ctrl-C (SIGINT) on either side mid-transfer: that side says it was
/// cancelled and that the rerun resumes (exit 130); the other side hears
/// "cancelled", not "the connection closed"; the partial file stays. The
/// relay is capped at 30 MB/s: on a slow link frames and acks are always
/// ready, and the sender once never looked at the Ctrl-C.
#[test]
fn ctrl_c_on_either_side_tells_the_other_and_keeps_the_partial() {
    let relay = Relay::start(&["--max-rate", "30000000"]);
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "big.bin", 200 * MIB, 11);
    for side in ["receiver", "sender"] {
        let out = tempfile::tempdir().unwrap();
        let code = "9912-acid-acorn-acre";
        let s = sender(
            &relay.addr,
            code,
            std::slice::from_ref(&file),
            &["--compress", "none"],
        );
        let r = receiver(&relay.addr, code, out.path(), &["--yes"]);
        wait_until(Duration::from_secs(120), "part of the file", || {
            partial_len(out.path(), "big.bin") >= 8 * MIB
        });
        let (stopped, other) = if side == "receiver" { (r, s) } else { (s, r) };
        signal(stopped.pid(), "-INT");
        let (status, said, _) = stopped.finish_within(Duration::from_secs(30));
        let (other_status, other_said, _) = other.finish_within(Duration::from_secs(30));
        assert_eq!(status.code(), Some(130), "{side}: {said}");
        assert!(
            said.contains("cancelled (Ctrl-C)")
                && said.contains("to resume, run the same `tallow send` again"),
            "{side}: {said}"
        );
        assert!(!other_status.success());
        // The other side is told why, and how to go on (issue 18.7).
        assert!(
            other_said.contains(&format!(
                "the {side} stopped the transfer: it was cancelled (Ctrl-C); what arrived is kept"
            )),
            "the other side of the {side}: {other_said}"
        );
        assert!(partial_len(out.path(), "big.bin") > 0, "the partial stays");
    }
    // Before anything moved (the sender waiting): at once, and it says so.
    let s = sender(
        &relay.addr,
        "9913-acid-acorn-acre",
        std::slice::from_ref(&file),
        &[],
    );
    // Time to start and install its handler (before that, SIGINT just kills).
    std::thread::sleep(Duration::from_secs(2));
    signal(s.pid(), "-INT");
    let (status, said, _) = s.finish_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{said}");
    assert!(
        said.contains("before the transfer began; nothing was transferred"),
        "{said}"
    );
}

#[test]
fn killing_the_receiver_at_half_then_rerunning_sends_only_the_rest() {
    check_resumed("receiver");
}

#[test]
fn killing_the_sender_at_half_then_rerunning_sends_only_the_rest() {
    check_resumed("sender");
}

#[test]
fn losing_the_relay_at_half_then_rerunning_sends_only_the_rest() {
    check_resumed("relay");
}

/// The kept part (about 100 MiB here) is more than the receiver reads
/// before answering, so the rerun starts at once and checks it while the
/// rest arrives: the damage is found there, the file is held back, and at
/// the end the chunks from the damaged one on are fetched again in the
/// same run, checked against their records, and the file is placed.
#[test]
fn a_partial_altered_on_disk_is_repaired_in_the_same_run_from_the_damage() {
    let (_src, out, file, at) = interrupted("receiver");
    let partial = out.path().join("big.bin.tallow-partial");
    let mut bytes = fs::read(&partial).unwrap();
    bytes[5 * MIB as usize + 123] ^= 0x20;
    fs::write(&partial, bytes).unwrap();
    let relay = Relay::start(&[]);
    let (s, r, hop) = start(&relay, "9912-caught-run-code", &file, out.path());
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(
        s_status.success() && r_status.success(),
        "sender: {s_err}\nreceiver: {r_err}"
    );
    assert_same_file(&file, &out.path().join("big.bin"));
    assert!(r_err.contains("Resuming:"), "{r_err}");
    for said in [&r_err, &s_err] {
        assert!(
            said.contains("of big.bin from the earlier run no longer matched on the receiver's disk: it is sent again."),
            "{said}"
        );
    }
    // The rest, then the kept part again from the damaged chunk (5 MiB) on:
    // the whole file less the 5 MiB before the damage, give or take what
    // was not yet durable when the receiver was killed.
    let sent = hop.upstream_bytes();
    let size = fs::metadata(&file).unwrap().len();
    eprintln!("killed at {at} bytes; the repairing run sent {sent} of {size}");
    assert!(
        (size - 6 * MIB..size - 4 * MIB).contains(&sent),
        "sent from the damage on, not from the start nor twice: {sent}"
    );
    assert_eq!(
        list_dir(out.path()),
        ["big.bin"],
        "partial and checkpoint gone"
    );
}

#[test]
fn a_changed_source_starts_over_and_says_so() {
    let (_src, out, file, _) = interrupted("receiver");
    // Same name, new content and time.
    random_file(file.parent().unwrap(), "big.bin", 200 * MIB, 43);
    let relay = Relay::start(&[]);
    let (sent, r_err) = finish_with_new_code(&relay, &file, out.path());
    assert!(
        r_err.contains("changed since the interrupted transfer"),
        "{r_err}"
    );
    assert!(sent > 200 * MIB, "sent everything again: {sent}");
    assert_same_file(&file, &out.path().join("big.bin"));
}

#[test]
fn no_resume_starts_over_and_partials_can_be_listed_and_cleaned() {
    let (_src, out, file, _) = interrupted("receiver");
    let listed = tallow()
        .args(["receive", "--list-partial", "--out"])
        .arg(out.path())
        .output_within()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success()
            && text.contains("big.bin")
            && text.contains("of 200.0 MiB")
            && text.contains("last written less than a minute ago"),
        "{text}"
    );

    // Ages read as a person would say them (issue 18.11: no "0 h ago").
    let checkpoint = checkpoints(out.path()).pop().expect("a checkpoint");
    let age_by = |secs: u64| {
        let then = std::time::SystemTime::now() - Duration::from_secs(secs);
        fs::File::options()
            .append(true)
            .open(&checkpoint)
            .and_then(|f| f.set_modified(then))
            .unwrap();
    };
    let list_in_place = || {
        // In the folder itself, without --out.
        let listed = tallow()
            .args(["receive", "--list-partial"])
            .current_dir(out.path())
            .output_within()
            .unwrap();
        String::from_utf8_lossy(&listed.stdout).into_owned()
    };
    age_by(3 * 3600 + 60);
    let text = list_in_place();
    assert!(text.contains("last written 3 h ago"), "{text}");
    age_by(3 * 86_400 + 60);
    let text = list_in_place();
    assert!(text.contains("last written 3 days ago"), "{text}");
    let clean = |days: &str| {
        let cleaned = tallow()
            .args(["receive", "--clean-partial-older-than", days])
            .current_dir(out.path())
            .output_within()
            .unwrap();
        assert!(cleaned.status.success());
        String::from_utf8_lossy(&cleaned.stderr).into_owned()
    };
    let folder = fs::canonicalize(out.path()).unwrap();
    let said = clean("5");
    assert!(
        said.contains(&format!(
            "Removed 0 interrupted transfers older than 5 days from {}.\n",
            folder.display()
        )),
        "{said}"
    );
    let said = clean("1");
    assert!(
        said.contains(&format!(
            "Removed 1 interrupted transfer older than a day from {}.\n",
            folder.display()
        )),
        "{said}"
    );
    assert!(
        list_dir(out.path()).is_empty(),
        "{:?}",
        list_dir(out.path())
    );

    // --no-resume ignores what is there.
    let (_src2, out2, file2, _) = interrupted("receiver");
    let relay = Relay::start(&[]);
    let s = sender(
        &relay.addr,
        "9912-third-run-code",
        std::slice::from_ref(&file2),
        &["--compress", "none"],
    );
    let r = receiver(
        &relay.addr,
        "9912-third-run-code",
        out2.path(),
        &["--yes", "--no-resume"],
    );
    let (r_status, r_err) = r.finish();
    let (s_status, _) = s.finish();
    assert!(r_status.success() && s_status.success(), "{r_err}");
    assert!(!r_err.contains("Resuming"), "{r_err}");
    assert_same_file(&file2, &out2.path().join("big.bin"));
    drop(file);
}

/// Interrupt a small transfer at random moments, either side, many times:
/// every run ends complete and verified or resumable, and a file under its
/// final name is always the right one.
#[test]
fn random_kills_never_leave_a_wrong_file_and_always_resume() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = src.path().join("set");
    fs::create_dir(&dir).unwrap();
    for i in 0..4 {
        random_file(&dir, &format!("part{i}.bin"), 6 * MIB + i * 777, 100 + i);
    }
    let mut seed = 0x1234_5678u64;
    for round in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let code = format!("77{round:02}-random-kill-round");
        let s = sender(
            &relay.addr,
            &code,
            std::slice::from_ref(&dir),
            &["--compress", "none"],
        );
        let r = receiver(&relay.addr, &code, out.path(), &["--yes"]);
        std::thread::sleep(Duration::from_millis(50 + seed % 400));
        let victim = if seed.is_multiple_of(2) { &r } else { &s };
        signal(victim.pid(), "-KILL");
        let (r_status, _, _) = r.finish_within(Duration::from_secs(60));
        let _ = s.finish_within(Duration::from_secs(60));
        // The receiver removes the checkpoint only once the transfer is
        // complete and the sender told, so a receiver killed after that (on
        // its way out) finished too.
        if r_status.success()
            || checkpoints(out.path()).is_empty() && out.path().join("set").exists()
        {
            // This round finished before the kill: verify, then start over
            // so the next rounds interrupt again.
            assert_same_tree(&dir, &out.path().join("set"));
            fs::remove_dir_all(out.path().join("set")).unwrap();
            continue;
        }
        for i in 0..4 {
            let got = out.path().join("set").join(format!("part{i}.bin"));
            if got.exists() {
                assert_same_file(&dir.join(format!("part{i}.bin")), &got);
            }
        }
    }
    let code = "7799-final-random-round";
    let s = sender(&relay.addr, code, std::slice::from_ref(&dir), &[]);
    let r = receiver(&relay.addr, code, out.path(), &["--yes"]);
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(
        r_status.success() && s_status.success(),
        "sender: {s_err}\nreceiver: {r_err}"
    );
    assert_same_tree(&dir, &out.path().join("set"));
}
