//! The live hand-off in `veil up` (issue 15): what the running veil does when a take-over
//! connects ([`OldSide::serve`]), and what `veil up --take-over` does with what it received
//! ([`adopt_io`], [`restore`], [`beating`]). The protocol itself is [`super::handoff`].

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use veil_control::device::{AdminHandle, Device};
use veil_dataplane::io::{self, UdpSlot};
use veil_dataplane::offload::TunOffloads;
use veil_dataplane::pipeline::Shared;
use veil_dataplane::role::Role;
use veil_dataplane::sys::{Tun, UdpSocket};

use super::error::StartError;
use super::handoff::{
    self, Deadlines, Descriptors, Extra, HandoffError, Phase, Received, TokenFile,
};
use crate::failure::supervisor;

/// How long the control thread may take to capture the state.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the new process's threads have to show they run.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);
/// Test-only (debug builds): `after-restore` makes `--take-over` fail once it restored the
/// state, before it confirms (the rollback test).
#[cfg(debug_assertions)]
const ENV_TEST_FAIL: &str = "VEIL_TEST_HANDOFF_FAIL";

/// The running veil's hand-off socket and token.
#[derive(Debug)]
pub(super) struct Listening {
    pub listener: UnixListener,
    pub token: TokenFile,
    pub path: PathBuf,
}

impl Listening {
    /// The interface's hand-off socket and token: made here, or (`received`) the ones the
    /// veil we take over from passed. Without them veil runs, but cannot be taken over.
    pub fn open(name: &str, received: Option<&mut Received>) -> Option<Listening> {
        let (path, token_path) = handoff::paths(name);
        let made = match received {
            Some(r) => match (r.fds.take(Extra::Handoff), r.fds.take(Extra::Token)) {
                (Some(l), Some(t)) => {
                    let listener = UnixListener::from(l);
                    listener
                        .set_nonblocking(true)
                        .and_then(|()| TokenFile::adopt(&token_path, t))
                        .map(|token| (listener, token))
                }
                _ => Err(std::io::Error::other("the running veil passed none")),
            },
            None => crate::admin::services::bind_unix(&path)
                .and_then(|l| TokenFile::create(&token_path).map(|t| (l, t))),
        };
        match made {
            Ok((listener, token)) => Some(Listening {
                listener,
                token,
                path,
            }),
            Err(e) => {
                warn!(
                    "{name}: no hand-off socket ({}): {e}; `veil up --take-over` cannot replace this process",
                    path.display()
                );
                None
            }
        }
    }

    /// veil ends: the token and the socket file go (after veil gave up root, the privileged
    /// helper removes the socket file; the token file then stays, holding a token nothing
    /// listens for).
    pub fn close(self) {
        let _ = std::fs::remove_file(&self.path);
        self.token.remove();
    }
}

/// What the running veil passes and uses in a hand-off.
pub(super) struct OldSide<'a> {
    pub name: &'a str,
    pub admin: &'a AdminHandle,
    pub pipelines: &'a [Arc<Shared>],
    pub udps: &'a [Arc<UdpSlot>],
    pub tuns: &'a [Arc<Tun>],
    /// UAPI, control and metrics listeners (duplicates).
    pub listeners: &'a [Option<OwnedFd>; 3],
    pub offloads: TunOffloads,
    pub stats: &'a crate::admin::context::HandoffStats,
}

