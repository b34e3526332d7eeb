//! Drives the handshake state machines over a TCP stream.
//!
//! Handshake messages travel as `u32 length | message` in the clear (they are
//! public keys and tags); the length is checked against
//! [`MAX_HANDSHAKE_MESSAGE`] before allocating. The whole exchange has one
//! deadline. On a failure the peer gets an `Abort` saying why, so both users
//! see a sentence instead of a dropped connection.

use std::time::Duration;

use rand_core::OsRng;
use tallow_crypto::CodePhrase;
use tallow_protocol::handshake::{abort_message, ReceiverHandshake, SenderHandshake, SessionKeys};
use tallow_protocol::limits::{Deadlines, MAX_HANDSHAKE_MESSAGE};
use tallow_protocol::wire::DecodeError;
use tallow_protocol::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::channel::{ChannelReader, ChannelWriter, PeerChannel};
use crate::relay_client::far_future;
use crate::{io_to_transport, NetError};

/// How long to spend telling the peer why we give up.
const HANDSHAKE_ABORT_TIMEOUT: Duration = Duration::from_secs(2);

async fn write_message(stream: &mut TcpStream, msg: &[u8], peer: Role) -> Result<(), NetError> {
    let mut out = Vec::with_capacity(4 + msg.len());
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    stream
        .write_all(&out)
        .await
        .map_err(|e| io_to_transport(peer, e).into())
}

async fn read_message(stream: &mut TcpStream, peer: Role) -> Result<Vec<u8>, NetError> {
    let mut header = [0u8; 4];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| io_to_transport(peer, e))?;
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_HANDSHAKE_MESSAGE {
        return Err(
            tallow_protocol::handshake::HandshakeError::Malformed(DecodeError::TooLarge {
                what: "handshake message",
                got: len as u64,
                max: MAX_HANDSHAKE_MESSAGE as u64,
            })
            .into(),
        );
    }
    let mut msg = vec![0u8; len];
    stream
        .read_exact(&mut msg)
        .await
        .map_err(|e| io_to_transport(peer, e))?;
    Ok(msg)
}

/// Tell the peer why, if the error has something to tell.
async fn send_abort(stream: &mut TcpStream, error: &NetError, peer: Role) {
    if let NetError::Handshake(e) = error {
        if let Some(reason) = e.abort_reason() {
            let notice = abort_message(reason);
            let _ = tokio::time::timeout(
                HANDSHAKE_ABORT_TIMEOUT,
                write_message(stream, &notice, peer),
            )
            .await;
        }
    }
}

fn into_channel(
    stream: TcpStream,
    keys: SessionKeys,
    peer: Role,
    deadlines: &Deadlines,
) -> PeerChannel {
    let closing = crate::channel::OrderlyClose::new(&stream);
    let (read, write) = stream.into_split();
    PeerChannel {
        reader: ChannelReader::new(read, keys.opener, peer, deadlines.idle),
        writer: ChannelWriter::new(write, keys.sealer, peer),
        short_authentication_string: keys.short_authentication_string,
        via: crate::channel::Via::Given,
        closing,
        direct_key: Some(keys.direct_path),
        no_direct: None,
    }
}

/// When a handshake that starts now must be over.
fn handshake_ends(deadlines: &Deadlines) -> Instant {
    Instant::now()
        .checked_add(deadlines.handshake)
        .unwrap_or_else(far_future)
}

/// Run `fut` until `at`, when the handshake's `deadline` (started earlier)
/// runs out.
async fn with_deadline_at<T>(
    at: Instant,
    deadline: Duration,
    peer: Role,
    fut: impl std::future::Future<Output = Result<T, NetError>>,
) -> Result<T, NetError> {
    tokio::time::timeout_at(at, fut)
        .await
        .map_err(|_| NetError::HandshakeTimeout {
            peer,
            waited: deadline,
        })?
}

/// `result` of a handshake step on `stream`: the value, or, on a failure,
/// the peer told why (if there is something to tell) and the error.
async fn or_abort<T>(
    stream: &mut TcpStream,
    result: Result<T, NetError>,
    peer: Role,
) -> Result<T, NetError> {
    if let Err(e) = &result {
        send_abort(stream, e, peer).await;
    }
    result
}

