//! What a relay allows: limits and deadlines, set by `tallow relay`'s
//! flags or by the sender's in-process relay.

use std::time::Duration;

use tallow_crypto::RoomId;

/// Limits and deadlines of a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// A client must send its hello within this.
    pub hello_timeout: Duration,
    /// A waiting client is refused if its peer has not come by then.
    pub pair_timeout: Duration,
    /// A pair is cut when no byte moved either way for this long.
    pub idle_timeout: Duration,
    /// Rooms (waiting or paired) at once; a new room beyond is refused.
    pub max_rooms: usize,
    /// Connections at once from one IP address (0: no limit).
    pub max_conns_per_ip: usize,
    /// Clients must present this password, if set.
    pub password: Option<Vec<u8>>,
    /// Serve this room only (the sender's in-process relay).
    pub only_room: Option<RoomId>,
    /// Most bytes per second each transfer may move, each way.
    pub max_rate: Option<u64>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            hello_timeout: Duration::from_secs(10),
            pair_timeout: Duration::from_secs(15 * 60),
            idle_timeout: Duration::from_secs(10 * 60),
            max_rooms: 10_000,
            max_conns_per_ip: 32,
            password: None,
            only_room: None,
            max_rate: None,
        }
    }
}
