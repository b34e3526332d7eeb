//! Real processes on 127.0.0.1: relay, sender and receiver transfer files.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tallow_testkit::process::*;

const CODE: &str = "4711-abacus-zoom-yodel";
const CHUNK: u64 = 1024 * 1024;

#[test]
fn files_of_1kib_10mib_and_100mib_arrive_byte_identical() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = vec![
        random_file(src.path(), "one-kib.bin", 1024, 1),
        random_file(src.path(), "ten-mib.bin", 10 << 20, 2),
        random_file(src.path(), "hundred-mib.bin", 100 << 20, 3),
    ];
    let ((s, s_err), (r, r_err)) = transfer(&relay.addr, CODE, &files, out.path(), &["--yes"]);
    assert!(s.success(), "sender failed: {s_err}");
    assert!(r.success(), "receiver failed: {r_err}");
    for f in &files {
        assert_same_file(f, &out.path().join(f.file_name().unwrap()));
    }
    assert_eq!(
        list_dir(out.path()),
        ["hundred-mib.bin", "one-kib.bin", "ten-mib.bin"],
        "no partial files left behind"
    );
    assert!(s_err.contains("verified"), "{s_err}");
}

#[test]
fn sizes_around_the_chunk_boundary_arrive_byte_identical() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let sizes = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 17];
    let files: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| random_file(src.path(), &format!("size-{size}"), size, i as u64))
        .collect();
    let ((s, s_err), (r, r_err)) = transfer(&relay.addr, CODE, &files, out.path(), &["--yes"]);
    assert!(
        s.success() && r.success(),
        "sender: {s_err}\nreceiver: {r_err}"
    );
    for f in &files {
        assert_same_file(f, &out.path().join(f.file_name().unwrap()));
    }
}

#[test]
fn names_with_spaces_and_unicode_survive() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = vec![random_file(src.path(), "ünïcødé résumé 2026.txt", 5000, 9)];
    let ((s, s_err), (r, r_err)) = transfer(&relay.addr, CODE, &files, out.path(), &["--yes"]);
    assert!(
        s.success() && r.success(),
        "sender: {s_err}\nreceiver: {r_err}"
    );
    assert_same_file(&files[0], &out.path().join("ünïcødé résumé 2026.txt"));
}

#[test]
fn wrong_code_fails_on_both_sides_and_writes_nothing() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = vec![random_file(src.path(), "secret.bin", 4096, 1)];
    let s = sender(&relay.addr, "4711-abacus-zoom-yodel", &files, &[]);
    let r = receiver(
        &relay.addr,
        "4711-abacus-zoom-yodle",
        out.path(),
        &["--yes"],
    );
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(!s_status.success(), "sender must fail");
    assert!(!r_status.success(), "receiver must fail");
    assert!(
        s_err.contains("different code"),
        "sender names the cause: {s_err}"
    );
    assert!(
        r_err.contains("code does not match"),
        "receiver names the cause: {r_err}"
    );
    assert!(
        !r_err.contains("secret.bin"),
        "no file name before confirmation"
    );
    assert!(list_dir(out.path()).is_empty(), "nothing written");
}

#[test]
fn existing_file_is_kept_without_overwrite_and_replaced_with_it() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = vec![random_file(src.path(), "report.pdf", 70_000, 5)];
    let existing = out.path().join("report.pdf");
    fs::write(&existing, b"precious local version").unwrap();

    let ((s, s_err), (r, r_err)) = transfer(&relay.addr, CODE, &files, out.path(), &["--yes"]);
    assert!(!r.success(), "receiver must refuse");
    assert!(
        r_err.contains("already exists") && r_err.contains("--overwrite"),
        "{r_err}"
    );
    assert!(!s.success(), "sender must learn of the refusal");
    // The sender hears that it was declined, not what the receiver has.
    assert!(
        s_err.contains("declined")
            && !s_err.contains("already exists")
            && !s_err.contains("--overwrite"),
        "{s_err}"
    );
    assert_eq!(fs::read(&existing).unwrap(), b"precious local version");
    assert_eq!(list_dir(out.path()), ["report.pdf"]);

    let ((s, s_err), (r, r_err)) = transfer(
        &relay.addr,
        CODE,
        &files,
        out.path(),
        &["--yes", "--overwrite"],
    );
    assert!(
        s.success() && r.success(),
        "sender: {s_err}\nreceiver: {r_err}"
    );
    assert_same_file(&files[0], &existing);
}

#[test]
fn receiver_without_a_terminal_or_yes_stops_before_spending_the_senders_try() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = vec![random_file(src.path(), "a.bin", 100, 5)];
    let s = sender(&relay.addr, CODE, &files, &[]);
    let (r, r_err) = receiver(&relay.addr, CODE, out.path(), &[]).finish();
    assert_eq!(r.code(), Some(2), "a usage error: {r_err}");
    assert!(
        r_err.contains("--yes") && !r_err.contains("Connected"),
        "{r_err}"
    );
    assert!(list_dir(out.path()).is_empty());
    // It never connected: the sender is still waiting, and a second try
    // with --yes gets the file.
    let (r, r_err) = receiver(&relay.addr, CODE, out.path(), &["--yes"]).finish();
    let (s, s_err) = s.finish();
    assert!(r.success() && s.success(), "{r_err}\n{s_err}");
    assert_same_file(&files[0], &out.path().join("a.bin"));
}

/// `tallow send|receive --verify` through `relay`, answering `answer` to
/// the question (nothing: the question stays open; its stdin is returned).
fn verifying(
    side: &str,
    relay: &Relay,
    path: &Path,
    answer: &[u8],
) -> (Running, std::process::ChildStdin) {
    let path = path.to_string_lossy().into_owned();
    let mut cmd = tallow();
    cmd.args([side, "--no-lan", "--relay", &relay.addr, "--verify"]);
    match side {
        "send" => cmd.args(["--code", CODE, &path]),
        _ => cmd.args(["--out", &path, "--yes", CODE]),
    };
    cmd.stdin(Stdio::piped());
    let mut running = Running::spawn(cmd);
    let mut stdin = running.child.stdin.take().unwrap();
    stdin.write_all(answer).unwrap();
    (running, stdin)
}

#[test]
fn verify_shows_the_same_string_on_both_sides() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "v.bin", 1000, 5);
    let (s, _s_in) = verifying("send", &relay, &file, b"y\n");
    let (r, _r_in) = verifying("receive", &relay, out.path(), b"y\n");
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(
        s_status.success() && r_status.success(),
        "sender: {s_err}\nreceiver: {r_err}"
    );
    let sas = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("Verification string: "))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no verification string in {text}"))
    };
    assert_eq!(sas(&s_err), sas(&r_err));
    assert_eq!(sas(&s_err).len(), 11, "nine digits in three groups");
    // The command the sender shows asks the receiver to compare too.
    assert!(s_err.contains(&format!("--verify {CODE}")), "{s_err}");
    assert_same_file(&file, &out.path().join("v.bin"));

    // A receiver run without --verify still shows the string, so the
    // sender's question can be answered (it used to show nothing and wait).
    let out = tempfile::tempdir().unwrap();
    let (s, _s_in) = verifying("send", &relay, &file, b"y\n");
    let r = receiver(&relay.addr, CODE, out.path(), &["--yes"]);
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(s_status.success() && r_status.success(), "{s_err}\n{r_err}");
    assert_eq!(sas(&s_err), sas(&r_err));
}

