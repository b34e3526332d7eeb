//! The room table: who waits in which room, which rooms are paired, which
//! nameplate a sender gets, and who may join. Pure logic (no sockets; the
//! clock is passed in), so each rule is a unit test:
//!
//! * A sender asking for a nameplate gets the shortest free one (1, 2, …,
//!   9, 10, …: codes are short on a quiet relay) and waits in its room. A
//!   sender with a code of its own claims its room if it is free.
//! * A receiver joins the room its code names. If no sender is there yet
//!   it may wait, but only briefly (the connection applies the short wait,
//!   [`Join::Wait`]'s `allocated` is false): receivers cannot hold rooms for
//!   long, so nobody can park in the rooms senders will be given.
//! * The first sender and first receiver of a room pair; anyone else in a
//!   room is told it is taken, a new room past the limit is refused.
//! * Waiting rooms are limited per address block (an IPv4 address or an
//!   IPv6 /64), and so is the rate of nameplate requests.
//! * A client releases only its own room.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tallow_crypto::code::MAX_NAMEPLATE_DIGITS;
use tallow_crypto::RoomId;
use tallow_protocol::rendezvous::{RelayHello, RelayStatus};
use tallow_protocol::Role;

use crate::metrics::Refusal;
use crate::per_address::AddressBlock;

/// A room's state. `P` is how a joining client reaches the waiting one.
enum Slot<P> {
    /// One client waits; the other side will be handed over through `partner`.
    Waiting {
        role: Role,
        /// The waiting connection, and where it comes from.
        id: u64,
        block: AddressBlock,
        partner: P,
    },
    /// Both sides are here and bytes are flowing; `id` is the connection
    /// that forwards them.
    Paired { id: u64 },
}

/// What a client asking for a room gets.
#[derive(Debug)]
pub(crate) enum Join<P> {
    /// It waits in `room`. `nameplate`: the one chosen for it, to tell it.
    /// `allocated`: a sender holds the room (it waits up to the pairing
    /// timeout); otherwise a receiver came first (it waits briefly).
    Wait {
        room: RoomId,
        nameplate: Option<String>,
        allocated: bool,
    },
    /// The other side waits there: hand this client over through `P`.
    Pair(P),
    /// Refused: why (for metrics), and what to tell the client.
    Refuse(Refusal, RelayStatus),
}

/// A relay's limits on rooms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoomLimits {
    /// Rooms (waiting or paired) at once.
    pub max_rooms: usize,
    /// Rooms waiting for their second side at once, per address block
    /// (0: no limit).
    pub max_waiting_per_address: usize,
    /// Rooms asked for (numbers handed out, and rooms named by a code) per
    /// minute per address block, in bursts of as many (0: no limit).
    pub rooms_per_minute: u32,
}

/// Nameplate requests an address block may still make, refilled with
/// time (a token bucket).
struct Allowance {
    left: f64,
    at: Instant,
}

/// Address blocks with an allowance kept at once before full ones are
/// forgotten.
const ALLOWANCES_KEPT: usize = 4096;

/// How long a freed room's number rests before it is handed out again.
pub(crate) const COOL_DOWN: Duration = Duration::from_secs(120);

/// Freed rooms remembered at most (the oldest are forgotten first).
const COOLING_KEPT: usize = 65_536;

/// Which rooms this relay may hand out (in a fleet, the ones it owns).
pub(crate) type Owns = Arc<dyn Fn(&RoomId) -> bool + Send + Sync>;

/// Every room of a relay.
pub(crate) struct RoomTable<P> {
    rooms: HashMap<RoomId, Slot<P>>,
    owns: Option<Owns>,
    limits: RoomLimits,
    /// Waiting rooms per address block (blocks with none are absent).
    waiting_per_block: HashMap<AddressBlock, usize>,
    allowances: HashMap<AddressBlock, Allowance>,
    /// Rooms freed lately, and when (oldest first).
    cooling: HashSet<RoomId>,
    cooling_since: VecDeque<(Instant, RoomId)>,
}

/// The table shared by a relay's connections.
pub(crate) type Rooms<P> = Arc<Mutex<RoomTable<P>>>;

impl<P> RoomTable<P> {
    pub(crate) fn new(limits: RoomLimits) -> Self {
        RoomTable {
            rooms: HashMap::new(),
            owns: None,
            limits,
            waiting_per_block: HashMap::new(),
            allowances: HashMap::new(),
            cooling: HashSet::new(),
            cooling_since: VecDeque::new(),
        }
    }

