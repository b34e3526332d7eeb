//! Real processes behind a hostile hop (what a relay or the network can do
//! to the bytes), and a relay that plays machine-in-the-middle.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use tallow_crypto::CodePhrase;
use tallow_protocol::limits::Deadlines;
use tallow_protocol::rendezvous::{RelayHello, RelayStatus, RELAY_HELLO_LEN};
use tallow_protocol::wire::{Decode, Encode};
use tallow_protocol::Role;
use tallow_testkit::process::*;

const CODE: &str = "4444-abacus-zoom-yodel";
/// Past the relay hello and the handshake: inside the encrypted stream.
const IN_CIPHERTEXT: u64 = 300_000;

/// Send 3 MiB through a hop doing `tamper` to the sender's stream; both
/// sides must fail, the receiver's message must contain one of `expect`.
fn tampered(tamper: Tamper, expect: &[&str]) -> (String, String) {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "payload.bin", 3 << 20, 1);
    let hop = Hop::start(
        &relay.addr,
        HopBehaviour {
            tamper: Some(tamper),
            ..HopBehaviour::default()
        },
    );
    let s = sender(
        &hop.addr,
        CODE,
        &[file],
        &["--compress", "none", "--idle-timeout", "5", "--relay-only"],
    );
    let r = receiver(
        &relay.addr,
        CODE,
        out.path(),
        &["--yes", "--idle-timeout", "5"],
    );
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(!r_status.success(), "{tamper:?}: receiver must fail");
    assert!(!s_status.success(), "{tamper:?}: sender must fail: {s_err}");
    assert!(
        expect.iter().any(|e| r_err.contains(e)),
        "{tamper:?}: {r_err}"
    );
    assert!(
        !out.path().join("payload.bin").exists(),
        "{tamper:?}: no final file"
    );
    (s_err, r_err)
}

const TAMPERED: &[&str] = &["failed authentication", "corrupt or hostile"];

#[test]
fn an_inserted_byte_is_detected() {
    tampered(Tamper::Insert { at: IN_CIPHERTEXT }, TAMPERED);
}

#[test]
fn reordered_bytes_are_detected() {
    tampered(
        Tamper::Reorder {
            at: IN_CIPHERTEXT,
            len: 5000,
        },
        TAMPERED,
    );
}

#[test]
fn a_replayed_stretch_is_detected() {
    tampered(
        Tamper::Replay {
            from: 100_000,
            to: 200_000,
        },
        TAMPERED,
    );
}

#[test]
fn truncation_mid_frame_is_detected() {
    tampered(
        Tamper::Cut { at: IN_CIPHERTEXT },
        &["sender closed the connection"],
    );
}

#[test]
fn a_connection_reset_is_detected() {
    tampered(
        Tamper::Reset { at: IN_CIPHERTEXT },
        &["closed the connection", "failed"],
    );
}

#[test]
fn a_downgraded_version_byte_is_refused_on_both_sides() {
    // Relay hello (38 bytes), no password (1), then the SenderHello's length (4): its first
    // byte is the version.
    let (s_err, _) = tampered(
        Tamper::Set { at: 43, value: 0 },
        &["speaks tallow protocol version 0"],
    );
    assert!(
        s_err.contains(&format!(
            "does not speak tallow protocol version {}",
            tallow_protocol::limits::PROTOCOL_VERSION
        )),
        "{s_err}"
    );
}

/// A relay that pairs nobody: it runs its own handshake with each side,
/// guessing the code's words (it knows the number), as a machine in the
/// middle would.
#[test]
fn a_machine_in_the_middle_fails_confirmation_on_both_sides() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let guess = CodePhrase::parse("4444-guessed-wrong-words").unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for conn in listener.incoming().take(2) {
            let mut conn = conn.unwrap();
            let mut hello = [0u8; RELAY_HELLO_LEN];
            conn.read_exact(&mut hello).unwrap();
            let mut no_password = [0u8; 1];
            conn.read_exact(&mut no_password).unwrap();
            let hello = RelayHello::decode_all(&hello).unwrap();
            conn.write_all(&RelayStatus::Paired(None).to_bytes())
                .unwrap();
            conn.set_nonblocking(true).unwrap();
            let guess = CodePhrase::parse(guess.as_str()).unwrap();
            rt.block_on(async move {
                let stream = tokio::net::TcpStream::from_std(conn).unwrap();
                let d = Deadlines::default();
                // The middle plays the opposite role to each victim.
                let _ = match hello.role() {
                    Role::Sender => tallow_net::handshake_as_receiver(stream, &guess, &d)
                        .await
                        .map(|_| ()),
                    Role::Receiver => tallow_net::handshake_as_sender(stream, &guess, &d)
                        .await
                        .map(|_| ()),
                };
            });
        }
    });
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "secret.bin", 1000, 1);
    let s = sender(&addr, CODE, &[file], &[]);
    let (s_status, s_err, _) = s.finish_within(Duration::from_secs(30));
    let r = receiver(&addr, CODE, out.path(), &["--yes"]);
    let (r_status, r_err, _) = r.finish_within(Duration::from_secs(30));
    assert!(
        !s_status.success() && s_err.contains("key confirmation failed"),
        "{s_err}"
    );
    assert!(
        !r_status.success() && r_err.contains("rejected our key confirmation"),
        "{r_err}"
    );
    assert!(!r_err.contains("secret.bin") && list_dir(out.path()).is_empty());
}
