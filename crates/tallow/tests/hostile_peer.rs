//! A malicious peer that knows the code: it completes a real handshake
//! through a real relay, then misbehaves against the real `tallow receive`
//! (or `tallow send`) process. Each case must end with a clear error of the
//! right class, non-zero, with nothing outside the output folder and no
//! unverified file under its final name.

use std::fs;
use std::path::Path;
use std::time::Duration;

use tallow_testkit::process::*;

use tallow_crypto::{CodePhrase, FRAME_HEADER_LEN};
use tallow_net::direct::{settle_route, DirectSetup};
use tallow_net::{connect_to_relay, handshake_as_receiver, handshake_as_sender, PeerChannel, Via};
use tallow_protocol::limits::Deadlines;
use tallow_protocol::manifest::{FileEntry, Manifest};
use tallow_protocol::message::{AbortKind, ChunkHeader, FileRuns, Message, ResumePoint};
use tallow_protocol::transport::{FrameSink, FrameSource};
use tallow_protocol::wire::Decode;
use tallow_protocol::Role;
use tallow_testkit::messages::{chunk, complete, encode, entry, file_end, send_plaintexts};

const CODE: &str = "3141-abacus-zoom-yodel";
const CHUNK: u32 = 4096;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn manifest(files: Vec<FileEntry>) -> Manifest {
    tallow_testkit::messages::manifest(CHUNK, files)
}

/// What the real receiver did with a hostile sender's script.
struct Outcome {
    ok: bool,
    stderr: String,
    out: tempfile::TempDir,
    outside: tempfile::TempDir,
}

/// Offer `offer` (raw message bytes of the offer's frames, so invalid
/// offers can be sent), then, if accepted, send `frames`; the receiver runs
/// with `extra` arguments.
fn against_receiver(
    offer: Vec<Vec<u8>>,
    frames: Vec<Vec<u8>>,
    extra: &[&str],
    setup: impl FnOnce(&Path, &Path),
) -> Outcome {
    let relay = Relay::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    setup(out.path(), outside.path());
    let mut args = vec!["--yes", "--idle-timeout", "3"];
    args.extend_from_slice(extra);
    let r = receiver(&relay.addr, CODE, out.path(), &args);
    let code = CodePhrase::parse(CODE).unwrap();
    let d = Deadlines {
        idle: Duration::from_secs(10),
        ..Deadlines::default()
    };
    runtime().block_on(async {
        let stream = connect_to_relay(&relay.addr, Role::Sender, code.room_id(), &d, || {})
            .await
            .unwrap();
        let ch = handshake_as_sender(stream, &code, &d).await.unwrap();
        let mut ch = relay_only(ch, Role::Sender, &relay.addr, &d).await;
        let _ = send_plaintexts(&mut ch.writer, &offer, Duration::from_secs(5)).await;
        let mut buf = Vec::new();
        if ch
            .reader
            .recv_frame(&mut buf, Some(Duration::from_secs(10)))
            .await
            .is_err()
        {
            return;
        }
        if !matches!(Message::decode_all(&buf), Ok(Message::Accept { .. })) {
            return;
        }
        let _ = send_plaintexts(&mut ch.writer, &frames, Duration::from_secs(5)).await;
        // Hold the connection open (a stalled peer) until the receiver ends.
        let _ = ch
            .reader
            .recv_frame(&mut buf, Some(Duration::from_secs(20)))
            .await;
        while ch
            .reader
            .recv_frame(&mut buf, Some(Duration::from_secs(20)))
            .await
            .is_ok()
        {}
    });
    let (status, stderr, _) = r.finish_within(Duration::from_secs(60));
    Outcome {
        ok: status.success(),
        stderr,
        out,
        outside,
    }
}

impl Outcome {
    /// Failed with `class` in the message, nothing escaped, no final file.
    fn refused(&self, class: &str) {
        assert!(!self.ok, "the receiver must fail; stderr: {}", self.stderr);
        assert!(
            self.stderr.contains(class),
            "expected {class:?} in: {}",
            self.stderr
        );
        assert!(
            list_dir(self.outside.path()).is_empty(),
            "something escaped the output folder"
        );
        let finals: Vec<_> = list_dir(self.out.path())
            .into_iter()
            .filter(|n| !n.starts_with(".tallow-") && !n.ends_with(".tallow-partial") && n != "dir")
            .collect();
        assert!(
            finals.is_empty(),
            "unverified files under final names: {finals:?}"
        );
    }
}

fn offer(files: Vec<FileEntry>) -> Vec<Vec<u8>> {
    offer_of(&manifest(files))
}

fn offer_of(m: &Manifest) -> Vec<Vec<u8>> {
    tallow_testkit::messages::offer(m)
}

