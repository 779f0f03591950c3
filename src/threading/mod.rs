//! The threading mode and CPU pinning in effect: `veil up` flags over the
//! file's `[threading]` section over the defaults.
//!
//! - `--no-pin` pins nothing, whatever the file says.
//! - `--threading`, `--rx-cpu`, … replace the file's `mode`, `rx_cpu`, ….
//! - `pin = false` in the file pins only the threads a flag names.
//! - Otherwise RX goes to the first CPU this process may use, crypto to the
//!   second, TX to the third (wrapping around); control is not pinned.
//!
//! A CPU that does not exist is refused before anything is created, naming the
//! flag or the file's line.
//!
//! Pipelines (`--pipelines`, `[threading] pipelines`; default 1):
//! - `auto` is the CPUs this process may use divided by 3 (RX, crypto and TX of a pipeline
//!   each want a core), at least 1; in single mode one pipeline (a number asks for more: each
//!   then runs on one thread, `veil-single`, `veil-single1`, …, and pipeline 0's also runs
//!   the control work).
//! - One pipeline is laid out as above. Several are laid out over a CPU list (`--cpus`,
//!   `[threading] cpus`, else every CPU this process may use, in order): pipeline `p`'s RX,
//!   crypto and TX threads take the list's CPUs `3p`, `3p + 1`, `3p + 2`, wrapping around
//!   (in single mode pipeline `p`'s one thread takes CPU `p`).
//!   The per-thread flags (`--rx-cpu`, …) pin one pipeline's threads only and are refused
//!   with several; `--control-cpu` still pins the one control thread.
//! - A layout that puts two threads of one pipeline on one CPU while some CPU this process
//!   may use gets none is refused (give more CPUs, or fewer pipelines).

use std::fmt;

pub mod values;

use crate::config::{CpuSetting, ThreadingConfig};
pub use values::{CpuList, PipelineCount, Threading};

/// Which CPU each thread is pinned to (`None`: not pinned).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pinning {
    /// RX thread (the one thread in single mode).
    pub rx: Option<usize>,
    /// Crypto thread.
    pub crypto: Option<usize>,
    /// TX thread.
    pub tx: Option<usize>,
    /// Control thread.
    pub control: Option<usize>,
}

/// The `veil up` flags that bear on threading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadFlags {
    /// `--threading`.
    pub threading: Option<Threading>,
    /// `--rx-cpu`, `--crypto-cpu`, `--tx-cpu`, `--control-cpu`.
    pub cpus: Pinning,
    /// `--no-pin`.
    pub no_pin: bool,
    /// `--pipelines`.
    pub pipelines: Option<PipelineCount>,
    /// `--cpus`.
    pub cpu_list: Option<CpuList>,
}

/// Every pipeline's pinning, in pipeline order (one entry: today's single pipeline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Pipeline or single-threaded.
    pub mode: Threading,
    /// One per pipeline; `control` is the same in each (there is one control thread).
    pub pipelines: Vec<Pinning>,
}

impl Layout {
    /// One line per pipeline, for `veil show` and the start-up log.
    pub fn describe(&self) -> Vec<String> {
        let cpu = |c: Option<usize>| c.map_or("-".to_string(), |c| c.to_string());
        self.pipelines
            .iter()
            .enumerate()
            .map(|(i, p)| match self.mode {
                Threading::Single => format!("pipeline {i}: veil-single cpu {}", cpu(p.rx)),
                Threading::Pipeline => format!(
                    "pipeline {i}: rx cpu {}, crypto cpu {}, tx cpu {}",
                    cpu(p.rx),
                    cpu(p.crypto),
                    cpu(p.tx)
                ),
            })
            .collect()
    }
}

/// Why the flags and the file give no threading to start with. Each message names the flag
/// or the file's line, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadingError {
    /// A CPU flag together with `--no-pin`.
    ContradictsNoPin {
        /// The flag, e.g. `--rx-cpu`.
        flag: &'static str,
        /// Its CPU.
        cpu: usize,
    },
    /// A CPU flag naming a CPU this process may not use.
    NoSuchCpu {
        /// The flag.
        flag: &'static str,
        /// Its CPU.
        cpu: usize,
        /// The CPUs this process may use.
        available: Vec<usize>,
    },
    /// A CPU from the file that does not exist here.
    FileCpuMissing {
        /// The config file, as named by the operator.
        file: String,
        /// Line of the key.
        line: usize,
        /// The key, e.g. `rx_cpu`.
        key: &'static str,
        /// Its CPU.
        cpu: usize,
        /// The flag that would override it.
        flag: &'static str,
        /// The CPUs this process may use.
        available: Vec<usize>,
    },
}

