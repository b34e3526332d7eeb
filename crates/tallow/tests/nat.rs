//! Direct connections through NATs, in network namespaces
//! (`scripts/nat-lab.sh`): two hosts, each behind its own masquerading
//! router that drops connections started outside, and a relay on the
//! "internet" between them. Needs root, iproute2 and nftables: ignored in
//! a plain `cargo test`, run by `.ci/run`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tallow_testkit::process::*;

/// Where clients reach the relay, which listens as it does by default, on
/// `[::]:9009` (so it sees IPv4 clients on a dual-stack socket).
const RELAY: &str = "198.51.100.10:9009";
const FILE_SIZE: u64 = 16 << 20;

/// The namespaces of one test; removed on drop.
struct NatLab {
    id: String,
}

impl NatLab {
    /// A lab of this test's own (`offset` tells a file's tests apart).
    fn up(offset: u32) -> NatLab {
        let id = (std::process::id() % 400 * 2 + offset).to_string();
        let lab = NatLab { id };
        lab.script(&["down"]);
        assert!(
            lab.script(&["up"]),
            "could not build the namespaces: this test needs root, iproute2 and nftables"
        );
        lab
    }

    fn script(&self, args: &[&str]) -> bool {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/nat-lab.sh");
        Command::new(script)
            .arg(args[0])
            .arg(&self.id)
            .args(&args[1..])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `tallow` inside namespace `host` (`relay`, `ha`, `hb`).
    fn tallow(&self, host: &str) -> Command {
        let cmd = tallow();
        let prog = cmd.get_program().to_owned();
        let mut inside = Command::new("ip");
        inside.args(["netns", "exec", &format!("tl{}{host}", self.id)]);
        inside.arg(prog);
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => inside.env(k, v),
                None => inside.env_remove(k),
            };
        }
        inside
    }

    /// The relay, its log on stderr (each pair's bytes when it ends).
    fn relay(&self) -> Running {
        let mut cmd = self.tallow("relay");
        cmd.arg("relay");
        let relay = Running::spawn(cmd);
        // Listening once a client can connect from host A.
        let mut probe = self.tallow("ha");
        probe.args([
            "receive",
            "--relay",
            RELAY,
            "--no-lan",
            "--wait-timeout",
            "1",
        ]);
        probe.arg("1-abacus-zoom-yodel");
        wait_until(Duration::from_secs(20), "the relay to listen", || {
            let err = probe.output_within().map(|o| o.stderr).unwrap_or_default();
            !String::from_utf8_lossy(&err).contains("could not reach the relay")
        });
        relay
    }

    fn transfer(&self, file: &Path, out: &Path, code: &str) -> (Output, Output) {
        let (s, r) = self.start(file, out, code, &[]);
        (s.join().unwrap(), r.join().unwrap())
    }

    /// A sender on host A and a receiver on host B, both with `extra`.
    fn start(&self, file: &Path, out: &Path, code: &str, extra: &[&str]) -> (Side, Side) {
        let mut s = self.tallow("ha");
        s.args([
            "send", "--json", "--relay", RELAY, "--no-lan", "--code", code,
        ])
        .args(extra)
        .arg(file);
        let mut r = self.tallow("hb");
        r.args(["receive", "--json", "--yes", "--relay", RELAY, "--no-lan"])
            .args(extra)
            .arg("--out")
            .arg(out)
            .arg(code);
        (spawn_capturing(s), spawn_capturing(r))
    }
}

type Side = std::thread::JoinHandle<Output>;

impl Drop for NatLab {
    fn drop(&mut self) {
        self.script(&["down"]);
    }
}

/// Bytes the relay carried for pairs that ended, from its log.
fn relayed_bytes(relay: Running) -> u64 {
    signal(relay.pid(), "-TERM");
    let (_, log) = relay.finish();
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let pairs: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("pair finished"))
        .collect();
    assert!(!pairs.is_empty(), "no pair in the relay's log: {log}");
    pairs
        .iter()
        .map(|l| field(l, "bytes_from_waiting_side") + field(l, "bytes_from_joining_side"))
        .sum()
}

fn route_of(out: &Output, event: &str) -> String {
    let stdout = text(&out.stdout);
    json_event(&stdout, event).unwrap_or_default().to_owned()
}

