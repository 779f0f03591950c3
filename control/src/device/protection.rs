//! Protection on the [`Device`]: per-client rate limits (handed to the crypto
//! stage), reconnect abuse, handshake-flood defence and graceful degradation.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use rand_core::CryptoRngCore;
use veil_dataplane::counters::bump;
use veil_dataplane::link::Command;
use veil_dataplane::priority::{Degradation, PriorityMap};
use veil_dataplane::ratelimit::{RateLimit, TokenBucket};
pub use veil_dataplane::source_filter::source_key as limit_key;
use veil_dataplane::source_filter::SourceFilter;

use super::Device;
use crate::degradation::{DegradationController, DegradationPolicy, LoadSample};
use crate::session::Session;

/// Handshake messages per second accepted from one source (an IPv4 address, an IPv6 /64)
/// while under load (halved from Moderate up), and the burst: the kernel's values. Only
/// messages whose MAC1 and MAC2 verify are counted, so a spoofed source cannot spend the
/// budget of the address it claims (MAC2 proves the sender receives at that address).
pub const INITIATIONS_PER_SEC: f64 = 20.0;
const INITIATION_BURST: f64 = 5.0;

/// Cookie replies per second sent to one source (IPv4 address, IPv6 /64) under load, and
/// the burst: a flood from one source costs at most this many replies, while 200 spoofed
/// packets a second with a victim's address leave its own initiation a reply.
pub const COOKIE_REPLIES_PER_SEC: f64 = 500.0;
const COOKIE_REPLY_BURST: f64 = 50.0;

/// Sources tracked by the handshake limit at most; beyond, a new source is refused (and
/// counted) until collection frees room: the table never grows past this.
pub const MAX_LIMITED_SOURCES: usize = 65_536;

/// How often the handshake limit's table is collected, and the idle time after which an
/// entry goes (its bucket is full again by then).
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// The window of the reconnect limit.
const RECONNECT_WINDOW: Duration = Duration::from_secs(60);

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
    /// Handshake token buckets per source ([`limit_key`]).
    buckets: HashMap<IpAddr, TokenBucket>,
    /// Cookie-reply token buckets per source ([`limit_key`]).
    reply_buckets: HashMap<IpAddr, TokenBucket>,
    /// Last collection of `buckets` and `reply_buckets`.
    collected: Option<Instant>,
    /// Where a source that spent its cookie replies is written, so that RX drops its
    /// further handshake messages until the budget refills (shared with every pipeline).
    pub(super) source_filter: Arc<SourceFilter>,
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
            reply_buckets: HashMap::new(),
            collected: None,
            source_filter: Arc::default(),
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