/// Run the sender's side on a stream paired with a receiver.
pub async fn handshake_as_sender(
    mut stream: TcpStream,
    code: &CodePhrase,
    deadlines: &Deadlines,
) -> Result<PeerChannel, NetError> {
    let peer = Role::Receiver;
    let result = with_deadline_at(
        handshake_ends(deadlines),
        deadlines.handshake,
        peer,
        async {
            let (state, hello) = SenderHandshake::start(code, &mut OsRng);
            write_message(&mut stream, &hello, peer).await?;
            let reply = read_message(&mut stream, peer).await?;
            let (keys, confirm) = state.finish(&reply)?;
            write_message(&mut stream, &confirm, peer).await?;
            Ok(keys)
        },
    )
    .await;
    let keys = or_abort(&mut stream, result, peer).await?;
    Ok(into_channel(stream, keys, peer, deadlines))
}

/// Run the receiver's side on a stream paired with a sender.
pub async fn handshake_as_receiver(
    stream: TcpStream,
    code: &CodePhrase,
    deadlines: &Deadlines,
) -> Result<PeerChannel, NetError> {
    read_sender_hello(stream, deadlines)
        .await?
        .respond(code, deadlines)
        .await
}

/// The receiver's side up to the sender's hello. Nothing that depends on
/// the code has been sent yet: dropping it (closing the stream) costs no
/// guess at the code. [`respond`](Self::respond) sends the PAKE message.
pub struct SenderHelloRead {
    stream: TcpStream,
    hello: Vec<u8>,
    /// When the whole handshake's deadline runs out (it started with the
    /// read of the hello).
    until: Instant,
}

impl std::fmt::Debug for SenderHelloRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderHelloRead")
            .field("hello_len", &self.hello.len())
            .finish_non_exhaustive()
    }
}

/// First half of [`handshake_as_receiver`]: read the sender's hello on a
/// paired stream, within the handshake deadline, and send nothing. Several
/// routes can each get this far; only one should go on to
/// [`SenderHelloRead::respond`], so that a run answers one guess at most.
pub async fn read_sender_hello(
    mut stream: TcpStream,
    deadlines: &Deadlines,
) -> Result<SenderHelloRead, NetError> {
    let peer = Role::Sender;
    let until = handshake_ends(deadlines);
    let result = with_deadline_at(
        until,
        deadlines.handshake,
        peer,
        read_message(&mut stream, peer),
    )
    .await;
    let hello = or_abort(&mut stream, result, peer).await?;
    Ok(SenderHelloRead {
        stream,
        hello,
        until,
    })
}

