//! The send and receive pipelines over an in-memory transport, including a
//! scripted hostile sender: whatever it does, nothing unverified appears
//! under a final name and the error says what happened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tallow_protocol::limits::Deadlines;
use tallow_protocol::machine::PeerMisbehaved;
use tallow_protocol::manifest::Manifest;
use tallow_protocol::message::{ChunkHeader, Message};
use tallow_protocol::transport::{FrameSource, TransportError};
use tallow_protocol::wire::Decode;
use tallow_protocol::Role;
use tallow_testkit::memory::pipe;
use tallow_testkit::messages::{
    chunk, complete, encode, entry, leaf, manifest, merkle_root, offer, send_plaintexts,
};
use tallow_transfer::receive::{receive_offer, IncomingOffer, Offered, ReceiveOptions};
use tallow_transfer::send::{send_transfer, SendOptions};
use tallow_transfer::source::SourceTree;
use tallow_transfer::{FailedFile, TransferError};

/// The offer of files (tests here never send text).
fn files<W, R>(offered: Offered<W, R>) -> IncomingOffer<W, R> {
    match offered {
        Offered::Files(offer) => offer,
        Offered::Text(text) => panic!("expected files, got text {text:?}"),
    }
}

/// Receive into `out`: nothing replaced or kept, resume on, a test key.
fn receive_options(out: &Path) -> ReceiveOptions {
    ReceiveOptions {
        out_dir: out.to_path_buf(),
        overwrite: false,
        skip_existing: false,
        resume: true,
        umask: 0o022,
        local_key: tallow_transfer::checkpoint::LocalKey::from_bytes([7; 32]),
        cancel: Default::default(),
    }
}

fn deadlines() -> Deadlines {
    Deadlines {
        idle: Duration::from_secs(5),
        decision: Duration::from_secs(5),
        ..Deadlines::default()
    }
}

fn write_file(dir: &Path, name: &str, size: usize) -> PathBuf {
    let path = dir.join(name);
    let data: Vec<u8> = (0..size).map(|i| (i * 31 + i / 7) as u8).collect();
    std::fs::write(&path, data).unwrap();
    path
}

/// Names in `dir` other than partial files: what a user would take as
/// finished files.
fn final_names(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| {
            !n.ends_with(tallow_protocol::path::PARTIAL_SUFFIX) && !n.starts_with(".tallow-")
        })
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn honest_sender_and_receiver_move_files_with_progress() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let chunk = 4096u32;
    let paths = vec![
        write_file(src.path(), "empty", 0),
        write_file(src.path(), "exact", chunk as usize),
        write_file(src.path(), "more", 3 * chunk as usize + 1),
    ];
    let transfer = SourceTree::scan(&paths, chunk).unwrap();
    let ((s_sink, s_source), (r_sink, r_source)) = pipe();
    let d = deadlines();
    let sending = tokio::spawn(async move {
        let mut last = None;
        let r = send_transfer(
            transfer,
            s_sink,
            s_source,
            &deadlines(),
            SendOptions::default(),
            &mut |p| last = Some(p),
        )
        .await;
        (r, last)
    });
    let offer = files(receive_offer(r_sink, r_source, &d).await.unwrap());
    assert_eq!(offer.manifest().files.len(), 3);
    let options = receive_options(out.path());
    let mut completed = Vec::new();
    offer
        .accept(&options, Default::default(), &d, &mut |p| {
            if let tallow_transfer::Progress::FileComplete { index } = p {
                completed.push(index)
            }
        })
        .await
        .unwrap();
    let (sent, last) = sending.await.unwrap();
    sent.unwrap();
    assert_eq!(
        last,
        Some(tallow_transfer::Progress::Bytes {
            done: 4 * 4096 + 1,
            total: 4 * 4096 + 1
        })
    );
    assert_eq!(completed, [0, 1, 2]);
    for p in &paths {
        assert_eq!(
            std::fs::read(p).unwrap(),
            std::fs::read(out.path().join(p.file_name().unwrap())).unwrap()
        );
    }
    assert_eq!(names(out.path()), ["empty", "exact", "more"]);
}