#[test]
fn a_no_to_verify_ends_the_other_sides_question_too() {
    // Issue 18.11: whoever says "they differ" first, the other side's
    // question ends at once (its decision deadline is ten minutes) with
    // the reason, and nothing is written.
    for no_from in ["receive", "send"] {
        let relay = Relay::start(&[]);
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let file = random_file(src.path(), "v.bin", 1000, 6);
        let answer = |side: &str| if side == no_from { &b"n\n"[..] } else { b"" };
        let (s, _s_in) = verifying("send", &relay, &file, answer("send"));
        let (r, _r_in) = verifying("receive", &relay, out.path(), answer("receive"));
        let (r_status, r_err, _) = r.finish_within(Duration::from_secs(60));
        let (s_status, s_err, _) = s.finish_within(Duration::from_secs(60));
        let (asked, other) = if no_from == "send" {
            ((r_status, &r_err), &s_err)
        } else {
            ((s_status, &s_err), &r_err)
        };
        assert_eq!(asked.0.code(), Some(5), "{no_from}: {}\n{other}", asked.1);
        assert!(
            asked.1.contains("said the verification strings differ"),
            "{no_from}: {}",
            asked.1
        );
        assert!(other.contains("verification strings differ"), "{other}");
        assert!(list_dir(out.path()).is_empty());
    }
}

#[test]
fn missing_or_unreachable_relay_and_bad_input_get_one_clear_sentence() {
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "f.bin", 10, 1);
    let run = |args: &[&str]| {
        let out = tallow()
            .args(args)
            .stdin(Stdio::null())
            .output_within()
            .expect("run tallow");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let f = file.to_str().unwrap();
    let cases: [(&[&str], &[&str]); 4] = [
        (&["send", "--no-lan", f], &["--relay", "TALLOW_RELAY"]),
        (
            &["send", "--no-lan", "--relay", "127.0.0.1:1", f],
            &[
                "could not reach the relay",
                "the relay address comes from --relay",
            ],
        ),
        (
            &[
                "send",
                "--no-lan",
                "--relay",
                "127.0.0.1:1",
                "/nonexistent/file",
            ],
            &["/nonexistent/file"],
        ),
        (
            &[
                "receive",
                "--no-lan",
                "--relay",
                "127.0.0.1:1",
                "not-a-code",
            ],
            &["must start with digits"],
        ),
    ];
    for (args, expected) in cases {
        let (status, err) = run(args);
        assert!(!status.success(), "{args:?} must fail");
        for e in expected {
            assert!(err.contains(e), "{args:?}: {err}");
        }
        let last = err.trim().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("tallow: "),
            "error on the last line: {err}"
        );
        assert_eq!(err.matches("tallow: ").count(), 1, "one error line: {err}");
        assert!(!err.contains("panicked") && !err.contains("Os {"), "{err}");
        assert!(
            err.matches("(os error").count() <= 1,
            "each cause said once: {err}"
        );
    }
}

#[test]
fn weak_custom_code_gets_a_warning() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = vec![random_file(src.path(), "w.bin", 10, 1)];
    let ((s, s_err), (r, r_err)) = transfer(&relay.addr, "12-cat", &files, out.path(), &["--yes"]);
    assert!(s.success() && r.success());
    assert!(
        s_err.contains("warning: this code is easier to guess"),
        "{s_err}"
    );
    // Ten bytes take no measurable time: no "in 0.0 s (0 B/s)" on either
    // side.
    for said in [&s_err, &r_err] {
        assert!(
            !said.contains("0 B/s") && !said.contains("in 0.0 s"),
            "{said}"
        );
    }
}

#[test]
fn help_wraps_at_words_to_the_terminal_width() {
    let help = |cmd: &[&str], columns: &str| {
        let out = tallow()
            .args(cmd)
            .env("COLUMNS", columns)
            .output_within()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for cmd in [
        &["--help"][..],
        &["send", "--help"],
        &["receive", "--help"],
        &["relay", "--help"],
        &["config", "--help"],
        &["completions", "--help"],
        &["man", "--help"],
    ] {
        let narrow = help(cmd, "60");
        for line in narrow.lines() {
            assert!(line.chars().count() <= 60, "wider than 60: {line:?}");
        }
        // The examples fit: none is broken into what looks like two
        // commands.
        let examples = &narrow[narrow.find("Example").expect("examples")..];
        for line in examples.lines().skip(1) {
            let line = line.trim();
            assert!(
                line.is_empty()
                    || line.starts_with("tallow ")
                    || line.starts_with('#')
                    || line.starts_with("man ")
                    || line.starts_with("cd ")
                    || line.starts_with("mkdir "),
                "{cmd:?}: an example broken at 60 columns: {line:?}\n{narrow}"
            );
        }
        // Broken only between words: the words are those of a wide
        // terminal's help, none cut in two.
        let wide = help(cmd, "1000");
        assert_eq!(
            narrow.split_whitespace().collect::<Vec<_>>(),
            wide.split_whitespace().collect::<Vec<_>>(),
            "{cmd:?} at 60 columns:\n{narrow}"
        );
    }
}

#[test]
fn help_shows_examples_for_every_command() {
    for cmd in [
        &["--help"][..],
        &["send", "--help"],
        &["receive", "--help"],
        &["relay", "--help"],
    ] {
        let out = Command::new(binary()).args(cmd).output_within().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("Example"),
            "{cmd:?}: {text}"
        );
    }
}

#[test]
fn exit_codes_tell_failures_apart() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = vec![random_file(src.path(), "e.bin", 100, 1)];

    // 3: wrong code, on both sides.
    let s = sender(&relay.addr, "5555-abacus-zoom-yodel", &files, &[]);
    let r = receiver(
        &relay.addr,
        "5555-abacus-zoom-zebra",
        out.path(),
        &["--yes"],
    );
    assert_eq!(r.finish().0.code(), Some(3));
    assert_eq!(s.finish().0.code(), Some(3));

    // 6 on the receiver (the file exists), 5 on the sender (declined).
    std::fs::write(out.path().join("e.bin"), b"mine").unwrap();
    let ((s, _), (r, _)) = transfer(&relay.addr, CODE, &files, out.path(), &["--yes"]);
    assert_eq!(r.code(), Some(6));
    assert_eq!(s.code(), Some(5));

    let run = |args: &[&str]| {
        tallow()
            .args(args)
            .stdin(Stdio::null())
            .output_within()
            .unwrap()
            .status
            .code()
    };
    let f = files[0].to_str().unwrap();
    // 7: the relay cannot be reached.
    assert_eq!(
        run(&["send", "--no-lan", "--relay", "127.0.0.1:1", f]),
        Some(7)
    );
    // 2: usage: no route at all, a malformed code, unknown flag.
    assert_eq!(run(&["send", "--no-lan", f]), Some(2));
    assert_eq!(
        run(&[
            "receive",
            "--no-lan",
            "--relay",
            "127.0.0.1:1",
            "words-only"
        ]),
        Some(2)
    );
    assert_eq!(run(&["send", "--frobnicate"]), Some(2));
}

