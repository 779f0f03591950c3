//! What a loaded file gives the rest of veil: [`Config`] and the types of its fields, and
//! [`Parts`], the config while its sections are finished. Below every other file of the
//! folder: the sections write these types, the parser returns them.

use std::net::SocketAddr;

use log::LevelFilter;

use super::error::ConfigWarning;
use crate::keys::{Key32, KEY_LEN};
use crate::threading::values::Threading;
use veil_control::device::ProtectionConfig;
use veil_control::migration::MigrationPolicy;
use veil_control::session::SessionPolicy;
use veil_dataplane::crypto::BackendChoice;
use veil_dataplane::route::IpNet;

/// A loaded and validated interface configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `[Interface]` section.
    pub interface: InterfaceConfig,
    /// The `[Peer]` sections, in file order.
    pub peers: Vec<PeerConfig>,
    /// The `[sessions]` section (session lifecycle timeouts), defaults if absent.
    pub sessions: SessionPolicy,
    /// The `[migration]` section (client address changes), defaults if absent.
    pub migration: MigrationPolicy,
    /// `[rate_limiting]`, `[degradation]` and `[priority]`, with per-peer overrides.
    pub protection: ProtectionConfig,
    /// The `[logging]` section (defaults when absent).
    pub logging: LoggingConfig,
    /// The `[metrics]` section (defaults when absent).
    pub metrics: MetricsConfig,
    /// The `[threading]` section (defaults when absent); `veil up` flags override it.
    pub threading: ThreadingConfig,
    /// Things that were accepted but deserve the operator's attention; the caller prints them.
    pub warnings: Vec<ConfigWarning>,
}

/// The `[Interface]` section.
#[derive(Debug, Clone)]
pub struct InterfaceConfig {
    /// Our static private key.
    pub private_key: Key32,
    /// UDP port to listen on; `None` lets the kernel pick one.
    pub listen_port: Option<u16>,
    /// Addresses for the tunnel interface, with host bits as written (e.g. 10.0.0.1/24).
    pub addresses: Vec<IpNet>,
    /// Tunnel MTU.
    pub mtu: u16,
    /// wg-quick's `PreUp`, `PostUp`, `PreDown`, `PostDown` command lines.
    pub hooks: Hooks,
    /// wg-quick's `Table`: where the peers' AllowedIPs routes go.
    pub table: Table,
    /// `FwMark`: the mark on the tunnel's own UDP packets (0: none).
    pub fwmark: u32,
    /// wg-quick's `DNS`.
    pub dns: Dns,
    /// wg-quick's `SaveConfig`: write the running configuration back to the file on shutdown.
    pub save_config: bool,
}

/// wg-quick's `Table`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Table {
    /// Routes in the main table, and a `/0` through policy routing (wg-quick's default).
    #[default]
    Auto,
    /// No routes at all.
    Off,
    /// Every route, `/0` included, in this table.
    Id(u32),
}

/// wg-quick's `DNS`: addresses are name servers, anything else a search domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    /// Name servers.
    pub servers: Vec<std::net::IpAddr>,
    /// Search domains.
    pub search: Vec<String>,
}

impl Dns {
    /// No `DNS =` line.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.search.is_empty()
    }
}

/// Command lines run around the interface's life, as wg-quick runs them: each through
/// `bash -c` with `%i` replaced by the interface name, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Before the interface is created.
    pub pre_up: Vec<String>,
    /// Once the interface is up, addressed and routed.
    pub post_up: Vec<String>,
    /// When shutdown begins, before the interface is removed.
    pub pre_down: Vec<String>,
    /// After the interface is removed.
    pub post_down: Vec<String>,
}

/// One `[Peer]` section.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The peer's static public key; unique among peers.
    pub public_key: [u8; KEY_LEN],
    /// Optional extra symmetric key mixed into the handshake.
    pub preshared_key: Option<Key32>,
    /// Networks routed to this peer and accepted from it; host bits cleared.
    pub allowed_ips: Vec<IpNet>,
    /// Where to send the first handshake; resolved when the file was loaded.
    pub endpoint: Option<SocketAddr>,
    /// Keepalive interval in seconds; `None` when off.
    pub persistent_keepalive: Option<u16>,
    /// `per_client_bandwidth_mbps` override for this peer.
    pub bandwidth_mbps: Option<u32>,
    /// `per_client_pps` override for this peer.
    pub pps: Option<u32>,
    /// `validate_migration`: this peer's migration switch (`None`: `[migration]` decides).
    pub validate_migration: Option<bool>,
    /// Line of the `[Peer]` header, so later messages can point at the section.
    pub line: usize,
}

