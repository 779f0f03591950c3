//! Session lifecycle, migration and drain on the [`Device`].
//!
//! Gateway side: sessions are created by handshakes and end by idleness, a
//! dead peer, the absolute timeout, a goodbye or a drain; veil peers get idle
//! warnings, drain notices and goodbyes; address changes are validated against
//! the migration policy, with single-use tokens. Client side: a veil client
//! asks for a token, migrates with it when its source address changes, and
//! reconnects with backoff after a drain notice.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use rand_core::CryptoRngCore;
use veil_dataplane::batch::LocalAddr;
use veil_dataplane::counters::bump;
use veil_dataplane::link::{Command, PeerId, PeerStats};
use veil_dataplane::wire::{ControlFrame, GOODBYE_EXPIRED, GOODBYE_SHUTDOWN, GOODBYE_TERMINATED};

use super::Device;
use crate::migration::{self, Refusal};
use crate::session::{Activity, Due, EndReason, Session, SessionState};

/// Kept at the end of the drain timeout for the goodbyes of the sessions the drain ends.
pub const DRAIN_GRACE: Duration = Duration::from_millis(300);

/// The dataplane must stay quiet this long before the drain ends the sessions: what one
/// stage handed the next (a sealed notice on its way to TX) is seen by then.
pub const DRAIN_QUIET_HOLD: Duration = Duration::from_millis(50);

/// Refused migrations of one peer are logged at most this often.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Reconnect backoff: first delay, doubling up to the cap, plus up to 25 % jitter.
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
const RECONNECT_CAP: Duration = Duration::from_secs(30);

/// The longest wait a gateway's drain notice can impose on us (`retry_after_ms` is clamped).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// May a peer in this role send us this kind of frame? `client_of`: we are the peer's client
/// (it is our gateway). Probes and goodbyes go both ways.
fn valid_for_role(frame: &ControlFrame, client_of: bool) -> bool {
    match frame {
        ControlFrame::Probe | ControlFrame::Goodbye { .. } => true,
        // From a gateway to its client.
        ControlFrame::IdleWarning { .. }
        | ControlFrame::DrainNotice { .. }
        | ControlFrame::MigrationTokenGrant { .. } => client_of,
        // From a client to its gateway.
        ControlFrame::MigrationTokenRequest | ControlFrame::Migrate { .. } => !client_of,
    }
}

/// A client's reconnect schedule after a drain notice.
#[derive(Debug, Clone, Copy)]
pub struct Reconnect {
    /// Attempts made so far.
    pub attempts: u32,
    /// When to try next.
    pub next_at: Instant,
}

/// A drain in progress.
#[derive(Debug, Clone, Copy)]
pub(super) struct Drain {
    /// The latest moment the sessions end: the drain timeout less [`DRAIN_GRACE`].
    pub(super) complete_at: Instant,
    /// Since when the dataplane has been quiet without a break.
    pub(super) quiet_since: Option<Instant>,
    pub(super) done: bool,
}

impl Drain {
    /// When the sessions end: after [`DRAIN_QUIET_HOLD`] of quiet, at `complete_at` at latest.
    pub(super) fn ends_at(&self) -> Instant {
        self.quiet_since.map_or(self.complete_at, |t| {
            (t + DRAIN_QUIET_HOLD).min(self.complete_at)
        })
    }
}

impl<R: CryptoRngCore> Device<R> {
    /// A handshake completed with the peer in `slot`. Starts a session unless one is live.
    pub(super) fn session_established(&mut self, slot: usize, now: Instant, we_initiated: bool) {
        let id = self.next_session;
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        if let Some(r) = p.reconnect.take() {
            info!(
                "peer {}: reconnected after {} attempt(s)",
                p.short, r.attempts
            );
        }
        if p.session.as_ref().is_some_and(Session::is_live) {
            return;
        }
        self.next_session += 1;
        p.session = Some(Session::new(id, now));
        self.record_new_session(slot, now);
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        p.granted.clear();
        p.token = None;
        bump(&self.counters.sessions_created, 1);
        info!("peer {}: session {id} established", p.short);
        if we_initiated {
            // A veil gateway answers with a token; a standard one drops the frame.
            let peer = p.id;
            self.commands.push_back(Command::SendFrame {
                peer,
                frame: ControlFrame::MigrationTokenRequest,
            });
        }
    }

