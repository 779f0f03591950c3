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
    /// `--rx-cpu`.
    pub rx_cpu: Option<usize>,
    /// `--crypto-cpu`.
    pub crypto_cpu: Option<usize>,
    /// `--tx-cpu`.
    pub tx_cpu: Option<usize>,
    /// `--control-cpu`.
    pub control_cpu: Option<usize>,
    /// `--no-pin`.
    pub no_pin: bool,
}

impl From<&UpArgs> for ThreadFlags {
    fn from(a: &UpArgs) -> Self {
        Self {
            threading: a.threading,
            rx_cpu: a.rx_cpu,
            crypto_cpu: a.crypto_cpu,
            tx_cpu: a.tx_cpu,
            control_cpu: a.control_cpu,
            no_pin: a.no_pin,
        }
    }
}

/// The mode and pinning in effect. `cpus` are the CPUs this process may use;
/// `file` names the config file in messages.
pub fn resolve(
    flags: &ThreadFlags,
    cfg: &ThreadingConfig,
    cpus: &[usize],
    file: &str,
) -> Result<(Threading, Pinning), String> {
    let list = || {
        let l: Vec<String> = cpus.iter().map(ToString::to_string).collect();
        l.join(", ")
    };
    let slots = [
        ("--rx-cpu", "rx_cpu", flags.rx_cpu, cfg.rx_cpu),
        (
            "--crypto-cpu",
            "crypto_cpu",
            flags.crypto_cpu,
            cfg.crypto_cpu,
        ),
        ("--tx-cpu", "tx_cpu", flags.tx_cpu, cfg.tx_cpu),
        (
            "--control-cpu",
            "control_cpu",
            flags.control_cpu,
            cfg.control_cpu,
        ),
    ];
    let mut chosen = [None; 4];
    for (slot, (flag, key, from_flag, from_file)) in chosen.iter_mut().zip(slots) {
        if let Some(c) = from_flag {
            if flags.no_pin {
                return Err(format!("veil up: {flag} {c} contradicts --no-pin"));
            }
            if !cpus.contains(&c) {
                return Err(format!(
                    "veil up: {flag} {c}: no such CPU; this process may use CPUs {}",
                    list()
                ));
            }
            *slot = Some(c);
        } else if let Some(CpuSetting { cpu, line }) = from_file {
            if flags.no_pin {
                continue;
            }
            if !cpus.contains(&cpu) {
                return Err(format!(
                    "{file}:{line}: {key}: CPU {cpu} does not exist here; this process may use \
                     CPUs {} (fix the file, or override it with {flag} or --no-pin)",
                    list()
                ));
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
            rx_cpu: Some(0),
            ..Default::default()
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
        let flags = ThreadFlags {
            tx_cpu: Some(1),
            ..Default::default()
        };
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
            resolve(&ThreadFlags::default(), &cfg, CPUS, "/etc/veil/veil0.conf").unwrap_err(),
            "/etc/veil/veil0.conf:12: crypto_cpu: CPU 9 does not exist here; this process may \
             use CPUs 0, 1 (fix the file, or override it with --crypto-cpu or --no-pin)"
        );
        let flags = ThreadFlags {
            rx_cpu: Some(5),
            ..Default::default()
        };
        assert_eq!(
            resolve(&flags, &ThreadingConfig::default(), CPUS, "f").unwrap_err(),
            "veil up: --rx-cpu 5: no such CPU; this process may use CPUs 0, 1"
        );
        let flags = ThreadFlags {
            rx_cpu: Some(0),
            no_pin: true,
            ..Default::default()
        };
        assert_eq!(
            resolve(&flags, &ThreadingConfig::default(), CPUS, "f").unwrap_err(),
            "veil up: --rx-cpu 0 contradicts --no-pin"
        );
        // A flag replaces a bad file value; --no-pin ignores it.
        let flags = ThreadFlags {
            crypto_cpu: Some(1),
            ..Default::default()
        };
        assert!(resolve(&flags, &cfg, CPUS, "f").is_ok());
        let no_pin = ThreadFlags {
            no_pin: true,
            ..Default::default()
        };
        assert!(resolve(&no_pin, &cfg, CPUS, "f").is_ok());
    }
}
