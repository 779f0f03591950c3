//! Command-line interface (argh).

use std::net::SocketAddr;
use std::path::PathBuf;

use argh::FromArgs;
use veil_dataplane::crypto::BackendChoice;

pub use crate::threading::values::Threading;
use crate::threading::{Pinning, ThreadFlags};

/// veil: a userspace WireGuard-compatible VPN gateway for Linux.
///
/// Any WireGuard client can connect to it. Start a tunnel with `veil up
/// /etc/veil/veil0.conf` (a wg-quick style file); make keys with `veil genkey`,
/// `veil pubkey` and `veil genpsk`, in the same form as `wg`.
#[derive(FromArgs, Debug)]
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Up(UpArgs),
    Down(DownArgs),
    Check(CheckArgs),
    GenKey(GenKeyArgs),
    PubKey(PubKeyArgs),
    GenPsk(GenPskArgs),
    Show(ShowArgs),
    Health(HealthArgs),
}

/// Bring up a tunnel interface from a wg-quick style config file and carry
/// traffic until SIGINT or SIGTERM, then drain (veil clients are told), remove
/// the interface and exit 0.
/// Exit status 2 means the config or flags were rejected (nothing was created).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "up")]
pub struct UpArgs {
    /// path of the config file, or an interface name NAME (as for
    /// wg-quick): /etc/veil/NAME.conf, else /etc/wireguard/NAME.conf; the
    /// interface is named after the file's stem (veil0.conf -> veil0)
    #[argh(positional)]
    pub config: PathBuf,

    /// interface name to use instead of the config file's stem
    #[argh(option)]
    pub interface: Option<String>,

    /// threading mode: pipeline (RX, crypto and TX threads) or single (one
    /// dataplane thread); overrides [threading] mode (default pipeline)
    #[argh(option)]
    pub threading: Option<Threading>,

    /// CPU for the RX thread (default: [threading] rx_cpu, else the first CPU
    /// this process may use)
    #[argh(option)]
    pub rx_cpu: Option<usize>,

    /// CPU for the crypto thread (default: the second CPU, or the first)
    #[argh(option)]
    pub crypto_cpu: Option<usize>,

    /// CPU for the TX thread (default: the third CPU, wrapping around)
    #[argh(option)]
    pub tx_cpu: Option<usize>,

    /// CPU for the control thread (default: not pinned)
    #[argh(option)]
    pub control_cpu: Option<usize>,

    /// how many pipelines (each: a TUN queue, a UDP socket on the shared port,
    /// RX, crypto and TX threads): auto (usable CPUs / 3) or 1 to 64;
    /// overrides [threading] pipelines (default 1)
    #[argh(option)]
    pub pipelines: Option<crate::threading::PipelineCount>,

    /// CPUs to lay the pipelines' threads out over, e.g. 0-11 (pipeline 0's
    /// RX, crypto, TX on the first three, pipeline 1's on the next three,
    /// ...); overrides [threading] cpus
    #[argh(option)]
    pub cpus: Option<crate::threading::CpuList>,

    /// transport AEAD library: auto (the fastest here, timed at start-up),
    /// ring, aws-lc or rustcrypto; overrides [threading] aead (default auto)
    #[argh(option)]
    pub aead: Option<BackendChoice>,

    /// do not pin any thread to a CPU (overrides [threading])
    #[argh(switch)]
    pub no_pin: bool,

    /// use no TUN segmentation offloads and no UDP GSO/GRO (overrides
    /// [threading] offload)
    #[argh(switch)]
    pub no_offload: bool,

    /// take over from the veil running this interface, keeping every session
    /// (a live hand-off on this host: an upgrade or a restart)
    #[argh(switch)]
    pub take_over: bool,

    /// serve Prometheus metrics (GET /metrics) and health (GET /healthz) over
    /// HTTP on this address, e.g. 127.0.0.1:9586
    #[argh(option)]
    pub metrics_listen: Option<SocketAddr>,

    /// how many peers (the busiest by bytes) get per-peer metric series
    /// (default 20; 0 for none)
    #[argh(option)]
    pub metrics_peers: Option<usize>,

    /// once the interface is set up, run as this user, keeping only
    /// CAP_NET_ADMIN (default: veil, else nobody; root keeps root)
    #[argh(option)]
    pub user: Option<String>,
}

/// Stop a running interface as SIGTERM would (drain, PreDown/PostDown, the
/// interface removed), through its control socket, and wait until it is gone.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "down")]
pub struct DownArgs {
    /// interface name, as given to `veil up`
    #[argh(positional)]
    pub interface: String,
}

/// Validate a config file without starting anything: every problem with
/// file:line and exit status 2, or a one-line summary and exit status 0.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check")]
pub struct CheckArgs {
    /// path of the config file or an interface name, as for `veil up`
    #[argh(positional)]
    pub config: PathBuf,
}

/// Print a new private key (base64, as `wg genkey` does).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "genkey")]
pub struct GenKeyArgs {}

/// Read a private key on standard input and print its public key (as `wg
/// pubkey` does), e.g. `veil genkey | tee private.key | veil pubkey`.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "pubkey")]
pub struct PubKeyArgs {}

/// Print a new pre-shared key (base64, as `wg genpsk` does).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "genpsk")]
pub struct GenPskArgs {}

/// Show a running interface: its peers (endpoint, allowed IPs, latest
/// handshake, transfer), counters and latencies. `wg show IFACE` works too.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
pub struct ShowArgs {
    /// interface name, as given to `veil up`
    #[argh(positional)]
    pub interface: String,

    /// print JSON instead of a table
    #[argh(switch)]
    pub json: bool,
}

/// Check a running interface component by component (UDP socket, TUN device,
/// crypto self-test, control and dataplane threads, degradation level). Exit
/// status 0 when all are ok, 1 when one is degraded, 2 when one failed, 3 when
/// the interface cannot be reached.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "health")]
pub struct HealthArgs {
    /// interface name, as given to `veil up`
    #[argh(positional)]
    pub interface: String,

    /// print JSON instead of a table
    #[argh(switch)]
    pub json: bool,
}

impl From<&UpArgs> for ThreadFlags {
    fn from(a: &UpArgs) -> Self {
        Self {
            threading: a.threading,
            cpus: Pinning {
                rx: a.rx_cpu,
                crypto: a.crypto_cpu,
                tx: a.tx_cpu,
                control: a.control_cpu,
            },
            no_pin: a.no_pin,
            pipelines: a.pipelines,
            cpu_list: a.cpus.clone(),
        }
    }
}
