//! Thread shells around the stages, and the single-threaded loop.
//!
//! The shells only move batches between rings and park when idle; all packet
//! work is in the stage functions, which single-threaded mode calls in one
//! loop. The runtime (the `veil` binary) spawns, names and pins the threads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtrb::{Consumer, Producer, RingBuffer};

use crate::batch::{buffer_size, Batch, Home, Source, BATCH_MAX, PEER_MTU_MAX};
use crate::baton::Baton;
use crate::bql::{ByteQueue, LimitTuner};
use crate::counters::{bump, CryptoCounters, RxCounters, TxCounters};
use crate::doorbell::{Backoff, Doorbell, DEFAULT_SPIN};
use crate::fault::{Fault, FaultCell, IoOp, IoTrouble, Verdict};
use crate::io::{DatagramIo, PacketIo};
use crate::link::{Command, Epoch, Event, HandshakeDatagram};
use crate::role::{Role, HEARTBEAT_SLOTS};
use crate::sampler::Recorder;
use crate::source_filter::SourceFilter;
use crate::stage::{CryptoStage, EventSink, RxStage, TxStage};
#[cfg(debug_assertions)]
use crate::test_hooks::TestHooks;
use crate::timing::Timing;
use express::{LaneRx, LaneTx};

/// The control thread as the dataplane sees it: a sans-IO state machine fed
/// handshake messages, events and the clock, that yields commands, handshake
/// messages to send, and its next deadline.
pub trait ControlDriver {
    /// A handshake message arrived.
    fn on_handshake(&mut self, msg: HandshakeDatagram, now: Instant);
    /// The crypto stage reported something.
    fn on_event(&mut self, ev: Event, now: Instant);
    /// Timers: called at least by `next_deadline`.
    fn on_timeout(&mut self, now: Instant);
    /// Next command for the crypto stage.
    fn poll_command(&mut self) -> Option<Command>;
    /// Next handshake message to send.
    fn poll_transmit(&mut self) -> Option<HandshakeDatagram>;
    /// When `on_timeout` must run next.
    fn next_deadline(&self) -> Option<Instant>;
    /// Called every round of the control loop (also when woken by the control
    /// doorbell): serve requests from outside the dataplane (UAPI, metrics).
    fn poll_admin(&mut self, _now: Instant) {}
    /// Shutdown was asked for: stop accepting sessions and drain the live ones.
    fn begin_drain(&mut self, _now: Instant) {}
    /// Is the drain finished (or was none needed)?
    fn drained(&self) -> bool {
        true
    }
    /// While draining, every round: is nothing left in the dataplane (sockets read to
    /// EAGAIN, no bytes between RX and TX, every ring to and from the control thread empty)?
    fn set_dataplane_quiet(&mut self, _quiet: bool, _now: Instant) {}
    /// The RX ring to the control thread is backing up (flood defence hint).
    fn set_handshake_backlog(&mut self, _queued: usize, _now: Instant) {}
}

/// Which of RX's two sources may have data to read. RX reads only a source marked ready,
/// clears the mark on the first EAGAIN, and parks in poll(2) once neither is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The UDP socket.
    pub udp: bool,
    /// The TUN device.
    pub tun: bool,
}

impl Readiness {
    /// Both sources: look at each once (start, a doorbell, a timeout).
    pub const BOTH: Self = Self {
        udp: true,
        tun: true,
    };

    /// Is either source ready?
    pub fn any(self) -> bool {
        self.udp || self.tun
    }
}

/// Ways an I/O thread can sleep until its fds or its doorbell need it.
pub trait Waiter {
    /// Block until the UDP socket or TUN device is readable, the doorbell
    /// rang, or `timeout` passed. Returns the sources poll reported readable, or
    /// [`Readiness::BOTH`] after a doorbell or a timeout (something else changed: look again).
    fn wait_io(&self, timeout: Duration) -> Readiness;
    /// Block until the doorbell rang or `timeout` passed.
    fn wait_bell(&self, timeout: Duration);
}

