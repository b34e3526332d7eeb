//! Tallow's networking, with no knowledge of files.
//!
//! * [`relay_client`]: connect to a relay, join a room (or ask it for a
//!   number), wait to be paired.
//! * [`proxy`]: reaching a relay through a SOCKS5 or HTTP CONNECT proxy.
//! * [`lan`]: announcing and finding a sender on the local network.
//! * [`session`]: trying every allowed route (LAN, relay) and keeping the
//!   first that works.
//! * [`direct`]: after a handshake through a relay, find a connection
//!   straight to the peer and move the channel onto it.
//! * [`handshake_io`]: run the sans-IO handshake of `tallow-protocol` over a
//!   stream, with one deadline for the whole exchange.
//! * [`channel`]: [`PeerChannel`], the encrypted framed channel that the
//!   pipelines send through.

pub mod channel;
pub mod direct;
pub mod handshake_io;
pub mod lan;
pub mod proxy;
pub mod relay_client;
pub mod session;

pub use channel::{ChannelReader, ChannelWriter, OrderlyClose, PeerChannel, Via};
pub use handshake_io::{
    handshake_as_receiver, handshake_as_sender, read_sender_hello, SenderHelloRead,
};
pub use proxy::Proxy;
pub use relay_client::{connect_to_relay, enter_room, join_room, RelayAccess, RoomEntry};

use std::time::Duration;

use tallow_protocol::handshake::HandshakeError;
use tallow_protocol::transport::TransportError;
use tallow_protocol::wire::DecodeError;
use tallow_protocol::Role;

/// How reaching the peer failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// TCP connect to the relay failed.
    #[error("could not reach the relay at {addr} ({source}): is `tallow relay` running there, and is the address right?")]
    Connect {
        /// The address as given.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The proxy could not open a connection to the relay.
    #[error("could not reach the relay at {target} through the proxy {proxy}: {reason}")]
    Proxy {
        /// The proxy, without credentials.
        proxy: String,
        /// The relay's address.
        target: String,
        /// What the proxy said or did.
        reason: String,
    },
    /// TCP connect to the relay did not finish in time.
    #[error("could not reach the relay at {addr} within {} s: check the address and your network", .waited.as_secs())]
    ConnectTimeout {
        /// The address as given.
        addr: String,
        /// How long we tried.
        waited: Duration,
    },
    /// The relay refused us, saying why.
    #[error("the relay refused the connection: {0}")]
    Refused(String),
    /// A receiver waited for a room no sender has on the relay.
    #[error("no such transfer on the relay: {0}")]
    NoSuchRoom(String),
    /// Someone else already holds our side of the room.
    #[error("this code's number is taken on the relay: {0}")]
    RoomTaken(String),
    /// The relay answered something that is not a relay status.
    #[error(
        "the server at {addr} is not a tallow relay, or runs an incompatible version ({source})"
    )]
    NotARelay {
        /// The address as given.
        addr: String,
        /// What did not parse.
        source: DecodeError,
    },
    /// The relay connection broke before pairing.
    #[error("the relay closed the connection while we waited for the {peer}: it may have restarted; try again")]
    RelayClosed {
        /// Who we were waiting for.
        peer: Role,
    },
    /// Nobody joined the room in time.
    #[error("no {peer} joined within {} s: check that the other side runs with the same code and relay", .waited.as_secs())]
    PairingTimeout {
        /// Who we were waiting for.
        peer: Role,
        /// How long we waited.
        waited: Duration,
    },
    /// The handshake did not finish in time.
    #[error("the handshake with the {peer} did not finish within {} s: it stopped responding", .waited.as_secs())]
    HandshakeTimeout {
        /// Who stopped.
        peer: Role,
        /// The deadline.
        waited: Duration,
    },
    /// No route was allowed (no relay, and LAN discovery off).
    #[error(
        "no way to reach the other side: no relay is configured and local-network discovery is off"
    )]
    NoRoute,
    /// The in-process relay could not start.
    #[error("cannot listen for the receiver on this machine ({source})")]
    HostRelay {
        /// The OS error.
        source: std::io::Error,
    },
    /// The discovery port could not be opened.
    #[error("cannot listen for senders on the local network (UDP port {port}: {source})")]
    Discovery {
        /// The UDP port.
        port: u16,
        /// The OS error.
        source: std::io::Error,
    },
    /// No announcement for our room arrived in time.
    #[error("no sender for this code found on the local network within {} s: is the sender running, with this code?", .waited.as_secs())]
    NotOnLan {
        /// How long we listened.
        waited: Duration,
    },
    /// The sender found on the local network could not be reached.
    #[error("could not connect to the sender at {addr} on the local network ({reason}): a firewall on its machine may block it")]
    LanUnreachable {
        /// The address it announced.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The local-network connection ended or was refused before pairing.
    #[error("the connection to the {peer} on the local network ended before the handshake ({reason}); try again")]
    LanDropped {
        /// Who we were waiting for.
        peer: Role,
        /// What happened.
        reason: String,
    },
    /// Nobody joined on the local network in time.
    #[error("no {peer} joined on the local network within {} s: check that the other side runs with this code", .waited.as_secs())]
    LanPairingTimeout {
        /// Who we were waiting for.
        peer: Role,
        /// How long we waited.
        waited: Duration,
    },
    /// The handshake failed (wrong code, version, invalid key).
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The connection failed during the handshake.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The peer's message about routes (authenticated, so from the peer)
    /// did not parse.
    #[error("the {peer} sent a malformed message about the route ({source}): it may run an incompatible tallow")]
    RouteMessage {
        /// Who sent it.
        peer: Role,
        /// What did not parse.
        source: DecodeError,
    },
}

