//! Protection on the [`Device`]: per-client rate limits (handed to the crypto
//! stage), reconnect abuse, handshake-flood defence and graceful degradation.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::{info, warn};
use rand_core::CryptoRngCore;
use veil_dataplane::counters::bump;
use veil_dataplane::link::Command;
use veil_dataplane::priority::{Degradation, PriorityMap};
use veil_dataplane::ratelimit::{RateLimit, TokenBucket};

use super::Device;
use crate::degradation::{DegradationController, DegradationPolicy, LoadSample};
use crate::session::Session;

/// Initiations per second accepted from one source address while under load
/// (halved from Moderate up), and the burst.
pub const INITIATIONS_PER_SEC: f64 = 20.0;
const INITIATION_BURST: f64 = 5.0;

/// The window of the reconnect limit.
const RECONNECT_WINDOW: Duration = Duration::from_secs(60);

/// Source addresses tracked for the initiation limit before old ones are pruned.
const MAX_TRACKED_SOURCES: usize = 65_536;

/// Refusals of one kind are logged at most this often.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Settings of `[rate_limiting]`, `[degradation]` and `[priority]`.
#[derive(Debug, Clone)]
pub struct ProtectionConfig {
    /// Limit for every client peer without an override (none by default: WireGuard's semantics).
    pub default_limit: RateLimit,
    /// Per-peer limits, by public key.
    pub overrides: HashMap<[u8; 32], RateLimit>,
    /// New sessions per minute per peer key (0 = unlimited, the default). Counted per key, not
    /// per source address, so clients behind one NAT do not share a budget.
    pub reconnect_limit_per_minute: u32,
    /// The degradation controller's settings.
    pub degradation: DegradationPolicy,
    /// DSCP classes.
    pub priorities: PriorityMap,
    /// RX → crypto ring occupancy (percent) above which Low traffic is shed.
    pub ring_high_water_pct: u32,
}

impl Default for ProtectionConfig {
    fn default() -> Self {
        Self {
            default_limit: RateLimit::UNLIMITED,
            overrides: HashMap::new(),
            reconnect_limit_per_minute: 0,
            degradation: DegradationPolicy::default(),
            priorities: PriorityMap::default(),
            ring_high_water_pct: veil_dataplane::stage::crypto::DEFAULT_HIGH_WATER_PCT,
        }
    }
}

/// Protection state of a device.
#[derive(Debug)]
pub(super) struct Protection {
    pub(super) config: ProtectionConfig,
    pub(super) controller: DegradationController,
    /// Initiation token buckets per source address.
    buckets: HashMap<IpAddr, TokenBucket>,
    /// Live sessions allowed while Critical.
    session_cap: Option<usize>,
    refusal_logged: Option<Instant>,
}

impl Protection {
    pub(super) fn new(config: ProtectionConfig) -> Self {
        let controller = DegradationController::new(config.degradation);
        Self {
            config,
            controller,
            buckets: HashMap::new(),
            session_cap: None,
            refusal_logged: None,
        }
    }

    pub(super) fn level(&self) -> Degradation {
        self.controller.level()
    }

    /// The limit for a peer: its override, else the default for clients. A peer we
    /// are the client of (it has a configured endpoint: our gateway, or a site we
    /// dial) is not limited unless it has an override.
    pub(super) fn limit_for(&self, public_key: &[u8; 32], we_are_its_client: bool) -> RateLimit {
        match self.config.overrides.get(public_key) {
            Some(l) => *l,
            None if we_are_its_client => RateLimit::UNLIMITED,
            None => self.config.default_limit,
        }
    }
}

fn prune(window: &mut VecDeque<Instant>, now: Instant) {
    while window
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= RECONNECT_WINDOW)
    {
        window.pop_front();
    }
}

impl<R: CryptoRngCore> Device<R> {
    /// Apply `[rate_limiting]`, `[degradation]` and `[priority]`: limits of the peers
    /// added so far are updated too.
    pub fn set_protection(&mut self, config: ProtectionConfig) {
        self.commands.push_back(Command::SetPriorityPolicy {
            map: config.priorities,
            high_water_pct: config.ring_high_water_pct,
        });
        self.protection = Protection::new(config);
        for p in &self.peers {
            let limit = self
                .protection
                .limit_for(p.handshake.remote_public(), p.client_of);
            self.commands
                .push_back(Command::SetRateLimit { peer: p.id, limit });
        }
    }