#[test]
fn the_code_can_come_from_the_environment_and_typos_are_pointed_out() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "env.bin", 1000, 1);
    let mut s = tallow();
    s.args(["send", "--no-lan", "--relay", &relay.addr])
        .arg(&file)
        .env("TALLOW_CODE", "6789-abacus-zoom-yodel")
        .stdin(Stdio::null());
    let s = Running::spawn(s);
    let mut r = tallow();
    r.args([
        "receive",
        "--no-lan",
        "--yes",
        "--relay",
        &relay.addr,
        "--out",
    ])
    .arg(out.path())
    .env("TALLOW_CODE", "6789 ABACUS zoom yodel")
    .stdin(Stdio::null());
    let (r_status, r_err) = Running::spawn(r).finish();
    let (s_status, s_err) = s.finish();
    assert!(
        s_status.success() && r_status.success(),
        "sender: {s_err}\nreceiver: {r_err}"
    );
    assert!(
        s_err.contains("Code: 6789-abacus-zoom-yodel"),
        "the code from TALLOW_CODE: {s_err}"
    );
    assert_same_file(&file, &out.path().join("env.bin"));

    // The words as separate arguments (no quotes) are one code.
    let s = sender(
        &relay.addr,
        "6790-abacus-zoom-yodel",
        std::slice::from_ref(&file),
        &[],
    );
    let unquoted = tempfile::tempdir().unwrap();
    let r = tallow()
        .args([
            "receive",
            "--no-lan",
            "--yes",
            "--relay",
            &relay.addr,
            "--out",
        ])
        .arg(unquoted.path())
        .args(["6790", "abacus", "zoom", "yodel"])
        .stdin(Stdio::null())
        .output_within()
        .unwrap();
    let (s_status, s_err) = s.finish();
    assert!(
        r.status.success() && s_status.success(),
        "{}\n{s_err}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_same_file(&file, &unquoted.path().join("env.bin"));

    let typo = tallow()
        .args([
            "receive",
            "--no-lan",
            "--relay",
            "127.0.0.1:1",
            "6789-abacsu-zoom-yodel",
        ])
        .stdin(Stdio::null())
        .output_within()
        .unwrap();
    let err = String::from_utf8_lossy(&typo.stderr);
    assert!(err.contains("did you mean \"abacus\""), "{err}");
}

#[test]
fn longer_codes_completions_and_the_manual_page() {
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "w.bin", 10, 1);
    let relay = Relay::start(&["--pair-timeout", "1"]);
    let out = tallow()
        .args(["send", "--no-lan", "--words", "6", "--relay", &relay.addr])
        .arg(&file)
        .stdin(Stdio::null())
        .output_within()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let code = err
        .lines()
        .find_map(|l| l.strip_prefix("Code: "))
        .unwrap_or_else(|| panic!("{err}"));
    // Counted as the list has them: "felt-tip" is one word (splitting on
    // '-' made this test fail for about one code in 300).
    let words = tallow_crypto::CodePhrase::parse(code).unwrap().word_count();
    assert_eq!(words, 6, "{code}");

    let qr = tallow()
        .args(["send", "--no-lan", "--qr", "--relay", &relay.addr])
        .arg(&file)
        .stdin(Stdio::null())
        .output_within()
        .unwrap();
    let err = String::from_utf8_lossy(&qr.stderr);
    assert!(
        err.contains('█') && err.contains('▀'),
        "a QR code in block characters: {err}"
    );

    for shell in ["bash", "zsh", "fish"] {
        let out = tallow()
            .args(["completions", shell])
            .output_within()
            .unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("receive"));
    }
    // A reader that stops early (`| head`) is not an error, and no panic.
    let mut early = tallow()
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(early.stdout.take());
    let early = output_of(early).unwrap();
    let err = String::from_utf8_lossy(&early.stderr);
    assert!(early.status.success() && !err.contains("panicked"), "{err}");

    let man = tallow().arg("man").output_within().unwrap();
    assert!(man.status.success() && String::from_utf8_lossy(&man.stdout).contains(".TH tallow"));
    // Every page the top page points to exists.
    let pages = tempfile::tempdir().unwrap();
    let wrote = tallow()
        .args(["man", "--dir"])
        .arg(pages.path())
        .output_within()
        .unwrap();
    assert!(wrote.status.success());
    let top = String::from_utf8_lossy(&man.stdout);
    for command in ["send", "receive", "relay", "config"] {
        assert!(top.contains(&format!("tallow\\-{command}(1)")), "{top}");
        let page = fs::read_to_string(pages.path().join(format!("tallow-{command}.1"))).unwrap();
        assert!(page.contains(&format!(".TH tallow-{command}")), "{page}");
    }
    let receive = tallow().args(["man", "receive"]).output_within().unwrap();
    let receive = String::from_utf8_lossy(&receive.stdout);
    assert!(
        receive.contains("\\-\\-merge") && receive.contains("\\-\\-allow\\-hidden"),
        "{receive}"
    );
    // An option's text ends before the note on its environment variable.
    assert!(
        receive.contains(
            "once it has verified.\n.RS\nMay also be specified with the \\fBTALLOW_OUT\\fR"
        ),
        "{receive}"
    );
}

#[test]
fn a_progress_bar_on_a_terminal_and_none_in_a_pipe() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "bar.bin", 40 << 20, 1);
    let s = sender(
        &relay.addr,
        CODE,
        std::slice::from_ref(&file),
        &["--compress", "none"],
    );
    // Under script(1) the receiver's stderr is a terminal.
    let line = receive_line(&relay.addr, CODE, out.path(), "--yes");
    let (status, shown) = on_terminal(&line, b"", Duration::ZERO);
    let (s_status, s_err) = s.finish();
    assert!(status.success() && s_status.success(), "{shown}\n{s_err}");
    assert!(
        shown.contains("% [") && shown.contains("ETA") && shown.contains("MiB/s"),
        "{shown}"
    );
    assert!(
        shown.contains("bar.bin (1 of 1)"),
        "the current file: {shown}"
    );
    assert!(
        shown.contains("verified: Merkle root and BLAKE3 match"),
        "{shown}"
    );
    // The sender's stderr was a pipe: no bar, just the summary.
    assert!(
        !s_err.contains("ETA") && s_err.contains("Sent 1 file"),
        "{s_err}"
    );

    // On a narrow terminal the line leaves out the bar and the average
    // instead of wrapping ("… E" / "TA 4s").
    let out = tempfile::tempdir().unwrap();
    let s = sender(
        &relay.addr,
        CODE,
        std::slice::from_ref(&file),
        &["--compress", "none"],
    );
    let line = format!(
        "stty rows 24 cols 60; {}",
        receive_line(&relay.addr, CODE, out.path(), "--yes")
    );
    let (status, shown) = on_terminal(&line, b"", Duration::ZERO);
    let (s_status, s_err) = s.finish();
    assert!(status.success() && s_status.success(), "{shown}\n{s_err}");
    assert!(
        shown.contains("ETA") && !shown.contains("% [") && !shown.contains("(avg"),
        "{shown}"
    );
}