    /// End the peer's live session for `reason`: keys wiped, staged packets dropped.
    pub(super) fn end_session(&mut self, slot: usize, reason: EndReason, now: Instant) {
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        let Some(session) = p.session.as_mut().filter(|s| s.is_live()) else {
            return;
        };
        let state = reason.final_state();
        session.state = state;
        let lived = now.saturating_duration_since(session.started);
        match state {
            SessionState::Terminated => bump(&self.counters.sessions_terminated, 1),
            _ => bump(&self.counters.sessions_expired, 1),
        }
        info!(
            "peer {}: session {} {} ({}) after {}s",
            p.short,
            session.id,
            state.as_str(),
            reason.as_str(),
            lived.as_secs()
        );
        let goodbye = match reason {
            _ if !p.veil_peer => None,
            EndReason::PeerGoodbye | EndReason::Drained => None,
            EndReason::Operator => Some(GOODBYE_TERMINATED),
            EndReason::Idle | EndReason::Dead | EndReason::Absolute => Some(GOODBYE_EXPIRED),
        };
        p.keys_live = false;
        p.installed.clear();
        p.granted.clear();
        p.token = None;
        p.retry_at = None;
        p.attempt_started = None;
        let peer = p.id;
        let renew = reason == EndReason::Absolute && self.recently_active(slot, now);
        self.indices.clear_keypairs(slot);
        self.commands
            .push_back(Command::ClearKeypairs { peer, goodbye });
        self.commands.push_back(Command::DropStaged { peer });
        if renew {
            // The peer is busy: renew at once instead of waiting for it to notice.
            self.send_initiation(slot, now);
        }
    }

    fn recently_active(&self, slot: usize, now: Instant) -> bool {
        let Some(p) = self.peers.get(slot) else {
            return false;
        };
        let last = PeerStats::at(&p.stats.last_rx_data, &self.epoch)
            .max(PeerStats::at(&p.stats.last_tx_data, &self.epoch));
        last.is_some_and(|t| now.saturating_duration_since(t) < self.timing.keepalive_timeout)
    }

    /// Per-session timers: idle warning, liveness probes, expiry.
    pub(super) fn session_timers(&mut self, slot: usize, now: Instant) {
        let epoch = self.epoch;
        let policy = self.sessions;
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        let Some(session) = p.session.as_mut() else {
            return;
        };
        let stats = &p.stats;
        let activity = Activity {
            last_data: PeerStats::at(&stats.last_rx_data, &epoch)
                .max(PeerStats::at(&stats.last_tx_data, &epoch)),
            last_heard: PeerStats::at(&stats.last_rx_any, &epoch),
        };
        let peer = p.id;
        match session.poll(&policy, now, activity) {
            Due::Nothing => {}
            Due::IdleWarning(seconds_left) => {
                if p.veil_peer {
                    bump(&self.counters.idle_warnings_sent, 1);
                    debug!("peer {}: idle warning, {seconds_left}s left", p.short);
                    self.commands.push_back(Command::SendFrame {
                        peer,
                        frame: ControlFrame::IdleWarning { seconds_left },
                    });
                }
            }
            Due::Probe => {
                // A standard peer would count a probe as a receive error: only veil peers
                // are probed; a silent standard peer simply expires.
                if p.veil_peer {
                    bump(&self.counters.probes_sent, 1);
                    debug!("peer {}: silent; liveness probe", p.short);
                    self.commands.push_back(Command::SendFrame {
                        peer,
                        frame: ControlFrame::Probe,
                    });
                }
            }
            Due::End(reason) => self.end_session(slot, reason, now),
        }
    }

