//! `[sessions]` (session lifecycle timeouts) and `[migration]` (client address changes): the
//! drafts are the control crate's policies themselves, defaults included.

use super::error::{ConfigErrorKind, Echo, ValueProblem};
use super::output::Parts;
use super::section::Sink;
use super::section::{only, only_draft, set, KeySpec, Section, SectionState};
use super::value::{parse_bool, parse_number, parse_secs};
use veil_control::migration::MigrationPolicy;
use veil_control::session::SessionPolicy;

/// A day, a week, a year: upper bounds that catch typos without limiting anyone.
const DAY: u32 = 86_400;
const YEAR: u32 = 365 * DAY;
const MIB: usize = 1 << 20;

impl Section for SessionPolicy {
    const NAME: &'static str = "sessions";
    #[rustfmt::skip]
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::once("session_timeout", "timeout", "seconds 10..=604800; default 300", |d, v, _| set(&mut d.session_timeout, parse_secs(v, 10, 7 * DAY))),
        KeySpec::once("idle_warning_sec", "timeout", "seconds 1..=604800, below session_timeout; default 270", |d, v, _| set(&mut d.idle_warning, parse_secs(v, 1, 7 * DAY))),
        KeySpec::once("absolute_timeout_sec", "timeout", "seconds 10..=31536000; default 86400", |d, v, _| set(&mut d.absolute_timeout, parse_secs(v, 10, YEAR))),
        KeySpec::once("drain_timeout_sec", "timeout", "seconds 0..=300; default 5", |d, v, _| set(&mut d.drain_timeout, parse_secs(v, 0, 300))),
        KeySpec::once("keepalive_probe_after_sec", "timeout", "seconds 1..=86400; default 30", |d, v, _| set(&mut d.probe_after, parse_secs(v, 1, DAY))),
        KeySpec::once("keepalive_probe_interval_sec", "interval", "seconds 1..=3600; default 12 (a standard peer answers after 10)", |d, v, _| set(&mut d.probe_interval, parse_secs(v, 1, 3600))),
        KeySpec::once("keepalive_probe_count", "count", "1..=100; default 3", |d, v, _| set(&mut d.probe_count, parse_number(v, 1, 100))),
        KeySpec::once("max_memory_per_session_mb", "memory limit", "MiB 1..=4096, or 0 for none; default 0 (a session holds at most 128 staged packets)", |d, v, _| set(&mut d.max_memory_per_session, parse_number(v, 0, 4096).map(|mb| (mb > 0).then(|| mb as usize * MIB)))),
    ];

    fn finish(states: Vec<SectionState<Self>>, sink: &mut Sink<'_>, out: &mut Parts) {
        let Some(state) = only(states) else {
            return;
        };
        let policy = state.draft;
        if policy.idle_warning >= policy.session_timeout {
            sink.error(
                state
                    .line_of("idle_warning_sec")
                    .or(state.line_of("session_timeout")),
                ConfigErrorKind::InvalidValue {
                    key: "idle_warning_sec",
                    value: Echo::Text(policy.idle_warning.as_secs().to_string()),
                    what: "timeout",
                    problem: ValueProblem::MustBeBelow {
                        other: "session_timeout",
                        value: policy.session_timeout.as_secs(),
                    },
                    expected: "a warning before the session expires, e.g. session_timeout - 30",
                },
            );
        }
        out.sessions = policy;
    }
}

impl Section for MigrationPolicy {
    const NAME: &'static str = "migration";
    #[rustfmt::skip]
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::once("enable_session_migration", "boolean", "true or false; default true", |d, v, _| set(&mut d.enabled, parse_bool(v))),
        KeySpec::once("migration_token_ttl_sec", "TTL", "seconds 1..=86400; default 300", |d, v, _| set(&mut d.token_ttl, parse_secs(v, 1, DAY))),
        KeySpec::once("max_migrations_per_session", "count", "0..=1000000; default 5", |d, v, _| set(&mut d.max_per_session, parse_number(v, 0, 1_000_000))),
        KeySpec::once("migration_cooldown_sec", "cooldown", "seconds 0..=86400; default 10", |d, v, _| set(&mut d.cooldown, parse_secs(v, 0, DAY))),
        KeySpec::once("validate_all_peers", "boolean", "true or false; default false (standard peers roam at once)", |d, v, _| set(&mut d.validate_all_peers, parse_bool(v))),
    ];

    fn finish(states: Vec<SectionState<Self>>, _: &mut Sink<'_>, out: &mut Parts) {
        out.migration = only_draft(states);
    }
}
