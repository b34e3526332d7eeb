//! The handshake state machines fed arbitrary bytes: a hostile relay or
//! peer can only make them fail, never panic or produce keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rand_core::OsRng;
use tallow_crypto::CodePhrase;
use tallow_protocol::handshake::{ReceiverHandshake, SenderHandshake};

fuzz_target!(|data: &[u8]| {
    let code = CodePhrase::parse("1234-abacus-zoom-yodel").unwrap();
    // As the receiver's first message, then as the reply to a real hello.
    if let Ok((receiver, _)) = ReceiverHandshake::respond(&code, data, &mut OsRng) {
        // Anything accepted here must still fail confirmation on garbage.
        assert!(receiver.finish(data).is_err());
    }
    let (sender, _) = SenderHandshake::start(&code, &mut OsRng);
    assert!(sender.finish(data).is_err(), "random bytes confirmed a key");
});