    /// A control frame arrived from the peer in `slot`.
    pub(super) fn on_frame(
        &mut self,
        slot: usize,
        frame: ControlFrame,
        from: SocketAddr,
        now: Instant,
    ) {
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        if !p.veil_peer {
            p.veil_peer = true;
            self.set_roaming(slot);
        }
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        if !valid_for_role(&frame, p.client_of) {
            bump(&self.counters.frames_wrong_role, 1);
            return;
        }
        let peer = p.id;
        match frame {
            ControlFrame::Probe => self.commands.push_back(Command::SendKeepalive { peer }),
            ControlFrame::MigrationTokenRequest => self.grant_token(slot, now),
            ControlFrame::MigrationTokenGrant { ttl_sec, token } => {
                debug!("peer {}: migration token granted for {ttl_sec}s", p.short);
                p.token = Some(token);
            }
            ControlFrame::Migrate { token } => self.on_migrate(slot, token, from, now),
            ControlFrame::IdleWarning { seconds_left } => {
                info!(
                    "peer {}: session expires in {seconds_left}s unless traffic flows",
                    p.short
                );
            }
            ControlFrame::DrainNotice { retry_after_ms } => {
                let client_of = p.client_of;
                self.end_session(slot, EndReason::PeerGoodbye, now);
                if !client_of {
                    return;
                }
                if let Some(p) = self.peers.get(slot) {
                    warn!(
                        "peer {}: is draining (shutting down); reconnecting with backoff",
                        p.short
                    );
                }
                let wait = Duration::from_millis(u64::from(retry_after_ms))
                    .clamp(RECONNECT_FIRST, MAX_RETRY_AFTER);
                let jitter = self.jitter();
                if let Some(p) = self.peers.get_mut(slot) {
                    p.reconnect = Some(Reconnect {
                        attempts: 0,
                        next_at: now + wait + jitter,
                    });
                }
                self.reschedule();
            }
            ControlFrame::Goodbye { reason } => {
                info!("peer {}: said goodbye (reason {reason})", p.short);
                self.end_session(slot, EndReason::PeerGoodbye, now);
            }
        }
    }

    fn grant_token(&mut self, slot: usize, now: Instant) {
        let mut nonce = [0u8; 8];
        self.rng.fill_bytes(&mut nonce);
        let policy = self.migration;
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        let Some(session) = p.session.as_ref().filter(|s| s.is_live()) else {
            return;
        };
        if !policy.enabled {
            return;
        }
        let public = *p.handshake.remote_public();
        let token = self
            .tokens
            .mint(session.id, &public, now, policy.token_ttl, nonce);
        if p.granted.len() >= migration::MAX_OUTSTANDING {
            p.granted.remove(0);
        }
        p.granted.push(nonce);
        bump(&self.counters.migration_tokens_granted, 1);
        let ttl_sec = u32::try_from(policy.token_ttl.as_secs()).unwrap_or(u32::MAX);
        let peer = p.id;
        self.commands.push_back(Command::SendFrame {
            peer,
            frame: ControlFrame::MigrationTokenGrant { ttl_sec, token },
        });
    }

    fn on_migrate(
        &mut self,
        slot: usize,
        token: [u8; veil_dataplane::wire::MIGRATION_TOKEN_LEN],
        from: SocketAddr,
        now: Instant,
    ) {
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        let Some(session) = p.session.as_ref().filter(|s| s.is_live()) else {
            self.refuse(slot, from, Refusal::NoSession, now);
            return;
        };
        let public = *p.handshake.remote_public();
        if let Err(e) = self
            .tokens
            .redeem(&token, session.id, &public, now, &mut p.granted)
        {
            self.refuse(slot, from, Refusal::BadToken(e), now);
            return;
        }
        if p.endpoint == Some(from) {
            // Accepted already (the data got here first); the token is spent either way.
            return;
        }
        match migration::decide(&self.migration, session, now, true) {
            Ok(()) => self.accept_migration(slot, from, None, now, "token"),
            Err(r) => self.refuse(slot, from, r, now),
        }
    }

    /// Are the peer's address changes decided by the migration policy? Those of veil peers
    /// are; those of standard peers only when the operator asks (`validate_all_peers`).
    pub(super) fn roaming_validated(&self, slot: usize) -> bool {
        self.peers
            .get(slot)
            .map_or(self.migration.validate_all_peers, |p| self.validated(p))
    }

    /// Are `p`'s migrations validated? See [`Device::set_peer_migration`].
    pub(super) fn validated(&self, p: &super::Peer) -> bool {
        p.validate_migration
            .unwrap_or(self.migration.validate_all_peers || p.veil_peer)
    }

    /// The operator's migration switch for one peer (`validate_migration` in its `[Peer]`):
    /// `Some(true)` validates its migrations, `Some(false)` lets it roam at once as in
    /// WireGuard, `None` follows `[migration] validate_all_peers` and whether it speaks veil.
    pub fn set_peer_migration(&mut self, peer: PeerId, validate: Option<bool>) {
        let slot = peer.0 as usize;
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        p.validate_migration = validate;
        self.set_roaming(slot);
    }

