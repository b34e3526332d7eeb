//! Message decoding: any plaintext a malicious peer can put in a frame.
//! Whatever decodes re-encodes to the same bytes, and a resume point taken
//! from an Accept is only used if it fits its manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tallow_protocol::message::Message;
use tallow_protocol::wire::{Decode, Encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::decode_all(data) {
        let mut again = Vec::new();
        msg.encode(&mut again);
        // Strings are bounded on encode exactly as on decode.
        assert_eq!(again, data, "{}", msg.name());
    }
});
