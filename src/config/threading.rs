//! `[threading]`: pipeline or single-threaded, and CPU pinning. Every key is optional;
//! command-line flags of `veil up` override them (see `runtime::prepare`).
//!
//! ```text
//! [threading]
//! mode = pipeline                 # pipeline | single
//! pin = true
//! rx_cpu = 0                      # crypto_cpu, tx_cpu, control_cpu alike
//! aead = auto                     # auto | ring | aws-lc | rustcrypto
//! ```

use super::error::{ConfigErrorKind, ValueProblem};
use super::parser::{Parts, Sink};
use super::section::{only, set, KeySpec, Section, SectionState};
use super::value::{parse_bool, parse_choice, parse_number};
use crate::cli::Threading;
use veil_dataplane::crypto::{Backend, BackendChoice};

/// Largest CPU number accepted in the file (`CONFIG_NR_CPUS` maximum); whether it
/// exists on this machine is checked when veil starts.
pub const MAX_CPU: u32 = 8191;

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
        }
    }
}

fn parse_cpu(text: &str, line: usize) -> Result<Option<CpuSetting>, ValueProblem> {
    let cpu = parse_number(text, 0, MAX_CPU)?;
    Ok(Some(CpuSetting {
        cpu: cpu as usize,
        line,
    }))
}

#[derive(Default)]
pub(super) struct ThreadingDraft(ThreadingConfig);

const MODES: &[(&str, Threading)] = &[
    ("pipeline", Threading::Pipeline),
    ("single", Threading::Single),
];

const OFFLOAD: &[(&str, bool)] = &[("auto", true), ("off", false)];

const AEADS: &[(&str, BackendChoice)] = &[
    ("auto", BackendChoice::Auto),
    ("ring", BackendChoice::Fixed(Backend::Ring)),
    ("aws-lc", BackendChoice::Fixed(Backend::AwsLc)),
    ("rustcrypto", BackendChoice::Fixed(Backend::RustCrypto)),
];

const CPU_EXPECTED: &str = "a CPU number, e.g. 2 (see `nproc` and taskset -p $$)";

impl Section for ThreadingDraft {
    const NAME: &'static str = "threading";
    #[rustfmt::skip]
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::once("mode", "threading mode", "pipeline or single; default pipeline", |d, v, _| set(&mut d.0.mode, parse_choice(v, MODES))),
        KeySpec::once("pin", "switch", "true or false; default true", |d, v, _| set(&mut d.0.pin, parse_bool(v))),
        KeySpec::once("rx_cpu", "CPU", CPU_EXPECTED, |d, v, ctx| set(&mut d.0.rx_cpu, parse_cpu(v, ctx.line))),
        KeySpec::once("crypto_cpu", "CPU", CPU_EXPECTED, |d, v, ctx| set(&mut d.0.crypto_cpu, parse_cpu(v, ctx.line))),
        KeySpec::once("tx_cpu", "CPU", CPU_EXPECTED, |d, v, ctx| set(&mut d.0.tx_cpu, parse_cpu(v, ctx.line))),
        KeySpec::once("control_cpu", "CPU", CPU_EXPECTED, |d, v, ctx| set(&mut d.0.control_cpu, parse_cpu(v, ctx.line))),
        KeySpec::once("offload", "offload setting", "auto or off; default auto", |d, v, _| set(&mut d.0.offload, parse_choice(v, OFFLOAD))),
        KeySpec::once("aead", "AEAD backend", "auto, ring, aws-lc or rustcrypto; default auto", |d, v, _| set(&mut d.0.aead, parse_choice(v, AEADS))),
    ];

    /// CPUs chosen while `pin = false` contradict it.
    fn finish(states: Vec<SectionState<Self>>, sink: &mut Sink<'_>, out: &mut Parts) {
        let Some(state) = only(states) else {
            return;
        };
        let t = state.draft.0.clone();
        if !t.pin {
            let pin_line = state.line_of("pin").unwrap_or(state.header_line);
            for (key, cpu) in [
                ("rx_cpu", t.rx_cpu),
                ("crypto_cpu", t.crypto_cpu),
                ("tx_cpu", t.tx_cpu),
                ("control_cpu", t.control_cpu),
            ] {
                if let Some(c) = cpu {
                    sink.error(
                        Some(c.line),
                        ConfigErrorKind::Contradiction {
                            key,
                            other: "pin = false",
                            other_line: pin_line,
                        },
                    );
                }
            }
        }
        out.threading = t;
    }
}
