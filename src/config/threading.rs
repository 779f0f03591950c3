//! `[threading]`: pipeline or single-threaded, and CPU pinning. Every key is optional;
//! command-line flags of `veil up` override them (see `runtime::prepare`).
//!
//! ```text
//! [threading]
//! mode = pipeline                 # pipeline | single
//! pin = true
//! rx_cpu = 0                      # crypto_cpu, tx_cpu, control_cpu alike
//! aead = auto                     # auto | ring | aws-lc | rustcrypto
//! pipelines = 1                   # auto | 1..=64 (auto: usable CPUs / 3, at least 1)
//! cpus = 0-11                     # CPUs laid out over the pipelines (see src/threading.rs)
//! ```

use super::error::{ConfigErrorKind, ValueProblem};
use super::output::{CpuSetting, Parts, ThreadingConfig};
use super::section::Sink;
use super::section::{only, set, KeySpec, Section, SectionState};
use super::value::{parse_bool, parse_choice, parse_number};
use crate::threading::values::Threading;
use veil_dataplane::crypto::{Backend, BackendChoice};

/// Largest CPU number accepted in the file (`CONFIG_NR_CPUS` maximum); whether it
/// exists on this machine is checked when veil starts.
pub const MAX_CPU: u32 = 8191;

fn parse_cpu(text: &str, line: usize) -> Result<Option<CpuSetting>, ValueProblem> {
    let cpu = parse_number(text, 0, MAX_CPU)?;
    Ok(Some(CpuSetting {
        cpu: cpu as usize,
        line,
    }))
}

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

const PIPELINES_EXPECTED: &str = "auto or a number from 1 to 64; default 1";
const CPUS_EXPECTED: &str = "a CPU list, e.g. 0-11 or 0,2,4-7 (CPUs up to 8191)";

const CPU_EXPECTED: &str = "a CPU number, e.g. 2 (see `nproc` and taskset -p $$)";

impl Section for ThreadingConfig {
    const NAME: &'static str = "threading";
    #[rustfmt::skip]
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::once("mode", "threading mode", "pipeline or single; default pipeline", |d, v, _| set(&mut d.mode, parse_choice(v, MODES))),
        KeySpec::once("pin", "switch", "true or false; default true", |d, v, _| set(&mut d.pin, parse_bool(v))),
        KeySpec::once("rx_cpu", "CPU", CPU_EXPECTED, |d, v, ctx| set(&mut d.rx_cpu, parse_cpu(v, ctx.line))),
        KeySpec::once("crypto_cpu", "CPU", CPU_EXPECTED, |d, v, ctx| set(&mut d.crypto_cpu, parse_cpu(v, ctx.line))),
        KeySpec::once("tx_cpu", "CPU", CPU_EXPECTED, |d, v, ctx| set(&mut d.tx_cpu, parse_cpu(v, ctx.line))),
        KeySpec::once("control_cpu", "CPU", CPU_EXPECTED, |d, v, ctx| set(&mut d.control_cpu, parse_cpu(v, ctx.line))),
        KeySpec::once("offload", "offload setting", "auto or off; default auto", |d, v, _| set(&mut d.offload, parse_choice(v, OFFLOAD))),
        KeySpec::once("pipelines", "pipeline count", PIPELINES_EXPECTED, |d, v, _| set(&mut d.pipelines, v.parse().map_err(|_| ValueProblem::NotAChoice))),
        KeySpec::once("cpus", "CPU list", CPUS_EXPECTED, |d, v, ctx| set(&mut d.cpus, v.parse().map(|l| Some((l, ctx.line))).map_err(|_| ValueProblem::NotANumber))),
        KeySpec::once("aead", "AEAD backend", "auto, ring, aws-lc or rustcrypto; default auto", |d, v, _| set(&mut d.aead, parse_choice(v, AEADS))),
    ];

    /// CPUs chosen while `pin = false` contradict it.
    fn finish(states: Vec<SectionState<Self>>, sink: &mut Sink<'_>, out: &mut Parts) {
        let Some(state) = only(states) else {
            return;
        };
        let t = state.draft.clone();
        if !t.pin {
            let pin_line = state.line_of("pin").unwrap_or(state.header_line);
            for (key, cpu) in [
                ("rx_cpu", t.rx_cpu),
                ("crypto_cpu", t.crypto_cpu),
                ("tx_cpu", t.tx_cpu),
                ("control_cpu", t.control_cpu),
                (
                    "cpus",
                    t.cpus.as_ref().map(|(_, line)| CpuSetting {
                        cpu: 0,
                        line: *line,
                    }),
                ),
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