    /// Tell the crypto stage how the peer in `slot` roams.
    pub(super) fn set_roaming(&mut self, slot: usize) {
        let validated = self.roaming_validated(slot);
        if let Some(p) = self.peers.get(slot) {
            self.commands.push_back(Command::SetRoaming {
                peer: p.id,
                validated,
            });
        }
    }

    /// An authenticated packet came from a new address.
    pub(super) fn on_roam(
        &mut self,
        slot: usize,
        addr: SocketAddr,
        local: Option<LocalAddr>,
        now: Instant,
    ) {
        let validated = self.roaming_validated(slot);
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        if !validated {
            // WireGuard's semantics: the crypto stage moved the endpoint already.
            if p.endpoint != Some(addr) {
                debug!("peer {}: roamed to {addr}", p.short);
                p.endpoint = Some(addr);
            }
            p.local = p.sticky(local);
            return;
        }
        if p.endpoint == Some(addr) {
            let peer = p.id;
            p.local = p.sticky(local);
            let local = p.local;
            self.commands.push_back(Command::SetEndpoint {
                peer,
                endpoint: addr,
                local,
            });
            return;
        }
        let decision = match p.session.as_ref() {
            Some(s) => migration::decide(&self.migration, s, now, false),
            None => Err(Refusal::NoSession),
        };
        match decision {
            Ok(()) => self.accept_migration(slot, addr, local, now, "address change"),
            Err(r) => self.refuse(slot, addr, r, now),
        }
    }

    /// `local`: our address the peer's packets from `addr` arrive on, if known (a token
    /// redeemed in a frame does not say; the crypto stage learns it from the next packet).
    fn accept_migration(
        &mut self,
        slot: usize,
        addr: SocketAddr,
        local: Option<LocalAddr>,
        now: Instant,
        how: &str,
    ) {
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        if let Some(s) = p.session.as_mut() {
            s.migrations += 1;
            s.last_migration = Some(now);
        }
        bump(&self.counters.migrations_accepted, 1);
        info!(
            "peer {}: migrated {} -> {} ({how})",
            p.short,
            p.endpoint
                .map_or_else(|| "none".to_string(), |e| e.to_string()),
            addr
        );
        p.endpoint = Some(addr);
        p.local = p.sticky(local);
        let (peer, local) = (p.id, p.local);
        self.commands.push_back(Command::SetEndpoint {
            peer,
            endpoint: addr,
            local,
        });
    }