/// A sender stopped with Ctrl-C while the receiver reads the offer: the
/// receiver's question ends at once with the reason (it does not wait for
/// an answer that no longer matters), and the sender says nothing was sent.
#[test]
fn a_sender_cancelling_ends_the_receivers_question() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "never.bin", 5000, 9);
    let mut cmd = tallow();
    cmd.args(["send", "--no-lan", "--relay", &relay.addr, "--code", CODE])
        .arg(&file)
        .stdin(Stdio::null());
    let mut s = Watched::spawn(cmd);
    let canceller = std::thread::spawn(move || {
        s.wait_for("waiting for the receiver to accept");
        signal(s.pid(), "-INT");
        s.finish()
    });
    // The answer would come 8 s later: the question must be over by then.
    let line = receive_line(&relay.addr, CODE, out.path(), "");
    let (status, shown) = on_terminal(&line, b"y\n", Duration::from_secs(8));
    let (s_status, s_err) = canceller.join().unwrap();
    assert_eq!(s_status.code(), Some(130), "{s_err}");
    assert!(
        s_err.contains("before the transfer began; nothing was transferred"),
        "{s_err}"
    );
    // The "y" typed 8 s later is never read: the receiver ends with the
    // sender's reason (the question may not even be asked when the abort
    // is there before the prompt is drawn).
    assert_eq!(status.code(), Some(5), "{shown}");
    assert!(
        shown.contains("Offer: 1 file")
            && shown.contains("the sender stopped the transfer: it was cancelled (Ctrl-C)")
            && !shown.contains("Received"),
        "{shown}"
    );
    assert!(list_dir(out.path()).is_empty());
}

/// Issue 18.10: a code shorter than a generated one is questioned before
/// connecting, so a forgotten word does not spend the sender's try.
#[test]
fn a_code_with_too_few_or_unknown_words_is_questioned_before_connecting() {
    let out = tempfile::tempdir().unwrap();
    // Nothing listens there: connecting would say so.
    let line = receive_line("127.0.0.1:1", "4711-abacus-zoom", out.path(), "--yes");
    let (status, shown) = on_terminal_when(&line, "Is it complete?", b"n\n");
    assert_eq!(status.code(), Some(2), "{shown}");
    assert!(
        shown.contains(
            "This code has 2 words after the number; a generated one has 3. Is it complete?"
        ) && shown.contains("code not tried")
            && !shown.contains("could not reach"),
        "{shown}"
    );
    // A word with no list word near it is named.
    let line = receive_line(
        "127.0.0.1:1",
        "4711-abacus-zoom-qqqqqq",
        out.path(),
        "--yes",
    );
    let (status, shown) = on_terminal_when(&line, "Use the code as typed?", b"n\n");
    assert_eq!(status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("\"qqqqqq\" is not in the word list") && !shown.contains("word after"),
        "{shown}"
    );
    // Without a terminal there is nobody to ask: it is tried, after a
    // warning that says what a missing word costs.
    let (status, err) =
        receiver("127.0.0.1:1", "4711-abacus-zoom", out.path(), &["--yes"]).finish();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("warning: this code has 2 words after the number and a generated one has 3")
            && err.contains("could not reach"),
        "{err}"
    );
    // A full generated code is not questioned.
    let line = receive_line("127.0.0.1:1", CODE, out.path(), "--yes");
    let (_, shown) = on_terminal(&line, b"", Duration::ZERO);
    assert!(
        !shown.contains("Is it complete") && shown.contains("could not reach"),
        "{shown}"
    );
}

/// Issue 18.10: asked for the code on a terminal, Tab completes each word.
#[test]
fn tab_completes_the_code_words_when_asked_for_the_code() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "typed.bin", 5000, 8);
    let s = sender(&relay.addr, CODE, std::slice::from_ref(&file), &[]);
    // No code on the command line: it is asked for. "abac" and "yod" have
    // one word each; "zoo" begins several and rings the bell, then "m" is
    // typed.
    let line = receive_line(&relay.addr, "", out.path(), "--yes");
    let typing = b"4711-abac\tzoo\tm-yod\t\r";
    let (status, shown) = on_terminal(&line, typing, Duration::from_millis(1500));
    let (s_status, s_err) = s.finish();
    assert!(status.success() && s_status.success(), "{shown}\n{s_err}");
    assert!(shown.contains("Code (Tab completes a word)"), "{shown}");
    assert!(shown.contains("4711-abacus-zoom-yodel-"), "{shown}");
    assert!(
        shown.contains('\u{7}'),
        "no bell for the ambiguous \"zoo\": {shown:?}"
    );
    // …and the words it could be are listed, as magic-wormhole does.
    assert!(
        shown.contains("zookeeper  zoologist  zoology  zoom"),
        "{shown}"
    );
    assert_same_file(&file, &out.path().join("typed.bin"));
}

/// An Enter pressed while the receiver waits (it seemed stuck) is not the
/// answer to the offer that comes later: typed-ahead keys are dropped
/// before each question.
#[test]
fn keys_typed_while_waiting_do_not_answer_the_next_question() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "later.bin", 5000, 9);
    // The sender comes once the receiver waits and Enter was pressed.
    let sending = {
        let (addr, file) = (relay.addr.clone(), file.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            sender(&addr, CODE, &[file], &[]).finish()
        })
    };
    let line = receive_line(&relay.addr, CODE, out.path(), "");
    let (status, shown) = on_terminal_answering(
        &line,
        &[("Waiting for the sender", b"\n"), ("Accept?", b"y\n")],
    );
    let (s_status, s_err) = sending.join().unwrap();
    assert!(status.success() && s_status.success(), "{shown}\n{s_err}");
    assert!(!shown.contains("declined"), "{shown}");
    assert_same_file(&file, &out.path().join("later.bin"));
}

/// The receiver takes its time to answer; the sender's duration and speed
/// count from the acceptance, not from the offer.
#[test]
fn the_senders_clock_starts_when_the_receiver_accepts() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "slow-answer.bin", 1 << 20, 3);
    let s = tallow()
        .args([
            "send",
            "--json",
            "--no-lan",
            "--relay",
            &relay.addr,
            "--code",
            CODE,
        ])
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let think = Duration::from_secs(4);
    let line = receive_line(&relay.addr, CODE, out.path(), "");
    let (status, shown) = on_terminal(&line, b"y\n", think);
    let s = output_of(s).unwrap();
    let (events, said) = (
        String::from_utf8_lossy(&s.stdout),
        String::from_utf8_lossy(&s.stderr),
    );
    assert!(status.success() && s.status.success(), "{shown}\n{said}");
    assert!(
        said.contains("waiting for the receiver to accept"),
        "{said}"
    );
    let accepted = events
        .find("\"event\":\"accepted\"")
        .expect("accepted event");
    let first_progress = events.find("\"event\":\"progress\"").expect("progress");
    assert!(accepted < first_progress, "{events}");
    let seconds: f64 = events
        .split("\"seconds\":")
        .nth(1)
        .and_then(|t| t.split([',', '}']).next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {events}"));
    assert!(
        seconds < think.as_secs_f64(),
        "the {think:?} the receiver spent deciding counted: {seconds} s"
    );
}

