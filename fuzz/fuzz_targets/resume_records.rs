//! Resume state from disk or wire: checkpoint parsing, record folding and
//! the resume point of an Accept never panic, and what they yield stays
//! within the manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tallow_transfer::checkpoint::{parse, RecordedProgress};
use tallow_protocol::message::Message;

fuzz_target!(|data: &[u8]| {
    if let Some((manifest, records)) = parse(data) {
        let p = RecordedProgress::from_records(&manifest, &records);
        assert_eq!(p.leaves.len(), manifest.files.len());
        for (f, leaves) in manifest.files.iter().zip(&p.leaves) {
            assert!(leaves.len() as u64 <= manifest.chunk_count(f.size));
        }
        assert!(p.bytes(&manifest) <= manifest.total_size());
    }
    if let Ok(Message::Accept { resume, .. }) = Message::decode(data) {
        let _ = resume.bytes(&tallow_protocol::manifest::Manifest {
            chunk_size: 4096,
            dirs: vec![],
            files: vec![],
            left_out: Default::default(),
        });
    }
});
