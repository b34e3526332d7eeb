//! A fleet of relay processes behind one address: clients that reached
//! different members pair, also after a member is killed.

use std::process::Stdio;

use tallow_crypto::RoomId;
use tallow_protocol::rendezvous::rank_relays;
use tallow_testkit::process::*;

/// `n` relays on 127.0.0.1, each told the whole member list; their
/// addresses, in order.
fn start_fleet(n: usize) -> (Vec<Relay>, Vec<String>) {
    // Ports chosen first: every member's list names them all.
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    drop(listeners);
    let members = addrs.join(",");
    let relays = addrs
        .iter()
        .map(|addr| Relay::start_listening(addr, &["--fleet", &members]))
        .collect();
    (relays, addrs)
}

fn transfer_via(sender_at: &str, receiver_at: &str, code: Option<&str>, seed: u64) -> String {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "f.bin", 100_000, seed);
    let (sender, code) = match code {
        None => allocating_sender(sender_at, std::slice::from_ref(&file), &[]),
        Some(code) => {
            let mut s = Watched::spawn({
                let mut cmd = tallow();
                cmd.args(["send", "--relay", sender_at, "--no-lan", "--code", code])
                    .arg(&file);
                cmd
            });
            s.wait_for("Waiting for the receiver");
            (s, code.to_owned())
        }
    };
    let (r_status, r_err) = receiver(receiver_at, &code, out.path(), &["--yes"]).finish();
    let (s_status, s_err) = sender.finish();
    assert!(r_status.success() && s_status.success(), "{s_err}\n{r_err}");
    assert_same_file(&file, &out.path().join("f.bin"));
    code
}

#[test]
fn three_relays_pair_clients_that_reached_different_members_also_after_one_is_killed() {
    let (mut relays, addrs) = start_fleet(3);
    // Each member hands out numbers (short ones, of the rooms it owns) and
    // receivers that reached another member are sent on to them.
    for i in 0..3 {
        let code = transfer_via(&addrs[i], &addrs[(i + 1) % 3], None, i as u64);
        let number = code.split('-').next().unwrap();
        assert!(number.len() <= 2, "{code}");
        let owner = rank_relays(
            addrs.iter().map(String::as_str),
            &RoomId::for_nameplate(number),
        )[0];
        assert_eq!(
            owner, addrs[i],
            "{code}: the member asked owns the number it gave"
        );
    }

    // A sender waits, through member 0, in a room member 2 owns; member 2
    // is killed. The sender enters its room again and lands on the next
    // member in that room's ranking, where the receiver (through member 1)
    // finds it.
    let number = (1000..)
        .find(|n: &u32| {
            let room = RoomId::for_nameplate(&n.to_string());
            rank_relays(addrs.iter().map(String::as_str), &room)[0] == addrs[2]
        })
        .unwrap();
    let code = format!("{number}-abacus-zoom-yodel");
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "k.bin", 100_000, 9);
    let mut sender = Watched::spawn({
        let mut cmd = tallow();
        cmd.args(["send", "--relay", &addrs[0], "--no-lan", "--code", &code])
            .arg(&file)
            .stdin(Stdio::null());
        cmd
    });
    sender.wait_for("Waiting for the receiver");
    drop(relays.remove(2));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (r_status, r_err) = receiver(&addrs[1], &code, out.path(), &["--yes"]).finish();
    let (s_status, s_err) = sender.finish();
    assert!(r_status.success() && s_status.success(), "{s_err}\n{r_err}");
    assert_same_file(&file, &out.path().join("k.bin"));

    // And new transfers go on between the two left.
    transfer_via(&addrs[0], &addrs[1], None, 10);
    transfer_via(
        &addrs[1],
        &addrs[0],
        Some(&format!("{}-abacus-zoom-yodel", number + 1)),
        11,
    );
}

#[test]
fn a_forwarded_hello_from_outside_the_fleet_is_refused() {
    use std::io::Read;
    let (_relays, addrs) = start_fleet(1);
    // "TLWF", version 1, an IPv4 client 192.0.2.1:1: a client posing as a
    // member to choose the address its limits count against, from
    // 127.0.0.2 (not a member's address: the members are on 127.0.0.1).
    let mut header = b"TLWF\x01\x04".to_vec();
    header.extend_from_slice(&[192, 0, 2, 1]);
    header.extend_from_slice(&[0; 12]);
    header.extend_from_slice(&1u16.to_be_bytes());
    let mut s = raw_client_from([127, 0, 0, 2], &addrs[0], &header);
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    assert!(text.contains("from outside this relay's fleet"), "{text}");
}
