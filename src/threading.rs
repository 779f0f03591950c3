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

use std::fmt;

use crate::cli::{Threading, UpArgs};
use crate::config::{CpuSetting, ThreadingConfig};

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadFlags {
    /// `--threading`.
    pub threading: Option<Threading>,
    /// `--rx-cpu`, `--crypto-cpu`, `--tx-cpu`, `--control-cpu`.
    pub cpus: Pinning,
    /// `--no-pin`.
    pub no_pin: bool,
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
        }
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

impl fmt::Display for ThreadingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |cpus: &[usize]| {
            let l: Vec<String> = cpus.iter().map(ToString::to_string).collect();
            l.join(", ")
        };
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
}