/// On a terminal, a word that looks mistyped is offered corrected before
/// anything connects, so the sender's one try is not spent on a typo.
#[test]
fn a_mistyped_word_is_corrected_on_a_terminal_before_connecting() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "typo.bin", 1000, 4);
    let s = sender(
        &relay.addr,
        "6789-abacus-zoom-yodel",
        std::slice::from_ref(&file),
        &[],
    );
    let line = receive_line(&relay.addr, "6789-abacsu-zoom-yodel", out.path(), "");
    // "y": use the suggested word; "y": accept the offer.
    let (_, shown) = on_terminal_answering(&line, &[("instead?", b"y\n"), ("Accept?", b"y\n")]);
    let (s_status, s_err) = s.finish();
    assert!(s_status.success(), "{shown}\n{s_err}");
    assert!(
        shown.contains("\"abacsu\" is not in the word list. Use \"abacus\" instead?"),
        "{shown}"
    );
    assert_same_file(&file, &out.path().join("typo.bin"));
    // "n" to the correction, then Enter: the code is not tried, and the
    // sender's try is not spent.
    let code = "6790-abacus-zoom-yodel";
    let s = sender(&relay.addr, code, std::slice::from_ref(&file), &[]);
    let line = receive_line(&relay.addr, "6790-abacsu-zoom-yodel", out.path(), "");
    let (status, shown) = on_terminal_answering(
        &line,
        &[("instead?", b"n\n"), ("Use the code as typed?", b"\n")],
    );
    assert!(!status.success(), "{shown}");
    assert!(
        shown.contains("Use the code as typed?") && shown.contains("code not tried"),
        "{shown}"
    );
    let again = tempfile::tempdir().unwrap();
    let r = receiver(&relay.addr, code, again.path(), &["--yes"]);
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(s_status.success() && r_status.success(), "{s_err}\n{r_err}");
    assert_same_file(&file, &again.path().join("typo.bin"));
}