impl NetError {
    /// The same failure in the words of the local-network route, where
    /// what answers is the sender's own machine, not a relay the user runs.
    pub(crate) fn on_lan(self, peer: Role) -> NetError {
        match self {
            NetError::Connect { addr, source } => NetError::LanUnreachable {
                addr,
                reason: source.to_string(),
            },
            NetError::ConnectTimeout { addr, waited } => NetError::LanUnreachable {
                addr,
                reason: format!("no answer within {} s", waited.as_secs()),
            },
            NetError::Refused(reason)
            | NetError::NoSuchRoom(reason)
            | NetError::RoomTaken(reason) => NetError::LanDropped {
                peer,
                reason: format!("refused: {reason}"),
            },
            NetError::NotARelay { .. } => NetError::LanDropped {
                peer,
                reason: "what answered is not a tallow sender".to_owned(),
            },
            NetError::RelayClosed { peer } => NetError::LanDropped {
                peer,
                reason: "it closed".to_owned(),
            },
            NetError::PairingTimeout { peer, waited } => {
                NetError::LanPairingTimeout { peer, waited }
            }
            other => other,
        }
    }

    /// Nobody joined in time (on a relay or the local network).
    pub(crate) fn is_pairing_timeout(&self) -> bool {
        matches!(
            self,
            NetError::PairingTimeout { .. } | NetError::LanPairingTimeout { .. }
        )
    }

    /// Whether this is the local network's route failing (not a relay's).
    pub fn on_local_network(&self) -> bool {
        matches!(
            self,
            NetError::LanUnreachable { .. }
                | NetError::LanDropped { .. }
                | NetError::LanPairingTimeout { .. }
                | NetError::NotOnLan { .. }
                | NetError::HostRelay { .. }
                | NetError::Discovery { .. }
        )
    }

    /// How much the error tells a user, to pick between two failed routes:
    /// a handshake verdict (wrong code) beats a refusal, which beats a
    /// timeout or an unreachable route.
    fn rank(&self) -> u8 {
        match self {
            NetError::Handshake(_) => 5,
            NetError::Refused(_)
            | NetError::NoSuchRoom(_)
            | NetError::RoomTaken(_)
            | NetError::NotARelay { .. } => 4,
            NetError::Transport(_)
            | NetError::HandshakeTimeout { .. }
            | NetError::RouteMessage { .. } => 3,
            NetError::Connect { .. }
            | NetError::ConnectTimeout { .. }
            | NetError::Proxy { .. }
            | NetError::RelayClosed { .. }
            | NetError::LanUnreachable { .. }
            | NetError::LanDropped { .. } => 2,
            NetError::PairingTimeout { .. }
            | NetError::LanPairingTimeout { .. }
            | NetError::HostRelay { .. }
            | NetError::Discovery { .. } => 1,
            NetError::NotOnLan { .. } | NetError::NoRoute => 0,
        }
    }
}

/// Map an I/O error to "the peer went away" where that is what it means.
pub(crate) fn io_to_transport(peer: Role, e: std::io::Error) -> TransportError {
    use std::io::ErrorKind::*;
    match e.kind() {
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe => {
            TransportError::Closed { peer }
        }
        _ => TransportError::Io { peer, source: e },
    }
}