#[test]
fn manifest_with_dotdot_path() {
    let m = manifest(vec![entry("../escape.txt", 1)]);
    against_receiver(offer_of(&m), vec![], &[], |_, _| {}).refused("unsafe name");
}

#[test]
fn manifest_with_absolute_path() {
    against_receiver(offer(vec![entry("/etc/evil", 1)]), vec![], &[], |_, _| {})
        .refused("unsafe name");
}

#[test]
fn manifest_escaping_through_a_symlink_in_the_output_folder() {
    let data = b"x";
    let m = manifest(vec![entry("dir/escape.txt", 1)]);
    against_receiver(
        offer_of(&m),
        vec![
            chunk(&m, 0, 0, data),
            file_end(0, data),
            complete(&m, &[(0, 0, data)]),
        ],
        &[],
        |out, outside| std::os::unix::fs::symlink(outside, out.join("dir")).unwrap(),
    )
    .refused("symbolic link or not a folder");
}

#[test]
fn manifest_with_duplicate_names() {
    let m = manifest(vec![entry("a", 1), entry("a", 1)]);
    against_receiver(offer_of(&m), vec![], &[], |_, _| {}).refused("twice");
}

#[test]
fn manifest_with_names_equal_after_case_folding() {
    // One file on APFS, exFAT or casefold ext4: refused on every disk.
    let m = manifest(vec![entry("Readme.txt", 1), entry("README.TXT", 1)]);
    against_receiver(offer_of(&m), vec![], &[], |_, _| {}).refused("twice");
}

#[test]
fn manifest_with_names_equal_after_unicode_normalisation() {
    // "café" precomposed and with a combining accent.
    let m = manifest(vec![entry("caf\u{e9}.txt", 1), entry("cafe\u{301}.txt", 1)]);
    against_receiver(offer_of(&m), vec![], &[], |_, _| {}).refused("twice");
}

#[test]
fn manifest_with_a_reserved_name_in_another_case() {
    // Would be the receiver's own partial file on a case-insensitive disk.
    let m = manifest(vec![entry("x.bin", 1), entry("x.bin.TALLOW-PARTIAL", 1)]);
    against_receiver(offer_of(&m), vec![], &[], |_, _| {}).refused("reserved suffix");
    let m = manifest(vec![entry(".Tallow-0123.checkpoint", 1)]);
    against_receiver(offer_of(&m), vec![], &[], |_, _| {}).refused("reserved prefix");
}

#[test]
fn manifest_with_an_absurd_size() {
    against_receiver(offer(vec![entry("huge", 1 << 63)]), vec![], &[], |_, _| {}).refused("only");
}

#[test]
fn manifest_with_an_absurd_count() {
    // A header announcing 2^63 files: refused before any page.
    let m = manifest(vec![entry("a", 1)]);
    let mut header = m.offer_header();
    header.files = 1 << 63;
    let raw = encode(Message::Offer(header));
    against_receiver(vec![raw], vec![], &[], |_, _| {}).refused("invalid message");
    // A page claiming 2^32-1 files in a few bytes: refused before allocating.
    let mut page = vec![14u8];
    page.extend_from_slice(&0u32.to_be_bytes());
    page.extend_from_slice(&u32::MAX.to_be_bytes());
    let frames = vec![offer_of(&m).remove(0), page];
    against_receiver(frames, vec![], &[], |_, _| {}).refused("invalid message");
}

#[test]
fn offer_pages_that_do_not_match_the_header() {
    let m = manifest(vec![entry("a", 1), entry("b", 2)]);
    // A page with more files than announced.
    let mut header = m.offer_header();
    header.files = 1;
    let frames = vec![encode(Message::Offer(header)), offer_of(&m).remove(1)];
    against_receiver(frames, vec![], &[], |_, _| {}).refused("more entries than its header");
    // Sizes that do not add up to the announced total.
    let mut header = m.offer_header();
    header.total_size += 1;
    let frames = vec![encode(Message::Offer(header)), offer_of(&m).remove(1)];
    against_receiver(frames, vec![], &[], |_, _| {}).refused("do not add up");
    // Entries other than those the identity stands for.
    let other = manifest(vec![entry("a", 2), entry("b", 1)]);
    let frames = vec![offer_of(&m).remove(0), offer_of(&other).remove(1)];
    against_receiver(frames, vec![], &[], |_, _| {}).refused("identity");
}

#[test]
fn chunk_index_out_of_range() {
    let d = [1u8; 100];
    let m = manifest(vec![entry("f", 100)]);
    against_receiver(offer_of(&m), vec![chunk(&m, 0, 5, &d)], &[], |_, _| {})
        .refused("broke the protocol");
}