/// A file the sender cannot read is named before any code is shown, not
/// found after the receiver accepted. (Root reads everything, so as root
/// the sender runs as `nobody` through setpriv(1).)
#[test]
fn unreadable_files_are_named_before_a_code_is_shown() {
    use std::os::unix::fs::PermissionsExt;
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("folder");
    fs::create_dir(&tree).unwrap();
    random_file(&tree, "fine.txt", 100, 1);
    let locked = random_file(&tree, "locked.txt", 100, 2);
    for (path, mode) in [(src.path(), 0o755), (tree.as_path(), 0o755)] {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::set_permissions(tree.join("fine.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    // A folder that cannot be listed is named with them, not alone.
    let private = tree.join("private");
    fs::create_dir(&private).unwrap();
    random_file(&private, "inside.txt", 100, 3);
    fs::set_permissions(&private, fs::Permissions::from_mode(0o000)).unwrap();
    let root =
        String::from_utf8_lossy(&Command::new("id").arg("-u").output_within().unwrap().stdout)
            .trim()
            == "0";
    let mut cmd = if root {
        assert!(
            Command::new("setpriv")
                .arg("--version")
                .output_within()
                .is_ok(),
            "as root this test needs setpriv(1) (util-linux) to run the sender as nobody"
        );
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(binary());
        for (k, v) in tallow().get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    } else {
        tallow()
    };
    let out = cmd
        .args(["send", "--no-lan", "--relay", "127.0.0.1:9"])
        .arg(&tree)
        .stdin(Stdio::null())
        .output_within()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains("cannot read 2 of the files to send")
            && err.contains("locked.txt (Permission denied)")
            && err.contains("private (Permission denied)")
            && !err.contains("os error"),
        "{err}"
    );
    assert!(
        !err.contains("Code:"),
        "no code for a transfer that cannot work: {err}"
    );
    // So that the temporary folder can be removed.
    fs::set_permissions(&private, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Keeping the only file there is leaves nothing to accept: no second
/// question after "keep yours".
#[test]
fn keeping_every_file_asks_nothing_more() {
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "only.txt", 500, 4);
    let relay = Relay::start(&[]);
    let out = tempfile::tempdir().unwrap();
    fs::write(out.path().join("only.txt"), b"mine").unwrap();
    let s = sender(&relay.addr, CODE, std::slice::from_ref(&file), &[]);
    let line = receive_line(&relay.addr, CODE, out.path(), "");
    let (status, shown) = on_terminal_when(&line, "or stop [N]?", b"s\n");
    let (s_status, s_err) = s.finish();
    assert!(status.success() && s_status.success(), "{shown}\n{s_err}");
    assert!(!shown.contains("Accept?"), "{shown}");
    assert!(shown.contains("Nothing to receive into"), "{shown}");
    assert_eq!(fs::read(out.path().join("only.txt")).unwrap(), b"mine");
}

/// On a terminal, files in the way are not a dead end (issue 18.6): the
/// receiver is asked whether to replace them, keep its own (the sender then
/// does not send them), or stop.
#[test]
fn existing_files_can_be_replaced_or_kept_when_asked_on_a_terminal() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("photos");
    fs::create_dir(&root).unwrap();
    let small = random_file(&root, "a.jpg", 5000, 6);
    let big = random_file(&root, "b.jpg", 8 * CHUNK, 7);
    let other = random_file(&root, "c.jpg", 7000, 8);
    let question = "or stop [N]?";
    let answers: [(&[Answer], &str); 3] = [
        (&[(question, b"n\n")], "stop"),
        (&[(question, b"r\n"), ("Accept?", b"y\n")], "replace"),
        (&[(question, b"s\n"), ("Accept?", b"y\n")], "keep"),
    ];
    for (answers, outcome) in answers {
        let (relay, metrics) = Relay::with_metrics();
        let out = tempfile::tempdir().unwrap();
        fs::create_dir(out.path().join("photos")).unwrap();
        fs::write(out.path().join("photos/b.jpg"), b"mine").unwrap();
        // On the relay, to count what crosses it.
        let s = sender(
            &relay.addr,
            CODE,
            std::slice::from_ref(&root),
            &["--relay-only"],
        );
        let line = receive_line(&relay.addr, CODE, out.path(), "");
        let (status, shown) = on_terminal_answering(&line, answers);
        let (s_status, s_err) = s.finish();
        assert!(
            shown.contains("1 file of this offer already exists here: photos/b.jpg. Replace it [r], keep yours and skip it [s], or stop [N]?"),
            "{shown}"
        );
        let mine = fs::read(out.path().join("photos/b.jpg")).unwrap() == b"mine";
        match outcome {
            "stop" => {
                assert!(!s_status.success() && mine, "{shown}");
                assert!(
                    s_err.contains("declined") && !s_err.contains("exists"),
                    "{s_err}"
                );
                assert_eq!(list_dir(&out.path().join("photos")), ["b.jpg"]);
            }
            "replace" => {
                assert!(status.success() && s_status.success(), "{shown}\n{s_err}");
                // The folder was there: its own time stays, the files arrive.
                for f in [&small, &big, &other] {
                    assert_same_file(f, &out.path().join("photos").join(f.file_name().unwrap()));
                }
            }
            _ => {
                assert!(status.success() && s_status.success(), "{shown}\n{s_err}");
                assert!(mine, "the receiver's own b.jpg stays");
                assert_same_file(&small, &out.path().join("photos/a.jpg"));
                assert_same_file(&other, &out.path().join("photos/c.jpg"));
                assert!(
                    shown.contains("Received 2 files (")
                        && shown.contains(
                            "Kept 1 file that was already here (not compared with the sender's)."
                        ),
                    "{shown}"
                );
                assert!(
                    s_err.contains("Sent 2 files (")
                        && s_err.contains("it kept 1 file it already had (not sent, not compared)"),
                    "{s_err}"
                );
                assert!(
                    s_err.contains("The receiver keeps 1 file it already has (8.0 MiB): not sent."),
                    "{s_err}"
                );
                // The 8 MiB file never crossed the relay.
                let forwarded = metric(&metrics, "tallow_relay_bytes_forwarded_total");
                assert!(forwarded < CHUNK, "{forwarded} bytes through the relay");
            }
        }
    }
}

/// Scripts keep what is there with --skip-existing; --yes alone still
/// refuses to touch it.
#[test]
fn skip_existing_keeps_the_receivers_files_and_receives_the_rest() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("set");
    fs::create_dir(&root).unwrap();
    let files: Vec<_> = (0..4)
        .map(|i| random_file(&root, &format!("f{i}.bin"), 3 * CHUNK + i, 20 + i))
        .collect();
    let out = tempfile::tempdir().unwrap();
    fs::create_dir(out.path().join("set")).unwrap();
    fs::write(out.path().join("set/f1.bin"), b"kept").unwrap();
    fs::write(out.path().join("set/f3.bin"), b"kept too").unwrap();
    let ((s, s_err), (r, r_err)) = transfer(
        &relay.addr,
        CODE,
        std::slice::from_ref(&root),
        out.path(),
        &["--yes", "--merge"],
    );
    assert!(!s.success() && !r.success(), "{r_err}");
    assert!(r_err.contains("--skip-existing"), "{r_err}");
    assert!(s_err.contains("declined"), "{s_err}");
    let ((s, s_err), (r, r_err)) = transfer(
        &relay.addr,
        CODE,
        std::slice::from_ref(&root),
        out.path(),
        &["--yes", "--merge", "--skip-existing"],
    );
    assert!(s.success() && r.success(), "{s_err}\n{r_err}");
    assert_same_file(&files[0], &out.path().join("set/f0.bin"));
    assert_same_file(&files[2], &out.path().join("set/f2.bin"));
    assert_eq!(fs::read(out.path().join("set/f1.bin")).unwrap(), b"kept");
    assert_eq!(
        fs::read(out.path().join("set/f3.bin")).unwrap(),
        b"kept too"
    );
    assert!(r_err.contains("Keeping 2 files already here"), "{r_err}");
    assert!(s_err.contains("The receiver keeps 2 files"), "{s_err}");
}

#[test]
fn json_events_for_scripts() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "j.bin", 3 << 20, 1);
    let spawn = |args: Vec<String>| {
        tallow()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let s = spawn(vec![
        "send".into(),
        "--json".into(),
        "--no-lan".into(),
        "--relay".into(),
        relay.addr.clone(),
        "--code".into(),
        CODE.into(),
        file.to_string_lossy().into_owned(),
    ]);
    let r = spawn(vec![
        "receive".into(),
        "--json".into(),
        "--no-lan".into(),
        "--yes".into(),
        "--relay".into(),
        relay.addr.clone(),
        "--out".into(),
        out.path().to_string_lossy().into_owned(),
        CODE.into(),
    ]);
    let (r, s) = (output_of(r).unwrap(), output_of(s).unwrap());
    assert!(r.status.success() && s.status.success());
    let events = |o: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| {
                assert!(l.starts_with("{\"event\":\"") && l.ends_with('}'), "{l}");
                l.split('"').nth(3).unwrap().to_owned()
            })
            .collect()
    };
    let (se, re) = (events(&s), events(&r));
    assert_eq!(se.first().map(String::as_str), Some("code"), "{se:?}");
    assert!(
        se.contains(&"connected".into()) && se.last() == Some(&"done".into()),
        "{se:?}"
    );
    assert!(
        re.contains(&"offer".into()) && re.contains(&"progress".into()),
        "{re:?}"
    );
    assert_eq!(re.last().map(String::as_str), Some("done"), "{re:?}");
    let offer = String::from_utf8_lossy(&r.stdout);
    assert!(offer.contains("\"names\":[\"j.bin\"]"), "{offer}");
    // The route is named (on one machine the relay only introduces, and
    // the data goes directly: tests/direct.rs).
    assert!(
        offer.contains("\"route\":\"direct\"") || offer.contains("\"route\":\"relay\""),
        "{offer}"
    );

    // An error is an event too, with a stable kind.
    let failed = tallow()
        .args(["send", "--json", "--no-lan", "--relay", "127.0.0.1:1"])
        .arg(&file)
        .output_within()
        .unwrap();
    let text = String::from_utf8_lossy(&failed.stdout);
    assert!(
        text.contains("\"event\":\"error\",\"kind\":\"network\",\"exit_status\":7"),
        "{text}"
    );
}

