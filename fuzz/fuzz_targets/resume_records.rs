//! Resume state from disk or wire: checkpoint parsing, record folding and
//! the resume point of an Accept never panic, and what they yield stays
//! within the manifest.
//!
//! Checkpoints are authenticated with the user's key, so arbitrary bytes
//! stop at the check; the folding of records is fed directly too: records
//! made from the input (any file, chunk and folder numbers, in any order)
//! against a small offer shaped by the first two bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tallow_protocol::file_list::FileList;
use tallow_protocol::manifest::{DirEntry, FileEntry, LeftOut, Manifest, Timestamp};
use tallow_protocol::message::Message;
use tallow_protocol::wire::Decode;
use tallow_transfer::checkpoint::{parse, LocalKey, Record, RecordedProgress};
use tallow_transfer::placement::FileStamp;

fn check_progress(manifest: &Manifest, records: &[Record]) {
    let p = RecordedProgress::from_records(manifest, records);
    for (index, f) in manifest.files.iter().enumerate() {
        assert!(p.digests(index).len() as u64 <= manifest.chunk_count(f.size));
        assert!(!p.is_done(index) || p.digests(index).len() as u64 == manifest.chunk_count(f.size));
    }
    assert!(p.bytes(manifest) <= manifest.total_size());
}

fuzz_target!(|data: &[u8]| {
    if let Some((manifest, records)) = parse(data, &LocalKey::from_bytes([7; 32])) {
        check_progress(&manifest, &records);
    }
    if data.len() >= 2 {
        let manifest = Manifest {
            chunk_size: 4096,
            dirs: (0..data[0] % 3)
                .map(|i| DirEntry {
                    path: format!("d{i}"),
                    mode: 0o755,
                    mtime: Timestamp::default(),
                })
                .collect(),
            files: FileList::from_entries((0..data[1] % 4).map(|i| FileEntry {
                path: format!("f{i}"),
                size: u64::from(i) * 5000,
                mode: 0o644,
                mtime: Timestamp::default(),
            }))
            .unwrap(),
            left_out: LeftOut::default(),
        };
        let records: Vec<Record> = data[2..]
            .chunks_exact(3)
            .map(|r| match r[0] % 3 {
                0 => Record::Chunk {
                    file: u32::from(r[1] % 6),
                    chunk: u64::from(r[2] % 4),
                    digest: [r[2]; 32],
                },
                1 => Record::FileDone {
                    file: u32::from(r[1] % 6),
                    stamp: FileStamp {
                        ino: u64::from(r[2]),
                        size: u64::from(r[2]) * 100,
                        ctime_secs: 0,
                        ctime_nanos: 0,
                    },
                },
                _ => Record::FolderMade {
                    dir: u32::from(r[1] % 4),
                },
            })
            .collect();
        check_progress(&manifest, &records);
    }
    if let Ok(Message::Accept { resume, .. }) = Message::decode_all(data) {
        let _ = resume.bytes(&Manifest {
            chunk_size: 4096,
            dirs: vec![],
            files: FileList::new(),
            left_out: LeftOut::default(),
        });
    }
});