#[test]
fn duplicate_chunk() {
    let d = vec![1u8; CHUNK as usize];
    let m = manifest(vec![entry("f", 2 * CHUNK as u64)]);
    against_receiver(
        offer_of(&m),
        vec![chunk(&m, 0, 0, &d), chunk(&m, 0, 0, &d)],
        &[],
        |_, _| {},
    )
    .refused("broke the protocol");
}

#[test]
fn chunk_longer_than_declared() {
    let d = [1u8; 200];
    let m = manifest(vec![entry("f", 100)]);
    against_receiver(offer_of(&m), vec![chunk(&m, 0, 0, &d)], &[], |_, _| {})
        .refused("broke the protocol");
}

#[test]
fn wrong_merkle_root() {
    // Each file is finalized once its own BLAKE3 hash and chunk leaves
    // verify; a root that disagrees with the leaves the sender sent is its
    // inconsistency, reported as an integrity failure. The file that did
    // verify stays.
    let d = [1u8; 100];
    let m = manifest(vec![entry("f", 100)]);
    let o = against_receiver(
        offer_of(&m),
        vec![
            chunk(&m, 0, 0, &d),
            file_end(0, &d),
            complete(&m, &[(0, 0, b"other")]),
        ],
        &[],
        |_, _| {},
    );
    assert!(!o.ok && o.stderr.contains("Merkle root"), "{}", o.stderr);
    assert_eq!(fs::read(o.out.path().join("f")).unwrap(), d);
}

#[test]
fn wrong_file_hash() {
    let d = [1u8; 100];
    let m = manifest(vec![entry("f", 100)]);
    against_receiver(
        offer_of(&m),
        vec![
            chunk(&m, 0, 0, &d),
            file_end(0, b"not the data"),
            complete(&m, &[(0, 0, &d)]),
        ],
        &[],
        |_, _| {},
    )
    .refused("did not verify");
}

#[test]
fn transfer_complete_before_all_chunks() {
    let d = vec![1u8; CHUNK as usize];
    let m = manifest(vec![entry("f", 2 * CHUNK as u64)]);
    against_receiver(
        offer_of(&m),
        vec![chunk(&m, 0, 0, &d), complete(&m, &[(0, 0, &d)])],
        &[],
        |_, _| {},
    )
    .refused("broke the protocol");
}

#[test]
fn compression_bomb() {
    let bomb = zstd::bulk::compress(&vec![0u8; 16 << 20], 19).unwrap();
    let frame = encode(Message::Chunk {
        header: ChunkHeader {
            file: 0,
            index: 0,
            compressed: true,
            leaf: [0; 32],
        },
        data: &bomb,
    });
    against_receiver(offer(vec![entry("f", 3000)]), vec![frame], &[], |_, _| {})
        .refused("does not decompress");
}

#[test]
fn frames_after_completion_are_never_read_and_the_transfer_stands() {
    // Everything verified before the extra frames: the receiver is done and
    // has stopped reading; the junk cannot change what was verified.
    let d = [7u8; 100];
    let m = manifest(vec![entry("f", 100)]);
    let o = against_receiver(
        offer_of(&m),
        vec![
            chunk(&m, 0, 0, &d),
            file_end(0, &d),
            complete(&m, &[(0, 0, &d)]),
            vec![0xee; 10],
            chunk(&m, 0, 0, &d),
        ],
        &[],
        |_, _| {},
    );
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(fs::read(o.out.path().join("f")).unwrap(), d);
}

#[test]
fn unknown_message() {
    let m = manifest(vec![entry("f", 100)]);
    against_receiver(offer_of(&m), vec![vec![0xee, 1, 2]], &[], |_, _| {})
        .refused("invalid message");
}

#[test]
fn stalled_peer() {
    let d = vec![1u8; CHUNK as usize];
    let m = manifest(vec![entry("f", 2 * CHUNK as u64)]);
    against_receiver(offer_of(&m), vec![chunk(&m, 0, 0, &d)], &[], |_, _| {})
        .refused("sent nothing for 3 s");
}

#[test]
fn names_with_terminal_escapes_are_refused_and_bidi_names_shown_escaped() {
    let m = manifest(vec![entry("\u{1b}]0;pwned\u{7}", 1)]);
    against_receiver(offer_of(&m), vec![], &[], |_, _| {}).refused("control character");
    let d = [1u8; 3];
    let m = manifest(vec![entry("invoice\u{202e}fdp.exe", 3)]);
    let o = against_receiver(
        offer_of(&m),
        vec![
            chunk(&m, 0, 0, &d),
            file_end(0, &d),
            complete(&m, &[(0, 0, &d)]),
        ],
        &[],
        |_, _| {},
    );
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stderr.contains("invoice\\u{202e}fdp.exe"),
        "shown escaped: {}",
        o.stderr
    );
    assert!(!o.stderr.contains('\u{202e}'), "never printed raw");
}

