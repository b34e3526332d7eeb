//! Manifest validation and path sanitising: a decoded manifest holds only
//! safe, unique relative paths, and re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};
use tallow_protocol::manifest::Manifest;
use tallow_protocol::path::validate_relative_path;
use tallow_protocol::wire::{Decode, Encode, WireReader};

fn stays_inside(path: &str) -> bool {
    Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if validate_relative_path(&text).is_ok() {
        assert!(stays_inside(&text), "{text:?}");
        assert!(!text.chars().any(char::is_control));
    }
    let mut r = WireReader::new(data);
    if let Ok(m) = Manifest::decode(&mut r) {
        for p in m
            .dirs
            .iter()
            .map(|d| d.path.as_str())
            .chain(m.files.iter().map(|f| f.path))
        {
            assert!(stays_inside(p), "{p:?}");
        }
        let mut again = Vec::new();
        m.encode(&mut again);
        assert_eq!(&again[..], &data[..again.len()]);
        let _ = m.identity();
        let _ = m.total_size();
    }
});
