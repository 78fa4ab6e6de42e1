//! Open connections counted per peer IP address, so that one address cannot
//! take every connection slot of a listener. A [`Slot`] is held for as long
//! as its connection is open; the table holds only addresses with at least
//! one open connection, so it is never larger than the connection bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The per-address counts of one listener.
#[derive(Debug)]
pub struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of an address; counted until dropped.
#[derive(Debug)]
pub struct Slot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// A table allowing `max` connections per address (at least one).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a new connection from `ip`, or `None` when `ip` already
    /// has the most allowed.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_at_most_its_share_and_slots_come_back() {
        let t = PerIp::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let s1 = t.admit(a).expect("first");
        let _s2 = t.admit(a).expect("second");
        assert!(t.admit(a).is_none(), "third from the same address");
        assert!(t.admit(b).is_some(), "another address is not affected");
        drop(s1);
        assert_eq!(t.open.lock().unwrap().get(&a), Some(&1));
        assert!(t.admit(a).is_some());
    }

    #[test]
    fn addresses_with_nothing_open_leave_the_table() {
        let t = PerIp::new(1);
        let ip: IpAddr = "::1".parse().unwrap();
        drop(t.admit(ip));
        assert!(t.open.lock().unwrap().is_empty());
    }
}
