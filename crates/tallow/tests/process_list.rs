//! Secrets given on the command line do not stay in the process list: a
//! waiting `tallow receive CODE`, `tallow send --code CODE` and `tallow
//! relay --password PW` show `x`s in `/proc/PID/cmdline` where the secret
//! was, and every other argument as typed.

#![cfg(target_os = "linux")]

use std::process::Command;

use tallow_testkit::process::*;

fn cmdline(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read cmdline");
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// `args` with each secret replaced by as many `x`s.
fn masked(args: &[String], secrets: &[&str]) -> Vec<String> {
    args.iter()
        .map(|a| {
            let mut a = a.clone();
            for s in secrets {
                a = a.replace(s, &"x".repeat(s.len()));
            }
            a
        })
        .collect()
}

/// The arguments after the program path, as strings.
fn typed(cmd: &Command) -> Vec<String> {
    cmd.get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// No secret in `shown`, and every other argument as `typed`.
fn assert_hidden(shown: &[String], typed: &[String], secrets: &[&str]) {
    let joined = shown.join(" ");
    for s in secrets {
        assert!(!joined.contains(s), "{s:?} in the process list: {joined}");
    }
    assert_eq!(
        shown.get(1..),
        Some(&masked(typed, secrets)[..]),
        "{joined}"
    );
}

#[test]
fn a_waiting_receiver_shows_no_code_in_the_process_list() {
    let relay = Relay::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let code = "4711-abacus-zoom-yodel";
    let mut cmd = tallow();
    cmd.args([
        "receive",
        "--yes",
        "--no-lan",
        "--relay",
        &relay.addr,
        "--out",
    ])
    .arg(out.path())
    .arg(code);
    let typed = typed(&cmd);
    let mut r = Watched::spawn(cmd);
    r.wait_for("Waiting for the sender");
    let shown = cmdline(r.pid());
    assert_hidden(&shown, &typed, &[code]);
    assert!(shown.contains(&"receive".to_owned()));
    assert!(shown.contains(&"x".repeat(code.len())));
}

#[test]
fn relay_passwords_and_send_codes_are_hidden_in_both_forms() {
    let password = "correct-horse-battery";
    let relay = Relay::start(&["--password", password]);
    // The relay's own `--password`.
    let relay_args = cmdline(relay.pid());
    assert!(
        !relay_args.join(" ").contains(password),
        "relay: {relay_args:?}"
    );
    assert!(
        relay_args.contains(&"--listen".to_owned()),
        "{relay_args:?}"
    );

    // `--relay-password=PW` on a waiting receiver.
    let out = tempfile::tempdir().unwrap();
    let mut cmd = tallow();
    cmd.args(["receive", "--yes", "--no-lan", "--relay", &relay.addr])
        .arg(format!("--relay-password={password}"))
        .arg("--out")
        .arg(out.path())
        .arg("4712-abacus-zoom-yodel");
    let typed_receive = typed(&cmd);
    let mut r = Watched::spawn(cmd);
    // Only a correct password gets this far.
    r.wait_for("Waiting for the sender");
    assert_hidden(
        &cmdline(r.pid()),
        &typed_receive,
        &[password, "4712-abacus-zoom-yodel"],
    );

    // `--code CODE` and `--relay-password PW` on a waiting sender.
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "f.bin", 10, 1);
    let code = "4713-abacus-zoom-yodel";
    let mut cmd = tallow();
    cmd.args(["send", "--no-lan", "--relay", &relay.addr])
        .args(["--relay-password", password, "--code", code])
        .arg(&file);
    let typed_send = typed(&cmd);
    let mut s = Watched::spawn(cmd);
    s.wait_for(code); // "Code: …" once the relay has it
    assert_hidden(&cmdline(s.pid()), &typed_send, &[password, code]);

    // A `--text` message, in both forms.
    for form in [
        vec!["--text", "the safe is 4 8 15"],
        vec!["--text=the safe is 4 8 15"],
    ] {
        let code = "4714-abacus-zoom-yodel";
        let mut cmd = tallow();
        cmd.args(["send", "--no-lan", "--relay", &relay.addr])
            .args(["--relay-password", password, "--code", code])
            .args(&form);
        let typed_text = typed(&cmd);
        let mut t = Watched::spawn(cmd);
        t.wait_for(code);
        assert_hidden(
            &cmdline(t.pid()),
            &typed_text,
            &[password, code, "the safe is 4 8 15"],
        );
    }
}