/// Sizes of the pools and rings.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    /// Interface MTU (sizes the buffers).
    pub mtu: usize,
    /// Batches owned by RX.
    pub rx_batches: usize,
    /// Batches owned by the crypto stage for packets it originates.
    pub crypto_batches: usize,
    /// Capacity of the RX → control handshake ring.
    pub handshake_ring: usize,
    /// Capacity of the control → crypto command and crypto → control event rings.
    pub control_ring: usize,
    /// The protocol's timers.
    pub timing: Timing,
    /// How long an idle thread spins on its rings before parking ([`spin_budget`](crate::doorbell::spin_budget): zero
    /// unless there are more cores than busy dataplane threads).
    pub spin: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            mtu: 1420,
            rx_batches: 16,
            crypto_batches: 4,
            handshake_ring: 1024,
            control_ring: 4096,
            timing: Timing::default(),
            spin: DEFAULT_SPIN,
        }
    }
}

/// Shared between every thread: stop flag, doorbells, counters, heartbeats.
#[derive(Debug)]
pub struct Shared {
    /// Set to stop every loop.
    pub stop: AtomicBool,
    /// Set by the main thread on the first shutdown signal: the control thread drains.
    pub drain_requested: AtomicBool,
    /// Set while a live hand-off captures the state: RX reads neither the socket nor the TUN
    /// queue (what arrives waits in the kernel, for this process or the next), the other
    /// stages finish what is in flight.
    pub paused: AtomicBool,
    /// Set by the control thread when the drain is finished.
    pub drain_done: AtomicBool,
    /// Set by RX after a round in which both its sources hit EAGAIN, cleared by a round
    /// that left a source to read: the kernel's queues were empty (for the drain).
    pub rx_idle: AtomicBool,
    /// Wakes the RX thread (writes its eventfd).
    pub rx_bell: Doorbell,
    /// Wakes the crypto thread.
    pub crypto_bell: Doorbell,
    /// Wakes the TX thread.
    pub tx_bell: Doorbell,
    /// Wakes the control thread (one for every pipeline: see [`Shared::member`]).
    pub control_bell: Arc<Doorbell>,
    /// RX counters.
    pub rx: Arc<RxCounters>,
    /// Sources whose handshake messages RX drops (the control thread writes it; one for
    /// every pipeline).
    pub source_filter: Arc<SourceFilter>,
    /// Crypto counters.
    pub crypto: Arc<CryptoCounters>,
    /// TX counters.
    pub tx: Arc<TxCounters>,
    /// Bytes in flight from RX to TX of datagrams (to be opened and written to TUN).
    pub inbound: ByteQueue,
    /// Bytes in flight from RX to TX of TUN packets (to be sealed and sent).
    pub outbound: ByteQueue,
    /// Last loop iteration of each thread (epoch nanos), by [`Role::slot`].
    pub heartbeats: [AtomicU64; HEARTBEAT_SLOTS],
    /// The process's time base.
    pub epoch: Epoch,
    /// The fatal error that stopped the dataplane, if one did.
    pub fault: FaultCell,
    /// Test-only stall / panic injection (see [`TestHooks`]).
    #[cfg(debug_assertions)]
    pub test_hooks: TestHooks,
}

