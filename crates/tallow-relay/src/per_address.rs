//! Limits per address: what counts as one address ([`AddressBlock`]: an
//! IPv4 address, or an IPv6 /64, which one subscriber usually holds whole),
//! and the connection limit, where each connection holds a place in its
//! address's count until it ends.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// The unit the relay's limits count by: one IPv4 address, or one IPv6
/// /64 (an IPv4 address mapped into IPv6 counts as that IPv4 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct AddressBlock(IpAddr);

impl AddressBlock {
    pub(crate) fn of(ip: IpAddr) -> AddressBlock {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddressBlock(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                AddressBlock(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        }
    }
}

/// Connections now, per address block.
pub(crate) type PerIp = Arc<Mutex<HashMap<AddressBlock, usize>>>;

/// One connection's place in the per-address count; freed on drop.
pub(crate) struct IpSlot {
    per_ip: PerIp,
    ip: AddressBlock,
}

impl IpSlot {
    pub(crate) fn take(per_ip: &PerIp, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let ip = AddressBlock::of(ip);
        let mut counts = per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if max != 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            per_ip: per_ip.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = counts.get_mut(&self.ip) {
            *c -= 1;
            if *c == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_limit_and_a_freed_place_comes_back() {
        let per_ip = PerIp::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = IpSlot::take(&per_ip, a, 2).unwrap();
        let _second = IpSlot::take(&per_ip, a, 2).unwrap();
        assert!(
            IpSlot::take(&per_ip, a, 2).is_none(),
            "a third from one address"
        );
        assert!(
            IpSlot::take(&per_ip, b, 2).is_some(),
            "another address is not counted"
        );
        drop(first);
        assert!(IpSlot::take(&per_ip, a, 2).is_some());
        // 0: no limit.
        let many: Vec<_> = (0..100)
            .filter_map(|_| IpSlot::take(&per_ip, b, 0))
            .collect();
        assert_eq!(many.len(), 100);
        drop(many);
        assert!(
            !per_ip.lock().unwrap().contains_key(&AddressBlock::of(b)),
            "counts at zero are removed"
        );
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_address() {
        let block = |s: &str| AddressBlock::of(s.parse().unwrap());
        assert_eq!(block("2001:db8:1:2::1"), block("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(block("2001:db8:1:2::1"), block("2001:db8:1:3::1"));
        assert_eq!(block("::ffff:192.0.2.7"), block("192.0.2.7"));
        assert_ne!(block("192.0.2.7"), block("192.0.2.8"));
        let per_ip = PerIp::default();
        let _one = IpSlot::take(&per_ip, "2001:db8::1".parse().unwrap(), 1).unwrap();
        assert!(IpSlot::take(&per_ip, "2001:db8::2".parse().unwrap(), 1).is_none());
    }
}