/// A scripted sender: sends `offer`, expects Accept, then sends `frames`.
/// Returns what the receiver's pipeline concluded and what it told us.
async fn hostile_sender(
    manifest: Manifest,
    frames: Vec<Vec<u8>>,
    out: &Path,
) -> (Result<Vec<FailedFile>, TransferError>, Vec<Vec<u8>>) {
    let ((mut s_sink, mut s_source), (r_sink, r_source)) = pipe();
    let d = deadlines();
    let script = tokio::spawn(async move {
        send_plaintexts(&mut s_sink, &offer(&manifest), Duration::from_secs(1))
            .await
            .unwrap();
        let mut replies = Vec::new();
        let mut buf = Vec::new();
        s_source
            .recv_frame(&mut buf, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        replies.push(buf.clone());
        let _ = send_plaintexts(&mut s_sink, &frames, Duration::from_secs(1)).await;
        while s_source
            .recv_frame(&mut buf, Some(Duration::from_secs(5)))
            .await
            .is_ok()
        {
            replies.push(buf.clone());
        }
        replies
    });
    let options = receive_options(out);
    let result = match receive_offer(r_sink, r_source, &d).await.map(files) {
        Ok(offer) => {
            offer
                .accept(&options, Default::default(), &d, &mut |_| {})
                .await
        }
        Err(e) => Err(e),
    };
    (result, script.await.unwrap())
}

fn one_file(size: u64) -> Manifest {
    manifest(4096, vec![entry("victim.bin", size)])
}

#[tokio::test]
async fn wrong_file_hash_is_an_integrity_error_and_no_file_appears() {
    let m = one_file(5000);
    let out = tempfile::tempdir().unwrap();
    let data = vec![7u8; 5000];
    let frames = vec![
        chunk(&m, 0, 0, &data[..4096]),
        chunk(&m, 0, 1, &data[4096..]),
        encode(Message::FileEnd {
            file: 0,
            hash: *blake3::hash(b"something else").as_bytes(),
        }),
        complete(&m, &[(0, 0, &data[..4096]), (0, 1, &data[4096..])]),
    ];
    let (result, replies) = hostile_sender(m, frames, out.path()).await;
    assert!(
        matches!(result, Err(TransferError::Integrity { ref path }) if path == "victim.bin"),
        "{result:?}"
    );
    assert!(
        final_names(out.path()).is_empty(),
        "{:?}",
        names(out.path())
    );
    // The sender was told why.
    let last = replies.last().unwrap();
    assert!(matches!(
        Message::decode_all(last),
        Ok(Message::Abort { .. })
    ));
}

#[tokio::test]
async fn out_of_order_duplicate_oversize_and_early_completion_are_refused() {
    let m = one_file(5000);
    let data = vec![1u8; 4096];
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("out of order", vec![chunk(&m, 0, 1, &data)]),
        (
            "duplicate",
            vec![chunk(&m, 0, 0, &data), chunk(&m, 0, 0, &data)],
        ),
        (
            "chunk index out of range",
            vec![
                chunk(&m, 0, 0, &data),
                chunk(&m, 0, 1, &data[..904]),
                chunk(&m, 0, 2, b"x"),
            ],
        ),
        ("longer than declared", vec![chunk(&m, 0, 0, &[1u8; 4097])]),
        ("wrong file index", vec![chunk(&m, 3, 0, &data)]),
        (
            "complete too early",
            vec![chunk(&m, 0, 0, &data), complete(&m, &[(0, 0, &data)])],
        ),
        (
            "file ended early",
            vec![
                chunk(&m, 0, 0, &data),
                encode(Message::FileEnd {
                    file: 0,
                    hash: [0; 32],
                }),
            ],
        ),
        ("unknown message", vec![vec![0xee, 1, 2, 3]]),
    ];
    for (what, frames) in cases {
        let out = tempfile::tempdir().unwrap();
        let (result, _) = hostile_sender(m.clone(), frames, out.path()).await;
        assert!(
            matches!(
                result,
                Err(TransferError::Protocol {
                    peer: Role::Sender,
                    ..
                }) | Err(TransferError::BadMessage {
                    peer: Role::Sender,
                    ..
                })
            ),
            "{what}: {result:?}"
        );
        assert!(
            final_names(out.path()).is_empty(),
            "{what}: {:?}",
            names(out.path())
        );
    }
}

