//! Real processes: nothing reaches the receiver's disk that the receiver did
//! not see and agree to (issue 12). Existing folders and hidden names need
//! consent; what exists is left alone; partial files are private; modes
//! follow the receiver's umask; placement goes through folder handles; a
//! file the user edited after an interrupted run stays theirs; the sender
//! learns nothing about the receiver's disk.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tallow_testkit::process::*;

const CODE: &str = "4242-abacus-zoom-yodel";
const MIB: u64 = 1024 * 1024;
/// `tallow`'s exit status for a refused offer (docs/exit-codes.md).
const REFUSED: i32 = 5;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Set a file's or folder's modification time to 2001-01-01.
fn make_old(path: &Path) {
    let status = Command::new("touch")
        .args(["-h", "-d", "@978307200"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, text).unwrap();
}

/// A home folder holding `.ssh/` (0700, with `known_hosts`), and an offer of
/// eleven top-level entries made by a real sender: ten harmless files and
/// `.ssh/` carrying `authorized_keys`.
struct SshOffer {
    src: tempfile::TempDir,
    home: tempfile::TempDir,
    paths: Vec<PathBuf>,
}

impl SshOffer {
    fn new() -> SshOffer {
        let src = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for i in 0..10 {
            let p = src.path().join(format!("holiday-{i:02}.txt"));
            write(&p, "nice weather");
            paths.push(p);
        }
        let ssh = src.path().join(".ssh");
        write(&ssh.join("authorized_keys"), "ssh-ed25519 AAAA attacker\n");
        // The sender's folder is wide open and old: none of that may reach
        // the receiver's existing `.ssh`.
        chmod(&ssh, 0o777);
        make_old(&ssh);
        paths.push(ssh);
        let mine = home.path().join(".ssh");
        write(&mine.join("known_hosts"), "host key\n");
        chmod(&mine, 0o700);
        SshOffer { src, home, paths }
    }

    fn ssh(&self) -> PathBuf {
        self.home.path().join(".ssh")
    }

    /// Nothing from the offer landed, `.ssh` is as it was.
    fn assert_untouched(&self) {
        assert_eq!(list_dir(self.home.path()), [".ssh"], "nothing new lands");
        assert_eq!(list_dir(&self.ssh()), ["known_hosts"]);
        assert_eq!(mode(&self.ssh()), 0o700);
    }
}

#[test]
fn an_offer_adding_to_ssh_is_refused_with_yes_alone() {
    let relay = Relay::start(&[]);
    let offer = SshOffer::new();
    assert_eq!(offer.paths.len(), 11);
    let s = sender(&relay.addr, CODE, &offer.paths, &["--relay-only"]);
    let r = receiver(&relay.addr, CODE, offer.home.path(), &["--yes"]);
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert_eq!(r_status.code(), Some(REFUSED), "{r_err}");
    assert!(!s_status.success(), "{s_err}");
    // The receiver names what needs consent and the flags that give it.
    for needle in [
        "Adds to folders you already have",
        ".ssh/ (1 entry from the offer: authorized_keys)",
        "Hidden names: .ssh",
        "--merge",
        "--allow-hidden",
        "nothing was written",
    ] {
        assert!(r_err.contains(needle), "{needle:?} in: {r_err}");
    }
    offer.assert_untouched();
    assert!(
        r_err.contains(&format!(
            "Connected through the relay {} (the sender keeps to the relay);",
            relay.addr
        )),
        "{r_err}"
    );
    // Both sides list the same ten names and "and 1 more".
    assert!(s_err.contains("holiday-08.txt, and 1 more"), "{s_err}");
    let names = |said: &str, opening: &str| {
        let line = said
            .lines()
            .find(|l| l.starts_with(opening))
            .unwrap_or_else(|| panic!("no {opening:?} line in: {said}"));
        line.split_once("): ").map(|(_, names)| names.to_owned())
    };
    assert_eq!(
        names(&s_err, "Sending 11 files"),
        names(&r_err, "Offer: 11 files")
    );
    // The sender hears "declined", not what the receiver has, and not that
    // a person said no (nobody was asked).
    assert!(
        s_err.contains("declined the transfer: it could not accept this offer as it is"),
        "{s_err}"
    );
    let home = offer.home.path().display().to_string();
    for leak in [home.as_str(), "already", "merge", "hidden"] {
        assert!(
            !s_err.contains(leak),
            "{leak:?} leaked to the sender: {s_err}"
        );
    }
    drop(offer.src);
}

#[test]
fn an_offer_adding_to_ssh_is_listed_before_the_question() {
    let relay = Relay::start(&[]);
    let offer = SshOffer::new();
    let s = sender(&relay.addr, CODE, &offer.paths, &[]);
    // Under script(1) the receiver has a terminal; it answers "n".
    let line = receive_line(&relay.addr, CODE, offer.home.path(), "");
    let (_, shown) = on_terminal_when(&line, "Accept?", b"n\n");
    let _ = s.finish();
    let question = shown.find("Accept?").expect("the question was asked");
    // Eleven names: the offer line shows ten and "and 1 more" …
    assert!(shown.contains("and 1 more"), "{shown}");
    // … and still lists what goes into `.ssh`, before the question.
    for needle in [
        ".ssh/ (1 entry from the offer: authorized_keys)",
        "Hidden names: .ssh",
    ] {
        let at = shown
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} in: {shown}"));
        assert!(at < question, "{needle:?} after the question: {shown}");
    }
    offer.assert_untouched();
}

