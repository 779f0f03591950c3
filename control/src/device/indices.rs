//! The device's receiver-index table: one table for every index the device handed out, the
//! pending handshake of each peer and every keypair the dataplane may still hold, so no index
//! is handed out twice while either may still receive with it.
//!
//! As the kernel's `index_hashtable` (peerlookup.c) and wireguard-go's `IndexTable`: an index
//! is drawn at random among the unused ones when an initiation or a response is made; an
//! initiator's handshake entry becomes a keypair entry when the response arrives; entries leave
//! when their keypair is replaced, expires, is cleared, or their peer is removed. A response or
//! cookie reply is matched only against handshake entries.
//!
//! The crypto stage keeps a lookup of its own keypairs per pipeline (the data path may not take
//! a lock); this table is what makes those lookups unambiguous. Which keypairs a pipeline
//! still holds depends on when it confirmed a responder's `next` keypair, which the control
//! thread does not see: a keypair stays here while any order of confirmations could have
//! kept it, and never past `REJECT_AFTER_TIME`, after which no pipeline uses it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand_core::RngCore;
use veil_dataplane::link::KeypairRole;

/// What one index is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IndexUse {
    /// Our initiation in flight: a response or cookie reply may carry it.
    Handshake,
    /// A keypair sent to the dataplane, made in this role at this time.
    Keypair { role: KeypairRole, created: Instant },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    peer: usize,
    used: IndexUse,
}

/// One peer's indices.
#[derive(Debug, Default)]
struct PeerIndices {
    /// The index of our initiation in flight.
    handshake: Option<u32>,
    /// Keypairs the dataplane may hold, oldest install first.
    keypairs: Vec<u32>,
}

/// The table. See the module docs.
#[derive(Debug, Default)]
pub(super) struct IndexTable {
    entries: HashMap<u32, Entry>,
    peers: HashMap<usize, PeerIndices>,
}

impl IndexTable {
    /// A fresh index for a new initiation of `peer`: the peer's previous initiation (if any)
    /// can no longer be answered.
    pub(super) fn new_handshake(&mut self, peer: usize, rng: &mut impl RngCore) -> u32 {
        let old = self.peers.get_mut(&peer).and_then(|p| p.handshake.take());
        if let Some(old) = old {
            self.entries.remove(&old);
        }
        let index = self.draw(peer, IndexUse::Handshake, rng);
        self.peers.entry(peer).or_default().handshake = Some(index);
        index
    }

    /// A fresh index for the keypair of a response we are about to make to `peer`. Installed
    /// with [`IndexTable::installed`] when the response is made, or given back with
    /// [`IndexTable::unused`].
    pub(super) fn new_response(&mut self, peer: usize, rng: &mut impl RngCore) -> u32 {
        self.draw(peer, IndexUse::Handshake, rng)
    }

    fn draw(&mut self, peer: usize, used: IndexUse, rng: &mut impl RngCore) -> u32 {
        let index = loop {
            let i = rng.next_u32();
            if i != 0 && !self.entries.contains_key(&i) {
                break i;
            }
        };
        self.entries.insert(index, Entry { peer, used });
        index
    }

    /// An index from [`IndexTable::new_response`] that no keypair got.
    pub(super) fn unused(&mut self, index: u32) {
        let is_handshake =
            (self.entries.get(&index)).is_some_and(|e| e.used == IndexUse::Handshake);
        let pending = self
            .entries
            .get(&index)
            .and_then(|e| self.peers.get(&e.peer))
            .is_some_and(|p| p.handshake == Some(index));
        if is_handshake && !pending {
            self.entries.remove(&index);
        }
    }

    /// The peer whose initiation in flight has this index (what a response or cookie reply
    /// answers); `None` for an unknown index or a keypair's.
    pub(super) fn handshake_peer(&self, index: u32) -> Option<usize> {
        (self.entries.get(&index))
            .filter(|e| e.used == IndexUse::Handshake)
            .map(|e| e.peer)
    }