impl Shared {
    /// Fresh shared state; `rx_wake` wakes the RX thread out of poll(2).
    pub fn new(epoch: Epoch, rx_wake: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            stop: AtomicBool::new(false),
            drain_requested: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            drain_done: AtomicBool::new(false),
            rx_idle: AtomicBool::new(false),
            rx_bell: Doorbell::custom(rx_wake),
            crypto_bell: Doorbell::for_thread(),
            tx_bell: Doorbell::for_thread(),
            control_bell: Arc::new(Doorbell::for_thread()),
            rx: Arc::default(),
            source_filter: Arc::default(),
            crypto: Arc::default(),
            tx: Arc::default(),
            inbound: ByteQueue::default(),
            outbound: ByteQueue::default(),
            heartbeats: Default::default(),
            epoch,
            fault: FaultCell::default(),
            #[cfg(debug_assertions)]
            test_hooks: TestHooks::default(),
        }
    }

    /// The shared state of a further pipeline, served by `self`'s control thread: its own
    /// doorbells, counters, heartbeats and flags, the same control doorbell and epoch.
    pub fn member(&self, rx_wake: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            control_bell: self.control_bell.clone(),
            source_filter: self.source_filter.clone(),
            ..Self::new(self.epoch, rx_wake)
        }
    }

    /// [`Shared::member`] for single-threaded mode: the pipeline's one thread waits in poll on
    /// its eventfd, so the control work's commands (which ring the crypto doorbell) must write
    /// that eventfd too: `crypto_wake` does.
    pub fn single_member(
        &self,
        rx_wake: impl Fn() + Send + Sync + 'static,
        crypto_wake: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        Self {
            crypto_bell: Doorbell::custom(crypto_wake),
            ..self.member(rx_wake)
        }
    }

    /// A thread hit a fatal error: record it (the first one wins) and stop
    /// every loop. The runtime sees the thread end and exits non-zero.
    pub fn fail(&self, fault: Fault) {
        self.fault.set(fault);
        self.shutdown();
    }

    /// Is RX to leave its sources alone ([`Shared::paused`])?
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Pause (true) or resume RX's reading, and wake it either way.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        self.rx_bell.wake_now();
    }

    /// Stop every loop and wake every thread.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for bell in [
            &self.rx_bell,
            &self.crypto_bell,
            &self.tx_bell,
            &self.control_bell,
        ] {
            bell.wake_now();
        }
    }

    /// `role`'s thread runs its loop: store the time in each of its slots.
    fn beat(&self, role: Role, now: Instant) {
        #[cfg(debug_assertions)]
        self.test_hooks.at_beat(role, &self.stop);
        let nanos = self.epoch.nanos(now);
        for (slot, h) in self.heartbeats.iter().enumerate() {
            if role.slots() & (1 << slot) != 0 {
                h.store(nanos, Ordering::Relaxed);
            }
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// How long an idle thread sleeps before looking again (heartbeat cadence).
pub const IDLE_WAIT: Duration = Duration::from_millis(500);

/// Counts what is pushed, so the producer knows whether to ring the consumer.
struct CountingEvents<'a> {
    ring: &'a mut Producer<Event>,
    pushed: usize,
}

impl EventSink for CountingEvents<'_> {
    fn emit(&mut self, ev: Event) -> bool {
        let ok = self.ring.push(ev).is_ok();
        self.pushed += usize::from(ok);
        ok
    }
}

/// The RX thread's end of the rings.
pub struct RxThread {
    stage: RxStage,
    free: Consumer<Batch>,
    to_crypto: LaneTx,
    to_control: Producer<HandshakeDatagram>,
    spare_udp: Option<Batch>,
    spare_tun: Option<Batch>,
    /// RX's reserve batch for the express packets of the next batch it reads.
    spare_express: Option<Batch>,
    /// Errors of the current round, and the backoff after them.
    trouble: IoTrouble,
    /// Sources that may have data (see [`Readiness`]).
    ready: Readiness,
    spin: Duration,
    /// Packets of this round pushed to the crypto ring without waking the crypto thread,
    /// for RX to run to completion itself (see [`Stages`]).
    deferred: usize,
    /// RX may run the crypto and TX stages itself ([`RxThread::run_with`]).
    run_ahead: bool,
}

/// Most packets RX runs through the crypto and TX stages itself, per round, when their
/// threads are parked; more are handed off.
pub const RUN_TO_COMPLETION_MAX: usize = 8;

/// The crypto and TX stages of a pipeline, each held by its own thread, or for a moment by RX
/// when it runs a small batch to completion while that thread is parked ([`Baton`]).
#[derive(Debug)]
pub struct Stages {
    /// The crypto stage.
    pub crypto: Baton<CryptoThread>,
    /// The TX stage.
    pub tx: Baton<TxThread>,
}

/// The crypto thread's end of the rings.
pub struct CryptoThread {
    stage: CryptoStage,
    from_rx: LaneRx,
    to_tx: LaneTx,
    free: Consumer<Batch>,
    commands: Consumer<Command>,
    events: Producer<Event>,
    spare: Option<Batch>,
    rx_batches: usize,
    spin: Duration,
    /// Wake TX after a push (false while RX runs both stages itself).
    ring_tx: bool,
}

/// The TX thread's end of the rings.
pub struct TxThread {
    stage: TxStage,
    from_crypto: LaneRx,
    to_rx: Producer<Batch>,
    to_crypto: Producer<Batch>,
    handshakes: Consumer<HandshakeDatagram>,
    samples: Option<TxSamples>,
    spin: Duration,
    /// Adapts [`Shared::inbound`] and [`Shared::outbound`].
    tuners: (LimitTuner, LimitTuner),
}

/// Histograms the TX thread records per batch: RX→TX latency and batch size.
#[derive(Debug)]
pub struct TxSamples {
    /// Nanoseconds from RX reading a batch to TX finishing it.
    pub latency_ns: Recorder,
    /// Packets per batch.
    pub batch_size: Recorder,
}

