//! Sources whose handshake messages RX drops before they reach the control thread.
//!
//! Under load the control thread gives each source (an IPv4 address, an IPv6 /64) a budget of
//! cookie replies; a source that has spent it has its further handshake messages dropped
//! before any MAC work, until the budget refills. A flood from one source would still cost a
//! copy into the RX → control ring, a wake-up and a table lookup on the control thread per
//! message. So the control thread also writes the source here, with the instant its budget
//! has a token again, and RX drops its handshake messages (counted in
//! `rx.drop_handshake_filtered`) without handing them over: the same decision, taken where it
//! costs least. Transport messages are never filtered (a session's data is authenticated by
//! its key, not by its address).
//!
//! Bounded: at most [`SOURCE_FILTER_MAX`] sources; when it is full, the entry that expires
//! first gives way. Entries expire by themselves (a budget refills within milliseconds at
//! the control thread's rates), so a source the load moved on from is let through again
//! without the control thread doing anything.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Instant;

/// Sources the filter holds at most.
pub const SOURCE_FILTER_MAX: usize = 64;

/// The key of a source for handshake limits: an IPv4 address, or the /64 of an IPv6 one (a
/// host usually holds a whole /64), as the kernel does.
pub fn source_key(src: SocketAddr) -> IpAddr {
    match src.ip().to_canonical() {
        IpAddr::V4(a) => IpAddr::V4(a),
        IpAddr::V6(a) => {
            let bits = u128::from(a) & !(u128::from(u64::MAX));
            IpAddr::V6(bits.into())
        }
    }
}

/// The filter, shared by the control thread (writes) and every pipeline's RX (reads).
#[derive(Debug, Default)]
pub struct SourceFilter {
    /// Is any entry held? RX reads only this while the filter is empty.
    any: AtomicBool,
    /// (source key, dropped until).
    blocked: RwLock<Vec<(IpAddr, Instant)>>,
}

impl SourceFilter {
    /// Are `src`'s handshake messages dropped at `now`?
    pub fn blocks(&self, src: SocketAddr, now: Instant) -> bool {
        if !self.any.load(Ordering::Relaxed) {
            return false;
        }
        let key = source_key(src);
        self.blocked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|(k, until)| *k == key && now < *until)
    }

    /// Drop `key`'s handshake messages from `now` until `until`. Expired entries are removed;
    /// when the filter is full, the entry that expires first is replaced.
    pub fn block(&self, key: IpAddr, now: Instant, until: Instant) {
        // The vector is whole after every statement below: a panic elsewhere while the lock
        // was held leaves nothing half-done to recover from.
        let mut blocked = self.blocked.write().unwrap_or_else(PoisonError::into_inner);
        blocked.retain(|(_, u)| now < *u);
        if let Some(entry) = blocked.iter_mut().find(|(k, _)| *k == key) {
            entry.1 = until;
        } else if blocked.len() < SOURCE_FILTER_MAX {
            blocked.push((key, until));
        } else if let Some(first) = blocked.iter_mut().min_by_key(|(_, u)| *u) {
            *first = (key, until);
        }
        self.any.store(!blocked.is_empty(), Ordering::Relaxed);
    }

    /// Sources held now (expired ones included until the next [`SourceFilter::block`]).
    pub fn len(&self) -> usize {
        self.blocked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Is the filter empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn src(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_a_source_until_its_instant_and_no_other() {
        let f = SourceFilter::default();
        let t0 = Instant::now();
        assert!(!f.blocks(src("192.0.2.1:1"), t0));
        f.block(
            source_key(src("192.0.2.1:1")),
            t0,
            t0 + Duration::from_millis(2),
        );
        assert!(f.blocks(src("192.0.2.1:9"), t0), "any port of the address");
        assert!(!f.blocks(src("192.0.2.2:1"), t0));
        assert!(!f.blocks(src("192.0.2.1:1"), t0 + Duration::from_millis(2)));
    }

    #[test]
    fn ipv6_sources_are_kept_per_64() {
        let f = SourceFilter::default();
        let t0 = Instant::now();
        f.block(
            source_key(src("[2001:db8:1:2::1]:1")),
            t0,
            t0 + Duration::from_secs(1),
        );
        assert!(f.blocks(src("[2001:db8:1:2:ffff::9]:5"), t0));
        assert!(!f.blocks(src("[2001:db8:1:3::1]:1"), t0));
        // An IPv4-mapped address is its IPv4 address.
        f.block(
            source_key(src("198.51.100.7:1")),
            t0,
            t0 + Duration::from_secs(1),
        );
        assert!(f.blocks(src("[::ffff:198.51.100.7]:2"), t0));
    }

    #[test]
    fn stays_bounded_and_forgets_what_expired() {
        let f = SourceFilter::default();
        let t0 = Instant::now();
        for i in 0..(SOURCE_FILTER_MAX as u32 + 10) {
            let key = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            f.block(key, t0, t0 + Duration::from_millis(10 + u64::from(i)));
        }
        assert_eq!(f.len(), SOURCE_FILTER_MAX);
        // The newest entries displaced the ones that expired first.
        let last = SocketAddr::from(([10, 0, 0, SOURCE_FILTER_MAX as u8 + 9], 1));
        assert!(f.blocks(last, t0));
        assert!(!f.blocks(src("10.0.0.0:1"), t0));
        let later = t0 + Duration::from_secs(1);
        f.block(
            source_key(src("192.0.2.1:1")),
            later,
            later + Duration::from_millis(1),
        );
        assert_eq!(f.len(), 1, "expired entries are removed on the next block");
    }
}