/// Default of `rate_limit_logs_per_sec`.
pub const DEFAULT_LOG_RATE: u32 = 100;
/// Default of `async_queue_size`.
pub const DEFAULT_ASYNC_QUEUE: usize = 4096;

/// `format` of `[logging]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per message.
    Text,
    /// One JSON object per line.
    Json,
}

/// The `[logging]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggingConfig {
    /// Most verbose level written (`RUST_LOG` overrides it).
    pub level: LevelFilter,
    /// Line format.
    pub format: LogFormat,
    /// Messages per second, burst of the same size; 0 means no limit.
    pub rate_limit_logs_per_sec: u32,
    /// Share of routine (debug and trace) messages kept, 0.0..=1.0.
    pub sampling_rate: f64,
    /// Write from a logger thread through a bounded queue.
    pub async_logging: bool,
    /// Capacity of that queue, in lines.
    pub async_queue_size: usize,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: LevelFilter::Info,
            format: LogFormat::Text,
            rate_limit_logs_per_sec: DEFAULT_LOG_RATE,
            sampling_rate: 1.0,
            async_logging: false,
            async_queue_size: DEFAULT_ASYNC_QUEUE,
        }
    }
}

/// The `[metrics]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Serve the metrics endpoint.
    pub enable: bool,
    /// Where it listens.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enable: false,
            listen: default_metrics_listen(),
        }
    }
}

/// Loopback, at the port Prometheus' WireGuard exporter uses.
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9586))
}

/// A CPU chosen in the file, with its line for messages at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSetting {
    /// CPU number.
    pub cpu: usize,
    /// Line of the key.
    pub line: usize,
}

/// The `[threading]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadingConfig {
    /// Pipeline (RX, crypto, TX threads) or single-threaded.
    pub mode: Threading,
    /// Pin threads to CPUs at all (`--no-pin` overrides).
    pub pin: bool,
    /// CPU of the RX thread (of the one thread in single mode).
    pub rx_cpu: Option<CpuSetting>,
    /// CPU of the crypto thread.
    pub crypto_cpu: Option<CpuSetting>,
    /// CPU of the TX thread.
    pub tx_cpu: Option<CpuSetting>,
    /// CPU of the control thread.
    pub control_cpu: Option<CpuSetting>,
    /// Transport AEAD library (`veil up --aead` overrides).
    pub aead: BackendChoice,
    /// Use TUN segmentation offloads and UDP GSO/GRO where the kernel has them
    /// (`offload = auto`, the default); `off` (or `--no-offload`) never does.
    pub offload: bool,
    /// How many pipelines (`pipelines = auto | N`; default 1).
    pub pipelines: crate::threading::values::PipelineCount,
    /// CPUs laid out over the pipelines (`cpus = 0-11`), with the key's line.
    pub cpus: Option<(crate::threading::values::CpuList, usize)>,
}

impl Default for ThreadingConfig {
    fn default() -> Self {
        Self {
            mode: Threading::Pipeline,
            pin: true,
            rx_cpu: None,
            crypto_cpu: None,
            tx_cpu: None,
            control_cpu: None,
            aead: BackendChoice::Auto,
            offload: true,
            pipelines: crate::threading::values::PipelineCount::Fixed(1),
            cpus: None,
        }
    }
}

/// The config being built: each section's `finish` writes its part, in table order.
#[derive(Default)]
pub(super) struct Parts {
    /// `None` until `[Interface]` is finished complete.
    pub(super) interface: Option<InterfaceConfig>,
    pub(super) peers: Vec<PeerConfig>,
    pub(super) sessions: SessionPolicy,
    pub(super) migration: MigrationPolicy,
    pub(super) protection: ProtectionConfig,
    pub(super) logging: LoggingConfig,
    pub(super) metrics: MetricsConfig,
    pub(super) threading: ThreadingConfig,
}