    /// A keypair with `index` went to the dataplane in `role`: the keypairs it replaces in
    /// every pipeline leave the table. The dataplane installs an initiator's keypair as
    /// `current` (the old `current` becomes `previous`; `previous` and `next` go) and a
    /// responder's as `next` (the old `next` goes), and a pipeline promotes `next` to
    /// `current` when it first receives with it. So after an initiator's keypair, what a
    /// pipeline may hold is the new one and its `current` before it: the last initiator's
    /// keypair or a responder's installed after it. A responder's keypair replaces nothing
    /// for certain.
    pub(super) fn installed(&mut self, peer: usize, index: u32, role: KeypairRole, now: Instant) {
        let p = self.peers.entry(peer).or_default();
        if p.handshake == Some(index) {
            p.handshake = None;
        }
        if role == KeypairRole::Initiator {
            let entries = &self.entries;
            let last_initiator = p.keypairs.iter().rposition(|i| {
                (entries.get(i)).is_some_and(|e| {
                    matches!(
                        e.used,
                        IndexUse::Keypair {
                            role: KeypairRole::Initiator,
                            ..
                        }
                    )
                })
            });
            if let Some(keep_from) = last_initiator {
                for old in p.keypairs.drain(..keep_from) {
                    self.entries.remove(&old);
                }
            }
        }
        p.keypairs.push(index);
        self.entries.insert(
            index,
            Entry {
                peer,
                used: IndexUse::Keypair { role, created: now },
            },
        );
    }

    /// Keypairs `reject_after` old are used by no pipeline (it rejects them): they leave.
    pub(super) fn expire(&mut self, now: Instant, reject_after: Duration) {
        let entries = &mut self.entries;
        for p in self.peers.values_mut() {
            p.keypairs.retain(|i| {
                let live = (entries.get(i)).is_some_and(|e| match e.used {
                    IndexUse::Keypair { created, .. } => {
                        now.saturating_duration_since(created) < reject_after
                    }
                    IndexUse::Handshake => false,
                });
                if !live {
                    entries.remove(i);
                }
                live
            });
        }
        self.peers
            .retain(|_, p| p.handshake.is_some() || !p.keypairs.is_empty());
    }

    /// The dataplane clears the keypairs of `peer`; its initiation in flight stays.
    pub(super) fn clear_keypairs(&mut self, peer: usize) {
        if let Some(p) = self.peers.get_mut(&peer) {
            for old in p.keypairs.drain(..) {
                self.entries.remove(&old);
            }
        }
    }

    /// Everything of `peer` goes: removed, or restarted under a new identity.
    pub(super) fn remove_peer(&mut self, peer: usize) {
        if let Some(p) = self.peers.remove(&peer) {
            for old in p.keypairs.into_iter().chain(p.handshake) {
                self.entries.remove(&old);
            }
        }
    }

    /// What `index` is used for, and by which peer.
    pub(super) fn lookup(&self, index: u32) -> Option<(usize, IndexUse)> {
        self.entries.get(&index).map(|e| (e.peer, e.used))
    }

    /// The indices of `peer`: its initiation in flight and its keypairs, oldest first.
    #[cfg(test)]
    pub(super) fn of_peer(&self, peer: usize) -> (Option<u32>, Vec<u32>) {
        self.peers
            .get(&peer)
            .map(|p| (p.handshake, p.keypairs.clone()))
            .unwrap_or_default()
    }

    /// Entries in the table.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Next u32s from a script, then a counter.
    struct Script(Vec<u32>, u32);