#[test]
fn with_merge_and_allow_hidden_the_files_land_and_ssh_keeps_its_mode() {
    let relay = Relay::start(&[]);
    let offer = SshOffer::new();
    make_old(&offer.ssh());
    let before = fs::metadata(offer.ssh()).unwrap();
    let s = sender(&relay.addr, CODE, &offer.paths, &[]);
    let r = receiver(
        &relay.addr,
        CODE,
        offer.home.path(),
        &["--yes", "--merge", "--allow-hidden"],
    );
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(r_status.success() && s_status.success(), "{r_err}\n{s_err}");
    assert_eq!(
        fs::read_to_string(offer.ssh().join("authorized_keys")).unwrap(),
        "ssh-ed25519 AAAA attacker\n"
    );
    assert_eq!(list_dir(offer.home.path()).len(), 11);
    // The folder that was there keeps its mode; the sender's 0777 and its
    // 2001 time are not applied to it.
    assert_eq!(mode(&offer.ssh()), 0o700);
    let after = fs::metadata(offer.ssh()).unwrap();
    assert_eq!(after.ino(), before.ino(), "the same folder");
    assert_ne!(after.mtime(), 978307200, "the sender's time was applied");
}

#[test]
fn a_file_that_exists_is_refused_without_telling_the_sender() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = src.path().join("report.pdf");
    write(&file, "new");
    write(&out.path().join("report.pdf"), "mine");
    let s = sender(&relay.addr, CODE, std::slice::from_ref(&file), &[]);
    let r = receiver(&relay.addr, CODE, out.path(), &["--yes"]);
    let (r_status, r_err) = r.finish();
    let (_, s_err) = s.finish();
    assert!(!r_status.success());
    assert!(
        r_err.contains("already exists") && r_err.contains("--overwrite"),
        "{r_err}"
    );
    assert_eq!(
        fs::read_to_string(out.path().join("report.pdf")).unwrap(),
        "mine"
    );
    assert!(
        s_err.contains("declined the transfer: it could not accept this offer as it is"),
        "{s_err}"
    );
    let out_path = out.path().display().to_string();
    for leak in [out_path.as_str(), "already", "exists", "overwrite"] {
        assert!(
            !s_err.contains(leak),
            "{leak:?} leaked to the sender: {s_err}"
        );
    }
}

