//! A fleet: several relays behind one address (a DNS name, a Kubernetes
//! Service), any of which a client may reach.
//!
//! Each room has an owner, the member ranked first for it by rendezvous
//! hashing over the member list ([`rank_relays`]); every member computes
//! the same ranking, so a sender and a receiver that reached different
//! members still meet. A member that gets a hello for a room it does not
//! own forwards the connection, inside the fleet, to the first member in
//! the room's ranking that answers ([`FORWARD_HEADER_MAGIC`] header, then
//! the client's own bytes), and copies bytes both ways from then on; the
//! owner pairs and limits as if the client had come straight to it (the
//! header carries the client's address, trusted only from members). A
//! member that is down is skipped by everyone alike, so its rooms move to
//! the next member in their ranking, and a client whose member went away
//! while it waited enters its room again (`tallow-net`'s
//! `paired_or_reenter`) and lands there. A sender asking for a number gets one its member owns.
//!
//! Members come from a static list or from the addresses a DNS name
//! resolves to (a headless Service), refreshed periodically.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tallow_crypto::RoomId;
use tallow_protocol::rendezvous::rank_relays;

/// First four bytes of a hello forwarded by a member.
pub const FORWARD_HEADER_MAGIC: [u8; 4] = *b"TLWF";
/// Version of the forwarded-hello header.
const FORWARD_HEADER_VERSION: u8 = 1;
/// `magic | version | family | address [16] | port u16`.
pub const FORWARD_HEADER_LEN: usize = 4 + 1 + 1 + 16 + 2;

/// Longest a member waits to reach another before trying the next.
pub(crate) const MEMBER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a fleet's member list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetMembers {
    /// These addresses.
    Static(Vec<SocketAddr>),
    /// Every address `name` resolves to, on `port` (a headless Service).
    Dns { name: String, port: u16 },
}

impl FleetMembers {
    /// `ADDR,ADDR,…` (IP:PORT each) or `dns:NAME:PORT`.
    pub fn parse(spec: &str) -> Result<FleetMembers, String> {
        if let Some(rest) = spec.strip_prefix("dns:") {
            let (name, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{spec:?}: expected dns:NAME:PORT"))?;
            let port = port
                .parse()
                .map_err(|_| format!("{spec:?}: the port {port:?} is not a number"))?;
            if name.is_empty() {
                return Err(format!("{spec:?}: expected dns:NAME:PORT"));
            }
            return Ok(FleetMembers::Dns {
                name: name.to_owned(),
                port,
            });
        }
        spec.split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| {
                m.parse::<SocketAddr>().map_err(|_| {
                    format!("fleet member {m:?} is not IP:PORT (use dns:NAME:PORT for a name)")
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .and_then(|list| {
                if list.is_empty() {
                    Err("the fleet has no members".to_owned())
                } else {
                    Ok(FleetMembers::Static(list))
                }
            })
    }
}

/// A relay's place in a fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub members: FleetMembers,
    /// This relay's address as the other members know it.
    pub me: SocketAddr,
    /// How often a DNS member list is resolved again.
    pub refresh: Duration,
}

/// The fleet as this member sees it now.
pub(crate) struct Fleet {
    me: String,
    /// Members (sorted, this one included), and as `IP:PORT` text (what
    /// the ranking hashes).
    members: RwLock<Arc<(Vec<SocketAddr>, Vec<String>)>>,
    /// Counts changes of the member list.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Fleet {
    /// The fleet of `config`, with its first member list (a DNS name is
    /// resolved now, and again every `refresh` by a task of its own).
    pub(crate) async fn start(config: &FleetConfig) -> std::io::Result<Arc<Fleet>> {
        let fleet = Arc::new(Fleet {
            me: config.me.to_string(),
            members: RwLock::new(Arc::default()),
            changes: tokio::sync::watch::Sender::new(0),
        });
        match &config.members {
            FleetMembers::Static(list) => fleet.set_members(list.clone()),
            FleetMembers::Dns { name, port } => {
                let found = resolve(name, *port).await?;
                fleet.set_members(found);
                let (weak, name, port, every) =
                    (Arc::downgrade(&fleet), name.clone(), *port, config.refresh);
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        let Some(fleet) = weak.upgrade() else { return };
                        match resolve(&name, port).await {
                            Ok(found) => fleet.set_members(found),
                            // Keep the last list the name gave.
                            Err(e) => tracing::warn!(error = %e, "fleet members not refreshed"),
                        }
                    }
                });
            }
        }
        Ok(fleet)
    }

