//! Real processes against a full disk and a read-only output folder, on
//! small tmpfs mounts the test makes. Mounting needs root, so these are
//! `#[ignore]`d in a plain `cargo test` and run by `.ci/run` (as root) with
//! `--ignored`; run that way without root, they fail rather than pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tallow_testkit::process::*;

const CODE: &str = "2222-abacus-zoom-yodel";

/// A tmpfs mounted for the test; unmounted on drop.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn tmpfs(options: &str) -> Mount {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "cannot mount a tmpfs: this test needs root");
        Mount { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn send_into(out: &Path, file: PathBuf) -> ((bool, String), (bool, String)) {
    let relay = Relay::start(&[]);
    let ((s, s_err), (r, r_err)) = transfer(&relay.addr, CODE, &[file], out, &["--yes"]);
    ((s.success(), s_err), (r.success(), r_err))
}

#[test]
#[ignore = "needs root to mount a tmpfs; .ci/run runs it"]
fn a_full_disk_is_reported_and_the_partial_kept_for_resume() {
    let mount = Mount::tmpfs("size=24m");
    let src = tempfile::tempdir().unwrap();
    // Fits the free-space check when offered, then a second file written
    // by someone else fills the disk during the transfer.
    let file = random_file(src.path(), "big.bin", 20 << 20, 3);
    let filler = mount.path().join("filler");
    let out = mount.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let relay = Relay::start(&[]);
    let s = sender(&relay.addr, CODE, &[file], &["--compress", "none"]);
    let r = receiver(&relay.addr, CODE, &out, &["--yes"]);
    wait_until(
        std::time::Duration::from_secs(60),
        "the transfer to start",
        || {
            std::fs::metadata(out.join("big.bin.tallow-partial"))
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        },
    );
    let _ = std::fs::write(&filler, vec![0u8; 16 << 20]);
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(!r_status.success(), "{r_err}");
    assert!(r_err.contains("disk is full"), "{r_err}");
    assert!(
        !s_status.success() && s_err.contains("disk is full"),
        "the sender is told why: {s_err}"
    );
    assert!(
        !out.join("big.bin").exists(),
        "nothing under its final name"
    );
    assert!(
        out.join("big.bin.tallow-partial").exists(),
        "the partial stays for resume"
    );
}

#[test]
#[ignore = "needs root to mount a tmpfs; .ci/run runs it"]
fn an_offer_larger_than_the_free_space_is_refused_up_front() {
    let mount = Mount::tmpfs("size=4m");
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "big.bin", 8 << 20, 3);
    let ((s_ok, s_err), (r_ok, r_err)) = send_into(mount.path(), file);
    assert!(
        !r_ok && r_err.contains("only") && r_err.contains("free"),
        "{r_err}"
    );
    assert!(!s_ok && s_err.contains("declined"), "{s_err}");
    assert!(list_dir(mount.path()).is_empty());
}

#[test]
#[ignore = "needs root to mount a tmpfs; .ci/run runs it"]
fn a_read_only_output_folder_is_refused_before_the_transfer() {
    let mount = Mount::tmpfs("ro,size=4m");
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "f.bin", 1000, 3);
    let ((s_ok, s_err), (r_ok, r_err)) = send_into(mount.path(), file);
    assert!(!r_ok && r_err.contains("Read-only file system"), "{r_err}");
    assert!(!s_ok, "{s_err}");
}
