//! Real relay process: what it refuses, and what it can see.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use tallow_crypto::RoomId;
use tallow_protocol::rendezvous::{RelayHello, RelayStatus};
use tallow_protocol::wire::Encode;
use tallow_protocol::Role;
use tallow_testkit::process::*;

fn join(addr: &str, role: Role, nameplate: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let hello = RelayHello::Room {
        role,
        room: RoomId::for_nameplate(nameplate),
    };
    s.write_all(&hello.encode_with_password(b"").unwrap())
        .unwrap();
    s
}

#[test]
fn malformed_hello_gets_a_clear_refusal() {
    let relay = Relay::start(&[]);
    let mut s = TcpStream::connect(&relay.addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: relay.example\r\n\r\n")
        .unwrap();
    match read_relay_status(&mut s) {
        RelayStatus::Refused(text) => assert!(text.contains("malformed hello"), "{text}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn an_over_long_password_block_is_refused_not_cut() {
    // Cut at 128 bytes, the rest of the block would be forwarded as data.
    let relay = Relay::start(&[]);
    let mut s = TcpStream::connect(&relay.addr).unwrap();
    let hello = RelayHello::Room {
        role: Role::Sender,
        room: RoomId::for_nameplate("5151"),
    };
    let mut bytes = hello.to_bytes();
    bytes.push(200);
    bytes.extend_from_slice(&[b'p'; 200]);
    s.write_all(&bytes).unwrap();
    match read_relay_status(&mut s) {
        RelayStatus::Refused(text) => assert!(text.contains("password block over 128"), "{text}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // And the command line says so before connecting anywhere.
    let long = "p".repeat(129);
    let out = tallow()
        .args([
            "send",
            "--relay",
            &relay.addr,
            "--relay-password",
            &long,
            "x",
        ])
        .output_within()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 128 bytes"));
}

#[test]
fn silent_client_is_refused_after_the_hello_timeout() {
    let relay = Relay::start(&["--hello-timeout", "1"]);
    let mut s = TcpStream::connect(&relay.addr).unwrap();
    match read_relay_status(&mut s) {
        RelayStatus::Refused(text) => assert!(text.contains("no hello within 1 s"), "{text}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn rooms_pair_one_sender_with_one_receiver_and_refuse_a_third() {
    let relay = Relay::start(&[]);
    let mut a = join(&relay.addr, Role::Sender, "77");
    assert_eq!(read_relay_status(&mut a), RelayStatus::Waiting);

    // A second sender in the same room is told it is taken.
    let mut dup = join(&relay.addr, Role::Sender, "77");
    match read_relay_status(&mut dup) {
        RelayStatus::RoomTaken(text) => assert!(text.contains("already waiting"), "{text}"),
        other => panic!("{other:?}"),
    }

    // Another nameplate is another room: it waits, it does not pair.
    let mut other = join(&relay.addr, Role::Receiver, "78");
    assert_eq!(read_relay_status(&mut other), RelayStatus::Waiting);

    let mut b = join(&relay.addr, Role::Receiver, "77");
    assert_paired(&mut a);
    assert_paired(&mut b);

    // The room is taken now.
    let mut third = join(&relay.addr, Role::Receiver, "77");
    match read_relay_status(&mut third) {
        RelayStatus::RoomTaken(text) => assert!(text.contains("already joined"), "{text}"),
        other => panic!("{other:?}"),
    }

    // Bytes flow both ways, untouched.
    a.write_all(b"opaque bytes").unwrap();
    let mut got = [0u8; 12];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"opaque bytes");
    b.write_all(b"back").unwrap();
    let mut got = [0u8; 4];
    a.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"back");

    // Once the pair is gone the room is free again.
    drop(a);
    drop(b);
    thread::sleep(Duration::from_millis(200));
    let mut again = join(&relay.addr, Role::Sender, "77");
    assert_eq!(read_relay_status(&mut again), RelayStatus::Waiting);
}

/// A receiver that stops (disk full) sends its reason and closes with the
/// sender's data still unread, which resets its connection: the relay still
/// delivers the reason to the sender, which is busy sending.
#[test]
fn a_last_message_before_a_reset_still_reaches_the_other_side() {
    let relay = Relay::start(&[]);
    for round in 0..5 {
        let nameplate = format!("79{round}");
        let mut a = join(&relay.addr, Role::Sender, &nameplate);
        assert_eq!(read_relay_status(&mut a), RelayStatus::Waiting);
        let mut b = join(&relay.addr, Role::Receiver, &nameplate);
        assert_paired(&mut a);
        assert_paired(&mut b);
        let mut flood = a.try_clone().unwrap();
        let flooding = thread::spawn(move || {
            let block = vec![7u8; 64 * 1024];
            while flood.write_all(&block).is_ok() {}
        });
        // Let the sender's data pile up unread at the receiver.
        thread::sleep(Duration::from_millis(100));
        b.write_all(b"the disk is full").unwrap();
        drop(b); // unread data: a reset, not a clean close
        let mut got = [0u8; 16];
        a.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("round {round}: the last message was lost: {e}"));
        assert_eq!(&got, b"the disk is full");
        let _ = a.shutdown(std::net::Shutdown::Both);
        flooding.join().unwrap();
    }
}

#[test]
fn the_relay_sees_no_plaintext_no_file_names_and_no_code_words() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    // Highly compressible, with a marker that would show through any
    // unencrypted or merely compressed path.
    let marker = "TALLOW-PLAINTEXT-MARKER the quick brown fox ";
    let file = src.path().join("confidential-quarterly-figures.txt");
    fs::write(&file, marker.repeat(50_000)).unwrap();
    let code = "8086-unbundle-overlying-spiffy";
    for compress in ["none", "auto"] {
        let hop = Hop::start(&relay.addr, HopBehaviour::default());
        let (proxy, seen) = (hop.addr.clone(), hop.bytes.clone());
        let out = tempfile::tempdir().unwrap();
        let s = sender(
            &proxy,
            code,
            std::slice::from_ref(&file),
            &["--compress", compress, "--relay-only"],
        );
        let r = receiver(&proxy, code, out.path(), &["--yes"]);
        let (r_status, r_err) = r.finish();
        let (s_status, s_err) = s.finish();
        assert!(
            s_status.success() && r_status.success(),
            "sender: {s_err}\nreceiver: {r_err}"
        );
        assert_same_file(
            &file,
            &out.path().join("confidential-quarterly-figures.txt"),
        );

        let seen = seen.lock().unwrap();
        if compress == "none" {
            assert!(
                seen.len() > marker.len() * 50_000,
                "the proxy carried the whole file"
            );
        } else {
            assert!(
                seen.len() < marker.len() * 5_000,
                "compression shrank the traffic: {} bytes",
                seen.len()
            );
        }
        let contains = |needle: &[u8]| seen.windows(needle.len()).any(|w| w == needle);
        for needle in [
            &b"TALLOW-PLAINTEXT"[..],
            b"quick brown fox",
            b"confidential-quarterly",
            b"unbundle",
            b"overlying",
            b"spiffy",
            code.as_bytes(),
        ] {
            assert!(
                !contains(needle),
                "the relay saw {:?} (--compress {compress})",
                String::from_utf8_lossy(needle)
            );
        }
        // Only the nameplate's hash reaches the relay, not the nameplate itself.
        assert!(contains(&RoomId::for_nameplate("8086").0));
    }
}

fn refused_with(stream: &mut TcpStream) -> String {
    match read_relay_status(stream) {
        RelayStatus::Refused(text) => text,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn limits_on_connections_per_address_and_rooms() {
    let relay = Relay::start(&["--max-conns-per-ip", "2", "--max-rooms", "1"]);
    let mut a = join(&relay.addr, Role::Sender, "1");
    assert_eq!(read_relay_status(&mut a), RelayStatus::Waiting);
    // A second room while one is open: the relay is full.
    let mut b = join(&relay.addr, Role::Sender, "2");
    assert!(refused_with(&mut b).contains("relay is full"));
    drop(b);
    thread::sleep(Duration::from_millis(100));
    // Two connections from 127.0.0.1 are open (a, c); a third is refused.
    let mut c = join(&relay.addr, Role::Receiver, "1");
    assert_paired(&mut c);
    let mut d = join(&relay.addr, Role::Sender, "3");
    assert!(refused_with(&mut d).contains("too many connections from your address"));
}

#[test]
fn a_relay_password_is_required_and_checked() {
    let relay = Relay::start(&["--password", "open sesame"]);
    let mut wrong = TcpStream::connect(&relay.addr).unwrap();
    let hello = RelayHello::Room {
        role: Role::Sender,
        room: RoomId::for_nameplate("9"),
    };
    wrong
        .write_all(&hello.encode_with_password(b"guess").unwrap())
        .unwrap();
    assert!(refused_with(&mut wrong).contains("needs a password"));

    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "p.bin", 1000, 1);
    let code = "9090-abacus-zoom-yodel";
    let pw = ["--relay-password", "open sesame"];
    let s = sender(&relay.addr, code, std::slice::from_ref(&file), &pw);
    let r = receiver(&relay.addr, code, out.path(), &["--yes", pw[0], pw[1]]);
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(s_status.success() && r_status.success(), "{s_err}\n{r_err}");
    assert_same_file(&file, &out.path().join("p.bin"));
}

#[test]
fn metrics_and_health_are_served_and_count_transfers() {
    let (relay, at) = Relay::with_metrics();
    assert!(http_get(&at, "/healthz").contains("200 OK"));
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "m.bin", 200_000, 1);
    let ((s, _), (r, _)) = transfer(
        &relay.addr,
        "8181-abacus-zoom-yodel",
        &[file],
        out.path(),
        &["--yes", "--relay-only"],
    );
    assert!(s.success() && r.success());
    let mut bad = TcpStream::connect(&relay.addr).unwrap();
    bad.write_all(&[0u8; 64]).unwrap();
    let _ = read_relay_status(&mut bad);
    thread::sleep(Duration::from_millis(300));
    let text = http_get(&at, "/metrics");
    assert!(text.contains("tallow_relay_pairs_total 1"), "{text}");
    assert!(text.contains("tallow_relay_pairs_active 0"), "{text}");
    assert!(
        text.contains("tallow_relay_refusals_total{reason=\"malformed\"} 1"),
        "{text}"
    );
    let forwarded = metric(&at, "tallow_relay_bytes_forwarded_total");
    assert!(forwarded > 200_000, "{forwarded}");
    // Counts, never payloads or room ids.
    assert!(!text.contains("8181"));
}

#[test]
fn sigterm_lets_the_active_transfer_finish_and_refuses_new_ones() {
    let relay = Relay::start(&["--shutdown-grace", "60"]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "g.bin", 64 << 20, 1);
    // A slow link keeps the transfer going while the relay is told to stop.
    let hop = Hop::start(
        &relay.addr,
        HopBehaviour {
            delay: Duration::from_millis(200),
            ..HopBehaviour::default()
        },
    );
    let s = sender(
        &hop.addr,
        "7272-abacus-zoom-yodel",
        std::slice::from_ref(&file),
        &["--compress", "none", "--relay-only"],
    );
    let r = receiver(
        &relay.addr,
        "7272-abacus-zoom-yodel",
        out.path(),
        &["--yes"],
    );
    wait_until(Duration::from_secs(30), "the transfer to start", || {
        std::fs::metadata(out.path().join("g.bin.tallow-partial")).is_ok()
    });
    relay.terminate();
    thread::sleep(Duration::from_millis(300));
    assert!(
        TcpStream::connect(&relay.addr).is_err(),
        "no new clients after SIGTERM"
    );
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(s_status.success() && r_status.success(), "{s_err}\n{r_err}");
    assert_same_file(&file, &out.path().join("g.bin"));
}

/// `n` pairs connected to one relay at once, each moving `bytes` both ways;
/// returns the relay's resident memory while all of them are open.
fn concurrent_pairs(n: usize, bytes: usize) -> (u64, u64) {
    let relay = Relay::start(&[
        "--max-conns-per-ip",
        "0",
        "--max-waiting-per-ip",
        "0",
        "--rooms-per-minute",
        "0",
    ]);
    let idle_rss = rss_of(relay.pid());
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n + 1));
    let workers: Vec<_> = (0..n)
        .map(|i| {
            let (addr, barrier) = (relay.addr.clone(), barrier.clone());
            thread::spawn(move || {
                // A pair that fails still meets the others at the barrier
                // (else they would wait for it forever), then reports.
                let pair = std::panic::catch_unwind(|| {
                    let nameplate = format!("{}", 100_000 + i);
                    let mut a = join(&addr, Role::Sender, &nameplate);
                    assert_eq!(read_relay_status(&mut a), RelayStatus::Waiting);
                    let mut b = join(&addr, Role::Receiver, &nameplate);
                    assert_paired(&mut a);
                    assert_paired(&mut b);
                    let data = vec![i as u8; bytes];
                    a.write_all(&data).unwrap();
                    let mut got = vec![0u8; bytes];
                    b.read_exact(&mut got).unwrap();
                    assert_eq!(got, data);
                    b.write_all(&data).unwrap();
                    a.read_exact(&mut got).unwrap();
                    (a, b)
                });
                // Hold the pair open until every pair is up.
                barrier.wait();
                barrier.wait();
                pair.map(drop)
            })
        })
        .collect();
    barrier.wait();
    let busy_rss = rss_of(relay.pid());
    barrier.wait();
    for w in workers {
        assert!(matches!(w.join(), Ok(Ok(()))), "a pair failed (see above)");
    }
    (idle_rss, busy_rss)
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

#[test]
fn fifty_concurrent_pairs_with_bounded_memory() {
    let (idle, busy) = concurrent_pairs(50, 256 * 1024);
    let per_pair = busy.saturating_sub(idle) / 50;
    eprintln!("relay RSS: idle {idle} B, 50 pairs {busy} B, ~{per_pair} B per pair");
    assert!(busy > 0);
    assert!(per_pair < 512 * 1024, "{per_pair} bytes per pair");
}

/// The full-size load: `cargo test --release -p tallow --test relay -- --ignored`.
#[test]
#[ignore]
fn a_thousand_concurrent_pairs() {
    let (idle, busy) = concurrent_pairs(1000, 64 * 1024);
    eprintln!(
        "relay RSS: idle {idle} B, 1000 pairs {busy} B, ~{} B per pair",
        busy.saturating_sub(idle) / 1000
    );
}

#[test]
fn a_fleet_of_relays_both_sides_pick_the_same_one() {
    let metrics: Vec<String> = (0..2)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        })
        .collect();
    let a = Relay::start(&["--metrics", &metrics[0]]);
    let b = Relay::start(&["--metrics", &metrics[1]]);
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "f.bin", 10_000, 1);
    // Lists in different orders: the choice depends on the code only.
    let forward = format!("{},{}", a.addr, b.addr);
    let backward = format!("{},{}", b.addr, a.addr);
    // Until both relays have carried a transfer (each code picks one of
    // the two at random, so 24 codes miss one with odds of 2^-23).
    let pairs = |at: &str| metric(at, "tallow_relay_pairs_total");
    let mut done = 0;
    while done < 24 && (pairs(&metrics[0]) == 0 || pairs(&metrics[1]) == 0) {
        let out = tempfile::tempdir().unwrap();
        let code = format!("{}-abacus-zoom-yodel", 300 + done);
        let s = sender(&forward, &code, std::slice::from_ref(&file), &[]);
        let r = receiver(&backward, &code, out.path(), &["--yes"]);
        let (r_status, r_err) = r.finish();
        let (s_status, s_err) = s.finish();
        assert!(s_status.success() && r_status.success(), "{s_err}\n{r_err}");
        done += 1;
    }
    let (on_a, on_b) = (pairs(&metrics[0]), pairs(&metrics[1]));
    // Every transfer paired on one relay: both sides chose the same.
    assert_eq!(on_a + on_b, done);
    assert!(
        on_a > 0 && on_b > 0,
        "rooms spread over both relays: {on_a} / {on_b}"
    );
}