    /// The current degradation level.
    pub fn degradation(&self) -> Degradation {
        self.protection.level()
    }

    /// A load reading (once a second from the control thread's shell).
    pub fn on_load_sample(&mut self, now: Instant, sample: LoadSample) {
        let before = self.protection.level();
        let Some(level) = self.protection.controller.sample(now, sample) else {
            return;
        };
        self.counters
            .degradation_level
            .store(u64::from(level.as_u8()), Ordering::Relaxed);
        bump(&self.counters.degradation_changes, 1);
        let msg = format!(
            "degradation {} -> {} (cpu {:.0} %, memory {:.0} %)",
            before.as_str(),
            level.as_str(),
            sample.cpu_pct,
            sample.memory_pct
        );
        if level > before {
            warn!("{msg}");
        } else {
            info!("{msg}");
        }
        self.protection.session_cap =
            (level == Degradation::Critical).then(|| self.live_sessions());
        self.commands.push_back(Command::SetDegradation { level });
        self.reschedule();
    }

    /// Sessions that are active or draining.
    pub fn live_sessions(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| p.session.as_ref().is_some_and(Session::is_live))
            .count()
    }

    /// Multiplier of the timer cadence: from Light up, timer wake-ups halve. A configured
    /// PersistentKeepalive is never stretched (a NAT mapping would outlive it).
    pub(super) fn timer_stretch(&self) -> u32 {
        if self.protection.level() >= Degradation::Light {
            2
        } else {
            1
        }
    }

    /// Per-source token bucket for initiations, in force under load and from Moderate up.
    pub(super) fn admit_initiation(
        &mut self,
        src: SocketAddr,
        now: Instant,
        under_load: bool,
    ) -> bool {
        let level = self.protection.level();
        if !under_load && level < Degradation::Moderate {
            return true;
        }
        let rate = if level >= Degradation::Moderate {
            INITIATIONS_PER_SEC / 2.0
        } else {
            INITIATIONS_PER_SEC
        };
        let buckets = &mut self.protection.buckets;
        if buckets.len() >= MAX_TRACKED_SOURCES && !buckets.contains_key(&src.ip()) {
            // Full buckets are forgotten first: they carry no information.
            buckets.retain(|_, b| {
                b.tokens() < INITIATION_BURST
                    && b.idle_for(now).as_secs_f64() * rate < INITIATION_BURST
            });
        }
        let bucket = buckets
            .entry(src.ip())
            .or_insert(TokenBucket::full(INITIATION_BURST));
        bucket.refill(now, rate, INITIATION_BURST);
        if bucket.try_take(1.0) {
            true
        } else {
            bump(&self.counters.handshake_rate_limited, 1);
            false
        }
    }

    /// May the peer in `slot`, initiating from `src`, open a new session now?
    /// (Rekeys of a live session always may.)
    pub(super) fn admit_new_session(&mut self, slot: usize, src: SocketAddr, now: Instant) -> bool {
        let Some(p) = self.peers.get_mut(slot) else {
            return false;
        };
        if p.session.as_ref().is_some_and(Session::is_live) {
            return true;
        }
        let level = self.protection.level();
        let why = if level >= Degradation::Severe {
            bump(&self.counters.sessions_refused_degraded, 1);
            Some(format!("degradation {}", level.as_str()))
        } else if self
            .protection
            .session_cap
            .is_some_and(|cap| self.live_sessions() >= cap)
        {
            bump(&self.counters.sessions_refused_degraded, 1);
            Some("session cap".to_string())
        } else {
            let limit = self.protection.config.reconnect_limit_per_minute as usize;
            let Some(p) = self.peers.get_mut(slot) else {
                return false;
            };
            prune(&mut p.new_sessions, now);
            if limit > 0 && p.new_sessions.len() >= limit {
                bump(&self.counters.reconnects_refused, 1);
                Some(format!("more than {limit} new sessions in a minute"))
            } else {
                None
            }
        };
        let Some(why) = why else { return true };
        if self
            .protection
            .refusal_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= REFUSAL_LOG_INTERVAL)
        {
            self.protection.refusal_logged = Some(now);
            if let Some(p) = self.peers.get(slot) {
                warn!("peer {}: new session from {src} refused ({why})", p.short);
            }
        }
        false
    }

    /// Record a new session for the reconnect limit.
    pub(super) fn record_new_session(&mut self, slot: usize, now: Instant) {
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        p.new_sessions.push_back(now);
    }
}