/// A hostile receiver against the real sender: completes the handshake,
/// then answers the offer with `replies` (and then stays silent).
fn against_sender(replies: Vec<Vec<u8>>, size: u64) -> (bool, String) {
    let relay = Relay::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "data.bin", size, 1);
    let s = sender(
        &relay.addr,
        CODE,
        &[file],
        &["--idle-timeout", "3", "--compress", "none"],
    );
    let code = CodePhrase::parse(CODE).unwrap();
    let d = Deadlines::default();
    runtime().block_on(async {
        let stream = connect_to_relay(&relay.addr, Role::Receiver, code.room_id(), &d, || {})
            .await
            .unwrap();
        let ch = handshake_as_receiver(stream, &code, &d).await.unwrap();
        let mut ch = relay_only(ch, Role::Receiver, &relay.addr, &d).await;
        let mut buf = Vec::new();
        ch.reader
            .recv_frame(&mut buf, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        for plaintext in replies {
            let mut f = vec![0u8; FRAME_HEADER_LEN];
            f.extend_from_slice(&plaintext);
            let _ = ch.writer.send_frame(&mut f, Duration::from_secs(5)).await;
        }
        while ch
            .reader
            .recv_frame(&mut buf, Some(Duration::from_secs(20)))
            .await
            .is_ok()
        {}
    });
    let (status, stderr, _) = s.finish_within(Duration::from_secs(60));
    (status.success(), stderr)
}

fn accept_from(files_done: u32, chunks_done: u64) -> Vec<u8> {
    accept_skipping(files_done, chunks_done, &[])
}

fn accept_skipping(files_done: u32, chunks_done: u64, skip: &[u32]) -> Vec<u8> {
    encode(Message::Accept {
        resume: ResumePoint {
            files_done,
            chunks_done,
        },
        skip: FileRuns::from_sorted(skip.iter().copied()),
    })
}

#[test]
fn receiver_asking_to_resume_outside_the_offer() {
    let (ok, err) = against_sender(vec![accept_from(7, 0)], 1000);
    assert!(!ok && err.contains("outside the offer"), "{err}");
}

#[test]
fn receiver_asking_to_skip_files_outside_the_offer_or_already_started() {
    // The offer is one file: skipping file 3 names nothing, and skipping
    // the file it resumes in the middle contradicts itself.
    for accept in [accept_skipping(0, 0, &[3]), accept_skipping(0, 1, &[0])] {
        let (ok, err) = against_sender(vec![accept], 3 * CHUNK as u64);
        assert!(!ok && err.contains("outside the offer"), "{err}");
    }
}

#[test]
fn receiver_acknowledging_backwards_or_too_much() {
    let (ok, err) = against_sender(
        vec![accept_from(0, 0), encode(Message::Ack { bytes: 1 << 40 })],
        1000,
    );
    assert!(!ok && err.contains("acknowledged"), "{err}");
}

#[test]
fn receiver_saying_done_too_early() {
    let (ok, err) = against_sender(vec![accept_from(0, 0), encode(Message::Done)], 64 << 20);
    assert!(
        !ok && err.contains("Done before the transfer was complete"),
        "{err}"
    );
}

#[test]
fn receiver_sending_an_unknown_message_or_aborting() {
    let (ok, err) = against_sender(vec![accept_from(0, 0), vec![0xee]], 64 << 20);
    assert!(!ok && err.contains("invalid message"), "{err}");
    let abort = encode(Message::Abort {
        kind: AbortKind::Io,
        detail: "disk on fire",
    });
    let (ok, err) = against_sender(vec![accept_from(0, 0), abort], 64 << 20);
    assert!(!ok && err.contains("disk on fire"), "{err}");
}

#[test]
fn receiver_that_stalls_without_acknowledging() {
    // 64 MiB needs acks past the 32 MiB window.
    let (ok, err) = against_sender(vec![accept_from(0, 0)], 64 << 20);
    assert!(
        !ok && err.contains("receiver") && err.contains("3 s"),
        "{err}"
    );
}

/// The scripted peer settles the route as the protocol asks (before
/// anything else), keeping to the relay: what it sends then is all it
/// sends.
async fn relay_only(mut ch: PeerChannel, us: Role, relay: &str, d: &Deadlines) -> PeerChannel {
    ch.via = Via::Relay(relay.to_owned());
    let setup = DirectSetup {
        allowed: false,
        seen_as: None,
    };
    settle_route(ch, us, setup, d).await.unwrap()
}
