//! The per-address connection limit: each connection holds a place in its
//! address's count until it ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Connections now, per address.
pub(crate) type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection's place in the per-address count; freed on drop.
pub(crate) struct IpSlot {
    per_ip: PerIp,
    ip: IpAddr,
}

impl IpSlot {
    pub(crate) fn take(per_ip: &PerIp, ip: IpAddr, max: usize) -> Option<IpSlot> {
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
            !per_ip.lock().unwrap().contains_key(&b),
            "counts at zero are removed"
        );
    }
}