    fn refuse(&mut self, slot: usize, addr: SocketAddr, why: Refusal, now: Instant) {
        bump(&self.counters.migrations_refused, 1);
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        if p.refusal_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= REFUSAL_LOG_INTERVAL)
        {
            p.refusal_logged = Some(now);
            warn!(
                "peer {}: migration to {addr} refused ({}); its packets from there are dropped",
                p.short,
                why.as_str()
            );
        }
        let peer = p.id;
        self.commands
            .push_back(Command::RefuseEndpoint { peer, addr });
    }

    /// Client side: the source address this host uses towards the peer in `peer` changed.
    /// Sends MIGRATE with the token held (if any) and asks for a fresh token.
    pub fn local_source_changed(&mut self, peer: PeerId, now: Instant) {
        let Some(p) = self.peers.get_mut(peer.0 as usize) else {
            return;
        };
        if !p.session.as_ref().is_some_and(Session::is_live) {
            return;
        }
        match p.token.take() {
            Some(token) => {
                info!(
                    "peer {}: local address changed; migrating the session with a token",
                    p.short
                );
                self.commands.push_back(Command::SendFrame {
                    peer,
                    frame: ControlFrame::Migrate { token },
                });
            }
            None => info!(
                "peer {}: local address changed; no token held, the gateway's policy decides",
                p.short
            ),
        }
        self.commands.push_back(Command::SendFrame {
            peer,
            frame: ControlFrame::MigrationTokenRequest,
        });
        let _ = now;
    }

    /// End a peer's session by force (operator or abuse policy): counted as terminated,
    /// keys wiped, a veil peer told goodbye. The peer may handshake again.
    pub fn terminate(&mut self, peer: PeerId, now: Instant) {
        self.end_session(peer.0 as usize, EndReason::Operator, now);
    }

    /// Peers this device is a client of, with their endpoints (for the source-address check).
    pub fn client_endpoints(&self) -> Vec<(PeerId, SocketAddr)> {
        self.peers
            .iter()
            .filter(|p| p.client_of && p.session.as_ref().is_some_and(Session::is_live))
            .filter_map(|p| p.endpoint.map(|e| (p.id, e)))
            .collect()
    }

    pub(super) fn reconnect_timer(&mut self, slot: usize, now: Instant) {
        let Some(r) = self.peers.get(slot).and_then(|p| p.reconnect) else {
            return;
        };
        if now < r.next_at {
            return;
        }
        let attempts = r.attempts + 1;
        let backoff = RECONNECT_FIRST
            .saturating_mul(1 << attempts.min(5))
            .min(RECONNECT_CAP);
        let jitter = Duration::from_millis(
            u64::from(self.rng.next_u32()) % (backoff.as_millis() as u64 / 4 + 1),
        );
        if let Some(p) = self.peers.get_mut(slot) {
            info!("peer {}: reconnect attempt {attempts}", p.short);
            p.reconnect = Some(Reconnect {
                attempts,
                next_at: now + backoff + jitter,
            });
            // The reconnect schedule, not the 5 s retry, drives the attempts.
            p.retry_at = None;
            p.attempt_started = None;
            p.last_initiation = None;
        }
        bump(&self.counters.reconnect_attempts, 1);
        self.send_initiation(slot, now);
        if let Some(p) = self.peers.get_mut(slot) {
            p.retry_at = None;
            p.attempt_started = None;
        }
    }

    /// Shutdown: every live session drains; veil peers get a drain notice. The sessions end
    /// once the dataplane has processed everything pending (its rings and the kernel's
    /// socket and TUN queues are empty: [`Device::set_dataplane_quiet`]), or when the drain
    /// timeout (less [`DRAIN_GRACE`]) runs out.
    pub(super) fn start_drain(&mut self, now: Instant) {
        if self.drain.is_some() {
            return;
        }
        let timeout = self.sessions.drain_timeout;
        let complete_at = now + timeout.saturating_sub(DRAIN_GRACE.min(timeout / 2));
        self.drain = Some(Drain {
            complete_at,
            quiet_since: None,
            done: false,
        });
        let retry_after_ms =
            u32::try_from((self.sessions.drain_timeout + Duration::from_secs(1)).as_millis())
                .unwrap_or(u32::MAX);
        for p in &mut self.peers {
            let Some(s) = p
                .session
                .as_mut()
                .filter(|s| s.state == SessionState::Active)
            else {
                continue;
            };
            s.state = SessionState::Draining;
            bump(&self.counters.sessions_draining, 1);
            info!("peer {}: session {} draining", p.short, s.id);
            if p.veil_peer {
                // Our clients should come back later; a gateway of ours just hears goodbye.
                let frame = if p.client_of {
                    ControlFrame::Goodbye {
                        reason: GOODBYE_SHUTDOWN,
                    }
                } else {
                    ControlFrame::DrainNotice { retry_after_ms }
                };
                let peer = p.id;
                self.commands.push_back(Command::SendFrame { peer, frame });
            }
        }
        self.reschedule();
    }

    /// The control loop's report while draining: is the dataplane quiet at `now`?
    pub fn set_dataplane_quiet(&mut self, quiet: bool, now: Instant) {
        let Some(d) = self.drain.as_mut().filter(|d| !d.done) else {
            return;
        };
        match (quiet, d.quiet_since) {
            (true, None) => d.quiet_since = Some(now),
            (false, Some(_)) => d.quiet_since = None,
            _ => return,
        }
        self.reschedule();
    }

    pub(super) fn drain_timer(&mut self, now: Instant) {
        let Some(d) = self.drain.filter(|d| !d.done && now >= d.ends_at()) else {
            return;
        };
        for slot in 0..self.peers.len() {
            let draining = self
                .peers
                .get(slot)
                .and_then(|p| p.session.as_ref())
                .is_some_and(|s| s.state == SessionState::Draining);
            if draining {
                self.end_session(slot, EndReason::Drained, now);
            }
        }
        self.drain = Some(Drain { done: true, ..d });
    }
}
