//! One guess per run: a real `tallow receive` racing the local network and
//! a relay, with a fake sender on each route, answers one hello in all. The
//! other route is closed before the receiver's PAKE message goes out, so an
//! attacker on both routes gets one guess at the code, not two.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rand_core::OsRng;
use tallow_crypto::CodePhrase;
use tallow_net::connect_to_relay;
use tallow_net::lan::announce;
use tallow_protocol::handshake::{abort_message, AbortReason, HandshakeError, SenderHandshake};
use tallow_protocol::limits::Deadlines;
use tallow_protocol::Role;
use tallow_relay::{RelayConfig, RelayServer};
use tallow_testkit::process::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

/// The code the receiver holds; the fakes only know its nameplate.
const CODE: &str = "7131-abacus-zoom-yodel";

/// A discovery port of this test binary's own (one per test).
fn discovery_port(offset: u16) -> u16 {
    30_000 + (std::process::id() % 10_000) as u16 + offset
}

async fn write_message(stream: &mut TcpStream, msg: &[u8]) {
    let mut out = (msg.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    stream.write_all(&out).await.expect("write to the receiver");
}

/// The next handshake message, or `None` once the stream ends.
async fn read_message(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.ok()?;
    let mut msg = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut msg).await.ok()?;
    Some(msg)
}

/// A fake sender on a paired route. Once both fakes are paired it sends a
/// hello made with `guess` and reads what comes back: the receiver's reply
/// (its PAKE message, one answered guess) or the end of the route. Once
/// both fakes know, one holding a reply answers it as a real sender answers
/// a wrong code.
async fn fake_sender(mut stream: TcpStream, guess: &str, both: Arc<Barrier>) -> Option<Vec<u8>> {
    let guess = CodePhrase::parse(guess).expect("guess parses");
    both.wait().await;
    let (state, hello) = SenderHandshake::start(&guess, &mut OsRng);
    write_message(&mut stream, &hello).await;
    let reply = read_message(&mut stream).await;
    both.wait().await;
    if let Some(reply) = &reply {
        // A real ReceiverHello, whose confirmation tag tells this guess wrong.
        assert!(matches!(
            state.finish(reply).err(),
            Some(HandshakeError::WrongCode)
        ));
        write_message(
            &mut stream,
            &abort_message(AbortReason::KeyConfirmationFailed),
        )
        .await;
    }
    reply
}

#[test]
fn a_receiver_racing_lan_and_relay_answers_one_guess() {
    let relay = Relay::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let port = discovery_port(0);
    let room = CodePhrase::parse(CODE).unwrap().room_id();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let d = Deadlines::default();
    let both = Arc::new(Barrier::new(2));

    // Route 1: a fake sender announcing itself on the LAN through its own
    // in-process relay, as `tallow send` does.
    let lan_relay = runtime.block_on(async {
        let config = RelayConfig {
            only_room: Some(room),
            ..RelayConfig::default()
        };
        RelayServer::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), config)
            .await
            .unwrap()
    });
    let lan_port = lan_relay.local_addr().unwrap().port();
    let lan_relay = runtime.spawn(async move {
        let _ = lan_relay.run().await;
    });
    let announcer = runtime.spawn(announce(room, lan_port, port));
    let lan_fake = {
        let both = both.clone();
        runtime.spawn(async move {
            let addr = format!("127.0.0.1:{lan_port}");
            let stream = connect_to_relay(&addr, Role::Sender, room, &d, || {})
                .await
                .expect("the receiver joins the LAN route");
            fake_sender(stream, "7131-abacus-zoom-zebra", both).await
        })
    };
    // Route 2: a fake sender in the relay room.
    let relay_fake = {
        let (both, addr) = (both.clone(), relay.addr.clone());
        runtime.spawn(async move {
            let stream = connect_to_relay(&addr, Role::Sender, room, &d, || {})
                .await
                .expect("the receiver joins the relay route");
            fake_sender(stream, "7131-abacus-zoom-acorn", both).await
        })
    };

    let mut cmd = tallow();
    cmd.args(["receive", "--yes", "--relay", &relay.addr])
        .args([
            "--discovery-port",
            &port.to_string(),
            "--wait-timeout",
            "60",
        ])
        .arg("--out")
        .arg(out.path())
        .arg(CODE)
        .stdin(Stdio::null());
    let receiver = Running::spawn(cmd);

    let replies = runtime.block_on(async {
        let fakes = async { (lan_fake.await.unwrap(), relay_fake.await.unwrap()) };
        tokio::time::timeout(Duration::from_secs(90), fakes)
            .await
            .expect("both fake senders got an answer or a closed route")
    });
    let (status, err) = receiver.finish();
    announcer.abort();
    lan_relay.abort();

    let answered = [&replies.0, &replies.1]
        .iter()
        .filter(|r| r.is_some())
        .count();
    assert_eq!(
        answered,
        1,
        "the receiver answered {answered} of the two hellos (LAN: {}, relay: {}); stderr: {err}",
        replies.0.is_some(),
        replies.1.is_some()
    );
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("rejected our key confirmation"), "{err}");
    assert!(list_dir(out.path()).is_empty());
}

#[test]
fn a_real_sender_on_both_routes_still_transfers() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "both.bin", 1 << 20, 11);
    let port = discovery_port(1).to_string();
    let code = "7132-abacus-zoom-yodel";
    let mut send = tallow();
    send.args(["send", "--relay", &relay.addr, "--discovery-port", &port])
        .args(["--code", code, "--wait-timeout", "60"])
        .arg(&file)
        .stdin(Stdio::null());
    let s = Running::spawn(send);
    let mut receive = tallow();
    receive
        .args(["receive", "--yes", "--relay", &relay.addr])
        .args(["--discovery-port", &port, "--wait-timeout", "60", "--out"])
        .arg(out.path())
        .arg(code)
        .stdin(Stdio::null());
    let r = Running::spawn(receive);
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(
        s_status.success() && r_status.success(),
        "sender: {s_err}\nreceiver: {r_err}"
    );
    assert_same_file(&file, &out.path().join("both.bin"));
}