    impl RngCore for Script {
        fn next_u32(&mut self) -> u32 {
            if self.0.is_empty() {
                self.1 += 1;
                self.1
            } else {
                self.0.remove(0)
            }
        }
        fn next_u64(&mut self) -> u64 {
            u64::from(self.next_u32())
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            dest.fill(0);
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    /// Every entry is reachable from its peer and every peer's index has its entry.
    fn consistent(t: &IndexTable) {
        let mut n = 0;
        for (&peer, p) in &t.peers {
            for i in p.keypairs.iter().chain(&p.handshake) {
                assert_eq!(t.entries.get(i).map(|e| e.peer), Some(peer), "index {i}");
                n += 1;
            }
        }
        assert_eq!(n, t.len(), "entries no peer holds");
    }

    #[test]
    fn an_index_in_use_is_never_drawn_again() {
        let now = Instant::now();
        let mut t = IndexTable::default();
        // The second draw repeats the first index (and 0): both are skipped.
        let mut rng = Script(vec![7, 7, 0, 9], 100);
        let a = t.new_handshake(1, &mut rng);
        t.installed(1, a, KeypairRole::Initiator, now);
        let b = t.new_handshake(2, &mut rng);
        assert_eq!((a, b), (7, 9));
        // A keypair's index does not answer a response.
        assert_eq!(t.handshake_peer(a), None);
        assert_eq!(t.handshake_peer(b), Some(2));
        consistent(&t);
    }

    #[test]
    fn a_new_initiation_retires_the_last_one_and_unused_indices_go_back() {
        let mut t = IndexTable::default();
        let mut rng = Script(vec![], 0);
        let a = t.new_handshake(1, &mut rng);
        let b = t.new_handshake(1, &mut rng);
        assert_eq!(t.handshake_peer(a), None);
        assert_eq!(t.handshake_peer(b), Some(1));
        assert_eq!(t.len(), 1);
        // A response's index that no keypair got goes back; the initiation's stays.
        let r = t.new_response(1, &mut rng);
        t.unused(r);
        t.unused(b);
        assert_eq!(t.lookup(r), None);
        assert_eq!(t.handshake_peer(b), Some(1));
        consistent(&t);
    }

    #[test]
    fn initiator_rotation_keeps_what_a_pipeline_may_hold() {
        let now = Instant::now();
        let mut t = IndexTable::default();
        let mut rng = Script(vec![], 0);
        let mut initiate = |t: &mut IndexTable| {
            let i = t.new_handshake(1, &mut rng);
            t.installed(1, i, KeypairRole::Initiator, now);
            i
        };
        let k1 = initiate(&mut t);
        let k2 = initiate(&mut t);
        assert_eq!(t.of_peer(1).1, vec![k1, k2]);
        // current k3, previous k2: k1 is gone from every pipeline.
        let k3 = initiate(&mut t);
        assert_eq!(t.of_peer(1).1, vec![k2, k3]);
        assert_eq!(t.lookup(k1), None);
        // A responder's keypair after k3 may be confirmed (current) in some pipeline.
        let r1 = t.new_response(1, &mut Script(vec![], 50));
        t.installed(1, r1, KeypairRole::Responder, now);
        let r2 = t.new_response(1, &mut Script(vec![], 60));
        t.installed(1, r2, KeypairRole::Responder, now);
        assert_eq!(t.of_peer(1).1, vec![k2, k3, r1, r2]);
        // The next initiator's keypair: the old current was k3, r1 or r2; k2 is gone.
        let k4 = initiate(&mut t);
        assert_eq!(t.of_peer(1).1, vec![k3, r1, r2, k4]);
        let k5 = initiate(&mut t);
        assert_eq!(t.of_peer(1).1, vec![k4, k5]);
        for dead in [k1, k2, k3, r1, r2] {
            assert_eq!(t.lookup(dead), None, "{dead} leaked");
        }
        consistent(&t);
    }

    #[test]
    fn keypairs_expire_and_clear_and_peers_leave() {
        let now = Instant::now();
        let reject = Duration::from_secs(180);
        let mut t = IndexTable::default();
        let mut rng = Script(vec![], 0);
        let a = t.new_response(1, &mut rng);
        t.installed(1, a, KeypairRole::Responder, now);
        let b = t.new_response(1, &mut rng);
        t.installed(1, b, KeypairRole::Responder, now + Duration::from_secs(60));
        let h = t.new_handshake(1, &mut rng);
        t.expire(now + reject, reject);
        assert_eq!(t.of_peer(1), (Some(h), vec![b]));
        t.clear_keypairs(1);
        assert_eq!(t.of_peer(1), (Some(h), vec![]));
        assert_eq!(t.handshake_peer(h), Some(1));
        let c = t.new_response(2, &mut rng);
        t.installed(2, c, KeypairRole::Responder, now);
        t.remove_peer(1);
        assert_eq!(t.lookup(h), None);
        assert_eq!(t.len(), 1);
        t.expire(now + reject, reject);
        assert_eq!(t.len(), 0);
        assert!(t.peers.is_empty());
        consistent(&t);
    }

    mod device {
        use super::super::super::*;
        use super::super::IndexUse;
        use super::consistent;
        use crate::device::requests::{DeviceChange, PeerChange};
        use rand_core::OsRng;
        use veil_dataplane::pipeline::ControlDriver;

        fn device(secret: u8, peer: u8, endpoint: Option<SocketAddr>, now: Instant) -> Device {
            let wall = (now, SystemTime::now());
            let mut d = Device::new(
                &[secret; 32],
                Timing::default(),
                Epoch::new(now),
                wall,
                OsRng,
            );
            let mut pc = PeerChange::new(*StaticIdentity::from_secret([peer; 32]).public_key());
            pc.endpoint = endpoint;
            let change = DeviceChange {
                peers: vec![pc],
                ..Default::default()
            };
            d.configure(change, now).expect("peer added");
            d
        }

        /// Carry handshake messages both ways until none is left; the keypair indices sent to
        /// each side's dataplane.
        fn pump(
            a: (&mut Device, SocketAddr),
            b: (&mut Device, SocketAddr),
            now: Instant,
        ) -> Vec<(bool, u32)> {
            let (a, a_addr) = a;
            let (b, b_addr) = b;
            for _ in 0..8 {
                let mut moved = false;
                while let Some(m) = a.poll_transmit() {
                    b.on_handshake(
                        HandshakeDatagram::new(m.as_bytes(), a_addr, None).unwrap(),
                        now,
                    );
                    moved = true;
                }
                while let Some(m) = b.poll_transmit() {
                    a.on_handshake(
                        HandshakeDatagram::new(m.as_bytes(), b_addr, None).unwrap(),
                        now,
                    );
                    moved = true;
                }
                if !moved {
                    break;
                }
            }
            let mut installed = Vec::new();
            for (side, d) in [(true, &mut *a), (false, &mut *b)] {
                while let Some(c) = d.poll_command() {
                    if let Command::InstallKeypair { keypair, .. } = c {
                        installed.push((side, keypair.local_index));
                    }
                }
            }
            installed
        }

        /// Handshakes both ways, many times: every keypair sent to the dataplane is in the
        /// table while it may be used, the table stays as small as the dataplane's slots allow,
        /// and nothing outlives its keypair.
        #[test]
        fn the_device_table_follows_the_keypairs() {
            let t0 = Instant::now();
            let (ca, ga): (SocketAddr, SocketAddr) = (
                "198.51.100.7:40000".parse().unwrap(),
                "192.0.2.1:51820".parse().unwrap(),
            );
            let mut client = device(1, 2, Some(ga), t0);
            let mut gateway = device(2, 1, None, t0);
            let mut now = t0;
            let mut seen: Vec<(bool, u32, Instant)> = Vec::new();
            let reject_after = Timing::default().reject_after;
            for round in 0..24 {
                now += Duration::from_secs(25);
                client.on_timeout(now);
                gateway.on_timeout(now);
                pump((&mut client, ca), (&mut gateway, ga), now);
                let initiator = if round % 3 == 2 {
                    &mut gateway
                } else {
                    &mut client
                };
                initiator.on_event(Event::HandshakeNeeded { peer: PeerId(0) }, now);
                let installed = pump((&mut client, ca), (&mut gateway, ga), now);
                assert_eq!(
                    installed.len(),
                    2,
                    "round {round}: one handshake, both sides"
                );
                seen.extend(installed.iter().map(|&(c, i)| (c, i, now)));
                for (is_client, d) in [(true, &client), (false, &gateway)] {
                    consistent(&d.indices);
                    let (_, keypairs) = d.indices.of_peer(0);
                    // Every keypair the dataplane was given and may still use is here...
                    let recent = seen
                        .iter()
                        .filter(|&&(c, _, t)| c == is_client && now - t < reject_after);
                    let recent: Vec<u32> = recent.map(|&(_, i, _)| i).collect();
                    for (c, index) in &installed {
                        if *c == is_client {
                            assert!(keypairs.contains(index), "round {round}: {index} missing");
                        }
                    }
                    // ... and nothing older.
                    for index in &keypairs {
                        assert!(recent.contains(index), "round {round}: {index} leaked");
                    }
                }
                // The client initiates two rounds in three: what its pipelines may hold is
                // the last initiator's keypair, a responder's since, and the new one.
                assert!(client.indices.of_peer(0).1.len() <= 3, "round {round}");
            }
            // Every keypair's time runs out: nothing is left of them.
            now += Timing::default().reject_after;
            client.on_timeout(now);
            gateway.on_timeout(now);
            for (is_client, index, _) in seen {
                let d = if is_client { &client } else { &gateway };
                assert!(
                    !matches!(d.indices.lookup(index), Some((_, IndexUse::Keypair { .. }))),
                    "expired keypair {index} leaked"
                );
            }
        }
    }
}