    fn set_members(&self, mut list: Vec<SocketAddr>) {
        // This member counts even before the name lists it.
        if let Ok(me) = self.me.parse() {
            list.push(me);
        }
        list.sort();
        list.dedup();
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        if members.0 != list {
            tracing::info!(members = list.len(), "fleet members");
            let names = list.iter().map(SocketAddr::to_string).collect();
            *members = Arc::new((list, names));
            drop(members);
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Resolves once the member list has changed so that `room` is not
    /// this member's (a room served here because its owner was down is
    /// given up at the next change too; its client comes back if the owner
    /// still is).
    /// Changes count from the call, not from the first poll.
    pub(crate) fn until_not_owner(
        self: &Arc<Self>,
        room: RoomId,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut changes = self.changes.subscribe();
        let fleet = self.clone();
        async move {
            while changes.changed().await.is_ok() {
                if !fleet.owns(&room) {
                    return;
                }
            }
            std::future::pending().await
        }
    }

    fn members(&self) -> Arc<(Vec<SocketAddr>, Vec<String>)> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// This member's address.
    pub(crate) fn me(&self) -> &str {
        &self.me
    }

    /// Members in the order they should hold `room`.
    pub(crate) fn ranked(&self, room: &RoomId) -> Vec<String> {
        let members = self.members();
        rank_relays(members.1.iter().map(String::as_str), room)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Whether this member owns `room` (is first in its ranking).
    pub(crate) fn owns(&self, room: &RoomId) -> bool {
        let members = self.members();
        rank_relays(members.1.iter().map(String::as_str), room)
            .first()
            .is_some_and(|m| *m == self.me)
    }

    /// Whether `ip` is a member's (whose forwarded hellos are trusted).
    pub(crate) fn is_member(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.members().0.iter().any(|m| m.ip().to_canonical() == ip)
    }
}

async fn resolve(name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host((name, port))
        .await
        .map_err(|e| {
            std::io::Error::other(format!(
                "cannot look up the fleet's members at {name} ({e})"
            ))
        })?
        .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
        .collect())
}

/// The header a member puts before a client's bytes it forwards: the
/// client's address, for the owner's limits and logs.
pub(crate) fn forward_header(client: SocketAddr) -> [u8; FORWARD_HEADER_LEN] {
    let mut h = [0u8; FORWARD_HEADER_LEN];
    h[..4].copy_from_slice(&FORWARD_HEADER_MAGIC);
    h[4] = FORWARD_HEADER_VERSION;
    match client.ip().to_canonical() {
        IpAddr::V4(v4) => {
            h[5] = 4;
            h[6..10].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            h[5] = 6;
            h[6..22].copy_from_slice(&v6.octets());
        }
    }
    h[22..].copy_from_slice(&client.port().to_be_bytes());
    h
}

/// The client's address from a forwarded hello's header (magic included);
/// `None` if it is not one.
pub(crate) fn parse_forward_header(h: &[u8; FORWARD_HEADER_LEN]) -> Option<SocketAddr> {
    if h[..4] != FORWARD_HEADER_MAGIC || h[4] != FORWARD_HEADER_VERSION {
        return None;
    }
    let ip = match h[5] {
        4 => IpAddr::from([h[6], h[7], h[8], h[9]]),
        6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&h[6..22]);
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, u16::from_be_bytes([h[22], h[23]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_lists_parse_and_bad_ones_say_why() {
        assert_eq!(
            FleetMembers::parse("127.0.0.1:1, [::1]:2").unwrap(),
            FleetMembers::Static(vec![
                "127.0.0.1:1".parse().unwrap(),
                "[::1]:2".parse().unwrap()
            ])
        );
        assert_eq!(
            FleetMembers::parse("dns:relay-headless.ns.svc:9009").unwrap(),
            FleetMembers::Dns {
                name: "relay-headless.ns.svc".into(),
                port: 9009
            }
        );
        for (bad, says) in [
            ("relay.example:9009", "not IP:PORT"),
            ("dns:relay", "dns:NAME:PORT"),
            ("dns::9009", "dns:NAME:PORT"),
            ("dns:relay:port", "not a number"),
            ("", "no members"),
        ] {
            let e = FleetMembers::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_forward_header_carries_either_family_and_nothing_else_parses() {
        for client in ["192.0.2.7:40000", "[2001:db8::9]:1", "[::ffff:192.0.2.8]:5"] {
            let client: SocketAddr = client.parse().unwrap();
            let back = parse_forward_header(&forward_header(client)).unwrap();
            assert_eq!(
                back,
                SocketAddr::new(client.ip().to_canonical(), client.port())
            );
        }
        let mut h = forward_header("192.0.2.7:1".parse().unwrap());
        h[5] = 5;
        assert!(parse_forward_header(&h).is_none());
        let mut hello = [0u8; FORWARD_HEADER_LEN];
        hello[..4].copy_from_slice(b"TLWR");
        assert!(parse_forward_header(&hello).is_none());
    }

    #[tokio::test]
    async fn a_dns_fleet_takes_its_members_from_the_name_and_counts_itself() {
        let config = FleetConfig {
            members: FleetMembers::Dns {
                name: "localhost".into(),
                port: 9009,
            },
            me: "192.0.2.1:9009".parse().unwrap(),
            refresh: Duration::from_secs(60),
        };
        let fleet = Fleet::start(&config).await.unwrap();
        let members = fleet.members();
        assert!(
            members.0.contains(&"127.0.0.1:9009".parse().unwrap()),
            "{members:?}"
        );
        assert!(members.0.contains(&config.me), "{members:?}");
        assert!(fleet.is_member("127.0.0.1".parse().unwrap()));
        let unknown = FleetConfig {
            members: FleetMembers::Dns {
                name: "no-such-host.invalid".into(),
                port: 9009,
            },
            ..config
        };
        let e = Fleet::start(&unknown).await.err().unwrap().to_string();
        assert!(
            e.contains("cannot look up the fleet's members at no-such-host.invalid"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_waiting_room_is_given_up_when_a_new_member_owns_it() {
        let one: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let two: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let config = FleetConfig {
            members: FleetMembers::Static(vec![one]),
            me: one,
            refresh: Duration::from_secs(10),
        };
        let fleet = Fleet::start(&config).await.unwrap();
        let ranked_first = |first: SocketAddr| {
            move |n: &u32| {
                let room = RoomId::for_nameplate(&n.to_string());
                rank_relays(["127.0.0.1:1", "127.0.0.1:2"], &room)[0] == first.to_string()
            }
        };
        let stays = RoomId::for_nameplate(&(1..).find(ranked_first(one)).unwrap().to_string());
        let moves = RoomId::for_nameplate(&(1..).find(ranked_first(two)).unwrap().to_string());
        assert!(
            fleet.owns(&stays) && fleet.owns(&moves),
            "alone, it owns all"
        );
        let staying = tokio::spawn(fleet.until_not_owner(stays));
        let moving = tokio::spawn(fleet.until_not_owner(moves));
        fleet.set_members(vec![one, two]);
        tokio::time::timeout(Duration::from_secs(5), moving)
            .await
            .expect("the room the new member owns is given up")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!staying.is_finished(), "the room still owned here stays");
        staying.abort();
    }

    #[tokio::test]
    async fn every_member_ranks_alike_and_owns_its_share() {
        let list: Vec<SocketAddr> = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
            .iter()
            .map(|m| m.parse().unwrap())
            .collect();
        let mut fleets = Vec::new();
        for me in &list {
            let config = FleetConfig {
                members: FleetMembers::Static(list.iter().rev().copied().collect()),
                me: *me,
                refresh: Duration::from_secs(10),
            };
            fleets.push(Fleet::start(&config).await.unwrap());
        }
        let mut owned = [0; 3];
        for n in 0..300 {
            let room = RoomId::for_nameplate(&n.to_string());
            let ranking = fleets[0].ranked(&room);
            assert!(fleets.iter().all(|f| f.ranked(&room) == ranking));
            let owners: Vec<usize> = (0..3).filter(|i| fleets[*i].owns(&room)).collect();
            assert_eq!(owners.len(), 1, "one owner per room");
            owned[owners[0]] += 1;
        }
        assert!(owned.iter().all(|&n| n > 60), "{owned:?}");
        assert!(fleets[0].is_member("127.0.0.1".parse().unwrap()));
        assert!(fleets[0].is_member("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!fleets[0].is_member("127.0.0.2".parse().unwrap()));
    }
}
