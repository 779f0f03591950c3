//! A live hand-off (issue 15) on the device's side: [`Device::capture`] takes what every
//! session needs out of the running device, [`Device::restore`] puts it into a new one built
//! from (possibly another version of) the config. See [`crate::handoff`] for the state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use rand_core::CryptoRngCore;
use veil_dataplane::link::{Command, KeypairRole, PeerStats};
use veil_dataplane::Keypair;

use super::{Device, Peer};
use crate::handoff::{HandoffState, PeerState, SessionCarry, StatsCarry};
use crate::session::Session;
use crate::tai64n::Tai64n;

/// What [`Device::restore`] carried over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Peers of the state found in this device's config.
    pub peers: usize,
    /// Keypairs installed.
    pub keypairs: usize,
    /// Peers of the state not in this config (their sessions end here).
    pub gone: usize,
    /// Keypairs refused because their index is another peer's already.
    pub clashes: usize,
}

/// Why a state cannot be restored into this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreError {
    /// It was captured under another private key.
    OtherKey,
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::OtherKey => {
                f.write_str("the hand-off state belongs to an interface with another private key")
            }
        }
    }
}

impl std::error::Error for RestoreError {}

/// The longest transfer a restore accounts for: a capture time further back (a clock that
/// stepped) counts as this.
const MAX_TRANSFER_LAG: Duration = Duration::from_secs(30);

/// `now - age` (`now` if the clock does not reach back that far).
fn back(now: Instant, age: Duration) -> Instant {
    now.checked_sub(age).unwrap_or(now)
}

/// The dataplane's keypair slots (current, previous, next) after the installs in `installed`,
/// by the crypto stage's rules: an initiator's keypair becomes current at once, a responder's
/// waits in next until the peer uses it (then it is promoted). Revoked keypairs are gone.
fn slots(installed: &[(Arc<Keypair>, KeypairRole)]) -> [Option<Arc<Keypair>>; 3] {
    let (mut current, mut previous, mut next) = (None, None, None);
    for (kp, role) in installed.iter().filter(|(kp, _)| !kp.revoked()) {
        match role {
            KeypairRole::Initiator => {
                next = None;
                previous = current.take();
                current = Some(kp.clone());
            }
            KeypairRole::Responder => next = Some(kp.clone()),
        }
        if next.as_ref().is_some_and(|k: &Arc<Keypair>| k.confirmed()) {
            previous = current.take();
            current = next.take();
        }
    }
    [current, previous, next]
}

/// A peer's counts, in [`StatsCarry::counts`]'s order.
fn counts(s: &PeerStats) -> [&AtomicU64; 4] {
    [&s.rx_bytes, &s.tx_bytes, &s.rx_packets, &s.tx_packets]
}

/// A peer's last-packet times, in [`StatsCarry::last`]'s order.
fn times(s: &PeerStats) -> [&AtomicU64; 4] {
    [
        &s.last_rx_any,
        &s.last_rx_data,
        &s.last_tx_any,
        &s.last_tx_data,
    ]
}

fn age_of(
    field: &AtomicU64,
    epoch: &veil_dataplane::link::Epoch,
    now: Instant,
) -> Option<Duration> {
    PeerStats::at(field, epoch).map(|t| now.saturating_duration_since(t))
}

impl<R: CryptoRngCore> Device<R> {
    /// Everything the sessions need at `now`, for a live hand-off. Call it with the dataplane
    /// paused (nothing read), so no counter or replay window moves meanwhile.
    pub fn capture(&self, now: Instant) -> HandoffState {
        let peers = self
            .peers
            .iter()
            .map(|p| self.capture_peer(p, now))
            .collect();
        HandoffState {
            interface_public: *self.identity.public_key(),
            captured_at: self.wall_time(now),
            cookie_secret: self.cookies.export_secret(now),
            next_session: self.next_session,
            peers,
        }
    }

    fn capture_peer(&self, p: &Peer, now: Instant) -> PeerState {
        let installed: Vec<_> = p.installed.iter().cloned().collect();
        let keypairs = if p.keys_live {
            slots(&installed).map(|k| k.map(|k| k.export(now)))
        } else {
            [None, None, None]
        };
        let s = &p.stats;
        let e = &self.epoch;
        PeerState {
            public_key: *p.handshake.remote_public(),
            endpoint: p.endpoint,
            last_handshake: p.last_handshake.map(|t| now.saturating_duration_since(t)),
            last_timestamp: p.handshake.last_timestamp().map(Tai64n::to_bytes),
            veil_peer: p.veil_peer,
            session: p
                .session
                .as_ref()
                .filter(|s| s.is_live())
                .map(|s| SessionCarry {
                    id: s.id,
                    age: now.saturating_duration_since(s.started),
                    migrations: s.migrations,
                    last_migration: s.last_migration.map(|t| now.saturating_duration_since(t)),
                }),
            keypairs,
            stats: StatsCarry {
                counts: counts(s).map(|c| c.load(Ordering::Relaxed)),
                last: times(s).map(|t| age_of(t, e, now)),
            },
        }
    }

