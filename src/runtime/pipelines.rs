//! N pipelines (issue 14): the TUN queues and UDP sockets they own, and their threads.
//!
//! One pipeline is today's veil exactly: one TUN device opened as before, one UDP socket, the
//! threads `veil-rx`, `veil-crypto`, `veil-tx` (or `veil-single`). Several pipelines share one
//! multi-queue TUN device (a queue each) and one UDP port (a socket each, `SO_REUSEPORT`); the
//! threads of pipeline `k > 0` are named with `k` after the role (`veil-rx1`). One control
//! thread serves them all (`ControlThread::serve`). How per-peer state is shared across them
//! is in docs/ARCHITECTURE.md, "Several pipelines".

use std::sync::Arc;
use std::thread::JoinHandle;

use veil_dataplane::baton::Baton;
use veil_dataplane::io::{self, UdpSlot};
use veil_dataplane::pipeline::{CryptoThread, RxThread, Shared, Stages, TxThread};
use veil_dataplane::role::Role;
use veil_dataplane::sys::{EventFd, Tun, UdpSocket};

use super::error::StartError;
use super::IoWaiter;
use crate::admin::services::SpawnError;
use crate::threading::Pinning;

/// The I/O of every pipeline, in pipeline order.
pub(super) struct PipelineIo {
    pub tuns: Vec<Tun>,
    pub sockets: Vec<UdpSocket>,
}

/// Bind the sockets and create the TUN device (its queues) for `n` pipelines.
pub(super) fn open_io(
    name: &str,
    port: u16,
    offload: bool,
    n: usize,
) -> Result<PipelineIo, StartError> {
    let sockets = io::bind_pipelines(port, offload, n).map_err(|e| StartError::Bind(port, e))?;
    let tuns = match (n, offload) {
        (1, true) => Tun::create_offloaded(name).map(|t| vec![t]),
        (1, false) => Tun::create(name).map(|t| vec![t]),
        (_, true) => Tun::create_multiqueue_offloaded(name, n),
        (_, false) => Tun::create_multiqueue(name, n),
    }
    .map_err(|e| StartError::CreateTun(name.to_string(), e))?;
    Ok(PipelineIo { tuns, sockets })
}

use crate::admin::context::pipeline_thread as thread_name;

/// Pipeline `k`'s ends (RX, crypto, TX) and I/O (socket, TUN queue, RX's eventfd, shared
/// state), ready to run on its threads.
pub(super) struct Pipeline {
    pub k: usize,
    pub ends: (RxThread, CryptoThread, TxThread),
    pub io: (Arc<UdpSlot>, Arc<Tun>, Arc<EventFd>, Arc<Shared>),
}

/// Spawn a pipeline's RX, crypto and TX threads (pipeline mode).
pub(super) fn spawn_threads(
    p: Pipeline,
    pinning: &Pinning,
    threads: &mut Vec<JoinHandle<()>>,
) -> Result<(), SpawnError> {
    let Pipeline {
        k,
        ends: (rx, crypto, tx),
        io: (udp, tun, bell, shared),
    } = p;
    let waiter = IoWaiter {
        udp: udp.handle(),
        tun: tun.clone(),
        bell,
    };
    // Crypto and TX each run on their own thread, and RX runs them itself for small
    // batches while those threads are parked (pipeline::Stages).
    let stages = Arc::new(Stages {
        crypto: Baton::new(crypto),
        tx: Baton::new(tx),
    });
    let (u, t, s, st) = (udp.clone(), tun.clone(), shared.clone(), stages.clone());
    threads.push(super::spawn(
        thread_name(Role::Rx, k),
        pinning.rx,
        move || rx.run_with(&st, &u.handle(), &*t, &waiter, &s),
    )?);
    let (s, st) = (shared.clone(), stages.clone());
    threads.push(super::spawn(
        thread_name(Role::Crypto, k),
        pinning.crypto,
        move || CryptoThread::run_shared(&st.crypto, &s),
    )?);
    threads.push(super::spawn(
        thread_name(Role::Tx, k),
        pinning.tx,
        move || TxThread::run_shared(&stages.tx, &udp.handle(), &*tun, &shared),
    )?);
    Ok(())
}
