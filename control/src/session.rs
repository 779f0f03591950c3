//! Session lifecycle, sans-IO: Active → Draining or Expired → Terminated.
//!
//! A session is the life of a peer's keys from the handshake that created them
//! until they are wiped; rekeys inside it keep the session. The control thread
//! polls each session with the peer's activity and acts on what is [`Due`].

use std::time::{Duration, Instant};

/// Timeouts of the `[sessions]` config section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// No data in either direction for this long: the session expires (300 s).
    pub session_timeout: Duration,
    /// A veil peer is warned when the session has been idle this long (270 s).
    pub idle_warning: Duration,
    /// A session ends after this long whatever its activity (86400 s).
    pub absolute_timeout: Duration,
    /// Longest graceful drain on shutdown (5 s).
    pub drain_timeout: Duration,
    /// Nothing at all heard from the peer for this long: start probing (30 s).
    pub probe_after: Duration,
    /// Interval between probes (12 s: a standard WireGuard peer answers a probe with
    /// its passive keepalive after 10 s).
    pub probe_interval: Duration,
    /// Unanswered probes after which the peer is considered dead (3).
    pub probe_count: u32,
    /// Most bytes one session may hold in the dataplane: packets staged for its handshake and
    /// packets and control frames queued to be sealed for it (`max_memory_per_session_mb`);
    /// `None`: only the fixed bounds (128 staged packets).
    pub max_memory_per_session: Option<usize>,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_secs(300),
            idle_warning: Duration::from_secs(270),
            absolute_timeout: Duration::from_secs(86_400),
            drain_timeout: Duration::from_secs(5),
            probe_after: Duration::from_secs(30),
            probe_interval: Duration::from_secs(12),
            probe_count: 3,
            max_memory_per_session: None,
        }
    }
}

impl SessionPolicy {
    /// Longest a silent peer keeps its session: the first probe after
    /// `probe_after`, then `probe_count` probes `probe_interval` apart.
    pub fn dead_peer_bound(&self) -> Duration {
        self.probe_after + self.probe_interval * self.probe_count
    }
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Carrying traffic.
    Active,
    /// The gateway is shutting down; in-flight packets are still processed.
    Draining,
    /// Ended by a timeout; keys wiped.
    Expired,
    /// Ended by force (operator, abuse, the peer's goodbye); keys wiped.
    Terminated,
}

impl SessionState {
    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Active => "active",
            SessionState::Draining => "draining",
            SessionState::Expired => "expired",
            SessionState::Terminated => "terminated",
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// No data for `session_timeout`.
    Idle,
    /// Silent through every liveness probe.
    Dead,
    /// `absolute_timeout` reached.
    Absolute,
    /// Drained at shutdown.
    Drained,
    /// The peer said goodbye.
    PeerGoodbye,
    /// Removed by the operator.
    Operator,
}

impl EndReason {
    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Idle => "idle",
            EndReason::Dead => "dead",
            EndReason::Absolute => "absolute",
            EndReason::Drained => "drained",
            EndReason::PeerGoodbye => "peer_goodbye",
            EndReason::Operator => "operator",
        }
    }

    /// The state a session ends in for this reason.
    pub fn final_state(self) -> SessionState {
        match self {
            EndReason::PeerGoodbye | EndReason::Operator => SessionState::Terminated,
            _ => SessionState::Expired,
        }
    }
}

/// What a peer did lately, as the dataplane recorded it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Activity {
    /// Last data packet (not a keepalive or control frame) either way.
    pub last_data: Option<Instant>,
    /// Last authenticated packet of any kind received.
    pub last_heard: Option<Instant>,
}

/// What the control thread must do for a session now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing.
    Nothing,
    /// Send an idle warning: the session expires in this many seconds.
    IdleWarning(u32),
    /// Send a liveness probe.
    Probe,
    /// End the session.
    End(EndReason),
}

/// One session of one peer.
#[derive(Debug, Clone)]
pub struct Session {
    /// Process-unique id (also bound into migration tokens).
    pub id: u64,
    /// Current state.
    pub state: SessionState,
    /// When the first handshake of the session completed.
    pub started: Instant,
    /// Migrations accepted so far.
    pub migrations: u32,
    /// When the last migration was accepted.
    pub last_migration: Option<Instant>,
    warned_for: Option<Instant>,
    probes: u32,
    last_probe: Option<Instant>,
}

impl Session {
    /// A new active session.
    pub fn new(id: u64, now: Instant) -> Self {
        Self {
            id,
            state: SessionState::Active,
            started: now,
            migrations: 0,
            last_migration: None,
            warned_for: None,
            probes: 0,
            last_probe: None,
        }
    }

    /// An active session carried over from another process (a live hand-off): its id, when it
    /// started and its migrations, in this process's clock.
    pub fn restored(
        id: u64,
        started: Instant,
        migrations: u32,
        last_migration: Option<Instant>,
    ) -> Self {
        Self {
            migrations,
            last_migration,
            ..Self::new(id, started)
        }
    }

    /// Is the session still carrying traffic (active or draining)?
    pub fn is_live(&self) -> bool {
        matches!(self.state, SessionState::Active | SessionState::Draining)
    }