/// Why several pipelines cannot be laid out as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// The flags and file as for one pipeline.
    Threading(ThreadingError),
    /// A per-thread CPU flag or key with several pipelines (or with a CPU list).
    PerThreadCpu {
        /// The flag or key.
        name: &'static str,
    },
    /// A CPU list naming a CPU this process may not use.
    ListCpuMissing {
        /// The CPU.
        cpu: usize,
        /// The CPUs this process may use.
        available: Vec<usize>,
    },
    /// Two threads of one pipeline on one CPU while others are free.
    Crowded {
        /// The pipeline.
        pipeline: usize,
        /// The CPU.
        cpu: usize,
        /// CPUs no thread got.
        spare: Vec<usize>,
    },
}

/// CPUs as `0, 1, 5` for messages.
fn list(cpus: &[usize]) -> String {
    let l: Vec<String> = cpus.iter().map(ToString::to_string).collect();
    l.join(", ")
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Threading(e) => e.fmt(f),
            Self::PerThreadCpu { name } => write!(
                f,
                "veil up: {name} pins the threads of one pipeline; with several pipelines or a \
                 CPU list, give the CPUs with --cpus / [threading] cpus"
            ),
            Self::ListCpuMissing { cpu, available } => write!(
                f,
                "veil up: CPU list: CPU {cpu} is not one this process may use (CPUs {})",
                list(available)
            ),
            Self::Crowded {
                pipeline,
                cpu,
                spare,
            } => write!(
                f,
                "veil up: pipeline {pipeline} would run two threads on CPU {cpu} while CPUs {} \
                 are free; give at least 3 CPUs per pipeline, or fewer pipelines",
                list(spare)
            ),
        }
    }
}

impl std::error::Error for LayoutError {}

impl fmt::Display for ThreadingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ContradictsNoPin { flag, cpu } => {
                write!(f, "veil up: {flag} {cpu} contradicts --no-pin")
            }
            Self::NoSuchCpu {
                flag,
                cpu,
                available,
            } => write!(
                f,
                "veil up: {flag} {cpu}: no such CPU; this process may use CPUs {}",
                list(available)
            ),
            Self::FileCpuMissing {
                file,
                line,
                key,
                cpu,
                flag,
                available,
            } => write!(
                f,
                "{file}:{line}: {key}: CPU {cpu} does not exist here; this process may use \
                 CPUs {} (fix the file, or override it with {flag} or --no-pin)",
                list(available)
            ),
        }
    }
}

impl std::error::Error for ThreadingError {}

/// The mode and pinning in effect. `cpus` are the CPUs this process may use;
/// `file` names the config file in messages.
pub fn resolve(
    flags: &ThreadFlags,
    cfg: &ThreadingConfig,
    cpus: &[usize],
    file: &str,
) -> Result<(Threading, Pinning), ThreadingError> {
    let slots = [
        ("--rx-cpu", "rx_cpu", flags.cpus.rx, cfg.rx_cpu),
        (
            "--crypto-cpu",
            "crypto_cpu",
            flags.cpus.crypto,
            cfg.crypto_cpu,
        ),
        ("--tx-cpu", "tx_cpu", flags.cpus.tx, cfg.tx_cpu),
        (
            "--control-cpu",
            "control_cpu",
            flags.cpus.control,
            cfg.control_cpu,
        ),
    ];
    let mut chosen = [None; 4];
    for (slot, (flag, key, from_flag, from_file)) in chosen.iter_mut().zip(slots) {
        if let Some(cpu) = from_flag {
            if flags.no_pin {
                return Err(ThreadingError::ContradictsNoPin { flag, cpu });
            }
            if !cpus.contains(&cpu) {
                return Err(ThreadingError::NoSuchCpu {
                    flag,
                    cpu,
                    available: cpus.to_vec(),
                });
            }
            *slot = Some(cpu);
        } else if let Some(CpuSetting { cpu, line }) = from_file {
            if flags.no_pin {
                continue;
            }
            if !cpus.contains(&cpu) {
                return Err(ThreadingError::FileCpuMissing {
                    file: file.to_string(),
                    line,
                    key,
                    cpu,
                    flag,
                    available: cpus.to_vec(),
                });
            }
            *slot = Some(cpu);
        }
    }
    let mode = flags.threading.unwrap_or(cfg.mode);
    let [rx, crypto, tx, control] = chosen;
    if flags.no_pin || cpus.is_empty() {
        return Ok((mode, Pinning::default()));
    }
    if !cfg.pin {
        return Ok((
            mode,
            Pinning {
                rx,
                crypto,
                tx,
                control,
            },
        ));
    }
    let nth = |i: usize| cpus.get(i % cpus.len()).copied();
    Ok((
        mode,
        Pinning {
            rx: rx.or(nth(0)),
            crypto: crypto.or(nth(1)),
            tx: tx.or(nth(2)),
            control,
        },
    ))
}