#[tokio::test]
async fn a_sender_that_goes_quiet_hits_the_idle_deadline() {
    let out = tempfile::tempdir().unwrap();
    let ((mut s_sink, _s_source), (r_sink, r_source)) = pipe();
    let d = Deadlines {
        idle: Duration::from_millis(200),
        ..deadlines()
    };
    send_plaintexts(&mut s_sink, &offer(&one_file(10)), Duration::from_secs(1))
        .await
        .unwrap();
    let offer = files(receive_offer(r_sink, r_source, &d).await.unwrap());
    let options = receive_options(out.path());
    let result = offer
        .accept(&options, Default::default(), &d, &mut |_| {})
        .await;
    assert!(matches!(
        result,
        Err(TransferError::Transport(TransportError::ReadTimeout {
            peer: Role::Sender,
            ..
        }))
    ));
    assert!(final_names(out.path()).is_empty());
}

#[tokio::test]
async fn a_symlink_in_the_output_folder_is_never_written_through() {
    let out = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), out.path().join("dir")).unwrap();
    let m = manifest(4096, vec![entry("dir/escape.txt", 1)]);
    let frames = vec![
        chunk(&m, 0, 0, b"x"),
        encode(Message::FileEnd {
            file: 0,
            hash: *blake3::hash(b"x").as_bytes(),
        }),
        complete(&m, &[(0, 0, b"x")]),
    ];
    let (result, _) = hostile_sender(m, frames, out.path()).await;
    assert!(
        matches!(result, Err(TransferError::UnsafeDestination { .. })),
        "{result:?}"
    );
    assert!(names(elsewhere.path()).is_empty(), "nothing escaped");

    // A symlink planted under the partial file's name is replaced, not followed.
    let out = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("target");
    std::fs::write(&target, b"untouched").unwrap();
    std::os::unix::fs::symlink(&target, out.path().join("victim.bin.tallow-partial")).unwrap();
    let data = vec![5u8; 10];
    let m = one_file(10);
    let frames = vec![
        chunk(&m, 0, 0, &data),
        encode(Message::FileEnd {
            file: 0,
            hash: *blake3::hash(&data).as_bytes(),
        }),
        complete(&m, &[(0, 0, &data)]),
    ];
    let (result, _) = hostile_sender(m, frames, out.path()).await;
    result.unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"untouched");
    assert_eq!(std::fs::read(out.path().join("victim.bin")).unwrap(), data);
}

#[tokio::test]
async fn unsafe_names_in_the_offer_are_refused_before_anything_is_written() {
    for path in [
        "../escape",
        "/etc/passwd",
        "a/../../b",
        "C:\\x",
        "bad\u{1b}[2Jname",
        "dup",
    ] {
        let out = tempfile::tempdir().unwrap();
        let mut files = vec![entry(path, 1)];
        if path == "dup" {
            files.push(files[0].clone());
        }
        let (result, _) = hostile_sender(
            tallow_testkit::messages::manifest(4096, files),
            vec![],
            out.path(),
        )
        .await;
        assert!(
            matches!(result, Err(TransferError::BadMessage { .. })),
            "{path:?}: {result:?}"
        );
        assert!(names(out.path()).is_empty());
    }
}

fn compressed_chunk(m: &Manifest, file: u32, index: u64, plain: &[u8]) -> Vec<u8> {
    let data = zstd::bulk::compress(plain, 3).unwrap();
    encode(Message::Chunk {
        header: ChunkHeader {
            file,
            index,
            compressed: true,
            leaf: leaf(m, file, index, plain),
        },
        data: &data,
    })
}

#[tokio::test]
async fn a_compression_bomb_is_refused_without_inflating_it() {
    let out = tempfile::tempdir().unwrap();
    // 64 MiB of zeros compresses to a few KiB; the chunk declares 5000.
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
    assert!(bomb.len() < 5000);
    let frames = vec![encode(Message::Chunk {
        header: ChunkHeader {
            file: 0,
            index: 0,
            compressed: true,
            leaf: [0; 32],
        },
        data: &bomb,
    })];
    let mut m = one_file(5000);
    m.chunk_size = 8192;
    let (result, _) = hostile_sender(m, frames, out.path()).await;
    assert!(
        matches!(
            &result,
            Err(TransferError::Protocol {
                rule: PeerMisbehaved::Decompression { expected: 5000, .. },
                ..
            })
        ),
        "{result:?}"
    );
    assert!(!out.path().join("victim.bin").exists());
}