    /// A hand-off failed after [`Device::capture`] and this device serves on: every keypair
    /// skips twice the counters a restored one starts after, so nothing the other process
    /// sealed before it gave up is sealed again with the same nonce.
    pub fn resume_after_handoff(&mut self) {
        let gap = veil_dataplane::crypto::HANDOFF_SEND_GAP.saturating_mul(2);
        for p in self.peers.iter() {
            for (kp, _) in &p.installed {
                kp.skip_counters(gap);
            }
        }
        info!("hand-off rolled back: serving on");
    }

    /// Put a captured state into this device at `now`, before its dataplane runs: each peer of
    /// the state that this device's config has gets its keypairs, endpoint, last handshake,
    /// newest timestamp, session and counters; the config's own values (AllowedIPs, limits,
    /// keepalive) stay as this config says. Peers the config no longer has are left out, new
    /// ones start without a session.
    pub fn restore(
        &mut self,
        state: &HandoffState,
        now: Instant,
    ) -> Result<Restored, RestoreError> {
        self.saw(now);
        if state.interface_public != *self.identity.public_key() {
            return Err(RestoreError::OtherKey);
        }
        if let Some((secret, age)) = &state.cookie_secret {
            self.cookies.restore_secret(secret, *age, now);
        }
        self.next_session = self.next_session.max(state.next_session);
        // The moment of the capture on this process's clock: ages count from there.
        let lag = self
            .wall_time(now)
            .duration_since(state.captured_at)
            .unwrap_or_default()
            .min(MAX_TRANSFER_LAG);
        let then = now.checked_sub(lag).unwrap_or(now);
        let mut done = Restored::default();
        let mut restored = std::collections::HashSet::new();
        for ps in &state.peers {
            match self.by_key.get(&ps.public_key).copied() {
                Some(slot) => {
                    done.peers += 1;
                    if self.restore_peer(slot, ps, then, &mut done) {
                        restored.extend(self.peers.get(slot).map(|p| p.id));
                    }
                }
                None => done.gone += 1,
            }
        }
        // Their sessions go on: the keepalive a new client peer starts with is not needed.
        self.commands
            .retain(|c| !matches!(c, Command::SendKeepalive { peer } if restored.contains(peer)));
        self.reschedule();
        Ok(done)
    }

    /// One peer; `now` is the moment of the capture on this clock. True if it got keypairs.
    /// Its commands are queued whatever the command cap: the state bounds them (at most four
    /// per peer), and none may be lost before the control loop first runs.
    fn restore_peer(
        &mut self,
        slot: usize,
        ps: &PeerState,
        now: Instant,
        done: &mut Restored,
    ) -> bool {
        let epoch = self.epoch;
        let Some(p) = self.peers.get_mut(slot) else {
            return false;
        };
        let id = p.id;
        if ps.endpoint.is_some() {
            p.endpoint = ps.endpoint;
        }
        p.last_handshake = ps.last_handshake.map(|a| back(now, a));
        if let Some(ts) = ps.last_timestamp {
            p.handshake.restore_last_timestamp(Tai64n::from_bytes(ts));
        }
        p.veil_peer = ps.veil_peer;
        p.session = ps.session.map(|s| {
            Session::restored(
                s.id,
                back(now, s.age),
                s.migrations,
                s.last_migration.map(|a| back(now, a)),
            )
        });
        for (field, v) in counts(&p.stats).into_iter().zip(ps.stats.counts) {
            field.store(v, Ordering::Relaxed);
        }
        for (field, age) in times(&p.stats).into_iter().zip(ps.stats.last) {
            field.store(
                age.map_or(0, |a| epoch.nanos(back(now, a))),
                Ordering::Relaxed,
            );
        }
        if let Some(endpoint) = ps.endpoint {
            self.commands.push_back_uncapped(Command::SetEndpoint {
                peer: id,
                endpoint,
                // The local address it talks to is learnt again from its next packet.
                local: None,
            });
        }
        // Slots are rebuilt by install order: previous then current as an initiator's
        // (current at once, the old current becomes previous), next as a responder's.
        let [current, previous, next] = &ps.keypairs;
        let mut installed = 0;
        for (k, role) in [
            (previous, KeypairRole::Initiator),
            (current, KeypairRole::Initiator),
            (next, KeypairRole::Responder),
        ] {
            let Some(k) = k else { continue };
            if self
                .indices
                .lookup(k.local_index)
                .is_some_and(|(s, _)| s != slot)
            {
                done.clashes += 1;
                warn!("hand-off: a keypair's index is another peer's already; left out");
                continue;
            }
            self.indices.installed(slot, k.local_index, role, now);
            let Some(p) = self.peers.get_mut(slot) else {
                return false;
            };
            let keypair = Arc::new(Keypair::restore(k, now));
            p.installed.push_back((keypair.clone(), role));
            p.keys_live = true;
            installed += 1;
            self.commands.push_back_uncapped(Command::InstallKeypair {
                peer: id,
                keypair,
                role,
                announce: false,
            });
        }
        done.keypairs += installed;
        if let Some(p) = self.peers.get(slot) {
            debug!(
                "peer {}: restored from the hand-off ({installed} keypair(s){})",
                p.short,
                if p.session.is_some() {
                    ", session live"
                } else {
                    ""
                }
            );
        }
        installed > 0
    }
}
