//! Rendezvous through a real relay process: code numbers the relay hands
//! out, and what squatters, racers and mistyped numbers get.

use std::net::TcpStream;
use std::time::Duration;

use tallow_crypto::RoomId;
use tallow_protocol::rendezvous::{RelayHello, RelayStatus};
use tallow_protocol::Role;
use tallow_testkit::process::*;

/// A raw client from source address `from`, saying `hello`.
fn client_from(from: [u8; 4], relay: &str, hello: RelayHello) -> TcpStream {
    raw_client_from(from, relay, &hello.encode_with_password(b"").unwrap())
}

fn nameplate(code: &str) -> &str {
    code.split('-').next().unwrap_or_default()
}

#[test]
fn the_relay_hands_out_the_shortest_free_numbers_and_receivers_join_them() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let first_file = random_file(src.path(), "one.bin", 300_000, 1);
    let second_file = random_file(src.path(), "two.bin", 1000, 2);
    let (first, first_code) =
        allocating_sender(&relay.addr, std::slice::from_ref(&first_file), &[]);
    let (second, second_code) =
        allocating_sender(&relay.addr, std::slice::from_ref(&second_file), &[]);
    // A quiet relay: the shortest numbers, in turn.
    assert_eq!(nameplate(&first_code), "1", "{first_code}");
    assert_eq!(nameplate(&second_code), "2", "{second_code}");
    assert_eq!(
        tallow_crypto::CodePhrase::parse(&first_code)
            .unwrap()
            .word_count(),
        3
    );
    for (sender, code, file) in [
        (second, second_code, second_file),
        (first, first_code, first_file),
    ] {
        let out = tempfile::tempdir().unwrap();
        let (r_status, r_err) = receiver(&relay.addr, &code, out.path(), &["--yes"]).finish();
        let (s_status, s_err) = sender.finish();
        assert!(r_status.success() && s_status.success(), "{s_err}\n{r_err}");
        assert!(
            s_err.contains(&format!("tallow receive --relay {} {code}", relay.addr)),
            "{s_err}"
        );
        assert_same_file(&file, &out.path().join(file.file_name().unwrap()));
    }
    // Both done, but their numbers rest a while: a late receiver of an old
    // code must not land in the next sender's room.
    std::thread::sleep(Duration::from_millis(200));
    let (third, code) = allocating_sender(&relay.addr, &[src.path().join("two.bin")], &[]);
    assert_eq!(nameplate(&code), "3", "{code}");
    drop(third);
}

#[test]
fn a_squatter_holding_rooms_from_several_addresses_does_not_stop_a_real_transfer() {
    let relay = Relay::start(&["--max-waiting-per-ip", "4"]);
    // Eight addresses each try to hold 25 rooms, numbers 1-200, half as
    // senders with codes of their own (held long), half as receivers.
    let mut held = Vec::new();
    let mut refused = 0;
    let mut squatted = Vec::new();
    for host in 2..10u8 {
        for i in 0..25u32 {
            let number = (u32::from(host) - 2) * 25 + i + 1;
            let role = if i % 2 == 0 {
                Role::Sender
            } else {
                Role::Receiver
            };
            let room = RoomId::for_nameplate(&number.to_string());
            let mut s = client_from(
                [127, 0, 0, host],
                &relay.addr,
                RelayHello::Room { role, room },
            );
            match read_relay_status(&mut s) {
                RelayStatus::Waiting => {
                    squatted.push(number);
                    held.push(s);
                }
                RelayStatus::Refused(why) => {
                    assert!(
                        why.contains("too many transfers waiting from your address"),
                        "{why}"
                    );
                    refused += 1;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(held.len(), 8 * 4, "each address holds its limit");
    assert_eq!(refused, 8 * 21);
    // A real sender gets a number nobody holds, and its receiver gets the
    // files.
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "real.bin", 200_000, 3);
    let (sender, code) = allocating_sender(&relay.addr, std::slice::from_ref(&file), &[]);
    let number: u32 = nameplate(&code).parse().unwrap();
    assert!(
        !squatted.contains(&number),
        "{number} was held by the squatter"
    );
    let out = tempfile::tempdir().unwrap();
    let (r_status, r_err) = receiver(&relay.addr, &code, out.path(), &["--yes"]).finish();
    let (s_status, s_err) = sender.finish();
    assert!(r_status.success() && s_status.success(), "{s_err}\n{r_err}");
    assert_same_file(&file, &out.path().join("real.bin"));
    drop(held);
}

#[test]
fn a_receiver_whose_number_nobody_sends_with_is_told_there_is_no_such_transfer() {
    let relay = Relay::start(&["--receiver-first-wait", "1"]);
    let out = tempfile::tempdir().unwrap();
    let (status, err) =
        receiver(&relay.addr, "58-abacus-zoom-yodel", out.path(), &["--yes"]).finish();
    assert_eq!(status.code(), Some(7), "{err}");
    assert!(err.contains("no such transfer on the relay"), "{err}");
    assert!(err.contains("check the number"), "{err}");
    assert!(list_dir(out.path()).is_empty());
}

#[test]
fn a_receiver_finding_its_room_taken_is_told_so_and_not_that_its_code_is_wrong() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "t.bin", 1000, 4);
    let (sender, code) = allocating_sender(&relay.addr, &[file], &[]);
    // Someone joins the sender's room first (and stays silent).
    let room = RoomId::for_nameplate(nameplate(&code));
    let mut racer = client_from(
        [127, 0, 0, 5],
        &relay.addr,
        RelayHello::Room {
            role: Role::Receiver,
            room,
        },
    );
    assert_paired(&mut racer);
    let out = tempfile::tempdir().unwrap();
    let (status, err) = receiver(&relay.addr, &code, out.path(), &["--yes"]).finish();
    assert_eq!(status.code(), Some(7), "{err}");
    assert!(
        err.contains("this code's number is taken on the relay"),
        "{err}"
    );
    assert!(!err.contains("different code"), "{err}");
    assert!(list_dir(out.path()).is_empty());
    drop(racer);
    let (s_status, _) = sender.finish();
    assert!(!s_status.success());
}