#[test]
fn config_defaults_with_flag_over_environment_over_file() {
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "c.bin", 10, 1);
    let cfg = |args: &[&str]| {
        let mut cmd = tallow();
        cmd.env("XDG_CONFIG_HOME", home.path())
            .args(args)
            .stdin(Stdio::null());
        cmd
    };
    let out = cfg(&["config", "set", "relay", "127.0.0.1:1"])
        .output_within()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = cfg(&["config"]).output_within().unwrap();
    assert!(String::from_utf8_lossy(&shown.stdout).contains("relay = 127.0.0.1:1"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Set relay = 127.0.0.1:1 in"));
    let bad = cfg(&["config", "set", "colour", "blue"])
        .output_within()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    // Said once, not twice (a newcomer found "is not one of …: unknown
    // config key: use …").
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(
        said.contains("\"colour\" is not a config key: use relay, out, compress")
            && said.matches("relay").count() == 1,
        "{said}"
    );
    // An output folder that does not exist is kept, with a warning.
    let missing = home.path().join("no-such-folder");
    let set = cfg(&["config", "set", "out", missing.to_str().unwrap()])
        .output_within()
        .unwrap();
    let said = String::from_utf8_lossy(&set.stderr);
    assert!(
        set.status.success() && said.contains("warning: there is no folder"),
        "{said}"
    );
    let listed = cfg(&["receive", "--list-partial"]).output_within().unwrap();
    let said = String::from_utf8_lossy(&listed.stderr);
    assert!(
        listed.status.code() == Some(2) && said.contains("there is no folder"),
        "{said}"
    );
    assert!(cfg(&["config", "unset", "out"])
        .output_within()
        .unwrap()
        .status
        .success());
    // A relay that is not HOST:PORT is refused when set, not when used.
    let bad = cfg(&["config", "set", "relay", "nonsense"])
        .output_within()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("relay must be HOST:PORT"));
    // Nor an IPv6 address without brackets, or a colon too many.
    for bad in ["::1", "a:1:2"] {
        let refused = cfg(&["config", "set", "relay", bad])
            .output_within()
            .unwrap();
        assert_eq!(refused.status.code(), Some(2), "{bad}");
    }

    let f = file.to_str().unwrap();
    // The file's relay is used: unreachable, so a network error (7), not a
    // missing-relay usage error (2).
    let from_file = cfg(&["send", "--no-lan", f]).output_within().unwrap();
    assert_eq!(from_file.status.code(), Some(7));
    let said = String::from_utf8_lossy(&from_file.stderr);
    // The advice names where the address came from: here, the file.
    assert!(
        said.contains("127.0.0.1:1")
            && said.contains(&format!(
                "the relay address comes from {}",
                home.path().join("tallow/config").display()
            ))
            && !said.contains("--relay or TALLOW_RELAY"),
        "{said}"
    );
    // The environment beats the file, and a flag beats both.
    let from_env = cfg(&["send", "--no-lan", f])
        .env("TALLOW_RELAY", "127.0.0.1:2")
        .output_within()
        .unwrap();
    assert!(String::from_utf8_lossy(&from_env.stderr).contains("127.0.0.1:2"));
    let from_flag = cfg(&["send", "--no-lan", "--relay", "127.0.0.1:3", f])
        .env("TALLOW_RELAY", "127.0.0.1:2")
        .output_within()
        .unwrap();
    assert!(String::from_utf8_lossy(&from_flag.stderr).contains("127.0.0.1:3"));

    // A mistyped --relay is a usage error before anything is sent, with
    // no network advice.
    let typo = cfg(&["send", "--no-lan", "--relay", "bad::value", f])
        .output_within()
        .unwrap();
    let said = String::from_utf8_lossy(&typo.stderr);
    assert_eq!(typo.status.code(), Some(2), "{said}");
    assert!(
        said.contains("the relay address \"bad::value\" (from --relay) is not HOST:PORT")
            && said.contains("[::1]:9009")
            && !said.contains("Sending"),
        "{said}"
    );

    let unset = cfg(&["config", "unset", "relay"]).output_within().unwrap();
    assert!(unset.status.success());
    assert_eq!(
        cfg(&["send", "--no-lan", f])
            .output_within()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
}

/// Run a sender and a receiver with `--json`; returns both stdouts.
fn json_pair(
    sender_relay: &str,
    receiver_relay: &str,
    codes: (&str, &str),
    file: &Path,
    out: &Path,
    receiver_extra: &[&str],
) -> (String, String) {
    let s = tallow()
        .args([
            "send",
            "--json",
            "--no-lan",
            "--relay",
            sender_relay,
            "--code",
            codes.0,
            // The hops these tests put before the relay must see the data.
            "--relay-only",
        ])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let r = tallow()
        .args([
            "receive",
            "--json",
            "--no-lan",
            "--relay",
            receiver_relay,
            "--out",
        ])
        .arg(out)
        .args(receiver_extra)
        .arg(codes.1)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let r = output_of(r).unwrap();
    let s = output_of(s).unwrap();
    (
        String::from_utf8_lossy(&s.stdout).into_owned(),
        String::from_utf8_lossy(&r.stdout).into_owned(),
    )
}

fn kind(events: &str) -> String {
    events
        .lines()
        .find(|l| l.starts_with("{\"event\":\"error\""))
        .and_then(|l| l.split('"').nth(7))
        .unwrap_or_else(|| panic!("no error event in {events}"))
        .to_owned()
}

#[test]
fn json_error_events_name_every_kind() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "k.bin", 2 << 20, 1);
    let fresh = || tempfile::tempdir().unwrap();

    let out = fresh();
    let (s, r) = json_pair(
        &relay.addr,
        &relay.addr,
        (CODE, "4711-abacus-zoom-zebra"),
        &file,
        out.path(),
        &["--yes"],
    );
    assert_eq!((kind(&s), kind(&r)), ("auth".into(), "auth".into()));

    let out = fresh();
    std::fs::write(out.path().join("k.bin"), b"mine").unwrap();
    let (s, r) = json_pair(
        &relay.addr,
        &relay.addr,
        (CODE, CODE),
        &file,
        out.path(),
        &["--yes"],
    );
    assert_eq!((kind(&s), kind(&r)), ("refused".into(), "io".into()));

    // No terminal and no --yes: a usage error before connecting.
    let out = fresh();
    let usage = tallow()
        .args([
            "receive",
            "--json",
            "--no-lan",
            "--relay",
            &relay.addr,
            "--out",
        ])
        .arg(out.path())
        .arg(CODE)
        .stdin(Stdio::null())
        .output_within()
        .unwrap();
    assert_eq!(kind(&String::from_utf8_lossy(&usage.stdout)), "usage");

    let flip = Hop::start(
        &relay.addr,
        HopBehaviour {
            flip_at: Some(500_000),
            ..HopBehaviour::default()
        },
    );
    let out = fresh();
    let (_, r) = json_pair(
        &flip.addr,
        &relay.addr,
        (CODE, CODE),
        &file,
        out.path(),
        &["--yes", "--idle-timeout", "5"],
    );
    assert_eq!(kind(&r), "integrity");

    let downgrade = Hop::start(
        &relay.addr,
        HopBehaviour {
            tamper: Some(Tamper::Set { at: 43, value: 0 }),
            ..HopBehaviour::default()
        },
    );
    let out = fresh();
    let (s, r) = json_pair(
        &downgrade.addr,
        &relay.addr,
        (CODE, CODE),
        &file,
        out.path(),
        &["--yes"],
    );
    assert_eq!((kind(&s), kind(&r)), ("other".into(), "other".into()));

    let (s, _) = json_pair(
        "127.0.0.1:1",
        "127.0.0.1:1",
        (CODE, CODE),
        &file,
        fresh().path(),
        &[],
    );
    assert_eq!(kind(&s), "network");
    let usage = tallow()
        .args([
            "receive",
            "--json",
            "--no-lan",
            "--relay",
            "127.0.0.1:1",
            "no-digits",
        ])
        .output_within()
        .unwrap();
    assert_eq!(kind(&String::from_utf8_lossy(&usage.stdout)), "usage");
}

