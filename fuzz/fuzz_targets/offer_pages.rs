//! An offer as a malicious sender sends it: a header and pages, in frames.
//! Whatever assembles is a manifest with safe, unique paths that matches
//! its header, and comes out of its own pages the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};
use tallow_protocol::message::Message;
use tallow_protocol::offer::OfferAssembly;
use tallow_protocol::wire::Decode;

fuzz_target!(|data: &[u8]| {
    // Frames: a u16 length, then that many bytes, repeated.
    let mut frames = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        frames.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    let mut frames = frames.into_iter();
    let Some(Ok(Message::Offer(header))) = frames.next().map(Message::decode_all) else {
        return;
    };
    let mut offer = OfferAssembly::new(header.clone());
    for frame in frames {
        if offer.is_complete() {
            break;
        }
        let Ok(Message::OfferPage(page)) = Message::decode_all(frame) else {
            return;
        };
        if offer.add(page).is_err() {
            return;
        }
    }
    let Ok(manifest) = offer.finish() else { return };
    assert_eq!(manifest.offer_header(), header);
    for p in manifest
        .dirs
        .iter()
        .map(|d| d.path.as_str())
        .chain(manifest.files.iter().map(|f| f.path))
    {
        assert!(
            Path::new(p)
                .components()
                .all(|c| matches!(c, Component::Normal(_))),
            "{p:?}"
        );
    }
    let mut again = OfferAssembly::new(manifest.offer_header());
    for page in manifest.offer_pages() {
        again.add(page).expect("a manifest's own pages assemble");
    }
    assert_eq!(again.finish().expect("and finish"), manifest);
});
