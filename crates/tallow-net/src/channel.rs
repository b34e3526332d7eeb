//! `PeerChannel`: length-prefixed AES-256-GCM frames over a byte stream.
//!
//! The two halves are independent (a reader task and a writer task run at
//! once), each with its own key and counter. The reader checks the length
//! prefix against [`MAX_FRAME_LEN`] before allocating, then authenticates
//! the whole frame before the pipeline sees a byte of it.

use std::time::Duration;

use tallow_crypto::{FrameOpener, FrameSealer, FRAME_HEADER_LEN, TAG_LEN};
use tallow_protocol::limits::MAX_FRAME_LEN;
use tallow_protocol::transport::{FrameSink, FrameSource, TransportError};
use tallow_protocol::Role;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::io_to_transport;

/// An authenticated, encrypted connection to the peer, after the handshake.
pub struct PeerChannel<R = OwnedReadHalf, W = OwnedWriteHalf> {
    /// Frames from the peer.
    pub reader: ChannelReader<R>,
    /// Frames to the peer.
    pub writer: ChannelWriter<W>,
    /// Equal on both sides iff both hold the same keys (`--verify`).
    pub short_authentication_string: String,
    /// Which way the bytes go, to tell the user.
    pub via: Via,
    /// Closes the connection so that what we sent last arrives.
    pub closing: OrderlyClose,
    /// Proves a direct connection's other end is this session's peer;
    /// taken (and zeroized) once the route is settled.
    pub(crate) direct_key: Option<tallow_crypto::DirectPathKey>,
    /// On a relay's route: why the data did not move to a direct
    /// connection.
    pub no_direct: Option<crate::direct::NoDirectPath>,
}

/// A second handle on the channel's connection, to close it so that our
/// last message (an `Abort` saying why) reaches the peer.
///
/// Closing a TCP socket while bytes from the peer wait unread makes the
/// kernel reset the connection and throw away what we had queued but not
/// yet sent. A sender streams chunks, so its reason would sit behind
/// megabytes in the send buffer while the receiver's acks arrive: the
/// receiver would read "connection closed" instead. [`finish`] sends our
/// end-of-stream after the queued bytes and reads (discarding) until the
/// other side closes too, or for at most the time given.
///
/// [`finish`]: OrderlyClose::finish
pub struct OrderlyClose(Option<std::net::TcpStream>);

impl OrderlyClose {
    /// A handle on `stream` (a duplicate descriptor: the socket stays open
    /// until this is finished or dropped, even once the channel is gone).
    pub fn new(stream: &tokio::net::TcpStream) -> Self {
        OrderlyClose(
            socket2::SockRef::from(stream)
                .try_clone()
                .ok()
                .map(std::net::TcpStream::from),
        )
    }

    /// Half-close our side and wait, reading and discarding, until the peer
    /// closes or `within` has passed. Call it once the channel's halves are
    /// dropped (they are shut for writing by then anyway).
    pub async fn finish(self, within: Duration) {
        let Some(std_stream) = self.0 else { return };
        // The descriptor shares the original's non-blocking mode.
        let Ok(mut stream) = tokio::net::TcpStream::from_std(std_stream) else {
            return;
        };
        let _ = stream.shutdown().await;
        let _ = tokio::time::timeout(within, async {
            let mut scratch = [0u8; 16 * 1024];
            while let Ok(1..) = stream.read(&mut scratch).await {}
        })
        .await;
    }
}

/// The route a channel took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A stream handed to the handshake by its caller (tests, embedding).
    Given,
    /// The sender's in-process relay on the local network, and the other
    /// side's role and address when known (the receiver found the sender's
    /// announcement; the sender's relay saw the receiver connect).
    LocalNetwork(Option<(Role, std::net::SocketAddr)>),
    /// A relay, `HOST:PORT`.
    Relay(String),
    /// A connection straight to the other side, found through the relay
    /// `HOST:PORT` (which carried only the handshake): the other side's
    /// role and the address the connection reached.
    Direct(Role, std::net::SocketAddr, String),
}

