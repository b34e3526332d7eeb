//! The transfer machines driven by arbitrary message sequences from a
//! hostile peer: no panic, and what they let through obeys the rules.
//!
//! Input: two bytes shape a small offer (file count and sizes), two more a
//! resume point and skipped files; the rest is a sequence of
//! `u16 length | message` frames, decoded as the pipelines decode them and
//! fed to both machines.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tallow_protocol::file_list::FileList;
use tallow_protocol::machine::{Decision, Incoming, ReceiveMachine, Reply, SendMachine};
use tallow_protocol::manifest::{FileEntry, LeftOut, Manifest, Timestamp};
use tallow_protocol::message::{FileRuns, Message, ResumePoint};
use tallow_protocol::wire::Decode;

const CHUNK: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let files = (data[0] % 5) as usize;
    let manifest = Manifest {
        chunk_size: CHUNK,
        dirs: vec![],
        files: FileList::from_entries((0..files).map(|i| FileEntry {
            path: format!("f{i}"),
            // 0 to 3 chunks and a bit, from the second byte's bits.
            size: u64::from((data[1] >> (i % 4) * 2) & 3) * u64::from(CHUNK)
                + u64::from(data[1] & (1 << i)) * 7,
            mode: 0o644,
            mtime: Timestamp::default(),
        }))
        .unwrap(),
        left_out: LeftOut::default(),
    };
    // The third byte: the resume point's file (low bits) and chunk (high).
    let files_done = u32::from(data[2] % (files as u8 + 1));
    let chunks_done = manifest.files.get(files_done as usize).map_or(0, |f| {
        u64::from(data[2] >> 4) % (manifest.chunk_count(f.size) + 1)
    });
    let start = ResumePoint {
        files_done,
        chunks_done,
    };
    let skip = FileRuns::from_sorted(
        (start.first_unstarted()..files as u32).filter(|f| data[3] & (1 << f) != 0),
    );
    let mut receiver = ReceiveMachine::new(&manifest, start, skip.clone());
    // Time is passed in: each frame arrives a second after the last.
    let mut now = Instant::now();
    let mut sender = SendMachine::new(manifest.total_size(), 1 << 20, now);
    let mut decided = false;
    let mut last_acked = 0;
    let mut received = 0u64;
    // Once complete, the receiver asks for the resumed file's kept chunks
    // again (as it does when they are damaged on disk).
    let mut refetch_next = None;
    let mut refetched = 0u64;
    let mut rest = &data[4..];
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let frame = &rest[2..2 + len];
        rest = &rest[2 + len..];
        now += Duration::from_secs(1);
        let Ok(msg) = Message::decode_all(frame) else {
            continue;
        };
        match receiver.on_message(Message::decode_all(frame).unwrap()) {
            Ok(Incoming::Chunk { header, data, len }) => {
                // Only the next chunk of a file that is sent, of its length.
                let entry = &manifest.files.at(header.file as usize);
                assert!(!skip.contains(header.file));
                assert_eq!(len as u64, manifest.chunk_len(entry.size, header.index));
                assert!(header.compressed || data.len() == len);
                received += len as u64;
            }
            // Only the chunks asked for again, in order, of their length.
            Ok(Incoming::Refetched {
                header, len, last, ..
            }) => {
                assert_eq!(Some((header.file, header.index)), refetch_next);
                let entry = &manifest.files.at(header.file as usize);
                assert_eq!(len as u64, manifest.chunk_len(entry.size, header.index));
                assert!(header.index < start.chunks_done);
                assert_eq!(last, header.index + 1 == start.chunks_done);
                refetch_next = (!last).then_some((header.file, header.index + 1));
                refetched += 1;
            }
            Ok(Incoming::Complete { .. }) => {
                // The stream went out; the receiver asks for what it had.
                sender.on_sent(0, true, now);
                receiver.expect_refetch(start.files_done, 0, start.chunks_done);
                if start.chunks_done > 0 {
                    refetch_next = Some((start.files_done, 0));
                }
            }
            // A file given up on: what did not come is its rest, exactly.
            Ok(Incoming::FileFailed { file, missing, .. }) => {
                assert!(!skip.contains(file));
                assert!(missing <= manifest.files.at(file as usize).size);
                received += missing;
            }
            _ => {}
        }
        if !decided {
            if let Ok(Decision::Accepted { .. }) = sender.on_decision(&manifest, msg, now) {
                decided = true;
                last_acked = sender.acked();
            }
        } else {
            match sender.on_reply(msg, now) {
                Ok(Reply::Acked(acked)) => {
                    assert!(acked >= last_acked && acked <= manifest.total_size());
                    last_acked = acked;
                    // Heard just now: the receiver's silence is judged from here.
                    if let Some(deadline) = sender.reply_deadline(Duration::from_secs(60)) {
                        assert_eq!(deadline, now + Duration::from_secs(60));
                    }
                }
                // Only what the receiver had before this run, once the
                // stream is out.
                Ok(Reply::Refetch { file, first, count }) => {
                    assert!(receiver.is_complete());
                    assert_eq!(file, start.files_done);
                    assert!(count > 0 && first + count <= start.chunks_done);
                }
                _ => {}
            }
        }
    }
    if receiver.is_complete() {
        // Everything from the start point, less what was skipped, arrived
        // (or was given up on).
        let expected = manifest.total_size() - start.bytes(&manifest) - skip.bytes(&manifest);
        assert_eq!(received, expected);
        assert!(refetched <= start.chunks_done);
    }
});