impl SenderHelloRead {
    /// Second half of [`handshake_as_receiver`]: answer the hello with the
    /// receiver's PAKE message (one guess at the code for whoever sent the
    /// hello) and check the sender's confirmation, within what is left of
    /// the handshake deadline.
    pub async fn respond(
        self,
        code: &CodePhrase,
        deadlines: &Deadlines,
    ) -> Result<PeerChannel, NetError> {
        let peer = Role::Sender;
        let SenderHelloRead {
            mut stream,
            hello,
            until,
        } = self;
        let result = with_deadline_at(until, deadlines.handshake, peer, async {
            let (state, reply) = ReceiverHandshake::respond(code, &hello, &mut OsRng)?;
            write_message(&mut stream, &reply, peer).await?;
            let confirm = read_message(&mut stream, peer).await?;
            Ok(state.finish(&confirm)?)
        })
        .await;
        let keys = or_abort(&mut stream, result, peer).await?;
        Ok(into_channel(stream, keys, peer, deadlines))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tallow_protocol::handshake::HandshakeError;
    use tallow_protocol::transport::{FrameSink, FrameSource};
    use tokio::net::TcpListener;

    async fn connected() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    fn code(s: &str) -> CodePhrase {
        CodePhrase::parse(s).unwrap()
    }

    #[tokio::test]
    async fn handshake_over_tcp_yields_a_working_channel() {
        let (a, b) = connected().await;
        let d = Deadlines::default();
        let (cs, cr) = (code("5-a-b-c"), code("5-a-b-c"));
        let (s, r) = tokio::join!(
            handshake_as_sender(a, &cs, &d),
            handshake_as_receiver(b, &cr, &d)
        );
        let (mut s, mut r) = (s.unwrap(), r.unwrap());
        assert_eq!(s.short_authentication_string, r.short_authentication_string);
        let mut f = vec![0u8; 4];
        f.extend_from_slice(b"over tcp");
        s.writer
            .send_frame(&mut f, Duration::from_secs(5))
            .await
            .unwrap();
        let mut buf = Vec::new();
        r.reader
            .recv_frame(&mut buf, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(buf, b"over tcp");
    }

    #[tokio::test]
    async fn wrong_code_fails_on_both_sides_with_named_causes() {
        let (a, b) = connected().await;
        let d = Deadlines::default();
        let (cs, cr) = (code("5-a-b-c"), code("5-a-b-d"));
        let (s, r) = tokio::join!(
            handshake_as_sender(a, &cs, &d),
            handshake_as_receiver(b, &cr, &d)
        );
        assert!(matches!(
            s.err(),
            Some(NetError::Handshake(HandshakeError::WrongCode))
        ));
        assert!(matches!(
            r.err(),
            Some(NetError::Handshake(HandshakeError::PeerRejectedCode))
        ));
    }

    #[tokio::test]
    async fn reading_the_hello_sends_nothing_and_responding_completes() {
        let d = Deadlines::default();
        let c = code("5-a-b-c");
        // Read the hello, then drop: the sender hears nothing but the close
        // (no PAKE message, so no guess answered).
        let (mut a, b) = connected().await;
        let (_state, hello) = SenderHandshake::start(&c, &mut OsRng);
        write_message(&mut a, &hello, Role::Receiver).await.unwrap();
        let read = read_sender_hello(b, &d).await.unwrap();
        drop(read);
        let mut rest = Vec::new();
        let _ = a.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "{} bytes answered", rest.len());
        // Kept: responding finishes the handshake as one piece would.
        let (a, b) = connected().await;
        let receiver = async { read_sender_hello(b, &d).await?.respond(&c, &d).await };
        let (s, r) = tokio::join!(handshake_as_sender(a, &c, &d), receiver);
        assert_eq!(
            s.unwrap().short_authentication_string,
            r.unwrap().short_authentication_string
        );
    }

    #[tokio::test]
    async fn silent_peer_hits_the_handshake_deadline() {
        let (a, _b) = connected().await;
        let d = Deadlines {
            handshake: Duration::from_millis(100),
            ..Deadlines::default()
        };
        assert!(matches!(
            handshake_as_receiver(a, &code("5-a-b-c"), &d).await.err(),
            Some(NetError::HandshakeTimeout {
                peer: Role::Sender,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn the_handshake_message_limit_holds_at_the_boundary() {
        // At the limit: read, then refused as malformed (wrong content).
        let (mut a, b) = connected().await;
        let mut msg = (MAX_HANDSHAKE_MESSAGE as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&vec![1u8; MAX_HANDSHAKE_MESSAGE]);
        msg[4] = tallow_protocol::limits::PROTOCOL_VERSION;
        a.write_all(&msg).await.unwrap();
        let d = Deadlines::default();
        let err = handshake_as_receiver(b, &code("5-a-b-c"), &d).await.err();
        assert!(
            matches!(
                err,
                Some(NetError::Handshake(HandshakeError::Malformed(
                    DecodeError::TrailingBytes(_)
                )))
            ),
            "{err:?}"
        );
        // One byte more: refused from the length alone.
        let (mut a, b) = connected().await;
        a.write_all(&((MAX_HANDSHAKE_MESSAGE + 1) as u32).to_be_bytes())
            .await
            .unwrap();
        assert!(matches!(
            handshake_as_receiver(b, &code("5-a-b-c"), &d).await.err(),
            Some(NetError::Handshake(HandshakeError::Malformed(
                DecodeError::TooLarge { .. }
            )))
        ));
    }

    #[tokio::test]
    async fn oversize_handshake_message_is_refused() {
        let (mut a, b) = connected().await;
        a.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();
        let d = Deadlines::default();
        assert!(matches!(
            handshake_as_receiver(b, &code("5-a-b-c"), &d).await.err(),
            Some(NetError::Handshake(HandshakeError::Malformed(
                DecodeError::TooLarge { .. }
            )))
        ));
    }
}
