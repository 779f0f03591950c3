//! `[logging]`, `[metrics]` and `[threading]`, and the example file that documents every key.

use log::LevelFilter;
use proptest::strategy::Strategy;

use super::super::error::ValueProblem;
use super::super::interface::{InterfaceDraft, DEFAULT_MTU};
use super::super::metrics::{parse_listen, MetricsDraft};
use super::super::peer::PeerDraft;
use super::super::protection::{PriorityDraft, RateLimitingDraft};
use super::super::section::Section;
use super::super::value::{parse_bool, parse_fraction};
use super::super::{
    Config, ConfigErrors, CpuSetting, LogFormat, LoggingConfig, MetricsConfig, ThreadingConfig,
};
use crate::threading::values::Threading;

const KEY: &str = "eBiTrl6EfC2vnq98gbI9jxGR4xu+4tU4WO1bG/GKOlo=";
const EXAMPLE: &str = include_str!("../../../examples/veil-server.conf");

fn with_interface(rest: &str) -> String {
    format!("[Interface]\nPrivateKey = {KEY}\n{rest}")
}

fn messages(text: &str) -> Vec<String> {
    match Config::parse(text, "veil0.conf") {
        Ok(c) => panic!("expected errors, parsed {c:?}"),
        Err(ConfigErrors(errors)) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn value_parsers() {
    assert_eq!(parse_bool("Yes").ok(), Some(true));
    assert_eq!(parse_bool("off").ok(), Some(false));
    assert!(parse_bool("maybe").is_err());
    assert_eq!(parse_fraction("0.01").ok(), Some(0.01));
    assert_eq!(parse_fraction("1").ok(), Some(1.0));
    for text in ["1e-2", "NaN", "1..2"] {
        assert!(
            matches!(parse_fraction(text), Err(ValueProblem::NotAFraction)),
            "{text}"
        );
    }
    assert!(matches!(
        parse_fraction("1.5"),
        Err(ValueProblem::FractionOutOfRange)
    ));
    assert_eq!(
        parse_listen("[::1]:9100").ok(),
        Some("[::1]:9100".parse().expect("addr"))
    );
    assert!(parse_listen("localhost:9100").is_err());
}

/// Every section but `[Interface]` and `[Peer]` holds its defaults.
fn assert_every_section_has_its_defaults(c: &Config) {
    let protection = veil_control::device::ProtectionConfig::default();
    assert_eq!(c.protection.default_limit, protection.default_limit);
    assert_eq!(
        c.protection.reconnect_limit_per_minute,
        protection.reconnect_limit_per_minute
    );
    assert_defaults_but_rate_limiting(c);
}

/// Every section but `[Interface]`, `[Peer]` and `[rate_limiting]` holds its defaults.
fn assert_defaults_but_rate_limiting(c: &Config) {
    assert_eq!(c.logging, LoggingConfig::default());
    assert_eq!(c.metrics, MetricsConfig::default());
    assert_eq!(c.threading, ThreadingConfig::default());
    assert_eq!(c.sessions, veil_control::session::SessionPolicy::default());
    assert_eq!(
        c.migration,
        veil_control::migration::MigrationPolicy::default()
    );
    let protection = veil_control::device::ProtectionConfig::default();
    assert_eq!(c.protection.degradation, protection.degradation);
    assert_eq!(c.protection.priorities, protection.priorities);
    assert_eq!(
        c.protection.ring_high_water_pct,
        protection.ring_high_water_pct
    );
}

#[test]
fn absent_sections_give_the_defaults() {
    let c = Config::parse(&with_interface(""), "veil0.conf").expect("valid");
    assert_every_section_has_its_defaults(&c);
}

#[test]
fn metrics_listen_alone_turns_the_endpoint_on() {
    let on = Config::parse(
        &with_interface("[metrics]\nlisten = 127.0.0.1:9100\n"),
        "veil0.conf",
    )
    .expect("valid");
    assert_eq!(
        on.metrics,
        MetricsConfig {
            enable: true,
            listen: "127.0.0.1:9100".parse().expect("addr"),
        }
    );
    let off = Config::parse(
        &with_interface("[metrics]\nlisten = 127.0.0.1:9100\nenable = false\n"),
        "veil0.conf",
    )
    .expect("valid");
    assert!(!off.metrics.enable, "an explicit enable = false wins");
    let empty = Config::parse(&with_interface("[metrics]\n"), "veil0.conf").expect("valid");
    assert_eq!(empty.metrics, MetricsConfig::default());
}

#[test]
fn a_configured_limit_limits_only_what_it_names() {
    use veil_dataplane::ratelimit::RateLimit;
    let text = with_interface(
        "[rate_limiting]\nper_client_bandwidth_mbps = 50\n[migration]\nvalidate_all_peers = true\n",
    );
    let c = Config::parse(&text, "veil0.conf").expect("valid");
    assert_eq!(
        c.protection.default_limit,
        RateLimit {
            bytes_per_sec: 50 * 125_000,
            packets_per_sec: 0,
            ..RateLimit::GUIDE
        }
    );
    assert_eq!(c.protection.reconnect_limit_per_minute, 0);
    assert!(c.migration.validate_all_peers);
    // Rates of 0 are no limit at all, whatever the burst factor says.
    let text = with_interface(
        "[rate_limiting]\nper_client_bandwidth_mbps = 0\nburst_allowance_factor = 3\n",
    );
    let c = Config::parse(&text, "veil0.conf").expect("valid");
    assert_eq!(c.protection.default_limit, RateLimit::UNLIMITED);
}

#[test]
fn max_memory_per_session_is_read_in_mib_and_validated() {
    let c = Config::parse(
        &with_interface("[sessions]\nmax_memory_per_session_mb = 16\n"),
        "veil0.conf",
    )
    .expect("valid");
    assert_eq!(c.sessions.max_memory_per_session, Some(16 << 20));
    let none = Config::parse(
        &with_interface("[sessions]\nmax_memory_per_session_mb = 0\n"),
        "veil0.conf",
    )
    .expect("valid");
    assert_eq!(none.sessions.max_memory_per_session, None);
    for bad in ["4097", "-1", "1.5", "lots"] {
        let text = with_interface(&format!("[sessions]\nmax_memory_per_session_mb = {bad}\n"));
        let e = Config::parse(&text, "veil0.conf")
            .expect_err(bad)
            .to_string();
        assert!(e.contains("max_memory_per_session_mb"), "{bad}: {e}");
    }
}

#[test]
fn every_key_parses() {
    let text = with_interface(
        "[LOGGING]\nLevel = debug\nformat = JSON\nrate_limit_logs_per_sec = 0\n\
         sampling_rate = 0.25\nasync_logging = yes\nasync_queue_size = 64\n\
         [metrics]\nenable = true\nlisten = [::1]:9100\n\
         [threading]\nmode = single\npin = true\nrx_cpu = 1\ncrypto_cpu = 0\ntx_cpu = 2\ncontrol_cpu = 3\npipelines = auto\ncpus = 0-3,6\n",
    );
    let c = Config::parse(&text, "veil0.conf").expect("valid");
    assert_eq!(
        c.logging,
        LoggingConfig {
            level: LevelFilter::Debug,
            format: LogFormat::Json,
            rate_limit_logs_per_sec: 0,
            sampling_rate: 0.25,
            async_logging: true,
            async_queue_size: 64,
        }
    );
    assert_eq!(
        c.metrics,
        MetricsConfig {
            enable: true,
            listen: "[::1]:9100".parse().expect("addr"),
        }
    );
    let cpu = |cpu, line| Some(CpuSetting { cpu, line });
    assert_eq!(
        c.threading,
        ThreadingConfig {
            mode: Threading::Single,
            pin: true,
            rx_cpu: cpu(1, 16),
            crypto_cpu: cpu(0, 17),
            tx_cpu: cpu(2, 18),
            control_cpu: cpu(3, 19),
            aead: veil_dataplane::crypto::BackendChoice::Auto,
            offload: true,
            pipelines: crate::threading::values::PipelineCount::Auto,
            cpus: Some((crate::threading::values::CpuList(vec![0, 1, 2, 3, 6]), 21)),
        }
    );
}

/// The example documents every key of every section, and its values are the defaults.
#[test]
fn example_file_parses_and_documents_every_key_with_its_default() {
    let c = Config::parse(EXAMPLE, "examples/veil-server.conf").expect("the example is valid");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // [rate_limiting] shows the reliability guide's production values, not the defaults
    // (none: WireGuard's semantics).
    assert_defaults_but_rate_limiting(&c);
    assert_eq!(
        c.protection.default_limit,
        veil_dataplane::ratelimit::RateLimit::GUIDE
    );
    assert_eq!(c.protection.reconnect_limit_per_minute, 5);
    assert_eq!(c.interface.mtu, DEFAULT_MTU);
    assert_eq!(c.peers.len(), 1);
    fn names<S: Section>() -> Vec<&'static str> {
        S::KEYS.iter().map(|k| k.name).collect()
    }
    let all = [
        names::<InterfaceDraft>(),
        names::<PeerDraft>(),
        names::<LoggingConfig>(),
        names::<MetricsDraft>(),
        names::<ThreadingConfig>(),
        names::<veil_control::session::SessionPolicy>(),
        names::<veil_control::migration::MigrationPolicy>(),
        names::<RateLimitingDraft>(),
        names::<veil_control::degradation::DegradationPolicy>(),
        names::<PriorityDraft>(),
    ]
    .concat();
    for key in all {
        let documented = EXAMPLE.lines().any(|l| {
            let l = l.trim_start_matches('#').trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        });
        assert!(
            documented,
            "examples/veil-server.conf does not show '{key} = ...'"
        );
    }
}

/// Each bad file, with its one precise message; `veil check` and `veil up`
/// print exactly these and exit 2.
#[test]
fn bad_operational_settings_each_have_a_precise_message() {
    let cases: &[(&str, &str)] = &[
        (
            "[logging]\nlevel = verbose\n",
            "veil0.conf:4: level: 'verbose' is not a valid log level: not one of the allowed \
             values (expected error, warn, info, debug, trace or off; default info; RUST_LOG, \
             when set, wins)",
        ),
        (
            "[logging]\nformat = xml\n",
            "veil0.conf:4: format: 'xml' is not a valid log format: not one of the allowed \
             values (expected text or json; default text)",
        ),
        (
            "[logging]\nformat =\n",
            "veil0.conf:4: format: '' is not a valid log format: it is empty \
             (expected text or json; default text)",
        ),
        (
            "[logging]\nrate_limit_logs_per_sec = -5\n",
            "veil0.conf:4: rate_limit_logs_per_sec: '-5' is not a valid message rate: not a \
             whole number (expected messages per second 0..=1000000, 0 for no limit; \
             default 100)",
        ),
        (
            "[logging]\nrate_limit_logs_per_sec = 2000000\n",
            "veil0.conf:4: rate_limit_logs_per_sec: '2000000' is not a valid message rate: \
             must be 0..=1000000 (expected messages per second 0..=1000000, 0 for no limit; \
             default 100)",
        ),
        (
            "[logging]\nsampling_rate = 1.5\n",
            "veil0.conf:4: sampling_rate: '1.5' is not a valid sampling rate: must be \
             0.0..=1.0 (expected a share of debug/trace messages to keep, 0.0..=1.0, e.g. \
             0.01; default 1.0)",
        ),
        (
            "[logging]\nsampling_rate = 1%\n",
            "veil0.conf:4: sampling_rate: '1%' is not a valid sampling rate: not a decimal \
             number (expected a share of debug/trace messages to keep, 0.0..=1.0, e.g. 0.01; \
             default 1.0)",
        ),
        (
            "[logging]\nasync_logging = maybe\n",
            "veil0.conf:4: async_logging: 'maybe' is not a valid switch: not true or false \
             (expected true or false; default false)",
        ),
        (
            "[logging]\nasync_queue_size = 8\n",
            "veil0.conf:4: async_queue_size: '8' is not a valid queue size: must be \
             16..=1048576 (expected lines 16..=1048576; default 4096)",
        ),
        (
            "[logging]\nlevel = info\nlevel = debug\n",
            "veil0.conf:5: level: set again, first set on line 4; keep one of them",
        ),
        (
            "[logging]\n[logging]\n",
            "veil0.conf:4: second [logging] section, the first is on line 3; merge them \
             (this one is skipped)",
        ),
        (
            "[logging]\nlevle = info\n",
            "veil0.conf:4: levle: unknown key in [logging]; did you mean level?",
        ),
        (
            "[logging]\nmode = single\n",
            "veil0.conf:4: mode: unknown key in [logging]; it belongs in a [threading] section",
        ),
        (
            "[logging]\ncolour = blue\n",
            "veil0.conf:4: colour: unknown key in [logging] (known keys: level, format, \
             rate_limit_logs_per_sec, sampling_rate, async_logging, async_queue_size)",
        ),
        (
            "[metrics]\nenable = 2\n",
            "veil0.conf:4: enable: '2' is not a valid switch: not true or false \
             (expected true or false; default false)",
        ),
        (
            "[metrics]\nlisten = localhost:9100\n",
            "veil0.conf:4: listen: 'localhost:9100' is not a valid listen address: not an IP \
             address and port (host names are not accepted here) (expected IP:PORT or \
             [IPv6]:PORT, port 1..=65535; default 127.0.0.1:9586)",
        ),
        (
            "[metrics]\nlisten = 127.0.0.1:0\n",
            "veil0.conf:4: listen: '127.0.0.1:0' is not a valid listen address: must be \
             1..=65535 (expected IP:PORT or [IPv6]:PORT, port 1..=65535; default \
             127.0.0.1:9586)",
        ),
        (
            "[metrics]\nListenPort = 9100\n",
            "veil0.conf:4: ListenPort: unknown key in [metrics]; it belongs in a [Interface] \
             section",
        ),
        (
            "[threading]\nmode = multi\n",
            "veil0.conf:4: mode: 'multi' is not a valid threading mode: not one of the \
             allowed values (expected pipeline or single; default pipeline)",
        ),
        (
            "[threading]\nrx_cpu = first\n",
            "veil0.conf:4: rx_cpu: 'first' is not a valid CPU: not a whole number \
             (expected a CPU number, e.g. 2 (see `nproc` and taskset -p $$))",
        ),
        (
            "[threading]\ntx_cpu = 9000\n",
            "veil0.conf:4: tx_cpu: '9000' is not a valid CPU: must be 0..=8191 \
             (expected a CPU number, e.g. 2 (see `nproc` and taskset -p $$))",
        ),
        (
            "[threading]\npin = false\ncrypto_cpu = 1\n",
            "veil0.conf:5: crypto_cpu: contradicts 'pin = false' on line 4; remove one of them",
        ),
        (
            "[threading]\ncontrol_cpu = 1\ncontrol_cpu = 2\n",
            "veil0.conf:5: control_cpu: set again, first set on line 4; keep one of them",
        ),
        (
            "[logs]\nlevel = info\n",
            "veil0.conf:3: unknown section [logs]; veil knows [Interface], [Peer], \
             [sessions], [migration], [rate_limiting], [degradation], [priority], \
             [logging], [metrics], [threading] (the keys below it are skipped)",
        ),
    ];
    assert!(cases.len() >= 20);
    for (rest, expected) in cases {
        let text = with_interface(rest);
        assert_eq!(messages(&text), vec![expected.to_string()], "for:\n{text}");
    }
    // Before any section: the message names the right one.
    assert_eq!(
        messages(&format!("level = debug\n{}", with_interface(""))),
        vec!["veil0.conf:1: level: key before any section; put it under [logging]"]
    );
}

proptest::proptest! {
    /// Any mix of operational sections, keys and values parses or fails cleanly.
    #[test]
    fn operational_sections_never_panic(lines in proptest::collection::vec(
        proptest::prop_oneof![
            proptest::sample::select(vec![
                "[logging]", "[metrics]", "[threading]", "[Interface]", "[Peer]",
            ]).prop_map(String::from),
            (
                proptest::sample::select(vec![
                    "level", "format", "rate_limit_logs_per_sec", "sampling_rate",
                    "async_logging", "async_queue_size", "enable", "listen", "mode",
                    "pin", "rx_cpu", "crypto_cpu", "tx_cpu", "control_cpu", "offload",
                ]),
                "[ -~]{0,12}",
            ).prop_map(|(k, v)| format!("{k} = {v}")),
        ],
        0..24,
    )) {
        let text = with_interface(&lines.join("\n"));
        let _ = Config::parse(&text, "veil0.conf");
    }
}

#[test]
fn threading_aead_picks_a_backend_or_auto() {
    use veil_dataplane::crypto::{Backend, BackendChoice};
    for (text, want) in [
        ("auto", BackendChoice::Auto),
        ("ring", BackendChoice::Fixed(Backend::Ring)),
        ("aws-lc", BackendChoice::Fixed(Backend::AwsLc)),
        ("rustcrypto", BackendChoice::Fixed(Backend::RustCrypto)),
    ] {
        let c = Config::parse(
            &with_interface(&format!("[threading]\naead = {text}\n")),
            "veil0.conf",
        )
        .expect("valid");
        assert_eq!(c.threading.aead, want, "{text}");
    }
    assert_eq!(
        messages(&with_interface("[threading]\naead = openssl\n")),
        [
            "veil0.conf:4: aead: 'openssl' is not a valid AEAD backend: not one of the allowed \
          values (expected auto, ring, aws-lc or rustcrypto; default auto)"
        ]
    );
}

#[test]
fn the_migration_switch_is_a_peer_key() {
    let peer = |extra: &str| {
        with_interface(&format!(
            "[Peer]\nPublicKey = 3N1uA/wM25wP+eSagx8obZcwHm3w/+Jxpgg+W70DBTw=\nAllowedIPs = 10.0.0.2/32\n{extra}"
        ))
    };
    let c = Config::parse(&peer(""), "veil0.conf").expect("valid");
    assert_eq!(c.peers[0].validate_migration, None);
    let c = Config::parse(&peer("validate_migration = true\n"), "veil0.conf").expect("valid");
    assert_eq!(c.peers[0].validate_migration, Some(true));
    let c = Config::parse(&peer("validate_migration = false\n"), "veil0.conf").expect("valid");
    assert_eq!(c.peers[0].validate_migration, Some(false));
    assert!(!messages(&peer("validate_migration = maybe\n")).is_empty());
}