#[test]
fn received_modes_follow_the_umask_and_never_carry_setuid() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let tree = src.path().join("tools");
    write(&tree.join("run"), "#!/bin/sh\n");
    write(&tree.join("shared.txt"), "everyone");
    chmod(&tree.join("run"), 0o4777);
    chmod(&tree.join("shared.txt"), 0o666);
    chmod(&tree, 0o1777);
    assert_eq!(mode(&tree.join("run")), 0o4777, "setuid set on the source");
    let s = sender(&relay.addr, CODE, std::slice::from_ref(&tree), &[]);
    let command = receive_line(&relay.addr, CODE, out.path(), "--yes");
    // Through sh for the umask, with the environment tallow() sets up.
    let mut sh = Command::new("sh");
    sh.args(["-c", &format!("umask 027; exec {command}")]);
    for (k, v) in tallow().get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    sh.stdin(Stdio::null());
    let (r_status, r_err) = Running::spawn(sh).finish();
    let (s_status, s_err) = s.finish();
    assert!(r_status.success() && s_status.success(), "{r_err}\n{s_err}");
    let got = out.path().join("tools");
    assert_eq!(mode(&got.join("run")), 0o750);
    assert_eq!(mode(&got.join("shared.txt")), 0o640);
    assert_eq!(mode(&got), 0o750, "a folder it made: masked, no sticky bit");
}

/// Start sending `path` and SIGKILL the receiver once the partial file
/// `partial` (relative to `out`) holds `at` bytes; returns its path.
fn interrupt_receiver(relay: &Relay, path: &Path, out: &Path, partial: &str, at: u64) -> PathBuf {
    let partial = out.join(partial);
    let code = "4243-acid-acorn-acre";
    let s = sender(
        &relay.addr,
        code,
        &[path.to_path_buf()],
        &["--compress", "none"],
    );
    let r = receiver(&relay.addr, code, out, &["--yes"]);
    wait_until(Duration::from_secs(120), "the partial file to grow", || {
        fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) >= at
    });
    signal(r.pid(), "-KILL");
    let _ = r.finish_within(Duration::from_secs(30));
    let _ = s.finish_within(Duration::from_secs(60));
    partial
}

#[test]
fn a_private_file_stays_private_while_partial_and_after_a_kill() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "private.bin", 200 * MIB, 7);
    chmod(&file, 0o600);
    // Half, as in resume.rs: by then the checkpoint records progress.
    let partial = interrupt_receiver(
        &relay,
        &file,
        out.path(),
        "private.bin.tallow-partial",
        100 * MIB,
    );
    assert_eq!(mode(&partial), 0o600, "the partial file after SIGKILL");
    let logs = checkpoints(out.path());
    assert_eq!(logs.len(), 1, "{:?}", list_dir(out.path()));
    assert_eq!(
        mode(&logs[0]),
        0o600,
        "the checkpoint lists names and sizes"
    );
    let key = test_data_home().join("tallow").join("checkpoint.key");
    assert_eq!(mode(&key), 0o600, "the local checkpoint key");

    // The rerun resumes and the verified file keeps the source's 0600.
    let s = sender(
        &relay.addr,
        CODE,
        std::slice::from_ref(&file),
        &["--compress", "none"],
    );
    let r = receiver(&relay.addr, CODE, out.path(), &["--yes"]);
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(r_status.success() && s_status.success(), "{r_err}\n{s_err}");
    assert!(r_err.contains("Resuming"), "{r_err}");
    assert_same_file(&file, &out.path().join("private.bin"));
    assert_eq!(mode(&out.path().join("private.bin")), 0o600);
}

#[test]
fn a_checkpoint_made_under_another_users_key_is_not_believed() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "big.bin", 200 * MIB, 8);
    interrupt_receiver(
        &relay,
        &file,
        out.path(),
        "big.bin.tallow-partial",
        100 * MIB,
    );
    assert_eq!(checkpoints(out.path()).len(), 1);
    // Another user (another local key) receives into the same folder: the
    // checkpoint is not theirs, so nothing in it is trusted.
    let other_home = tempfile::tempdir().unwrap();
    let s = sender(
        &relay.addr,
        CODE,
        std::slice::from_ref(&file),
        &["--compress", "none"],
    );
    let mut cmd = tallow();
    cmd.env("XDG_DATA_HOME", other_home.path())
        .args([
            "receive",
            "--relay",
            &relay.addr,
            "--no-lan",
            "--yes",
            "--out",
        ])
        .arg(out.path())
        .arg(CODE)
        .stdin(Stdio::null());
    let (r_status, r_err) = Running::spawn(cmd).finish();
    let (s_status, s_err) = s.finish();
    assert!(r_status.success() && s_status.success(), "{r_err}\n{s_err}");
    assert!(!r_err.contains("Resuming"), "{r_err}");
    assert_same_file(&file, &out.path().join("big.bin"));
}