#[tokio::test]
async fn compressed_chunks_are_accepted_when_honest() {
    let out = tempfile::tempdir().unwrap();
    let plain = b"abcabcabc".repeat(500);
    let m = one_file(plain.len() as u64);
    let frames = vec![
        compressed_chunk(&m, 0, 0, &plain[..4096]),
        compressed_chunk(&m, 0, 1, &plain[4096..]),
        encode(Message::FileEnd {
            file: 0,
            hash: *blake3::hash(&plain).as_bytes(),
        }),
        complete(&m, &[(0, 0, &plain[..4096]), (0, 1, &plain[4096..])]),
    ];
    let (result, replies) = hostile_sender(m, frames, out.path()).await;
    result.unwrap();
    assert_eq!(std::fs::read(out.path().join("victim.bin")).unwrap(), plain);
    assert!(matches!(
        Message::decode_all(replies.last().unwrap()),
        Ok(Message::Done)
    ));
}

#[tokio::test]
async fn a_wrong_chunk_leaf_names_the_chunk_and_a_wrong_root_is_refused() {
    let m = one_file(5000);
    let data = vec![3u8; 5000];
    let out = tempfile::tempdir().unwrap();
    let mut bad = chunk(&m, 0, 1, &data[4096..]);
    bad[20] ^= 1; // inside the leaf hash
    let frames = vec![chunk(&m, 0, 0, &data[..4096]), bad];
    let (result, _) = hostile_sender(m.clone(), frames, out.path()).await;
    assert!(
        matches!(&result, Err(TransferError::ChunkIntegrity { path, chunk: 1 }) if path == "victim.bin"),
        "{result:?}"
    );
    assert!(!out.path().join("victim.bin").exists());

    let out = tempfile::tempdir().unwrap();
    let frames = vec![
        chunk(&m, 0, 0, &data[..4096]),
        chunk(&m, 0, 1, &data[4096..]),
        encode(Message::FileEnd {
            file: 0,
            hash: *blake3::hash(&data).as_bytes(),
        }),
        encode(Message::TransferComplete {
            merkle_root: merkle_root(&m, &[(0, 1, &data[..4096]), (0, 0, &data[4096..])]),
        }),
    ];
    let (result, replies) = hostile_sender(m, frames, out.path()).await;
    assert!(
        matches!(result, Err(TransferError::MerkleRoot)),
        "{result:?}"
    );
    assert!(matches!(
        Message::decode_all(replies.last().unwrap()),
        Ok(Message::Abort { .. })
    ));
}

#[tokio::test]
async fn a_file_the_sender_gives_up_on_is_dropped_and_the_others_land() {
    let out = tempfile::tempdir().unwrap();
    let m = manifest(
        4096,
        vec![entry("a", 100), entry("b", 10_000), entry("c", 50)],
    );
    let (a, b, c) = (vec![1u8; 100], vec![2u8; 10_000], vec![3u8; 50]);
    let frames = vec![
        chunk(&m, 0, 0, &a),
        tallow_testkit::messages::file_end(0, &a),
        chunk(&m, 1, 0, &b[..4096]),
        encode(Message::FileFailed {
            file: 1,
            reason: "b changed while it was being sent",
        }),
        chunk(&m, 2, 0, &c),
        tallow_testkit::messages::file_end(2, &c),
        // The root covers the chunks that were in the stream.
        complete(&m, &[(0, 0, &a), (1, 0, &b[..4096]), (2, 0, &c)]),
    ];
    let (result, replies) = hostile_sender(m, frames, out.path()).await;
    let failed = result.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].path.as_str(), failed[0].size), ("b", 10_000));
    assert!(failed[0]
        .reason
        .contains("b changed while it was being sent"));
    assert_eq!(final_names(out.path()), ["a", "c"]);
    let left = names(out.path());
    // No partial of b stays; the checkpoint does, so that a rerun sends
    // only b.
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(
        left[0].ends_with(".checkpoint") && left[1..] == ["a", "c"],
        "{left:?}"
    );
    // The bytes of b that never came count as done, so the last ack is the
    // whole offer, then Done.
    let decoded: Vec<_> = replies
        .iter()
        .map(|r| Message::decode_all(r).unwrap())
        .collect();
    assert_eq!(decoded.last(), Some(&Message::Done));
    assert_eq!(decoded[decoded.len() - 2], Message::Ack { bytes: 10_150 });
}