/// The control thread's end of the rings of every pipeline it serves.
pub struct ControlThread {
    /// One per pipeline; the first is the pipeline it was built with.
    lanes: Vec<Lane>,
    /// Splits commands over the lanes.
    fanout: crate::fanout::Fanout,
    draining: bool,
}

/// The control thread's end of one pipeline's rings.
struct Lane {
    handshakes: Consumer<HandshakeDatagram>,
    events: Consumer<Event>,
    commands: Producer<Command>,
    to_tx: Producer<HandshakeDatagram>,
    /// Commands that did not fit in the ring yet (kept in order).
    backlog: std::collections::VecDeque<Command>,
    /// The pipeline's shared state; `None` for the first lane (the `Shared` the loop is given).
    shared: Option<Arc<Shared>>,
}

macro_rules! debug_opaque {
    ($($t:ty),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($t))
            }
        }
    )*};
}
debug_opaque!(RxThread, CryptoThread, TxThread, ControlThread);

/// Build the rings and pools of one pipeline.
pub fn build(
    cfg: &PipelineConfig,
    shared: &Shared,
) -> (RxThread, CryptoThread, TxThread, ControlThread) {
    // Buffers fit a datagram from a peer with any MTU veil or WireGuard peers use (up to
    // PEER_MTU_MAX), not only our own: a peer with a larger MTU is received whole.
    let buf = buffer_size(cfg.mtu.max(PEER_MTU_MAX));
    let total = cfg.rx_batches + cfg.crypto_batches;
    let (mut rx_free_p, rx_free_c) = RingBuffer::new(cfg.rx_batches);
    let (mut cr_free_p, cr_free_c) = RingBuffer::new(cfg.crypto_batches);
    for _ in 0..cfg.rx_batches {
        let _ = rx_free_p.push(Batch::new(Home::Rx, buf));
    }
    for _ in 0..cfg.crypto_batches {
        let _ = cr_free_p.push(Batch::new(Home::Crypto, buf));
    }
    // Rings sized to hold every batch can never be full.
    let (rx_to_crypto_p, rx_to_crypto_c) = express::lanes(total);
    let (crypto_to_tx_p, crypto_to_tx_c) = express::lanes(total);
    let (hs_in_p, hs_in_c) = RingBuffer::new(cfg.handshake_ring);
    let (hs_out_p, hs_out_c) = RingBuffer::new(cfg.handshake_ring);
    let (cmd_p, cmd_c) = RingBuffer::new(cfg.control_ring);
    let (ev_p, ev_c) = RingBuffer::new(cfg.control_ring);
    (
        RxThread {
            stage: RxStage::new(shared.rx.clone(), shared.source_filter.clone()),
            free: rx_free_c,
            to_crypto: rx_to_crypto_p,
            to_control: hs_in_p,
            spare_udp: None,
            spare_tun: None,
            spare_express: None,
            trouble: IoTrouble::default(),
            ready: Readiness::BOTH,
            spin: cfg.spin,
            deferred: 0,
            run_ahead: false,
        },
        CryptoThread {
            stage: CryptoStage::new(cfg.timing, shared.epoch, shared.crypto.clone()),
            from_rx: rx_to_crypto_c,
            to_tx: crypto_to_tx_p,
            free: cr_free_c,
            commands: cmd_c,
            events: ev_p,
            spare: None,
            rx_batches: cfg.rx_batches,
            spin: cfg.spin,
            ring_tx: true,
        },
        TxThread {
            stage: TxStage::new(shared.tx.clone()),
            from_crypto: crypto_to_tx_c,
            to_rx: rx_free_p,
            to_crypto: cr_free_p,
            handshakes: hs_out_c,
            samples: None,
            spin: cfg.spin,
            tuners: Default::default(),
        },
        ControlThread {
            lanes: vec![Lane {
                handshakes: hs_in_c,
                events: ev_c,
                commands: cmd_p,
                to_tx: hs_out_p,
                backlog: std::collections::VecDeque::new(),
                shared: None,
            }],
            fanout: crate::fanout::Fanout::new(1),
            draining: false,
        },
    )
}

mod control;
mod crypto;
pub mod express;
mod rx;
mod single;
mod tx;

pub use single::SingleThread;
