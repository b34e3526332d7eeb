//! Telling the other side why we stop: the one way an `Abort` is sent once
//! the channel is open, so its user reads our reason instead of "connection
//! closed". Best effort and brief: a peer that does not read is not waited
//! for longer than [`ABORT_NOTICE_TIMEOUT`].

use tallow_protocol::limits::ABORT_NOTICE_TIMEOUT;
use tallow_protocol::message::{AbortKind, Message};
use tallow_protocol::transport::FrameSink;

use crate::TransferError;

/// Send an `Abort` of `kind` with `detail`, a sentence for the other side's
/// user (never our local paths: see [`TransferError::peer_detail`]).
pub async fn tell_peer<W: FrameSink>(writer: &mut W, kind: AbortKind, detail: &str) {
    let mut frame = Message::Abort { kind, detail }.to_frame();
    let _ = writer.send_frame(&mut frame, ABORT_NOTICE_TIMEOUT).await;
}

/// Tell the other side about `error`, if it is one it should hear of (not
/// its own abort, a refusal, or a broken connection).
pub async fn tell_peer_about<W: FrameSink>(writer: &mut W, error: &TransferError) {
    if let Some((kind, detail)) = error.abort_notice() {
        tell_peer(writer, kind, &detail).await;
    }
}