impl Via {
    /// `direct`, `lan` or `relay` (`given` for a stream handed in), for
    /// scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            Via::Given => "given",
            Via::LocalNetwork(_) => "lan",
            Via::Relay(_) => "relay",
            Via::Direct(..) => "direct",
        }
    }

    /// `directly`, `over the local network`, `through the relay`: how the
    /// data went, for a summary line.
    pub fn in_words(&self) -> &'static str {
        match self {
            Via::Given => "over the given stream",
            Via::LocalNetwork(_) => "over the local network",
            Via::Relay(_) => "through the relay",
            Via::Direct(..) => "directly",
        }
    }
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Given => write!(f, "over the given stream"),
            Via::LocalNetwork(None) => write!(f, "on the local network"),
            Via::LocalNetwork(Some((peer, addr))) => {
                write!(f, "on the local network ({peer} at {})", addr.ip())
            }
            Via::Relay(addr) => write!(f, "through the relay {addr}"),
            Via::Direct(peer, addr, relay) => write!(
                f,
                "directly ({peer} at {addr}; the relay {relay} only introduced us)"
            ),
        }
    }
}

/// The receiving half.
pub struct ChannelReader<R> {
    io: R,
    opener: FrameOpener,
    peer: Role,
    body_timeout: Duration,
    inbox: Inbox,
}

/// The sending half.
pub struct ChannelWriter<W> {
    io: W,
    sealer: FrameSealer,
    peer: Role,
    /// Sealed small frames not written yet ([`FrameSink::send_frame_batched`]).
    batch: Vec<u8>,
}

/// Bytes read from the socket ahead of the frame being read: small frames
/// (a small file's chunk, its end, an ack) then cost one read for many,
/// not two each. Reads of this size or more bypass it, so a chunk's bytes
/// are not copied on their way in.
const INBOX_BYTES: usize = 64 * 1024;
/// Frames smaller than this wait in the writer's batch; with frames the
/// batch is written once it holds `BATCH_BYTES`.
const BATCHED_FRAME: usize = 16 * 1024;
const BATCH_BYTES: usize = 64 * 1024;

