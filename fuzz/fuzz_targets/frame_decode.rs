//! Frame decoding: a length prefix and a body from a hostile relay. The
//! opener must reject anything that was not sealed under its key, without
//! panicking, and a sealed frame must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tallow_crypto::{FrameOpener, FrameSealer, FRAME_HEADER_LEN};

const KEY: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    if data.len() >= FRAME_HEADER_LEN {
        let header: [u8; 4] = data[..4].try_into().unwrap();
        let mut body = data[4..].to_vec();
        assert!(FrameOpener::new(&KEY).open(header, &mut body).is_err());
    }
    // Whatever the plaintext, seal then open gives it back.
    let mut frame = vec![0u8; FRAME_HEADER_LEN];
    frame.extend_from_slice(data);
    FrameSealer::new(&KEY).seal(&mut frame).unwrap();
    let header: [u8; 4] = frame[..4].try_into().unwrap();
    let mut body = frame[4..].to_vec();
    FrameOpener::new(&KEY).open(header, &mut body).unwrap();
    assert_eq!(body, data);
});