#[test]
fn a_bandwidth_cap_holds_each_transfer_to_its_rate() {
    // 4 MiB at 8 MiB/s cannot take less than half a second (a lower
    // bound: a loaded machine only makes it longer).
    let relay = Relay::start(&["--max-rate", &(8u64 << 20).to_string()]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "r.bin", 4 << 20, 1);
    let started = std::time::Instant::now();
    let s = sender(
        &relay.addr,
        "5656-abacus-zoom-yodel",
        std::slice::from_ref(&file),
        &["--compress", "none", "--relay-only"],
    );
    let r = receiver(
        &relay.addr,
        "5656-abacus-zoom-yodel",
        out.path(),
        &["--yes"],
    );
    let (r_status, r_err) = r.finish();
    let (s_status, _) = s.finish();
    assert!(r_status.success() && s_status.success(), "{r_err}");
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    assert_same_file(&file, &out.path().join("r.bin"));
}

#[test]
fn an_idle_pair_is_cut_after_the_idle_timeout() {
    let relay = Relay::start(&["--idle-timeout", "1"]);
    let mut a = join(&relay.addr, Role::Sender, "42");
    assert_eq!(read_relay_status(&mut a), RelayStatus::Waiting);
    let mut b = join(&relay.addr, Role::Receiver, "42");
    assert_paired(&mut a);
    assert_paired(&mut b);
    // Nothing moves: the relay ends the pair, and both see the end.
    a.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut byte = [0u8; 1];
    match a.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the relay to close the idle pair, got {other:?}"),
    }
}

#[test]
fn the_harness_runs_the_binary_cargo_built_for_these_tests() {
    assert_eq!(
        binary(),
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_tallow"))
    );
}