#[test]
fn a_finished_file_edited_after_an_interruption_is_not_replaced_on_resume() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let set = src.path().join("set");
    // Big enough to be put in place on its own, before the next file.
    let notes_text = "from the sender\n".repeat(600_000);
    write(&set.join("a-notes.txt"), &notes_text);
    random_file(&set, "b-big.bin", 200 * MIB, 9);
    // Killed with the second file under way.
    interrupt_receiver(
        &relay,
        &set,
        out.path(),
        "set/b-big.bin.tallow-partial",
        8 * MIB,
    );
    let notes = out.path().join("set/a-notes.txt");
    assert_eq!(fs::read_to_string(&notes).unwrap(), notes_text);
    // The user edits the finished file: from now on it is theirs.
    write(&notes, "my own notes\n");

    let s = sender(&relay.addr, CODE, &[set], &["--compress", "none"]);
    let r = receiver(&relay.addr, CODE, out.path(), &["--yes"]);
    let (r_status, r_err) = r.finish();
    let _ = s.finish();
    assert!(!r_status.success(), "{r_err}");
    assert!(
        r_err.contains("a-notes.txt already exists") && r_err.contains("--overwrite"),
        "{r_err}"
    );
    assert_eq!(fs::read_to_string(&notes).unwrap(), "my own notes\n");
}

#[test]
fn names_equal_after_case_folding_are_refused_by_the_real_sender() {
    // Two files whose names differ only in case would be one file on a
    // case-insensitive disk: the sender refuses to offer them at all.
    // (A hostile sender's offer is refused by the receiver:
    // hostile_peer.rs, manifest_with_names_equal_after_*.)
    let src = tempfile::tempdir().unwrap();
    let a = src.path().join("a/Readme.txt");
    let b = src.path().join("b/README.txt");
    write(&a, "one");
    write(&b, "two");
    let s = sender("127.0.0.1:9", CODE, &[a, b], &[]);
    let (status, err) = s.finish();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("twice") && err.contains("differ only in case"),
        "{err}"
    );
}

/// A helper swaps a folder of the transfer for a symlink to a folder
/// outside, over and over, while the receiver writes into it: everything
/// still lands inside the output folder, nothing outside.
#[test]
fn a_folder_swapped_for_a_symlink_mid_transfer_leads_nowhere_outside() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let tree = src.path().join("d");
    for i in 0..8 {
        fs::create_dir_all(tree.join(format!("sub{i}"))).unwrap();
    }
    for i in 0..40 {
        random_file(
            &tree.join(format!("sub{}", i % 8)),
            &format!("f{i:02}.bin"),
            256 * 1024,
            i,
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let (d, moved, target) = (
            out.path().join("d"),
            out.path().join("d.moved"),
            outside.path().to_path_buf(),
        );
        std::thread::spawn(move || {
            let mut swaps = 0u32;
            while !stop.load(Ordering::Relaxed) {
                if fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir())
                    && fs::rename(&d, &moved).is_ok()
                {
                    let _ = std::os::unix::fs::symlink(&target, &d);
                    std::thread::sleep(Duration::from_millis(2));
                    let _ = fs::remove_file(&d);
                    let _ = fs::rename(&moved, &d);
                    swaps += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            swaps
        })
    };
    let s = sender(&relay.addr, CODE, std::slice::from_ref(&tree), &[]);
    let r = receiver(&relay.addr, CODE, out.path(), &["--yes"]);
    let (_, r_err) = r.finish();
    let _ = s.finish();
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 0, "the helper never swapped the folder: {r_err}");
    assert!(
        list_dir(outside.path()).is_empty(),
        "written outside the output folder: {:?}; receiver: {r_err}",
        list_dir(outside.path())
    );
}