/// The pipelines and their pinning in effect (see the module docs). One pipeline without a
/// CPU list is exactly [`resolve`].
pub fn layout(
    flags: &ThreadFlags,
    cfg: &ThreadingConfig,
    cpus: &[usize],
    file: &str,
) -> Result<Layout, LayoutError> {
    let (mode, one) = resolve(flags, cfg, cpus, file).map_err(LayoutError::Threading)?;
    let n = flags
        .pipelines
        .unwrap_or(cfg.pipelines)
        .resolve(mode, cpus.len());
    let list = flags
        .cpu_list
        .clone()
        .or_else(|| cfg.cpus.as_ref().map(|(l, _)| l.clone()));
    if n == 1 && list.is_none() {
        return Ok(Layout {
            mode,
            pipelines: vec![one],
        });
    }
    let per_thread = [
        ("--rx-cpu", flags.cpus.rx),
        ("--crypto-cpu", flags.cpus.crypto),
        ("--tx-cpu", flags.cpus.tx),
        ("rx_cpu", cfg.rx_cpu.map(|c| c.cpu)),
        ("crypto_cpu", cfg.crypto_cpu.map(|c| c.cpu)),
        ("tx_cpu", cfg.tx_cpu.map(|c| c.cpu)),
    ];
    if let Some((name, _)) = per_thread.iter().find(|(_, c)| c.is_some()) {
        return Err(LayoutError::PerThreadCpu { name });
    }
    let pinned = !flags.no_pin && (cfg.pin || flags.cpu_list.is_some()) && !cpus.is_empty();
    let list = match list {
        Some(l) if pinned => l.0,
        None if pinned => cpus.to_vec(),
        _ => {
            return Ok(Layout {
                mode,
                pipelines: vec![Pinning::default(); n],
            })
        }
    };
    if let Some(&cpu) = list.iter().find(|c| !cpus.contains(c)) {
        return Err(LayoutError::ListCpuMissing {
            cpu,
            available: cpus.to_vec(),
        });
    }
    let threads = if mode == Threading::Single { 1 } else { 3 };
    let nth = |i: usize| list.get(i % list.len()).copied();
    let pipelines: Vec<Pinning> = (0..n)
        .map(|p| Pinning {
            rx: nth(threads * p),
            crypto: (threads == 3).then(|| nth(3 * p + 1)).flatten(),
            tx: (threads == 3).then(|| nth(3 * p + 2)).flatten(),
            control: one.control,
        })
        .collect();
    let used: Vec<usize> = pipelines
        .iter()
        .flat_map(|p| [p.rx, p.crypto, p.tx])
        .flatten()
        .collect();
    let spare: Vec<usize> = cpus.iter().copied().filter(|c| !used.contains(c)).collect();
    for (i, p) in pipelines.iter().enumerate() {
        let mine: Vec<usize> = [p.rx, p.crypto, p.tx].into_iter().flatten().collect();
        let twice = mine
            .iter()
            .enumerate()
            .find(|(k, c)| mine[..*k].contains(c))
            .map(|(_, c)| *c);
        if let (Some(cpu), false) = (twice, spare.is_empty()) {
            return Err(LayoutError::Crowded {
                pipeline: i,
                cpu,
                spare,
            });
        }
    }
    Ok(Layout { mode, pipelines })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(f: impl FnOnce(&mut ThreadingConfig)) -> ThreadingConfig {
        let mut c = ThreadingConfig::default();
        f(&mut c);
        c
    }

    fn at(cpu: usize, line: usize) -> Option<CpuSetting> {
        Some(CpuSetting { cpu, line })
    }

    const CPUS: &[usize] = &[0, 1];

    /// Flags that name the CPUs `f` sets.
    fn pinned(f: impl FnOnce(&mut Pinning)) -> ThreadFlags {
        let mut cpus = Pinning::default();
        f(&mut cpus);
        ThreadFlags {
            cpus,
            ..Default::default()
        }
    }

    /// Why `flags` over the default file are refused.
    fn refusal(flags: &ThreadFlags) -> String {
        resolve(flags, &ThreadingConfig::default(), CPUS, "f")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_wrap_around_the_cpus() {
        let (mode, p) = resolve(
            &ThreadFlags::default(),
            &ThreadingConfig::default(),
            CPUS,
            "f",
        )
        .unwrap();
        assert_eq!(mode, Threading::Pipeline);
        assert_eq!(
            p,
            Pinning {
                rx: Some(0),
                crypto: Some(1),
                tx: Some(0),
                control: None
            }
        );
    }

    #[test]
    fn flags_override_the_file() {
        let cfg = file(|c| {
            c.mode = Threading::Single;
            c.rx_cpu = at(1, 7);
            c.control_cpu = at(1, 8);
        });
        let (mode, p) = resolve(&ThreadFlags::default(), &cfg, CPUS, "f").unwrap();
        assert_eq!(mode, Threading::Single);
        assert_eq!((p.rx, p.control), (Some(1), Some(1)));
        let flags = ThreadFlags {
            threading: Some(Threading::Pipeline),
            ..pinned(|p| p.rx = Some(0))
        };
        let (mode, p) = resolve(&flags, &cfg, CPUS, "f").unwrap();
        assert_eq!(mode, Threading::Pipeline);
        assert_eq!((p.rx, p.control), (Some(0), Some(1)));
        let no_pin = ThreadFlags {
            no_pin: true,
            ..Default::default()
        };
        assert_eq!(
            resolve(&no_pin, &cfg, CPUS, "f").unwrap().1,
            Pinning::default()
        );
    }

    #[test]
    fn pin_false_pins_only_what_a_flag_names() {
        let cfg = file(|c| c.pin = false);
        assert_eq!(
            resolve(&ThreadFlags::default(), &cfg, CPUS, "f").unwrap().1,
            Pinning::default()
        );
        let flags = pinned(|p| p.tx = Some(1));
        assert_eq!(
            resolve(&flags, &cfg, CPUS, "f").unwrap().1,
            Pinning {
                tx: Some(1),
                ..Default::default()
            }
        );
    }

    #[test]
    fn missing_cpus_are_refused_with_their_source() {
        let cfg = file(|c| c.crypto_cpu = at(9, 12));
        assert_eq!(
            resolve(&ThreadFlags::default(), &cfg, CPUS, "/etc/veil/veil0.conf")
                .unwrap_err()
                .to_string(),
            "/etc/veil/veil0.conf:12: crypto_cpu: CPU 9 does not exist here; this process may \
             use CPUs 0, 1 (fix the file, or override it with --crypto-cpu or --no-pin)"
        );
        let flags = pinned(|p| p.rx = Some(5));
        assert_eq!(
            refusal(&flags),
            "veil up: --rx-cpu 5: no such CPU; this process may use CPUs 0, 1"
        );
        let flags = ThreadFlags {
            no_pin: true,
            ..pinned(|p| p.rx = Some(0))
        };
        assert_eq!(refusal(&flags), "veil up: --rx-cpu 0 contradicts --no-pin");
        // A flag replaces a bad file value; --no-pin ignores it.
        let flags = pinned(|p| p.crypto = Some(1));
        assert!(resolve(&flags, &cfg, CPUS, "f").is_ok());
        let no_pin = ThreadFlags {
            no_pin: true,
            ..Default::default()
        };
        assert!(resolve(&no_pin, &cfg, CPUS, "f").is_ok());
    }

    fn lay(flags: &ThreadFlags, cpus: &[usize]) -> Result<Layout, LayoutError> {
        layout(flags, &ThreadingConfig::default(), cpus, "f")
    }

    fn pipes(n: usize, list: Option<&str>) -> ThreadFlags {
        ThreadFlags {
            pipelines: Some(PipelineCount::Fixed(n)),
            cpu_list: list.map(|l| l.parse().unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn one_pipeline_is_todays_layout() {
        let flags = pinned(|p| p.tx = Some(1));
        let one = resolve(&flags, &ThreadingConfig::default(), CPUS, "f").unwrap();
        assert_eq!(
            lay(&flags, CPUS).unwrap(),
            Layout {
                mode: one.0,
                pipelines: vec![one.1]
            }
        );
    }

    #[test]
    fn pipelines_take_three_cpus_each_in_list_order() {
        let cpus: Vec<usize> = (0..12).collect();
        let l = lay(&pipes(2, Some("4-9")), &cpus).unwrap();
        let got: Vec<[Option<usize>; 3]> =
            l.pipelines.iter().map(|p| [p.rx, p.crypto, p.tx]).collect();
        assert_eq!(
            got,
            [[Some(4), Some(5), Some(6)], [Some(7), Some(8), Some(9)]]
        );
        assert_eq!(
            l.describe()[1],
            "pipeline 1: rx cpu 7, crypto cpu 8, tx cpu 9"
        );
        // Every CPU of the process, by default; wrapping where there are fewer than 3N.
        let l = lay(&pipes(2, None), CPUS).unwrap();
        assert_eq!(l.pipelines[1].rx, Some(1));
        assert_eq!(PipelineCount::Auto.resolve(Threading::Pipeline, 12), 4);
        assert_eq!(PipelineCount::Auto.resolve(Threading::Pipeline, 2), 1);
        assert_eq!(PipelineCount::Auto.resolve(Threading::Single, 12), 1);
    }

    #[test]
    fn crowded_and_impossible_layouts_are_refused() {
        let cpus: Vec<usize> = (0..8).collect();
        assert_eq!(
            lay(&pipes(2, Some("0-1")), &cpus).unwrap_err().to_string(),
            "veil up: pipeline 0 would run two threads on CPU 0 while CPUs 2, 3, 4, 5, 6, 7 are \
             free; give at least 3 CPUs per pipeline, or fewer pipelines"
        );
        // Four CPUs for two pipelines share CPUs across pipelines, never within one.
        assert!(lay(&pipes(2, Some("0-3")), &cpus).is_ok());
        assert_eq!(
            lay(&pipes(1, Some("0-1")), &cpus).unwrap_err().to_string(),
            "veil up: pipeline 0 would run two threads on CPU 0 while CPUs 2, 3, 4, 5, 6, 7 are \
             free; give at least 3 CPUs per pipeline, or fewer pipelines"
        );
        assert!(matches!(
            lay(&pipes(2, Some("0,9")), &cpus),
            Err(LayoutError::ListCpuMissing { cpu: 9, .. })
        ));
        // Single mode: one thread per pipeline, one CPU each.
        let flags = ThreadFlags {
            threading: Some(Threading::Single),
            ..pipes(2, None)
        };
        let single = lay(&flags, &cpus).unwrap();
        assert_eq!(single.mode, Threading::Single);
        let rx: Vec<Option<usize>> = single.pipelines.iter().map(|p| p.rx).collect();
        assert_eq!(rx, vec![Some(0), Some(1)]);
        assert!(single
            .pipelines
            .iter()
            .all(|p| p.crypto.is_none() && p.tx.is_none()));
        let flags = ThreadFlags {
            cpus: Pinning {
                rx: Some(1),
                ..Default::default()
            },
            ..pipes(2, None)
        };
        assert!(matches!(
            lay(&flags, &cpus),
            Err(LayoutError::PerThreadCpu { name: "--rx-cpu" })
        ));
        assert!("0-3,2".parse::<CpuList>().is_err());
        assert!("3-1".parse::<CpuList>().is_err());
        assert_eq!("0-2,7".parse::<CpuList>().unwrap().0, [0, 1, 2, 7]);
        assert!("0".parse::<PipelineCount>().is_err() && "65".parse::<PipelineCount>().is_err());
    }
}
