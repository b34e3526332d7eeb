//! Reaching a relay from where people are: over IPv6, a relay listening on
//! both address families, and through SOCKS5 and HTTP CONNECT proxies.

use tallow_testkit::process::*;
use tallow_testkit::proxy::{ProxyProtocol, TestProxy};

/// A transfer of a small random file: sender with `send_extra` (and a code
/// of the relay's), receiver with `receive_extra`, each through its own
/// relay address; the receiver runs with the environment `env`.
fn transfer_through(
    sender_relay: &str,
    receiver_relay: &str,
    send_extra: &[&str],
    receive_extra: &[&str],
    env: &[(&str, &str)],
) {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "reach.bin", 150_000, 7);
    let (sender, code) = allocating_sender(sender_relay, std::slice::from_ref(&file), send_extra);
    let mut cmd = tallow();
    cmd.args([
        "receive",
        "--relay",
        receiver_relay,
        "--no-lan",
        "--yes",
        "--out",
    ])
    .arg(out.path())
    .args(receive_extra)
    .arg(&code)
    .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (r_status, r_err) = Running::spawn(cmd).finish();
    let (s_status, s_err) = sender.finish();
    assert!(r_status.success() && s_status.success(), "{s_err}\n{r_err}");
    assert_same_file(&file, &out.path().join("reach.bin"));
}

#[test]
fn a_transfer_over_ipv6_loopback() {
    let relay = Relay::start_listening("[::1]:0", &[]);
    assert!(relay.addr.starts_with("[::1]:"), "{}", relay.addr);
    transfer_through(&relay.addr, &relay.addr, &[], &[], &[]);
}

#[test]
fn a_relay_on_the_ipv6_wildcard_serves_ipv4_and_ipv6_clients_together() {
    let relay = Relay::start_listening("[::]:0", &[]);
    let port = relay.addr.rsplit(':').next().unwrap();
    transfer_through(
        &format!("127.0.0.1:{port}"),
        &format!("[::1]:{port}"),
        &[],
        &[],
        &[],
    );
}

#[test]
fn an_ipv4_client_of_a_dual_stack_relay_is_told_its_ipv4_address() {
    // For a direct path: `::ffff:127.0.0.1` could not be dialled by the peer.
    let relay = Relay::start_listening("[::]:0", &[]);
    let port = relay.addr.rsplit(':').next().unwrap();
    let v4 = format!("127.0.0.1:{port}");
    let room = tallow_crypto::RoomId([7; 32]);
    let hello = |role| {
        tallow_protocol::rendezvous::RelayHello::Room { role, room }
            .encode_with_password(b"")
            .unwrap()
    };
    let mut a = raw_client_from([127, 0, 0, 1], &v4, &hello(tallow_protocol::Role::Sender));
    assert_eq!(
        read_relay_status(&mut a),
        tallow_protocol::rendezvous::RelayStatus::Waiting
    );
    let mut b = raw_client_from([127, 0, 0, 1], &v4, &hello(tallow_protocol::Role::Receiver));
    for c in [&mut a, &mut b] {
        assert!(c.local_addr().is_ok_and(|s| s.is_ipv4()));
        assert_paired(c);
    }
}

#[test]
fn a_transfer_through_a_socks5_proxy_and_an_http_connect_proxy_from_the_environment() {
    let relay = Relay::start(&[]);
    let socks = TestProxy::start(ProxyProtocol::Socks5);
    let http = TestProxy::start(ProxyProtocol::HttpConnect);
    let socks_url = format!("socks5://{}", socks.addr);
    let http_url = format!("http://{}", http.addr);
    transfer_through(
        &relay.addr,
        &relay.addr,
        &["--proxy", &socks_url],
        &[],
        &[("ALL_PROXY", &http_url)],
    );
    assert_eq!(
        socks.targets(),
        vec![relay.addr.clone()],
        "the sender went through SOCKS5"
    );
    assert_eq!(
        http.targets(),
        vec![relay.addr.clone()],
        "the receiver through HTTP CONNECT"
    );
}

#[test]
fn no_proxy_exempts_the_relay_and_a_dead_proxy_is_named_in_the_error() {
    let relay = Relay::start(&[]);
    let http = TestProxy::start(ProxyProtocol::HttpConnect);
    let http_url = format!("http://{}", http.addr);
    // NO_PROXY names the relay's host: straight there.
    transfer_through(
        &relay.addr,
        &relay.addr,
        &[],
        &[],
        &[
            ("ALL_PROXY", &http_url),
            ("NO_PROXY", "localhost,127.0.0.1"),
        ],
    );
    assert!(http.targets().is_empty(), "{:?}", http.targets());
    // A proxy that is not there: the error names it and the relay.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "x.bin", 10, 1);
    let out = tallow()
        .args(["send", "--no-lan", "--relay", &relay.addr, "--proxy"])
        .arg(format!("socks5://{dead_addr}"))
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .output_within()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(
        err.contains(&format!("through the proxy socks5://{dead_addr}"))
            && err.contains("cannot reach the proxy"),
        "{err}"
    );
    // A URL that is not one is a usage error, before anything is sent.
    let bad = tallow()
        .args([
            "send",
            "--no-lan",
            "--relay",
            &relay.addr,
            "--proxy",
            "ftp://x:1",
        ])
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .output_within()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("socks5:// or http://"));
}
