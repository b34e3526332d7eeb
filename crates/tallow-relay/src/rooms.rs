//! The room table: who waits in which room, which rooms are paired, and
//! who may join. Pure logic (no sockets, no clock), so each rule is a unit
//! test: the first sender and first receiver of a room pair; a second
//! client of the waiting role is refused (busy), any client of a paired
//! room is refused (full), a new room past the limit is refused; a client
//! releases only its own room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tallow_crypto::RoomId;
use tallow_protocol::Role;

use crate::metrics::Refusal;

/// A room's state. `P` is how a joining client reaches the waiting one.
enum Slot<P> {
    /// One client waits; the other side will be handed over through `partner`.
    Waiting {
        role: Role,
        /// The waiting connection.
        id: u64,
        partner: P,
    },
    /// Both sides are here and bytes are flowing; `id` is the connection
    /// that forwards them.
    Paired { id: u64 },
}

/// What a client asking to join a room gets.
#[derive(Debug)]
pub(crate) enum Join<P> {
    /// It waits in a new room.
    Wait,
    /// The other side waits there: hand this client over through `P`.
    Pair(P),
    /// Refused, with a sentence for the user.
    Refuse(Refusal, String),
}

/// Every room of a relay.
pub(crate) struct RoomTable<P> {
    rooms: HashMap<RoomId, Slot<P>>,
    max_rooms: usize,
}

/// The table shared by a relay's connections.
pub(crate) type Rooms<P> = Arc<Mutex<RoomTable<P>>>;

impl<P> RoomTable<P> {
    /// An empty table holding at most `max_rooms` rooms (waiting or paired).
    pub(crate) fn new(max_rooms: usize) -> Self {
        RoomTable {
            rooms: HashMap::new(),
            max_rooms,
        }
    }

    /// Connection `id`, a `role`, asks for `room`; if it is to wait,
    /// `partner` is kept for the other side to reach it.
    pub(crate) fn join(&mut self, room: RoomId, role: Role, id: u64, partner: P) -> Join<P> {
        match self.rooms.remove(&room) {
            None if self.rooms.len() >= self.max_rooms => Join::Refuse(
                Refusal::RoomLimit,
                "the relay is full (too many transfers at once); try again later".to_owned(),
            ),
            None => {
                self.rooms.insert(room, Slot::Waiting { role, id, partner });
                Join::Wait
            }
            Some(Slot::Waiting {
                role: waiting,
                id: waiting_id,
                partner: other,
            }) if waiting != role => {
                self.rooms.insert(room, Slot::Paired { id: waiting_id });
                Join::Pair(other)
            }
            Some(slot) => {
                let refusal = match &slot {
                    Slot::Waiting { role, .. } => (
                        Refusal::RoomBusy,
                        format!("another {role} is already waiting with this code's number; start a new transfer for a new code"),
                    ),
                    Slot::Paired { .. } => (
                        Refusal::RoomFull,
                        "a transfer with this code's number is already in progress (the room is full); start a new transfer for a new code".to_owned(),
                    ),
                };
                self.rooms.insert(room, slot);
                Join::Refuse(refusal.0, refusal.1)
            }
        }
    }

    /// Connection `id` is done with `room`: removed if it is still its own
    /// (waiting or paired), never another connection's.
    pub(crate) fn release(&mut self, room: RoomId, id: u64) {
        let ours = match self.rooms.get(&room) {
            Some(Slot::Waiting { id: owner, .. }) | Some(Slot::Paired { id: owner }) => {
                *owner == id
            }
            None => false,
        };
        if ours {
            self.rooms.remove(&room);
        }
    }

    /// Clients waiting for their other side now.
    pub(crate) fn waiting(&self) -> u64 {
        self.rooms
            .values()
            .filter(|s| matches!(s, Slot::Waiting { .. }))
            .count() as u64
    }

    /// Rooms in use (waiting or paired).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.rooms.len()
    }
}

/// Lock the shared table. A panic while holding the lock leaves it
/// consistent (each change is one insert or remove), so keep serving.
pub(crate) fn lock<P>(rooms: &Rooms<P>) -> MutexGuard<'_, RoomTable<P>> {
    rooms
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(n: u8) -> RoomId {
        RoomId([n; 32])
    }

    fn refused<P>(join: Join<P>) -> Option<Refusal> {
        match join {
            Join::Refuse(why, _) => Some(why),
            _ => None,
        }
    }

    #[test]
    fn a_sender_and_a_receiver_pair_and_a_third_client_is_refused() {
        let mut t = RoomTable::new(10);
        assert!(matches!(
            t.join(room(1), Role::Sender, 1, "to sender 1"),
            Join::Wait
        ));
        assert_eq!(t.waiting(), 1);
        match t.join(room(1), Role::Receiver, 2, "unused") {
            Join::Pair(partner) => assert_eq!(partner, "to sender 1"),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.waiting(), 0);
        // Paired: anyone else is refused, whatever the role.
        for (role, id) in [(Role::Sender, 3), (Role::Receiver, 4)] {
            assert_eq!(
                refused(t.join(room(1), role, id, "x")),
                Some(Refusal::RoomFull)
            );
        }
        assert_eq!(t.len(), 1, "the pair keeps its room");
    }

    #[test]
    fn a_second_client_of_the_waiting_role_is_refused_and_the_first_keeps_waiting() {
        let mut t = RoomTable::new(10);
        assert!(matches!(t.join(room(2), Role::Receiver, 1, 1), Join::Wait));
        match t.join(room(2), Role::Receiver, 2, 2) {
            Join::Refuse(Refusal::RoomBusy, why) => {
                assert!(why.contains("another receiver is already waiting"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        // The first one is still the one reached.
        assert!(matches!(t.join(room(2), Role::Sender, 3, 3), Join::Pair(1)));
    }

    #[test]
    fn new_rooms_past_the_limit_are_refused_but_joining_one_is_not() {
        let mut t = RoomTable::new(2);
        assert!(matches!(t.join(room(1), Role::Sender, 1, ()), Join::Wait));
        assert!(matches!(t.join(room(2), Role::Sender, 2, ()), Join::Wait));
        assert_eq!(
            refused(t.join(room(3), Role::Sender, 3, ())),
            Some(Refusal::RoomLimit)
        );
        // Pairing in an existing room needs no new one.
        assert!(matches!(
            t.join(room(1), Role::Receiver, 4, ()),
            Join::Pair(())
        ));
        t.release(room(2), 2);
        assert!(matches!(t.join(room(3), Role::Sender, 3, ()), Join::Wait));
    }

    #[test]
    fn a_client_releases_only_its_own_room() {
        let mut t = RoomTable::new(10);
        assert!(matches!(t.join(room(1), Role::Sender, 1, ()), Join::Wait));
        // Another connection (a refused one, say) cannot free it.
        t.release(room(1), 9);
        assert_eq!(t.waiting(), 1);
        t.release(room(1), 1);
        assert_eq!(t.len(), 0);
        // Paired, the room belongs to the waiting side's connection, which
        // forwards; released when it ends.
        assert!(matches!(t.join(room(1), Role::Sender, 5, ()), Join::Wait));
        assert!(matches!(
            t.join(room(1), Role::Receiver, 6, ()),
            Join::Pair(())
        ));
        t.release(room(1), 6);
        assert_eq!(t.len(), 1, "the joiner does not own the pair");
        t.release(room(1), 5);
        assert_eq!(t.len(), 0);
        // A released room is free for a new transfer.
        assert!(matches!(t.join(room(1), Role::Receiver, 7, ()), Join::Wait));
    }
}