    /// Hand out only numbers whose rooms `owns` says are this relay's.
    pub(crate) fn owned_by(mut self, owns: Owns) -> Self {
        self.owns = Some(owns);
        self
    }

    /// Connection `id`, from `block`, says `hello`; if it is to wait,
    /// `partner` is kept for the other side to reach it.
    pub(crate) fn join(
        &mut self,
        hello: RelayHello,
        id: u64,
        block: AddressBlock,
        partner: P,
        now: Instant,
    ) -> Join<P> {
        // Every request counts: joining rooms in turn (to break into
        // others' transfers with one guess each) is paced like asking for
        // numbers.
        if !self.spend_allowance(block, now) {
            return Join::Refuse(
                Refusal::RoomRate,
                RelayStatus::Refused(
                    "too many transfers started from your address; wait a minute and try again"
                        .to_owned(),
                ),
            );
        }
        let role = hello.role();
        let Some(room) = hello.room() else {
            return self.allocate(id, block, partner, now);
        };
        match self.rooms.remove(&room) {
            None => {
                if let Some(refused) = self.refuse_new_room(block) {
                    return refused;
                }
                self.wait(room, role, id, block, partner);
                Join::Wait {
                    room,
                    nameplate: None,
                    allocated: role == Role::Sender,
                }
            }
            Some(Slot::Waiting {
                role: waiting,
                id: waiting_id,
                block: waiting_block,
                partner: other,
            }) if waiting != role => {
                self.rooms.insert(room, Slot::Paired { id: waiting_id });
                self.unwait(waiting_block);
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
                        "someone else has already joined with this code's number, so this code cannot be used again; if that was not the person you gave it to, it was a guess (it failed, nothing was sent): start a new transfer for a new code".to_owned(),
                    ),
                };
                self.rooms.insert(room, slot);
                Join::Refuse(refusal.0, RelayStatus::RoomTaken(refusal.1))
            }
        }
    }

    /// A sender asks for a nameplate: the shortest free one, if the relay
    /// has room and its address has allowance.
    fn allocate(&mut self, id: u64, block: AddressBlock, partner: P, now: Instant) -> Join<P> {
        if let Some(refused) = self.refuse_new_room(block) {
            return refused;
        }
        self.cool_down(now);
        // At most `max_rooms` rooms exist, so a free number comes within
        // that many tries (times the fleet's size, of which this relay
        // owns its share).
        let owns = self.owns.clone();
        let free = (1u64..)
            .map(|n| n.to_string())
            .take_while(|n| n.len() <= MAX_NAMEPLATE_DIGITS)
            .map(|n| {
                let room = RoomId::for_nameplate(&n);
                (n, room)
            })
            .filter(|(_, room)| owns.as_ref().is_none_or(|owns| owns(room)))
            .find(|(_, room)| !self.rooms.contains_key(room) && !self.cooling.contains(room));
        let Some((nameplate, room)) = free else {
            return Join::Refuse(Refusal::RoomLimit, relay_full());
        };
        self.wait(room, Role::Sender, id, block, partner);
        Join::Wait {
            room,
            nameplate: Some(nameplate),
            allocated: true,
        }
    }

    /// Why a new room for `block` cannot be made, if it cannot.
    fn refuse_new_room(&self, block: AddressBlock) -> Option<Join<P>> {
        if self.rooms.len() >= self.limits.max_rooms {
            return Some(Join::Refuse(Refusal::RoomLimit, relay_full()));
        }
        let waiting = self.waiting_per_block.get(&block).copied().unwrap_or(0);
        let max = self.limits.max_waiting_per_address;
        (max != 0 && waiting >= max).then(|| {
            Join::Refuse(
                Refusal::WaitingLimit,
                RelayStatus::Refused(format!(
                    "too many transfers waiting from your address (at most {max}); finish or stop one and try again"
                )),
            )
        })
    }

    fn wait(&mut self, room: RoomId, role: Role, id: u64, block: AddressBlock, partner: P) {
        self.rooms.insert(
            room,
            Slot::Waiting {
                role,
                id,
                block,
                partner,
            },
        );
        *self.waiting_per_block.entry(block).or_insert(0) += 1;
    }

    /// A room of `block` no longer waits.
    fn unwait(&mut self, block: AddressBlock) {
        if let Some(n) = self.waiting_per_block.get_mut(&block) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.waiting_per_block.remove(&block);
            }
        }
    }

    /// Take one nameplate request from `block`'s allowance; `false` if it
    /// has none left.
    fn spend_allowance(&mut self, block: AddressBlock, now: Instant) -> bool {
        let per_minute = self.limits.rooms_per_minute;
        if per_minute == 0 {
            return true;
        }
        let full = f64::from(per_minute);
        let refill = |a: &Allowance| {
            let secs = now.saturating_duration_since(a.at).as_secs_f64();
            (a.left + secs * full / 60.0).min(full)
        };
        if self.allowances.len() >= ALLOWANCES_KEPT {
            // Blocks whose allowance is whole again need no entry.
            self.allowances.retain(|_, a| refill(a) < full);
        }
        let allowance = self.allowances.entry(block).or_insert(Allowance {
            left: full,
            at: now,
        });
        let left = refill(allowance);
        *allowance = Allowance {
            left: if left >= 1.0 { left - 1.0 } else { left },
            at: now,
        };
        left >= 1.0
    }

    /// Connection `id` is done with `room`: removed if it is still its own
    /// (waiting or paired), never another connection's. Its number is not
    /// handed out again for [`COOL_DOWN`], so a late receiver of the old
    /// code does not break into a new sender's transfer.
    pub(crate) fn release(&mut self, room: RoomId, id: u64, now: Instant) {
        match self.rooms.get(&room) {
            Some(Slot::Waiting {
                id: owner, block, ..
            }) if *owner == id => {
                let block = *block;
                self.rooms.remove(&room);
                self.unwait(block);
            }
            Some(Slot::Paired { id: owner }) if *owner == id => {
                self.rooms.remove(&room);
            }
            _ => return,
        }
        if self.cooling.insert(room) {
            self.cooling_since.push_back((now, room));
        }
        // Bounded: the oldest go first.
        while self.cooling_since.len() > COOLING_KEPT {
            if let Some((_, old)) = self.cooling_since.pop_front() {
                self.cooling.remove(&old);
            }
        }
    }

    /// Numbers freed more than [`COOL_DOWN`] ago may be handed out again.
    fn cool_down(&mut self, now: Instant) {
        while let Some(&(since, room)) = self.cooling_since.front() {
            if now.saturating_duration_since(since) < COOL_DOWN {
                break;
            }
            self.cooling_since.pop_front();
            self.cooling.remove(&room);
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

fn relay_full() -> RelayStatus {
    RelayStatus::Refused(
        "the relay is full (too many transfers at once); try again later".to_owned(),
    )
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
    use std::time::Duration;

    fn room(n: u8) -> RoomId {
        RoomId([n; 32])
    }

    fn at(n: u8) -> AddressBlock {
        AddressBlock::of(std::net::IpAddr::from([192, 0, 2, n]))
    }

    fn hello(role: Role, n: u8) -> RelayHello {
        RelayHello::Room {
            role,
            room: room(n),
        }
    }

    const LIMITS: RoomLimits = RoomLimits {
        max_rooms: 10,
        max_waiting_per_address: 0,
        rooms_per_minute: 0,
    };

    fn refused<P>(join: Join<P>) -> Option<Refusal> {
        match join {
            Join::Refuse(why, _) => Some(why),
            _ => None,
        }
    }

    fn waits<P>(join: Join<P>) -> bool {
        matches!(join, Join::Wait { .. })
    }

    fn allocated<P: std::fmt::Debug>(join: Join<P>) -> String {
        match join {
            Join::Wait {
                nameplate: Some(n),
                allocated: true,
                room,
            } => {
                assert_eq!(room, RoomId::for_nameplate(&n));
                n
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_sender_and_a_receiver_pair_and_a_third_client_is_refused() {
        let now = Instant::now();
        let mut t = RoomTable::new(LIMITS);
        assert!(waits(t.join(
            hello(Role::Sender, 1),
            1,
            at(1),
            "to sender 1",
            now
        )));
        assert_eq!(t.waiting(), 1);
        match t.join(hello(Role::Receiver, 1), 2, at(2), "unused", now) {
            Join::Pair(partner) => assert_eq!(partner, "to sender 1"),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.waiting(), 0);
        // Paired: anyone else is told the room is taken, whatever the role.
        for (role, id) in [(Role::Sender, 3), (Role::Receiver, 4)] {
            match t.join(hello(role, 1), id, at(3), "x", now) {
                Join::Refuse(Refusal::RoomFull, RelayStatus::RoomTaken(why)) => {
                    assert!(why.contains("already joined"), "{why}")
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(t.len(), 1, "the pair keeps its room");
    }

    #[test]
    fn a_second_client_of_the_waiting_role_is_refused_and_the_first_keeps_waiting() {
        let now = Instant::now();
        let mut t = RoomTable::new(LIMITS);
        assert!(waits(t.join(hello(Role::Receiver, 2), 1, at(1), 1, now)));
        match t.join(hello(Role::Receiver, 2), 2, at(1), 2, now) {
            Join::Refuse(Refusal::RoomBusy, RelayStatus::RoomTaken(why)) => {
                assert!(why.contains("another receiver is already waiting"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        // The first one is still the one reached.
        assert!(matches!(
            t.join(hello(Role::Sender, 2), 3, at(2), 3, now),
            Join::Pair(1)
        ));
    }

    #[test]
    fn only_a_sender_holds_a_room_long() {
        let now = Instant::now();
        let mut t = RoomTable::new(LIMITS);
        let held = |j: Join<()>| match j {
            Join::Wait { allocated, .. } => allocated,
            other => panic!("{other:?}"),
        };
        assert!(held(t.join(hello(Role::Sender, 1), 1, at(1), (), now)));
        assert!(!held(t.join(hello(Role::Receiver, 2), 2, at(1), (), now)));
        assert!(held(t.join(RelayHello::Allocate, 3, at(1), (), now)));
    }

    #[test]
    fn nameplates_are_the_shortest_free_and_skip_rooms_in_use() {
        let now = Instant::now();
        let mut t = RoomTable::new(RoomLimits {
            max_rooms: 100,
            ..LIMITS
        });
        assert_eq!(
            allocated(t.join(RelayHello::Allocate, 1, at(1), (), now)),
            "1"
        );
        assert_eq!(
            allocated(t.join(RelayHello::Allocate, 2, at(1), (), now)),
            "2"
        );
        // Someone waits in room 3 with a code of their own.
        let three = RelayHello::Room {
            role: Role::Receiver,
            room: RoomId::for_nameplate("3"),
        };
        assert!(waits(t.join(three, 3, at(2), (), now)));
        assert_eq!(
            allocated(t.join(RelayHello::Allocate, 4, at(1), (), now)),
            "4"
        );
        // A freed number rests before it is given again (a late receiver
        // of the old code must not land in a new transfer), then comes
        // first.
        t.release(RoomId::for_nameplate("1"), 1, now);
        assert_eq!(
            allocated(t.join(RelayHello::Allocate, 5, at(1), (), now)),
            "5"
        );
        let later = now + COOL_DOWN;
        assert_eq!(
            allocated(t.join(RelayHello::Allocate, 6, at(1), (), later)),
            "1"
        );
        // Past one digit, two.
        for id in 7..12 {
            t.join(RelayHello::Allocate, id, at(1), (), later);
        }
        assert_eq!(
            allocated(t.join(RelayHello::Allocate, 12, at(1), (), later)),
            "11"
        );
        // A receiver joins an allocated room.
        let joiner = RelayHello::Room {
            role: Role::Receiver,
            room: RoomId::for_nameplate("11"),
        };
        assert!(matches!(t.join(joiner, 13, at(2), (), now), Join::Pair(())));
    }

    #[test]
    fn a_fleet_member_hands_out_only_numbers_it_owns() {
        let now = Instant::now();
        let owns: Owns = Arc::new(|room: &RoomId| room.0[0].is_multiple_of(3));
        let mut t = RoomTable::new(RoomLimits {
            max_rooms: 100,
            ..LIMITS
        })
        .owned_by(owns.clone());
        let mut last = 0;
        for id in 0..10 {
            let n = allocated(t.join(RelayHello::Allocate, id, at(1), (), now));
            assert!(owns(&RoomId::for_nameplate(&n)), "{n}");
            let n: u64 = n.parse().unwrap();
            assert!(n > last, "shortest owned first");
            last = n;
        }
    }

    #[test]
    fn an_address_holds_few_waiting_rooms_and_others_are_not_counted() {
        let now = Instant::now();
        let mut t = RoomTable::new(RoomLimits {
            max_rooms: 100,
            max_waiting_per_address: 2,
            ..LIMITS
        });
        assert!(waits(t.join(hello(Role::Receiver, 1), 1, at(1), (), now)));
        assert!(waits(t.join(RelayHello::Allocate, 2, at(1), (), now)));
        for third in [
            hello(Role::Receiver, 3),
            hello(Role::Sender, 3),
            RelayHello::Allocate,
        ] {
            assert_eq!(
                refused(t.join(third, 3, at(1), (), now)),
                Some(Refusal::WaitingLimit)
            );
        }
        // Another address is not held back; pairing needs no new room.
        assert!(waits(t.join(hello(Role::Sender, 4), 4, at(2), (), now)));
        assert!(matches!(
            t.join(hello(Role::Sender, 1), 5, at(1), (), now),
            Join::Pair(())
        ));
        // The paired room no longer counts as waiting: a new one is allowed.
        assert!(waits(t.join(hello(Role::Sender, 6), 6, at(1), (), now)));
        // Nor does a released one.
        t.release(room(6), 6, now);
        assert!(waits(t.join(hello(Role::Sender, 7), 7, at(1), (), now)));
    }

    #[test]
    fn joining_rooms_in_turn_is_paced_like_asking_for_numbers() {
        let now = Instant::now();
        let mut t = RoomTable::new(RoomLimits {
            max_rooms: 1000,
            max_waiting_per_address: 0,
            rooms_per_minute: 3,
        });
        for n in 1..=3 {
            assert!(waits(t.join(
                hello(Role::Sender, n),
                u64::from(n),
                at(1),
                (),
                now
            )));
        }
        // Another address tries the rooms one by one: three, then refused.
        for n in 1..=3 {
            let joined = t.join(hello(Role::Receiver, n), 10 + u64::from(n), at(2), (), now);
            assert!(matches!(joined, Join::Pair(())));
        }
        assert_eq!(
            refused(t.join(hello(Role::Receiver, 4), 20, at(2), (), now)),
            Some(Refusal::RoomRate)
        );
    }

    #[test]
    fn nameplate_requests_are_limited_per_address_and_the_allowance_comes_back() {
        let start = Instant::now();
        let mut t = RoomTable::new(RoomLimits {
            max_rooms: 1000,
            max_waiting_per_address: 0,
            rooms_per_minute: 6,
        });
        for id in 0..6 {
            allocated(t.join(RelayHello::Allocate, id, at(1), (), start));
        }
        assert_eq!(
            refused(t.join(RelayHello::Allocate, 7, at(1), (), start)),
            Some(Refusal::RoomRate)
        );
        allocated(t.join(RelayHello::Allocate, 8, at(2), (), start));
        // One request's worth comes back every ten seconds.
        let later = start + Duration::from_secs(10);
        allocated(t.join(RelayHello::Allocate, 9, at(1), (), later));
        assert_eq!(
            refused(t.join(RelayHello::Allocate, 10, at(1), (), later)),
            Some(Refusal::RoomRate)
        );
    }

    #[test]
    fn new_rooms_past_the_limit_are_refused_but_joining_one_is_not() {
        let now = Instant::now();
        let mut t = RoomTable::new(RoomLimits {
            max_rooms: 2,
            ..LIMITS
        });
        assert!(waits(t.join(hello(Role::Sender, 1), 1, at(1), (), now)));
        assert!(waits(t.join(hello(Role::Sender, 2), 2, at(1), (), now)));
        assert_eq!(
            refused(t.join(hello(Role::Sender, 3), 3, at(1), (), now)),
            Some(Refusal::RoomLimit)
        );
        assert_eq!(
            refused(t.join(RelayHello::Allocate, 3, at(1), (), now)),
            Some(Refusal::RoomLimit)
        );
        // Pairing in an existing room needs no new one.
        assert!(matches!(
            t.join(hello(Role::Receiver, 1), 4, at(1), (), now),
            Join::Pair(())
        ));
        t.release(room(2), 2, now);
        assert!(waits(t.join(hello(Role::Sender, 3), 3, at(1), (), now)));
    }

    #[test]
    fn a_client_releases_only_its_own_room() {
        let now = Instant::now();
        let mut t = RoomTable::new(LIMITS);
        assert!(waits(t.join(hello(Role::Sender, 1), 1, at(1), (), now)));
        // Another connection (a refused one, say) cannot free it.
        t.release(room(1), 9, now);
        assert_eq!(t.waiting(), 1);
        t.release(room(1), 1, now);
        assert_eq!(t.len(), 0);
        assert!(t.waiting_per_block.is_empty(), "nothing left counted");
        // Paired, the room belongs to the waiting side's connection, which
        // forwards; released when it ends.
        assert!(waits(t.join(hello(Role::Sender, 1), 5, at(1), (), now)));
        assert!(matches!(
            t.join(hello(Role::Receiver, 1), 6, at(2), (), now),
            Join::Pair(())
        ));
        t.release(room(1), 6, now);
        assert_eq!(t.len(), 1, "the joiner does not own the pair");
        t.release(room(1), 5, now);
        assert_eq!(t.len(), 0);
        // A released room is free for a new transfer.
        assert!(waits(t.join(hello(Role::Receiver, 1), 7, at(1), (), now)));
    }
}
