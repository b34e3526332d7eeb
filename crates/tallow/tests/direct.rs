//! Direct connections between real processes on 127.0.0.1: the relay
//! introduces, the data goes straight between the two sides; `--relay-only`
//! keeps it (and the addresses) on the relay. Through NATs, in network
//! namespaces: `tests/nat.rs`.

use std::path::Path;

use tallow_testkit::process::*;

const FILE_SIZE: u64 = 8 << 20;

fn send_cmd(relay: &str, code: &str, file: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = tallow();
    cmd.args([
        "send", "--json", "--relay", relay, "--no-lan", "--code", code,
    ])
    .args(extra)
    .arg(file);
    cmd
}

fn receive_cmd(relay: &str, code: &str, out: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = tallow();
    cmd.args(["receive", "--json", "--yes", "--relay", relay, "--no-lan"])
        .arg("--out")
        .arg(out)
        .args(extra)
        .arg(code);
    cmd
}

#[test]
fn a_transfer_through_a_relay_moves_to_a_direct_connection() {
    let (relay, metrics) = Relay::with_metrics();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "direct.bin", FILE_SIZE, 41);
    let code = "7101-abacus-zoom-yodel";
    let s = spawn_capturing(send_cmd(&relay.addr, code, &file, &[]));
    let r = spawn_capturing(receive_cmd(&relay.addr, code, out.path(), &[]));
    let (s, r) = (s.join().unwrap(), r.join().unwrap());
    assert_both_succeeded(&s, &r);
    assert_same_file(&file, &out.path().join("direct.bin"));
    for (side, out) in [("sender", &s), ("receiver", &r)] {
        let stdout = text(&out.stdout);
        let connected = json_event(&stdout, "connected").unwrap_or_default();
        assert!(
            connected.contains("\"route\":\"direct\""),
            "{side}: {stdout}"
        );
        let done = json_event(&stdout, "done").unwrap_or_default();
        assert!(done.contains("\"route\":\"direct\""), "{side}: {stdout}");
    }
    // The summary says how the data went; the relay carried the handshake
    // and the few messages that chose the route, not the file.
    assert!(
        text(&s.stderr).contains("Sent 1 file (8.0 MiB) directly in"),
        "{}",
        text(&s.stderr)
    );
    assert!(
        text(&r.stderr).contains(&format!(
            "the relay {} only introduced us); keys confirmed",
            relay.addr
        )),
        "{}",
        text(&r.stderr)
    );
    // Counted once the pair's connections are closed (the handshake's
    // bytes at least).
    let forwarded = || metric(&metrics, "tallow_relay_bytes_forwarded_total");
    wait_until(
        std::time::Duration::from_secs(10),
        "the relay to count the pair's bytes",
        || forwarded() > 0,
    );
    let forwarded = forwarded();
    assert!(forwarded < 32 * 1024, "{forwarded} bytes through the relay");
}

#[test]
fn relay_only_keeps_every_byte_and_every_address_on_the_relay() {
    let (relay, metrics) = Relay::with_metrics();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "kept.bin", FILE_SIZE, 42);
    let code = "7102-abacus-zoom-yodel";
    // One side asks: neither offers an address it did not want to.
    let s = spawn_capturing(send_cmd(&relay.addr, code, &file, &["--relay-only"]));
    let r = spawn_capturing(receive_cmd(&relay.addr, code, out.path(), &[]));
    let (s, r) = (s.join().unwrap(), r.join().unwrap());
    assert_both_succeeded(&s, &r);
    assert_same_file(&file, &out.path().join("kept.bin"));
    let (s_out, r_out) = (text(&s.stdout), text(&r.stdout));
    let s_connected = json_event(&s_out, "connected").unwrap_or_default();
    let r_connected = json_event(&r_out, "connected").unwrap_or_default();
    assert!(
        s_connected.contains("\"route\":\"relay\"")
            && s_connected.contains("\"no_direct\":\"off\""),
        "{s_out}"
    );
    // The receiver was offered no address of the sender's.
    assert!(
        r_connected.contains("\"route\":\"relay\"")
            && r_connected.contains("\"no_direct\":\"off-at-peer\""),
        "{r_out}"
    );
    assert!(
        text(&r.stderr).contains("(the sender keeps to the relay); keys confirmed"),
        "{}",
        text(&r.stderr)
    );
    assert!(json_event(&r_out, "done")
        .unwrap_or_default()
        .contains("\"route\":\"relay\""));
    assert!(
        text(&s.stderr).contains("Sent 1 file (8.0 MiB) through the relay in"),
        "{}",
        text(&s.stderr)
    );
    wait_until(
        std::time::Duration::from_secs(10),
        "the relay to have carried the file",
        || metric(&metrics, "tallow_relay_bytes_forwarded_total") > FILE_SIZE,
    );
}

#[test]
fn relay_only_needs_a_relay_and_excludes_lan_only() {
    let flag = tallow()
        .args(["send", "--relay-only", "--text", "hi"])
        .output_within()
        .unwrap();
    let env = tallow()
        .env("TALLOW_RELAY_ONLY", "1")
        .args(["receive", "7-abacus-zoom-yodel"])
        .output_within()
        .unwrap();
    for out in [flag, env] {
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("--relay-only needs a relay"),
            "{}",
            text(&out.stderr)
        );
    }
    let both = tallow()
        .args(["send", "--relay-only", "--lan-only", "--text", "hi"])
        .output_within()
        .unwrap();
    assert_eq!(both.status.code(), Some(2), "{}", text(&both.stderr));
    assert!(text(&both.stderr).contains("exclude each other"));
}