/// Read-ahead bytes not yet taken: `buf[start..end]`.
struct Inbox {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Inbox {
    fn new() -> Self {
        Inbox {
            buf: vec![0; INBOX_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Move what is buffered, up to `dst.len()`, into `dst`.
    fn take_into(&mut self, dst: &mut [u8]) -> usize {
        let n = (self.end - self.start).min(dst.len());
        dst[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        n
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

impl<R> ChannelReader<R> {
    /// Wrap a stream. Once a frame's length prefix has arrived, its body
    /// must follow within `body_timeout`.
    pub fn new(io: R, opener: FrameOpener, peer: Role, body_timeout: Duration) -> Self {
        ChannelReader {
            io,
            opener,
            peer,
            body_timeout,
            inbox: Inbox::new(),
        }
    }
}

impl ChannelReader<OwnedReadHalf> {
    /// Wait until the peer has sent something (or closed), consuming
    /// nothing: unlike [`FrameSource::recv_frame`] this may be raced and
    /// dropped, so a question to the user can end when the peer speaks.
    pub async fn wait_for_data(&mut self) {
        if !self.inbox.is_empty() {
            return;
        }
        // Ok(0) is a close, an error a reset: either way the next
        // `recv_frame` reports it.
        let _ = self.io.peek(&mut [0u8; 1]).await;
    }
}

impl<R> ChannelReader<R> {
    /// The same channel (key, counter) read from another stream from now
    /// on; `None` if bytes read ahead from this one wait unread (the peer
    /// sent more than it should have before the move).
    pub(crate) fn moved_to<R2>(self, io: R2) -> Option<ChannelReader<R2>> {
        self.inbox.is_empty().then_some(ChannelReader {
            io,
            opener: self.opener,
            peer: self.peer,
            body_timeout: self.body_timeout,
            inbox: self.inbox,
        })
    }

    /// The stream read from.
    pub(crate) fn io(&self) -> &R {
        &self.io
    }

    /// Whether bytes read ahead from the stream wait unread.
    pub(crate) fn has_read_ahead(&self) -> bool {
        !self.inbox.is_empty()
    }
}

impl<W> ChannelWriter<W> {
    /// The same channel (key, counter) written to another stream from now
    /// on; frames still in the batch go to that stream.
    pub(crate) fn moved_to<W2>(self, io: W2) -> ChannelWriter<W2> {
        ChannelWriter {
            io,
            sealer: self.sealer,
            peer: self.peer,
            batch: self.batch,
        }
    }

    /// Wrap a stream.
    pub fn new(io: W, sealer: FrameSealer, peer: Role) -> Self {
        ChannelWriter {
            io,
            sealer,
            peer,
            batch: Vec::new(),
        }
    }
}

/// Write `bytes` whole. The deadline restarts whenever the peer takes
/// bytes, as for reads.
async fn write_within<W: AsyncWrite + Unpin>(
    io: &mut W,
    bytes: &[u8],
    timeout: Duration,
    peer: Role,
) -> Result<(), TransportError> {
    let mut sent = 0;
    while sent < bytes.len() {
        let n = tokio::time::timeout(timeout, io.write(&bytes[sent..]))
            .await
            .map_err(|_| TransportError::WriteTimeout {
                peer,
                waited: timeout,
            })?
            .map_err(|e| io_to_transport(peer, e))?;
        if n == 0 {
            return Err(TransportError::Closed { peer });
        }
        sent += n;
    }
    tokio::time::timeout(timeout, io.flush())
        .await
        .map_err(|_| TransportError::WriteTimeout {
            peer,
            waited: timeout,
        })?
        .map_err(|e| io_to_transport(peer, e))
}

impl<R: AsyncRead + Unpin> ChannelReader<R> {
    /// Fill `buf`, from the read-ahead first. The deadline is for
    /// inactivity: it restarts whenever bytes arrive, so a slow but live
    /// link never times out mid-frame.
    async fn read_within(
        &mut self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<(), TransportError> {
        let peer = self.peer;
        let mut filled = self.inbox.take_into(buf);
        while filled < buf.len() {
            let rest = &mut buf[filled..];
            // A large remainder is read in place; a small one through the
            // inbox, with whatever follows it.
            let direct = rest.len() >= INBOX_BYTES;
            let read = if direct {
                self.io.read(rest)
            } else {
                self.inbox.start = 0;
                self.inbox.end = 0;
                self.io.read(&mut self.inbox.buf[..])
            };
            let n = match timeout {
                Some(t) => tokio::time::timeout(t, read)
                    .await
                    .map_err(|_| TransportError::ReadTimeout { peer, waited: t })?,
                None => read.await,
            }
            .map_err(|e| io_to_transport(peer, e))?;
            if n == 0 {
                return Err(TransportError::Closed { peer });
            }
            if direct {
                filled += n;
            } else {
                self.inbox.end = n;
                filled += self.inbox.take_into(&mut buf[filled..]);
            }
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin + Send> FrameSource for ChannelReader<R> {
    async fn recv_frame(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<(), TransportError> {
        let mut header = [0u8; FRAME_HEADER_LEN];
        self.read_within(&mut header, timeout).await?;
        let len = u32::from_be_bytes(header) as usize;
        if len > MAX_FRAME_LEN {
            return Err(TransportError::FrameTooLarge {
                peer: self.peer,
                len,
                max: MAX_FRAME_LEN,
            });
        }
        if len < TAG_LEN {
            return Err(TransportError::Crypto {
                peer: self.peer,
                source: tallow_crypto::CryptoError::FrameLength(len),
            });
        }
        // Resizing a recycled buffer down is free; only growth is zeroed.
        buf.resize(len, 0);
        let body_timeout = Some(self.body_timeout);
        self.read_within(buf, body_timeout).await?;
        self.opener
            .open(header, buf)
            .map_err(|source| TransportError::Crypto {
                peer: self.peer,
                source,
            })
    }

    fn frame_ready(&self) -> bool {
        let have = &self.inbox.buf[self.inbox.start..self.inbox.end];
        match have.first_chunk::<FRAME_HEADER_LEN>() {
            Some(header) => have.len() - FRAME_HEADER_LEN >= u32::from_be_bytes(*header) as usize,
            None => false,
        }
    }
}

impl<W: AsyncWrite + Unpin + Send> FrameSink for ChannelWriter<W> {
    async fn send_frame(
        &mut self,
        frame: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<(), TransportError> {
        // Sealed in order, written in order: what waits in the batch first.
        self.send_frame_batched(frame, timeout).await?;
        self.flush(timeout).await
    }

    async fn send_frame_batched(
        &mut self,
        frame: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<(), TransportError> {
        let peer = self.peer;
        self.sealer
            .seal(frame)
            .map_err(|source| TransportError::Crypto { peer, source })?;
        if frame.len() < BATCHED_FRAME {
            self.batch.extend_from_slice(frame);
            if self.batch.len() >= BATCH_BYTES {
                self.flush(timeout).await?;
            }
            return Ok(());
        }
        // A large frame is written from where it is, after the batch.
        self.flush(timeout).await?;
        write_within(&mut self.io, frame, timeout, peer).await
    }

    async fn flush(&mut self, timeout: Duration) -> Result<(), TransportError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        write_within(&mut self.io, &self.batch, timeout, self.peer).await?;
        self.batch.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (
        ChannelWriter<tokio::io::DuplexStream>,
        ChannelReader<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let key = [9u8; 32];
        (
            ChannelWriter::new(a, FrameSealer::new(&key), Role::Receiver),
            ChannelReader::new(
                b,
                FrameOpener::new(&key),
                Role::Sender,
                Duration::from_secs(5),
            ),
        )
    }

    fn frame(plaintext: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; FRAME_HEADER_LEN];
        f.extend_from_slice(plaintext);
        f
    }

    #[tokio::test]
    async fn frames_round_trip_at_every_size_around_the_chunk() {
        let (mut w, mut r) = pair();
        let chunk = 64 * 1024;
        for size in [0, 1, chunk - 1, chunk, chunk + 1, 5 * chunk + 3] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
            let mut f = frame(&data);
            let writer = async { w.send_frame(&mut f, Duration::from_secs(5)).await };
            let mut buf = Vec::new();
            let reader = r.recv_frame(&mut buf, Some(Duration::from_secs(5)));
            let (a, b) = tokio::join!(writer, reader);
            a.unwrap();
            b.unwrap();
            assert_eq!(buf, data, "size {size}");
        }
    }

    #[tokio::test]
    async fn batched_small_frames_and_large_ones_arrive_whole_and_in_order() {
        let (mut w, mut r) = pair();
        // Small frames wait in the batch, a large one flushes them first,
        // and what is left goes out with `flush`.
        let sizes = [0, 1, 5000, 9, 200_000, 3, 16 * 1024, 70, 100_000, 1];
        let data =
            |i: usize, size: usize| -> Vec<u8> { (0..size).map(|b| (b * 31 + i) as u8).collect() };
        let writer = async {
            for (i, size) in sizes.into_iter().enumerate() {
                let mut f = frame(&data(i, size));
                w.send_frame_batched(&mut f, Duration::from_secs(5))
                    .await
                    .unwrap();
            }
            w.flush(Duration::from_secs(5)).await.unwrap();
        };
        let reader = async {
            for (i, size) in sizes.into_iter().enumerate() {
                let mut buf = Vec::new();
                r.recv_frame(&mut buf, Some(Duration::from_secs(5)))
                    .await
                    .unwrap();
                assert_eq!(buf, data(i, size), "frame {i}");
            }
        };
        tokio::join!(writer, reader);
    }

    #[tokio::test]
    async fn a_batched_frame_is_not_sent_before_a_flush() {
        let (mut w, mut r) = pair();
        let mut f = frame(b"waits");
        w.send_frame_batched(&mut f, Duration::from_secs(5))
            .await
            .unwrap();
        let mut buf = Vec::new();
        let early = r
            .recv_frame(&mut buf, Some(Duration::from_millis(100)))
            .await;
        assert!(
            matches!(early, Err(TransportError::ReadTimeout { .. })),
            "{early:?}"
        );
        w.flush(Duration::from_secs(5)).await.unwrap();
        let mut buf = Vec::new();
        r.recv_frame(&mut buf, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(buf, b"waits");
    }

    #[tokio::test]
    async fn the_frame_limit_holds_at_the_boundary() {
        for (len, too_large) in [(MAX_FRAME_LEN, false), (MAX_FRAME_LEN + 1, true)] {
            let (mut raw, b) = tokio::io::duplex(1 << 16);
            let mut r = ChannelReader::new(
                b,
                FrameOpener::new(&[1; 32]),
                Role::Sender,
                Duration::from_secs(5),
            );
            let feed = tokio::spawn(async move {
                raw.write_all(&(len as u32).to_be_bytes()).await?;
                if !too_large {
                    raw.write_all(&vec![0u8; len]).await?;
                }
                Ok::<_, std::io::Error>(raw)
            });
            let mut buf = Vec::new();
            let err = r
                .recv_frame(&mut buf, Some(Duration::from_secs(5)))
                .await
                .unwrap_err();
            // At the limit the frame is read and fails authentication; one
            // byte more is refused from the length alone.
            assert_eq!(
                matches!(err, TransportError::FrameTooLarge { .. }),
                too_large,
                "{len}: {err}"
            );
            let _ = feed.await;
        }
    }

    #[tokio::test]
    async fn oversize_length_is_refused_before_allocating() {
        let (mut raw, b) = tokio::io::duplex(64);
        let mut r = ChannelReader::new(
            b,
            FrameOpener::new(&[1; 32]),
            Role::Sender,
            Duration::from_secs(5),
        );
        raw.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let err = r
            .recv_frame(&mut buf, Some(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransportError::FrameTooLarge { len, .. } if len == u32::MAX as usize)
        );
        assert_eq!(buf.capacity(), 0, "nothing was allocated");
    }

    #[tokio::test]
    async fn garbled_truncated_and_silent_streams_fail_clearly() {
        // A flipped bit.
        let mut f = frame(b"hello");
        FrameSealer::new(&[9; 32]).seal(&mut f).unwrap();
        f[6] ^= 1;
        let (mut raw, b) = tokio::io::duplex(1024);
        let mut r = ChannelReader::new(
            b,
            FrameOpener::new(&[9; 32]),
            Role::Sender,
            Duration::from_secs(5),
        );
        raw.write_all(&f).await.unwrap();
        let mut buf = Vec::new();
        assert!(matches!(
            r.recv_frame(&mut buf, None).await,
            Err(TransportError::Crypto { .. })
        ));

        // Cut mid-frame, then the connection closes.
        let mut f = frame(b"hello");
        FrameSealer::new(&[9; 32]).seal(&mut f).unwrap();
        let (mut raw, b) = tokio::io::duplex(1024);
        let mut r = ChannelReader::new(
            b,
            FrameOpener::new(&[9; 32]),
            Role::Sender,
            Duration::from_secs(5),
        );
        raw.write_all(&f[..f.len() - 3]).await.unwrap();
        drop(raw);
        assert!(matches!(
            r.recv_frame(&mut buf, None).await,
            Err(TransportError::Closed { peer: Role::Sender })
        ));

        // Nothing at all within the deadline.
        let (_raw, b) = tokio::io::duplex(1024);
        let mut r = ChannelReader::new(
            b,
            FrameOpener::new(&[9; 32]),
            Role::Sender,
            Duration::from_secs(5),
        );
        assert!(matches!(
            r.recv_frame(&mut buf, Some(Duration::from_millis(50)))
                .await,
            Err(TransportError::ReadTimeout { .. })
        ));
    }

    /// Sent with the peer's bytes unread, then closed: with a plain close
    /// the kernel resets the connection and what was still queued is lost;
    /// with [`OrderlyClose`] all of it arrives, then the end of the stream.
    async fn bytes_arriving_after_close(orderly: bool) -> (usize, usize, std::io::Result<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut theirs, _) = listener.accept().await.unwrap();
        // Theirs says something we never read (acks, say).
        theirs.write_all(&[7u8; 1024]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Ours fills every buffer on the way while they do not read.
        let mut sent = 0;
        let block = vec![1u8; 64 * 1024];
        loop {
            match ours.try_write(&block) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let closing = orderly.then(|| OrderlyClose::new(&ours));
        drop(ours);
        let finished = tokio::spawn(async move {
            if let Some(closing) = closing {
                closing.finish(Duration::from_secs(10)).await;
            }
        });
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        let end = loop {
            match theirs.read(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(n) => got += n,
                Err(e) => break Err(e),
            }
        };
        drop(theirs);
        finished.await.unwrap();
        (sent, got, end)
    }

    #[tokio::test]
    async fn an_orderly_close_delivers_what_was_queued_despite_unread_bytes() {
        let (sent, got, end) = bytes_arriving_after_close(true).await;
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(got, sent);
        // What the test shows is real: a plain close loses the queue.
        let (sent, got, end) = bytes_arriving_after_close(false).await;
        assert!(end.is_err() && got < sent, "{got} of {sent}: {end:?}");
    }
}
