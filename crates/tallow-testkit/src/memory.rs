//! An in-memory connection: plaintext frames through bounded channels,
//! each read with its deadline, as `PeerChannel` does over TCP.

use std::time::Duration;

use tallow_crypto::FRAME_HEADER_LEN;
use tallow_protocol::transport::{FrameSink, FrameSource, TransportError};
use tallow_protocol::Role;
use tokio::sync::mpsc;

/// The sending half: frames to `peer`.
pub struct MemSink(mpsc::Sender<Vec<u8>>, Role);

/// The receiving half: frames from `peer`.
pub struct MemSource(mpsc::Receiver<Vec<u8>>, Role);

impl FrameSink for MemSink {
    async fn send_frame(&mut self, frame: &mut Vec<u8>, _: Duration) -> Result<(), TransportError> {
        let plaintext = frame[FRAME_HEADER_LEN..].to_vec();
        let peer = self.1;
        self.0
            .send(plaintext)
            .await
            .map_err(|_| TransportError::Closed { peer })
    }
}

impl FrameSource for MemSource {
    async fn recv_frame(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<(), TransportError> {
        let peer = self.1;
        let next = match timeout {
            Some(t) => tokio::time::timeout(t, self.0.recv())
                .await
                .map_err(|_| TransportError::ReadTimeout { peer, waited: t })?,
            None => self.0.recv().await,
        };
        let frame = next.ok_or(TransportError::Closed { peer })?;
        buf.clear();
        buf.extend_from_slice(&frame);
        Ok(())
    }
}

/// A connection: `(the sender's sink and source, the receiver's)`.
pub fn pipe() -> ((MemSink, MemSource), (MemSink, MemSource)) {
    let (s2r_tx, s2r_rx) = mpsc::channel(64);
    let (r2s_tx, r2s_rx) = mpsc::channel(64);
    (
        (
            MemSink(s2r_tx, Role::Receiver),
            MemSource(r2s_rx, Role::Receiver),
        ),
        (
            MemSink(r2s_tx, Role::Sender),
            MemSource(s2r_rx, Role::Sender),
        ),
    )
}