/// Take a token from `key`'s bucket in `table` (made full at `burst`); false when the bucket
/// is short, or when the table is full and `key` not in it (refuse rather than grow).
fn take(
    table: &mut HashMap<IpAddr, TokenBucket>,
    key: IpAddr,
    rate: f64,
    burst: f64,
    now: Instant,
) -> bool {
    if table.len() >= MAX_LIMITED_SOURCES && !table.contains_key(&key) {
        return false;
    }
    let bucket = table.entry(key).or_insert(TokenBucket::full(burst));
    bucket.refill(now, rate, burst);
    bucket.try_take(1.0)
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

    /// Per-source token bucket for handshake messages under load. The caller has verified
    /// MAC1 and MAC2 (the source is proven): a message from an unproven source gets a cookie
    /// reply and never reaches this limit.
    pub(super) fn admit_handshake(&mut self, src: SocketAddr, now: Instant) -> bool {
        let rate = if self.protection.level() >= Degradation::Moderate {
            INITIATIONS_PER_SEC / 2.0
        } else {
            INITIATIONS_PER_SEC
        };
        self.collect_handshake_limit(now);
        let buckets = &mut self.protection.buckets;
        let ok = take(buckets, limit_key(src), rate, INITIATION_BURST, now);
        if !ok {
            bump(&self.counters.handshake_rate_limited, 1);
        }
        ok
    }

    /// May a cookie reply go to `src` now (under load, MAC1 valid, MAC2 not)? Bounds what a
    /// flood costs: beyond the rate the message is dropped, counted, and never reaches Noise.
    pub(super) fn admit_cookie_reply(&mut self, src: SocketAddr, now: Instant) -> bool {
        self.collect_handshake_limit(now);
        let key = limit_key(src);
        let table = &mut self.protection.reply_buckets;
        let ok = take(table, key, COOKIE_REPLIES_PER_SEC, COOKIE_REPLY_BURST, now);
        if !ok {
            bump(&self.counters.cookie_replies_limited, 1);
            self.filter_until_refilled(key, now);
        }
        ok
    }

    /// Under load, before any MAC work: has `src` cookie replies left? A source that spent
    /// them (a flood) has its further messages dropped for the price of a table lookup,
    /// counted in `cookie_replies_limited`, until its budget refills.
    pub(super) fn flood_prefilter(&mut self, src: SocketAddr, now: Instant) -> bool {
        let key = limit_key(src);
        let Some(bucket) = self.protection.reply_buckets.get_mut(&key) else {
            return true;
        };
        bucket.refill(now, COOKIE_REPLIES_PER_SEC, COOKIE_REPLY_BURST);
        let left = bucket.has(1.0);
        if !left {
            bump(&self.counters.cookie_replies_limited, 1);
            self.filter_until_refilled(key, now);
        }
        left
    }

    /// `key` has no cookie reply left: RX drops its handshake messages until its bucket holds
    /// a token again (what [`Device::flood_prefilter`] would decide for each of them here).
    fn filter_until_refilled(&mut self, key: IpAddr, now: Instant) {
        let tokens = self
            .protection
            .reply_buckets
            .get(&key)
            .map_or(0.0, TokenBucket::tokens);
        let wait = ((1.0 - tokens).max(0.0) / COOKIE_REPLIES_PER_SEC).min(1.0);
        self.protection
            .source_filter
            .block(key, now, now + Duration::from_secs_f64(wait));
    }

    /// Share the filter RX reads (the runtime gives every pipeline's RX the same one).
    pub fn use_source_filter(&mut self, filter: Arc<SourceFilter>) {
        self.protection.source_filter = filter;
    }

    /// Forget, once a [`COLLECT_EVERY`], the sources idle for as long (on the control
    /// thread's timer and on handshakes).
    pub(super) fn collect_handshake_limit(&mut self, now: Instant) {
        let p = &mut self.protection;
        if p.collected
            .is_some_and(|t| now.saturating_duration_since(t) < COLLECT_EVERY)
        {
            return;
        }
        p.collected = Some(now);
        p.buckets.retain(|_, b| b.idle_for(now) < COLLECT_EVERY);
        p.reply_buckets
            .retain(|_, b| b.idle_for(now) < COLLECT_EVERY);
    }

    /// Sources the handshake limit tracks now.
    pub fn handshake_limit_sources(&self) -> usize {
        self.protection.buckets.len()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::SystemTime;

    use rand_core::OsRng;
    use veil_dataplane::link::Epoch;
    use veil_dataplane::timing::Timing;

    use super::*;

    fn device() -> (Device, Instant) {
        let now = Instant::now();
        let wall = (now, SystemTime::now());
        (
            Device::new(&[7; 32], Timing::default(), Epoch::new(now), wall, OsRng),
            now,
        )
    }

    fn src(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_limit_keys_ipv4_per_address_and_ipv6_per_64() {
        assert_eq!(limit_key(src("192.0.2.1:1")), limit_key(src("192.0.2.1:2")));
        assert_ne!(limit_key(src("192.0.2.1:1")), limit_key(src("192.0.2.2:1")));
        assert_eq!(
            limit_key(src("[2001:db8:1:2:aaaa::1]:1")),
            limit_key(src("[2001:db8:1:2:bbbb::9]:1"))
        );
        assert_ne!(
            limit_key(src("[2001:db8:1:2::1]:1")),
            limit_key(src("[2001:db8:1:3::1]:1"))
        );
        // A v4-mapped address is its IPv4 address.
        assert_eq!(
            limit_key(src("[::ffff:192.0.2.1]:1")),
            limit_key(src("192.0.2.1:1"))
        );
    }

    #[test]
    fn a_source_gets_its_burst_shared_by_its_64_then_refills() {
        let (mut d, t0) = device();
        for i in 0..5 {
            assert!(
                d.admit_handshake(src(&format!("[2001:db8::{i}]:1")), t0),
                "{i}"
            );
        }
        assert!(!d.admit_handshake(src("[2001:db8::ff]:1"), t0), "same /64");
        assert!(
            d.admit_handshake(src("[2001:db8:0:1::1]:1"), t0),
            "other /64"
        );
        assert!(d.admit_handshake(src("192.0.2.1:1"), t0));
        // 20 a second: one more after 50 ms.
        assert!(d.admit_handshake(src("[2001:db8::1]:1"), t0 + Duration::from_millis(60)));
        assert_eq!(d.counters.handshake_rate_limited.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn cookie_replies_to_one_source_are_bounded() {
        let (mut d, t0) = device();
        let sent = (0..1000)
            .filter(|_| d.admit_cookie_reply(src("192.0.2.9:1"), t0))
            .count();
        assert_eq!(sent, 50, "the burst, then nothing more at once");
        assert_eq!(
            d.counters.cookie_replies_limited.load(Ordering::Relaxed),
            950
        );
        // Its next messages are dropped before any MAC work; other sources are not.
        assert!(!d.flood_prefilter(src("192.0.2.9:2"), t0));
        assert!(d.flood_prefilter(src("192.0.2.11:1"), t0));
        assert!(
            d.admit_cookie_reply(src("192.0.2.10:1"), t0),
            "another source"
        );
        // 500 a second: one more after 2 ms.
        assert!(d.admit_cookie_reply(src("192.0.2.9:1"), t0 + Duration::from_millis(3)));
    }

    #[test]
    fn a_source_out_of_cookie_replies_is_filtered_in_rx_until_it_refills() {
        let (mut d, t0) = device();
        let filter = std::sync::Arc::new(SourceFilter::default());
        d.use_source_filter(filter.clone());
        while d.admit_cookie_reply(src("192.0.2.9:1"), t0) {}
        assert!(filter.blocks(src("192.0.2.9:7"), t0), "spent: RX drops it");
        assert!(!filter.blocks(src("192.0.2.10:1"), t0), "another source");
        // One token comes back after 2 ms (500 a second): from then on, RX lets it through
        // again, and the control thread decides as before.
        assert!(filter.blocks(src("192.0.2.9:7"), t0 + Duration::from_micros(1_900)));
        let refilled = t0 + Duration::from_micros(2_100);
        assert!(!filter.blocks(src("192.0.2.9:7"), refilled));
        assert!(d.flood_prefilter(src("192.0.2.9:1"), refilled));
    }

    #[test]
    fn a_full_table_refuses_new_sources_until_collected() {
        let (mut d, t0) = device();
        for i in 0..MAX_LIMITED_SOURCES as u32 {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            assert!(d.admit_handshake(SocketAddr::new(a.into(), 1), t0));
        }
        assert_eq!(d.handshake_limit_sources(), MAX_LIMITED_SOURCES);
        assert!(
            !d.admit_handshake(src("192.0.2.1:1"), t0),
            "refused, not grown"
        );
        assert_eq!(d.handshake_limit_sources(), MAX_LIMITED_SOURCES);
        // A tracked source still gets its budget.
        assert!(d.admit_handshake(src("10.0.0.1:1"), t0));
        // The timer collects idle sources; then there is room again.
        let later = t0 + Duration::from_secs(2);
        d.collect_handshake_limit(later);
        assert_eq!(d.handshake_limit_sources(), 0);
        assert!(d.admit_handshake(src("192.0.2.1:1"), later));
    }
}
