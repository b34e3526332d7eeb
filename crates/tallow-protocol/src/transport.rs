//! What the pipelines need from a connection, and how a connection fails.
//!
//! `tallow-net`'s `PeerChannel` implements [`FrameSink`] and [`FrameSource`]
//! over TCP with AEAD; tests implement them in memory. Every call takes its
//! own deadline so each wait in the protocol says how long it may last.

use std::future::Future;
use std::time::Duration;

use tallow_crypto::CryptoError;

use crate::Role;

/// How a connection to the peer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer (or the relay on its behalf) closed the connection.
    #[error("the {peer} closed the connection")]
    Closed {
        /// Who is on the other end.
        peer: Role,
    },
    /// Nothing arrived within the deadline.
    #[error("the {peer} sent nothing for {} s: it stopped (or one of the machines slept), or the network between us is down", .waited.as_secs())]
    ReadTimeout {
        /// Who is on the other end.
        peer: Role,
        /// How long we waited.
        waited: Duration,
    },
    /// A write did not complete within the deadline.
    #[error("the {peer} stopped taking data for {} s: it stalled (or one of the machines slept), or the network between us is down", .waited.as_secs())]
    WriteTimeout {
        /// Who is on the other end.
        peer: Role,
        /// How long we waited.
        waited: Duration,
    },
    /// The socket failed.
    #[error("the connection to the {peer} failed: {source}")]
    Io {
        /// Who is on the other end.
        peer: Role,
        /// The OS error.
        source: std::io::Error,
    },
    /// A length prefix above the limit (checked before allocating).
    #[error("the {peer} sent a frame of {len} bytes, above the limit of {max}: the connection is corrupt or hostile")]
    FrameTooLarge {
        /// Who is on the other end.
        peer: Role,
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame did not authenticate.
    #[error("data from the {peer} failed authentication ({source}); nothing unverified was kept")]
    Crypto {
        /// Who is on the other end.
        peer: Role,
        /// What failed.
        source: CryptoError,
    },
}

/// Sends frames to the peer.
pub trait FrameSink: Send {
    /// `frame` holds [`tallow_crypto::FRAME_HEADER_LEN`] bytes of room and
    /// then the plaintext; it is sealed in place and written. Fails with
    /// [`TransportError::WriteTimeout`] after `timeout`.
    fn send_frame(
        &mut self,
        frame: &mut Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// As [`send_frame`](Self::send_frame), but a small frame may wait in
    /// a buffer, with others after it, until the buffer fills, the next
    /// [`send_frame`](Self::send_frame) or [`flush`](Self::flush): many
    /// small files then cost a write for many frames, not one each. Frames
    /// still go out in the order given.
    fn send_frame_batched(
        &mut self,
        frame: &mut Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.send_frame(frame, timeout)
    }

    /// Write what [`send_frame_batched`](Self::send_frame_batched) kept.
    fn flush(
        &mut self,
        _timeout: Duration,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        async { Ok(()) }
    }
}

/// Receives frames from the peer.
pub trait FrameSource: Send {
    /// Read one frame; on success `buf` holds its plaintext. With a timeout,
    /// fails with [`TransportError::ReadTimeout`] when nothing arrives in time.
    /// Not cancel-safe: run it in a task of its own if it must be raced.
    fn recv_frame(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Whether a whole frame has already arrived, so that the next
    /// [`recv_frame`](Self::recv_frame) returns without waiting: a reader
    /// may gather work while this holds. `false` when not known.
    fn frame_ready(&self) -> bool {
        false
    }
}

/// A [`FrameSource`] whose first frame was already read (while the user
/// was being asked something, say); it is returned first, then the rest.
pub struct Prefetched<R> {
    first: Option<Vec<u8>>,
    inner: R,
}

impl<R> Prefetched<R> {
    /// `first`, if any, comes before everything `inner` yields.
    pub fn new(first: Option<Vec<u8>>, inner: R) -> Self {
        Prefetched { first, inner }
    }

    /// The source itself (what was prefetched stays first in line).
    pub fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: FrameSource> FrameSource for Prefetched<R> {
    async fn recv_frame(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<(), TransportError> {
        match self.first.take() {
            Some(first) => {
                *buf = first;
                Ok(())
            }
            None => self.inner.recv_frame(buf, timeout).await,
        }
    }

    fn frame_ready(&self) -> bool {
        self.first.is_some() || self.inner.frame_ready()
    }
}