#[test]
#[ignore = "needs root, `ip netns` and nftables; .ci/run runs it"]
fn two_hosts_behind_their_own_nats_connect_directly() {
    let lab = NatLab::up(0);
    let relay = lab.relay();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "through.bin", FILE_SIZE, 51);
    let (s, r) = lab.transfer(&file, out.path(), "7201-abacus-zoom-yodel");
    assert_both_succeeded(&s, &r);
    assert_same_file(&file, &out.path().join("through.bin"));
    for side in [&s, &r] {
        assert!(
            route_of(side, "connected").contains("\"route\":\"direct\"")
                && route_of(side, "done").contains("\"route\":\"direct\""),
            "{}",
            text(&side.stdout)
        );
    }
    // Each reached the other's router, the public side of its NAT.
    assert!(
        text(&r.stderr).contains("Connected directly (sender at 198.51.100.2:"),
        "{}",
        text(&r.stderr)
    );
    assert!(
        text(&s.stderr).contains("Connected directly (receiver at 198.51.100.3:"),
        "{}",
        text(&s.stderr)
    );
    // The relay carried the handshake and the route's few messages only.
    let relayed = relayed_bytes(relay);
    assert!(relayed < 32 * 1024, "{relayed} bytes through the relay");
}

#[test]
#[ignore = "needs root, `ip netns` and nftables; .ci/run runs it"]
fn with_direct_traffic_dropped_the_relay_carries_the_data() {
    let lab = NatLab::up(1);
    assert!(lab.script(&["block"]), "could not block the direct path");
    let relay = lab.relay();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "around.bin", FILE_SIZE, 52);
    let (s, r) = lab.transfer(&file, out.path(), "7202-abacus-zoom-yodel");
    assert_both_succeeded(&s, &r);
    assert_same_file(&file, &out.path().join("around.bin"));
    for side in [&s, &r] {
        let connected = route_of(side, "connected");
        assert!(
            connected.contains("\"route\":\"relay\"")
                && connected.contains("\"no_direct\":\"not-found\"")
                && route_of(side, "done").contains("\"route\":\"relay\""),
            "{}",
            text(&side.stdout)
        );
    }
    // Told why, with the stated delay.
    assert!(
        text(&r.stderr).contains(&format!(
            "Connected through the relay {RELAY} (no direct connection within 3 s)"
        )),
        "{}",
        text(&r.stderr)
    );
    assert!(relayed_bytes(relay) > FILE_SIZE);
}

#[test]
#[ignore = "needs root, `ip netns` and nftables; .ci/run runs it"]
fn a_transfer_cut_on_the_direct_path_resumes_through_the_relay() {
    let lab = NatLab::up(2);
    // Slow enough to cut in the middle (16 MiB at 20 Mbit/s: ~7 s).
    assert!(lab.script(&["shape", "40mbit", "20mbit"]));
    let relay = lab.relay();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "cut.bin", FILE_SIZE, 53);
    let partial = out.path().join("cut.bin.tallow-partial");
    let grown = || std::fs::metadata(&partial).map_or(0, |m| m.len());
    let quick = ["--idle-timeout", "3"];
    let (s, r) = lab.start(&file, out.path(), "7203-abacus-zoom-yodel", &quick);
    wait_until(Duration::from_secs(60), "a part of the file", || {
        grown() > 2 << 20
    });
    // The direct path goes away mid-transfer: both sides give up.
    assert!(lab.script(&["block"]));
    let (s, r) = (s.join().unwrap(), r.join().unwrap());
    assert!(!s.status.success() && !r.status.success());
    assert!(route_of(&r, "connected").contains("\"route\":\"direct\""));
    let had = grown();
    assert!(had > 2 << 20 && had < FILE_SIZE, "{had}");
    // Again, with the direct path still blocked: the relay carries what
    // is missing, and only that.
    let (s, r) = lab.start(&file, out.path(), "7204-abacus-zoom-yodel", &quick);
    let (s, r) = (s.join().unwrap(), r.join().unwrap());
    assert_both_succeeded(&s, &r);
    assert!(route_of(&r, "done").contains("\"route\":\"relay\""));
    assert!(
        text(&r.stderr).contains("Resuming: "),
        "{}",
        text(&r.stderr)
    );
    assert_same_file(&file, &out.path().join("cut.bin"));
    let relayed = relayed_bytes(relay);
    assert!(
        relayed < FILE_SIZE - (1 << 20),
        "{relayed} bytes through the relay"
    );
}