    /// Decide what is due at `now`. Call every control tick for live sessions.
    pub fn poll(&mut self, policy: &SessionPolicy, now: Instant, activity: Activity) -> Due {
        if self.state != SessionState::Active {
            return Due::Nothing;
        }
        if now.saturating_duration_since(self.started) >= policy.absolute_timeout {
            return Due::End(EndReason::Absolute);
        }
        let last_data = activity
            .last_data
            .map_or(self.started, |t| t.max(self.started));
        let idle = now.saturating_duration_since(last_data);
        if idle >= policy.session_timeout {
            return Due::End(EndReason::Idle);
        }
        let last_heard = activity
            .last_heard
            .map_or(self.started, |t| t.max(self.started));
        // Any packet heard since the last probe answers it.
        if self.last_probe.is_some_and(|p| last_heard >= p) {
            self.probes = 0;
            self.last_probe = None;
        }
        let silent = now.saturating_duration_since(last_heard);
        if silent >= policy.probe_after {
            let next = self
                .last_probe
                .is_none_or(|p| now.saturating_duration_since(p) >= policy.probe_interval);
            if next {
                if self.probes >= policy.probe_count {
                    return Due::End(EndReason::Dead);
                }
                self.probes += 1;
                self.last_probe = Some(now);
                return Due::Probe;
            }
        }
        if idle >= policy.idle_warning && self.warned_for != Some(last_data) {
            self.warned_for = Some(last_data);
            let left = policy.session_timeout.saturating_sub(idle).as_secs();
            return Due::IdleWarning(u32::try_from(left).unwrap_or(u32::MAX));
        }
        Due::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SessionPolicy {
        SessionPolicy {
            session_timeout: Duration::from_secs(30),
            idle_warning: Duration::from_secs(20),
            absolute_timeout: Duration::from_secs(1000),
            drain_timeout: Duration::from_secs(5),
            probe_after: Duration::from_secs(10),
            probe_interval: Duration::from_secs(3),
            probe_count: 2,
            max_memory_per_session: None,
        }
    }

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    /// A session that starts now, and now.
    fn started() -> (Instant, Session) {
        let t0 = Instant::now();
        (t0, Session::new(1, t0))
    }

    /// Last data `data` seconds and last heard `heard` seconds after `t0`.
    fn activity(t0: Instant, data: u64, heard: u64) -> Activity {
        Activity {
            last_data: Some(at(t0, data)),
            last_heard: Some(at(t0, heard)),
        }
    }

    #[test]
    fn idle_warning_then_expiry() {
        let p = policy();
        let (t0, mut s) = started();
        // The peer keeps answering (keepalives) but sends no data.
        let mut warnings = 0;
        for sec in 1..=40 {
            let act = activity(t0, 1, sec);
            match s.poll(&p, at(t0, sec), act) {
                Due::IdleWarning(left) => {
                    assert_eq!(sec, 21);
                    assert_eq!(left, 10);
                    warnings += 1;
                }
                Due::End(r) => {
                    assert_eq!((sec, r), (31, EndReason::Idle));
                    assert_eq!(warnings, 1);
                    return;
                }
                Due::Probe => panic!("no probe for a peer that is heard"),
                Due::Nothing => {}
            }
        }
        panic!("never expired");
    }

    #[test]
    fn data_postpones_expiry_and_rearms_warning() {
        let p = policy();
        let (t0, mut s) = started();
        let act = |d: u64, h: u64| activity(t0, d, h);
        assert_eq!(s.poll(&p, at(t0, 20), act(0, 20)), Due::IdleWarning(10));
        assert_eq!(s.poll(&p, at(t0, 25), act(25, 25)), Due::Nothing);
        assert_eq!(s.poll(&p, at(t0, 45), act(25, 45)), Due::IdleWarning(10));
        assert_eq!(
            s.poll(&p, at(t0, 55), act(25, 55)),
            Due::End(EndReason::Idle)
        );
    }

    #[test]
    fn silent_peer_is_probed_then_dead_within_bound() {
        let p = policy();
        let (t0, mut s) = started();
        let act = activity(t0, 0, 0);
        let mut probes = vec![];
        let mut end = None;
        for tenth in 0..400u64 {
            let now = t0 + Duration::from_millis(tenth * 100);
            match s.poll(&p, now, act) {
                Due::Probe => probes.push(now - t0),
                Due::End(r) => {
                    end = Some((now - t0, r));
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(
            probes,
            vec![Duration::from_secs(10), Duration::from_secs(13)]
        );
        assert_eq!(end, Some((Duration::from_secs(16), EndReason::Dead)));
        assert_eq!(p.dead_peer_bound(), Duration::from_secs(16));
    }

    #[test]
    fn answered_probe_resets() {
        let p = policy();
        let (t0, mut s) = started();
        // Data and the answers arrive together, so idleness never gets in the way.
        let act = |h: u64| activity(t0, h, h);
        assert_eq!(s.poll(&p, at(t0, 10), act(0)), Due::Probe);
        assert_eq!(s.poll(&p, at(t0, 13), act(0)), Due::Probe);
        // The answer arrives; silence starts again from it.
        assert_eq!(s.poll(&p, at(t0, 14), act(14)), Due::Nothing);
        assert_eq!(s.poll(&p, at(t0, 23), act(14)), Due::Nothing);
        assert_eq!(s.poll(&p, at(t0, 24), act(14)), Due::Probe);
    }

    #[test]
    fn absolute_timeout_wins() {
        let mut p = policy();
        p.absolute_timeout = Duration::from_secs(15);
        let (t0, mut s) = started();
        let busy = |t: u64| activity(t0, t, t);
        assert_eq!(s.poll(&p, at(t0, 14), busy(14)), Due::Nothing);
        assert_eq!(
            s.poll(&p, at(t0, 15), busy(15)),
            Due::End(EndReason::Absolute)
        );
    }

    #[test]
    fn only_active_sessions_have_timers() {
        let p = policy();
        let (t0, mut s) = started();
        s.state = SessionState::Draining;
        assert_eq!(s.poll(&p, at(t0, 5000), Activity::default()), Due::Nothing);
    }
}
