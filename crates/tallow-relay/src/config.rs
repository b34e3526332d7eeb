//! What a relay allows: limits and deadlines, set by `tallow relay`'s
//! flags or by the sender's in-process relay.

use std::time::Duration;

use tallow_crypto::RoomId;

use crate::fleet::FleetConfig;

/// Limits and deadlines of a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// A client must send its hello within this.
    pub hello_timeout: Duration,
    /// A waiting sender is refused if its receiver has not come by then.
    pub pair_timeout: Duration,
    /// A receiver that comes before any sender of its room waits this long
    /// (at most `pair_timeout`), then is told there is no such room.
    pub receiver_first_wait: Duration,
    /// A pair is cut when no byte moved either way for this long.
    pub idle_timeout: Duration,
    /// Rooms (waiting or paired) at once; a new room beyond is refused.
    pub max_rooms: usize,
    /// Connections at once from one IPv4 address or IPv6 /64 (0: no limit).
    pub max_conns_per_ip: usize,
    /// Rooms waiting for their second side at once from one IPv4 address
    /// or IPv6 /64 (0: no limit).
    pub max_waiting_per_ip: usize,
    /// Nameplate requests per minute from one IPv4 address or IPv6 /64
    /// (0: no limit).
    pub rooms_per_minute: u32,
    /// Clients must present this password, if set.
    pub password: Option<Vec<u8>>,
    /// Serve this room only (the sender's in-process relay).
    pub only_room: Option<RoomId>,
    /// Most bytes per second each transfer may move, each way.
    pub max_rate: Option<u64>,
    /// The fleet this relay is a member of, if any.
    pub fleet: Option<FleetConfig>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            hello_timeout: Duration::from_secs(10),
            pair_timeout: Duration::from_secs(15 * 60),
            receiver_first_wait: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(10 * 60),
            max_rooms: 10_000,
            max_conns_per_ip: 32,
            max_waiting_per_ip: 16,
            rooms_per_minute: 60,
            password: None,
            only_room: None,
            max_rate: None,
            fleet: None,
        }
    }
}