#[test]
fn text_messages_and_pipes_in_and_out() {
    let relay = Relay::start(&[]);
    // --text: printed by the receiver, nothing written.
    let out = tempfile::tempdir().unwrap();
    let s = tallow()
        .args([
            "send",
            "--no-lan",
            "--relay",
            &relay.addr,
            "--code",
            CODE,
            "--text",
            "meet at 6\nbring the keys",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let r = tallow()
        .args([
            "receive",
            "--no-lan",
            "--yes",
            "--relay",
            &relay.addr,
            "--out",
        ])
        .arg(out.path())
        .arg(CODE)
        .stdin(Stdio::null())
        .output_within()
        .unwrap();
    let s = output_of(s).unwrap();
    assert!(
        s.status.success() && r.status.success(),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "meet at 6\nbring the keys\n"
    );
    assert!(list_dir(out.path()).is_empty());

    // `cmd | tallow send -` and `tallow receive --out - > file`.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut s = tallow()
        .args([
            "send",
            "--no-lan",
            "--relay",
            &relay.addr,
            "--code",
            CODE,
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = s.stdin.take().unwrap();
        stdin.write_all(&data).unwrap();
    }
    let r = tallow()
        .args([
            "receive",
            "--no-lan",
            "--yes",
            "--relay",
            &relay.addr,
            "--out",
            "-",
            CODE,
        ])
        .stdin(Stdio::null())
        .output_within()
        .unwrap();
    let s = output_of(s).unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(r.stdout == data, "stdout carries exactly the piped bytes");
    assert!(String::from_utf8_lossy(&r.stderr).contains("into standard output"));
}

#[test]
fn a_closed_stderr_does_not_turn_an_error_into_a_crash() {
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "c.bin", 10, 1);
    let mut child = tallow()
        .args(["send", "--no-lan", "--relay", "127.0.0.1:1"])
        .arg(&file)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Like `2>&1 | head -0`: nobody reads, the pipe is gone.
    drop(child.stderr.take());
    let status = output_of(child).unwrap().status;
    assert_eq!(status.code(), Some(7), "a panic would exit 101");
}

/// Issue 14.4: the holes of a sparse file are not read or sent, and the
/// file arrives as sparse, byte for byte the same.
#[test]
fn a_sparse_file_moves_only_its_data_and_arrives_sparse() {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;
    const MIB: u64 = 1024 * 1024;
    let (relay, metrics) = Relay::with_metrics();
    // tmpfs keeps holes and reports them on every kernel here; elsewhere
    // the check below says so.
    let holes_kept = |p: &str| {
        if Path::new(p).is_dir() {
            tempfile::tempdir_in(p).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        }
    };
    let src = holes_kept("/dev/shm");
    let out = holes_kept("/dev/shm");
    // 256 MiB, of which 1 MiB at 20 MiB and 100 KiB at the very end hold
    // data; the rest is holes (a disk image, say).
    let path = src.path().join("disk.img");
    let data = fs::read(random_file(src.path(), "data", MIB + 100 * 1024, 5)).unwrap();
    fs::remove_file(src.path().join("data")).unwrap();
    let mut image = fs::File::create(&path).unwrap();
    image.set_len(256 * MIB).unwrap();
    image.seek(SeekFrom::Start(20 * MIB)).unwrap();
    image.write_all(&data[..MIB as usize]).unwrap();
    image.seek(SeekFrom::End(-100 * 1024)).unwrap();
    image.write_all(&data[MIB as usize..]).unwrap();
    drop(image);
    let stored = |p: &Path| fs::metadata(p).unwrap().blocks() * 512;
    assert!(
        stored(&path) < 8 * MIB,
        "the test folder's file system keeps no holes ({} bytes stored); run it on ext4, xfs, btrfs or tmpfs",
        stored(&path)
    );
    let ((s_status, s_err), (r_status, r_err)) = transfer(
        &relay.addr,
        "4711-abacus-zoom-yodel",
        std::slice::from_ref(&path),
        out.path(),
        &["--yes", "--relay-only"],
    );
    assert!(s_status.success() && r_status.success(), "{s_err}\n{r_err}");
    let got = out.path().join("disk.img");
    assert_same_file(&path, &got);
    assert_eq!(fs::metadata(&got).unwrap().len(), 256 * MIB);
    assert!(
        stored(&got) < 8 * MIB,
        "arrived sparse: {} bytes stored",
        stored(&got)
    );
    // About the data and the chunks' headers, not 256 MiB.
    let forwarded = metric(&metrics, "tallow_relay_bytes_forwarded_total");
    assert!(forwarded < 4 * MIB, "the relay forwarded {forwarded} bytes");
}

/// Issue 18, points 2 and 8: a receiver run in the folder it receives into
/// (no `--out`) names that folder in full, with its free space, and a file
/// already there is named in full too, with every dot where it belongs.
#[test]
fn receiving_into_the_current_folder_names_it_in_full() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "small.v2.txt", 1000, 3);
    let here = |code: &str, extra: &[&str]| {
        let mut cmd = tallow();
        cmd.current_dir(out.path())
            .args(["receive", "--relay", &relay.addr, "--no-lan"])
            .args(extra)
            .arg(code)
            .stdin(Stdio::null());
        Running::spawn(cmd)
    };
    let full = out.path().display().to_string();
    let s = sender(&relay.addr, CODE, std::slice::from_ref(&file), &[]);
    let (r_status, r_err) = here(CODE, &["--yes"]).finish();
    let (s_status, s_err) = s.finish();
    assert!(s_status.success() && r_status.success(), "{s_err}\n{r_err}");
    assert!(
        r_err.contains(&format!("Into: {full} ("))
            && r_err.contains(" free)")
            && (r_err.contains(&format!(" into {full} directly in "))
                || r_err.contains(&format!(" into {full} through the relay in "))),
        "{r_err}"
    );
    assert_same_file(&file, &out.path().join("small.v2.txt"));
    // Again: the file is there now.
    let code = "4712-abacus-zoom-yodel";
    let s = sender(&relay.addr, code, std::slice::from_ref(&file), &[]);
    let (r_status, r_err) = here(code, &["--yes"]).finish();
    let (s_status, s_err) = s.finish();
    assert!(!r_status.success() && !s_status.success());
    assert!(
        r_err.contains(&format!("{full}/small.v2.txt already exists")),
        "{r_err}"
    );
    assert!(
        s_err.contains("it could not accept this offer as it is") && !s_err.contains(&full),
        "the sender learns nothing of the receiver's disk: {s_err}"
    );
}

/// Issue 18, point 7: Ctrl-C at the receiver's question ends the line,
/// says nothing was transferred (status 130), and the sender, waiting for
/// the answer, hears "cancelled", not "closed the connection".
#[test]
fn ctrl_c_at_the_question_is_told_to_the_waiting_sender() {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "asked.bin", 1000, 4);
    let s = sender(&relay.addr, CODE, std::slice::from_ref(&file), &[]);
    let line = receive_line(&relay.addr, CODE, out.path(), "");
    let (status, shown) = on_terminal_when(&line, "Accept?", b"\x03");
    let (s_status, s_err) = s.finish();
    assert_eq!(status.code(), Some(130), "{shown}");
    assert!(
        shown.contains("cancelled (Ctrl-C) before the transfer began"),
        "{shown}"
    );
    assert!(!s_status.success());
    assert!(
        s_err.contains("cancelled (Ctrl-C)") && !s_err.contains("closed the connection"),
        "{s_err}"
    );
    assert!(
        fs::read_dir(out.path()).unwrap().next().is_none(),
        "nothing written"
    );
}
