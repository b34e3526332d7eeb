//! Tallow's protocol, sans-IO: what the two sides and the relay say to each
//! other and the rules they follow, as types, codecs and state machines fed
//! bytes or messages. No sockets, files or clock here (no tokio, no
//! `std::fs`): `tallow-transfer` drives the machines with the disk, and
//! `tallow-net` with the network.
//!
//! * [`handshake`]: the authenticated hybrid handshake as state machines.
//! * [`machine`]: the rules of the transfer stream (what each side may send
//!   when), as the sender's and the receiver's machines.
//! * [`rendezvous`]: the relay hello and status, the only bytes a relay reads.
//! * [`direct`]: moving off the relay: the addresses each side offers, the
//!   proof on a direct connection, and the choice of route.
//! * [`message`] and [`manifest`]: what travels inside the encrypted channel;
//!   [`file_list`] holds an offer's files packed.
//! * [`wire`]: the reader every decoder uses, bounding each length first.
//! * [`path`]: rejecting unsafe names from a peer.
//! * [`transport`]: what a pipeline needs from a connection (traits only).
//! * [`limits`]: the protocol's bounds and deadlines.

pub mod direct;
pub mod file_list;
pub mod handshake;
pub mod limits;
pub mod machine;
pub mod manifest;
pub mod message;
pub mod offer;
pub mod path;
pub mod rendezvous;
pub mod transport;
pub mod wire;

/// Which side of a transfer a party is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Offers and sends files.
    Sender,
    /// Accepts and writes files.
    Receiver,
}

impl Role {
    /// The other side.
    pub fn peer(self) -> Role {
        match self {
            Role::Sender => Role::Receiver,
            Role::Receiver => Role::Sender,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        })
    }
}