impl OldSide<'_> {
    /// Serve one take-over on `stream`. True: the new process serves now and this one must
    /// end (without undoing the interface's setup). False: it failed, and this process
    /// resumed with its state untouched.
    pub fn serve(&self, listening: &mut Listening, mut stream: UnixStream) -> bool {
        let name = self.name;
        let started = Instant::now();
        let sockets: Vec<Arc<UdpSocket>> = self.udps.iter().map(|u| u.current()).collect();
        let [uapi, ctl, metrics] = self.listeners;
        let token_fd = listening.token.fd().ok();
        let fds = Descriptors {
            tuns: self.tuns.iter().map(|t| t.as_raw_fd()).collect(),
            udps: sockets.iter().map(|s| s.as_raw_fd()).collect(),
            extra: [
                uapi.as_ref().map(AsRawFd::as_raw_fd),
                ctl.as_ref().map(AsRawFd::as_raw_fd),
                metrics.as_ref().map(AsRawFd::as_raw_fd),
                Some(listening.listener.as_raw_fd()),
                token_fd.as_ref().map(AsRawFd::as_raw_fd),
            ],
        };
        let mut serve = handoff::Serve {
            token: &mut listening.token,
            fds,
            offloads: self.offloads,
            deadlines: Deadlines::default(),
        };
        let mut reached = handoff::Reached::Nothing;
        let paused = std::cell::Cell::new(false);
        let capture = || {
            paused.set(true);
            for s in self.pipelines {
                s.set_paused(true);
            }
            // In-flight packets leave the pipelines.
            std::thread::sleep(handoff::SETTLE);
            let state = self
                .admin
                .capture(CAPTURE_TIMEOUT)
                .map_err(|e| format!("the control thread did not capture the state: {e}"))?;
            info!("{name}: hand-off: captured {} peer(s)", state.peers.len());
            Ok(veil_control::handoff::encode(&state))
        };
        let phase = |p: Phase| info!("{name}: hand-off: {}", p.as_str());
        match serve.run(&mut stream, capture, phase, &mut reached) {
            Ok(()) => {
                info!(
                    "{name}: hand-off: {} after {:?}; this process ends",
                    Phase::Completed.as_str(),
                    started.elapsed()
                );
                true
            }
            Err(e) => {
                warn!("{name}: hand-off: {}: {e}", Phase::Failed.as_str());
                if paused.get() {
                    if let Err(e) = self.admin.resume_after_handoff(CAPTURE_TIMEOUT) {
                        warn!("{name}: hand-off: the control thread did not resume: {e}");
                    }
                    for s in self.pipelines {
                        s.set_paused(false);
                    }
                    self.stats.record(false, started.elapsed());
                    info!(
                        "{name}: hand-off rolled back: serving on (paused {:?}); {}",
                        started.elapsed(),
                        Phase::Idle.as_str()
                    );
                }
                false
            }
        }
    }
}

/// The TUN queues and sockets the running veil passed, for `n` pipelines.
pub(super) fn adopt_io(
    r: &mut Received,
    name: &str,
    offload: bool,
    n: usize,
) -> Result<(Vec<Tun>, Vec<UdpSocket>), StartError> {
    let have = r.fds.tuns.len();
    if have != n {
        return Err(StartError::Restore(format!(
            "the running veil has {have} pipeline(s) and this one would have {n}: take over with --pipelines {have}"
        )));
    }
    let bad = |what: &str, e: std::io::Error| StartError::Restore(format!("{what}: {e}"));
    let tuns = std::mem::take(&mut r.fds.tuns)
        .into_iter()
        .map(|fd| Tun::adopt(fd, name, r.offloads))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| bad("the TUN queue passed over", e))?;
    let udps = std::mem::take(&mut r.fds.udps)
        .into_iter()
        .map(|fd| io::adopt_socket(fd, offload))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| bad("the UDP socket passed over", e))?;
    Ok((tuns, udps))
}

/// Put the received state into `device` (built from this config).
pub(super) fn restore<R: rand_core::CryptoRngCore>(
    name: &str,
    device: &mut Device<R>,
    r: &Received,
    now: Instant,
) -> Result<(), StartError> {
    let state = veil_control::handoff::decode(&r.state)
        .map_err(|e| StartError::Handoff(HandoffError::State(e)))?;
    let done = device
        .restore(&state, now)
        .map_err(|e| StartError::Restore(e.to_string()))?;
    info!(
        "{name}: restored {} peer(s) with {} keypair(s) from pid {}; {} peer(s) not in this config",
        done.peers, done.keypairs, r.old_pid, done.gone
    );
    #[cfg(debug_assertions)]
    if std::env::var(ENV_TEST_FAIL).as_deref() == Ok("after-restore") {
        return Err(StartError::Restore(format!(
            "{ENV_TEST_FAIL}=after-restore: failing on purpose"
        )));
    }
    Ok(())
}

/// Have every thread of every pipeline beaten since `since` (within [`HEALTH_TIMEOUT`])?
pub(super) fn beating(pipelines: &[Arc<Shared>], roles: &[Role], since: Instant) -> bool {
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    loop {
        let all = pipelines.iter().all(|s| {
            roles.iter().all(|r| {
                s.heartbeats.get(r.slot()).is_some_and(|b| {
                    s.epoch
                        .instant(b.load(Ordering::Relaxed))
                        .is_some_and(|t| t >= since)
                })
            })
        });
        if all {
            return true;
        }
        if supervisor().failure().is_some() || Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
