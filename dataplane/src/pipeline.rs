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
use crate::stage::{CryptoStage, EventSink, RxStage, TxStage};
#[cfg(debug_assertions)]
use crate::test_hooks::TestHooks;
use crate::timing::Timing;

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
    /// Set by the control thread when the drain is finished.
    pub drain_done: AtomicBool,
    /// Wakes the RX thread (writes its eventfd).
    pub rx_bell: Doorbell,
    /// Wakes the crypto thread.
    pub crypto_bell: Doorbell,
    /// Wakes the TX thread.
    pub tx_bell: Doorbell,
    /// Wakes the control thread.
    pub control_bell: Doorbell,
    /// RX counters.
    pub rx: Arc<RxCounters>,
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
            drain_done: AtomicBool::new(false),
            rx_bell: Doorbell::custom(rx_wake),
            crypto_bell: Doorbell::for_thread(),
            tx_bell: Doorbell::for_thread(),
            control_bell: Doorbell::for_thread(),
            rx: Arc::default(),
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

    /// A thread hit a fatal error: record it (the first one wins) and stop
    /// every loop. The runtime sees the thread end and exits non-zero.
    pub fn fail(&self, fault: Fault) {
        self.fault.set(fault);
        self.shutdown();
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
    to_crypto: Producer<Batch>,
    to_control: Producer<HandshakeDatagram>,
    spare_udp: Option<Batch>,
    spare_tun: Option<Batch>,
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
    from_rx: Consumer<Batch>,
    to_tx: Producer<Batch>,
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
    from_crypto: Consumer<Batch>,
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

/// The control thread's end of the rings.
pub struct ControlThread {
    handshakes: Consumer<HandshakeDatagram>,
    events: Consumer<Event>,
    commands: Producer<Command>,
    to_tx: Producer<HandshakeDatagram>,
    /// Commands that did not fit in the ring yet (kept in order).
    backlog: std::collections::VecDeque<Command>,
    draining: bool,
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
    let (rx_to_crypto_p, rx_to_crypto_c) = RingBuffer::new(total);
    let (crypto_to_tx_p, crypto_to_tx_c) = RingBuffer::new(total);
    let (hs_in_p, hs_in_c) = RingBuffer::new(cfg.handshake_ring);
    let (hs_out_p, hs_out_c) = RingBuffer::new(cfg.handshake_ring);
    let (cmd_p, cmd_c) = RingBuffer::new(cfg.control_ring);
    let (ev_p, ev_c) = RingBuffer::new(cfg.control_ring);
    (
        RxThread {
            stage: RxStage::new(shared.rx.clone()),
            free: rx_free_c,
            to_crypto: rx_to_crypto_p,
            to_control: hs_in_p,
            spare_udp: None,
            spare_tun: None,
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
            handshakes: hs_in_c,
            events: ev_c,
            commands: cmd_p,
            to_tx: hs_out_p,
            backlog: std::collections::VecDeque::new(),
            draining: false,
        },
    )
}

impl RxThread {
    fn take_batch(&mut self, which_udp: bool) -> Option<Batch> {
        let slot = if which_udp {
            &mut self.spare_udp
        } else {
            &mut self.spare_tun
        };
        slot.take().or_else(|| self.free.pop().ok())
    }

    /// One round: read what is there from both sources. Returns true if anything moved.
    pub fn round(&mut self, udp: &impl DatagramIo, tun: &impl PacketIo, shared: &Shared) -> bool {
        self.ready = Readiness::BOTH;
        self.round_ready(udp, tun, shared)
    }

    /// One round over the sources marked ready; a source whose read hit EAGAIN is marked
    /// not ready until poll says otherwise. Returns true if anything moved.
    fn round_ready(&mut self, udp: &impl DatagramIo, tun: &impl PacketIo, shared: &Shared) -> bool {
        let now = Instant::now();
        let mut moved = false;
        let before = self.to_control.slots();
        let udp_batch = if self.ready.udp && self.room(&shared.inbound, shared) {
            self.take_batch(true)
        } else {
            None
        };
        if let Some(mut batch) = udp_batch {
            match self
                .stage
                .recv_udp(udp, &mut batch, &mut self.to_control, now)
            {
                Ok(kept) if kept > 0 => {
                    batch.stamp = Some(now);
                    moved = true;
                    self.push(batch, shared);
                }
                other => {
                    match other {
                        Err(e) => self.trouble.note(IoOp::UdpReceive, e),
                        // Nothing received: EAGAIN.
                        Ok(_) if batch.len == 0 => self.ready.udp = false,
                        Ok(_) => {}
                    }
                    moved |= batch.len > 0;
                    self.spare_udp = Some(batch);
                }
            }
        } else if self.ready.udp {
            bump(&shared.rx.pool_empty, 1);
        }
        if self.to_control.slots() != before {
            shared.control_bell.ring();
        }
        let tun_batch = if self.ready.tun && self.room(&shared.outbound, shared) {
            self.take_batch(false)
        } else {
            None
        };
        if let Some(mut batch) = tun_batch {
            let read = self.stage.read_tun(tun, &mut batch);
            match read {
                Err(e) => self.trouble.note(IoOp::TunRead, e),
                // A short batch: its last read hit EAGAIN.
                Ok(n) if n < BATCH_MAX => self.ready.tun = false,
                Ok(_) => {}
            }
            // After an error the packets read before it are still good.
            if batch.len > 0 {
                batch.stamp = Some(now);
                moved = true;
                self.push(batch, shared);
            } else {
                self.spare_tun = Some(batch);
            }
        }
        moved
    }

    /// Is there room under the byte queue limit of this direction? Counts when not.
    fn room(&self, queue: &ByteQueue, shared: &Shared) -> bool {
        let room = queue.has_room();
        if !room {
            bump(&shared.rx.bql_held, 1);
        }
        room
    }

    /// Could a round read anything: a ready source with room and a batch?
    fn can_read(&self, shared: &Shared) -> bool {
        self.has_batch()
            && (self.ready.udp && shared.inbound.has_room()
                || self.ready.tun && shared.outbound.has_room())
    }

    fn push(&mut self, mut batch: Batch, shared: &Shared) {
        bump(&shared.rx.batches, 1);
        let small = self.deferred + batch.len <= RUN_TO_COMPLETION_MAX;
        let defer = self.run_ahead && small && shared.crypto_bell.is_parked();
        batch.queued_bytes = batch.payload_bytes();
        match batch.source {
            Source::Udp => shared.inbound.queued(batch.queued_bytes),
            Source::Tun => shared.outbound.queued(batch.queued_bytes),
            Source::Originated => batch.queued_bytes = 0,
        }
        let len = batch.len;
        // The ring holds every batch there is, so it cannot be full.
        let _ = self.to_crypto.push(batch);
        if defer {
            self.deferred += len;
        } else {
            shared.crypto_bell.ring();
        }
    }

    /// After a round: on a fatal error record it and stop everything (returns
    /// false); after a transient one pause with backoff, still woken by the
    /// doorbell, so a persistent error cannot make the loop spin.
    fn settle_errors(&mut self, role: Role, waiter: &impl Waiter, shared: &Shared) -> bool {
        match self.trouble.settle(role.thread_name()) {
            None => true,
            Some(Verdict::Pause(pause)) => {
                bump(&shared.rx.io_pauses, 1);
                shared.rx_bell.prepare_park();
                waiter.wait_bell(pause);
                shared.rx_bell.cancel();
                true
            }
            Some(Verdict::Fatal(fault)) => {
                shared.fail(fault);
                false
            }
        }
    }

    /// Has RX a batch to read into?
    fn has_batch(&self) -> bool {
        self.spare_udp.is_some() || self.spare_tun.is_some() || !self.free.is_empty()
    }

    /// The RX thread's loop (crypto and TX always on their own threads).
    pub fn run(
        self,
        udp: &impl DatagramIo,
        tun: &impl PacketIo,
        waiter: &impl Waiter,
        shared: &Shared,
    ) {
        self.run_loop(None, udp, tun, waiter, shared);
    }

    /// The RX thread's loop in a pipeline whose crypto and TX stages are in `stages`: like
    /// [`RxThread::run`], and a round that read only a few packets while the crypto thread
    /// was parked runs them through crypto and TX itself instead of waking two threads.
    pub fn run_with(
        self,
        stages: &Stages,
        udp: &impl DatagramIo,
        tun: &impl PacketIo,
        waiter: &impl Waiter,
        shared: &Shared,
    ) {
        self.run_loop(Some(stages), udp, tun, waiter, shared);
    }

    fn run_loop(
        mut self,
        stages: Option<&Stages>,
        udp: &impl DatagramIo,
        tun: &impl PacketIo,
        waiter: &impl Waiter,
        shared: &Shared,
    ) {
        let mut backoff = Backoff::new(self.spin);
        self.ready = Readiness::BOTH;
        self.run_ahead = stages.is_some();
        while !shared.stopped() {
            shared.beat(Role::Rx, Instant::now());
            let moved = self.round_ready(udp, tun, shared);
            if self.deferred > 0 {
                self.deferred = 0;
                let ran = stages.is_some_and(|st| Self::run_to_completion(st, udp, tun, shared));
                if !ran {
                    shared.crypto_bell.ring();
                }
            }
            if !self.settle_errors(Role::Rx, waiter, shared) {
                return;
            }
            if moved {
                backoff.reset();
                continue;
            }
            if self.has_batch() && !self.ready.any() {
                // Both sources said EAGAIN: no syscall until poll reports one readable.
                shared.rx_bell.prepare_park();
                self.ready = waiter.wait_io(IDLE_WAIT);
                shared.rx_bell.cancel();
                continue;
            }
            // No batch to read into, or the ready sources are at their byte limit: spin on
            // the rings (bounded), then wait for TX to give batches back or finish bytes.
            if !backoff.idle() {
                continue;
            }
            shared.rx_bell.prepare_park();
            if !self.can_read(shared) {
                waiter.wait_bell(IDLE_WAIT);
            }
            shared.rx_bell.cancel();
            // Woken (or timed out): look at both sources again.
            self.ready = Readiness::BOTH;
        }
    }

    /// Run the crypto stage (and TX, if its thread is parked too) on this thread, holding
    /// their batons. False if the crypto baton was taken (its thread is running): hand off.
    /// A stage left with work when its baton goes back is woken.
    fn run_to_completion(
        stages: &Stages,
        udp: &impl DatagramIo,
        tun: &impl PacketIo,
        shared: &Shared,
    ) -> bool {
        let Some(mut crypto) = stages.crypto.try_take() else {
            return false;
        };
        let mut tx = if shared.tx_bell.is_parked() {
            stages.tx.try_take()
        } else {
            None
        };
        crypto.ring_tx = tx.is_none();
        crypto.round(shared);
        crypto.ring_tx = true;
        let crypto_more = crypto.has_work();
        drop(crypto);
        bump(&shared.rx.run_to_completion, 1);
        if crypto_more {
            shared.crypto_bell.wake_now();
        }
        if let Some(mut tx) = tx.take() {
            tx.round(udp, tun, shared);
            let tx_more = tx.has_work();
            drop(tx);
            if tx_more {
                shared.tx_bell.wake_now();
            }
        }
        true
    }
}

impl CryptoThread {
    /// One round. Returns true if anything moved.
    pub fn round(&mut self, shared: &Shared) -> bool {
        let mut moved = false;
        let now = Instant::now();
        while let Ok(cmd) = self.commands.pop() {
            self.stage.apply(cmd, now);
            moved = true;
        }
        // Pressure is measured against the batches RX owns: all of them queued means full.
        let occupancy =
            u32::try_from(self.from_rx.slots() * 100 / self.rx_batches.max(1)).unwrap_or(100);
        self.stage.set_ring_occupancy(occupancy);
        let mut events = CountingEvents {
            ring: &mut self.events,
            pushed: 0,
        };
        // Bounded: at most a few batches per round so commands are not starved.
        for _ in 0..4 {
            let Ok(mut batch) = self.from_rx.pop() else {
                break;
            };
            self.stage.process(&mut batch, now, &mut events);
            let _ = self.to_tx.push(batch);
            if self.ring_tx {
                shared.tx_bell.ring();
            }
            moved = true;
        }
        while self.stage.has_originated() {
            let Some(mut batch) = self.spare.take().or_else(|| self.free.pop().ok()) else {
                break;
            };
            self.stage.originate(&mut batch, now, &mut events);
            if batch.len > 0 {
                let _ = self.to_tx.push(batch);
                if self.ring_tx {
                    shared.tx_bell.ring();
                }
                moved = true;
            } else {
                self.spare = Some(batch);
                break;
            }
        }
        if events.pushed > 0 {
            shared.control_bell.ring();
        }
        moved
    }

    fn has_work(&self) -> bool {
        !self.from_rx.is_empty()
            || !self.commands.is_empty()
            || (self.stage.has_originated() && !self.free.is_empty())
    }

    /// The crypto thread's loop when RX may hold the stage now and then ([`Stages`]). While
    /// RX holds it, this thread looks again rather than parking: RX is about done.
    pub fn run_shared(baton: &Baton<Self>, shared: &Shared) {
        shared.crypto_bell.register_current();
        let spin = baton.try_take().map_or(DEFAULT_SPIN, |me| me.spin);
        let mut backoff = Backoff::new(spin);
        while !shared.stopped() {
            shared.beat(Role::Crypto, Instant::now());
            if baton.try_take().is_some_and(|mut me| me.round(shared)) {
                backoff.reset();
            } else if backoff.idle() {
                shared.crypto_bell.park(IDLE_WAIT, || {
                    baton.try_take().is_none_or(|me| me.has_work())
                });
            }
        }
    }

    /// The crypto thread's loop.
    pub fn run(mut self, shared: &Shared) {
        shared.crypto_bell.register_current();
        let mut backoff = Backoff::new(self.spin);
        while !shared.stopped() {
            shared.beat(Role::Crypto, Instant::now());
            if self.round(shared) {
                backoff.reset();
            } else if backoff.idle() {
                shared.crypto_bell.park(IDLE_WAIT, || self.has_work());
            }
        }
    }
}

impl TxThread {
    /// Record latency and batch-size histograms from now on (one clock read per batch).
    pub fn record_samples(&mut self, samples: TxSamples) {
        self.samples = Some(samples);
    }

    /// One round. Returns true if anything moved.
    pub fn round(&mut self, udp: &impl DatagramIo, tun: &impl PacketIo, shared: &Shared) -> bool {
        let mut moved = false;
        while let Ok(msg) = self.handshakes.pop() {
            self.stage.send_handshake(udp, &msg);
            moved = true;
        }
        for _ in 0..4 {
            let Ok(batch) = self.from_crypto.pop() else {
                break;
            };
            self.stage.flush(&batch, udp, tun);
            if let Some(s) = &mut self.samples {
                let now = Instant::now();
                if let Some(stamp) = batch.stamp {
                    let ns = now.saturating_duration_since(stamp).as_nanos();
                    s.latency_ns.record(u64::try_from(ns).unwrap_or(u64::MAX));
                }
                s.batch_size.record(batch.len as u64);
                s.latency_ns.flush_if_due(now);
                s.batch_size.flush_if_due(now);
            }
            self.give_back(batch, shared);
            moved = true;
        }
        moved
    }

    fn give_back(&mut self, batch: Batch, shared: &Shared) {
        // Before the batch goes home, so RX sees the room when it is woken.
        if batch.queued_bytes > 0 {
            let now = Instant::now();
            match batch.source {
                Source::Udp => {
                    shared
                        .inbound
                        .completed(batch.queued_bytes, &mut self.tuners.0, now)
                }
                Source::Tun => {
                    shared
                        .outbound
                        .completed(batch.queued_bytes, &mut self.tuners.1, now)
                }
                Source::Originated => {}
            }
        }
        match batch.home {
            Home::Rx => {
                let _ = self.to_rx.push(batch);
                shared.rx_bell.ring();
            }
            Home::Crypto => {
                let _ = self.to_crypto.push(batch);
                shared.crypto_bell.ring();
            }
        }
    }

    fn has_work(&self) -> bool {
        !self.from_crypto.is_empty() || !self.handshakes.is_empty()
    }

    /// The TX thread's loop when RX may hold the stage now and then ([`Stages`]).
    pub fn run_shared(
        baton: &Baton<Self>,
        udp: &impl DatagramIo,
        tun: &impl PacketIo,
        shared: &Shared,
    ) {
        shared.tx_bell.register_current();
        let spin = baton.try_take().map_or(DEFAULT_SPIN, |me| me.spin);
        let mut backoff = Backoff::new(spin);
        while !shared.stopped() {
            shared.beat(Role::Tx, Instant::now());
            if baton
                .try_take()
                .is_some_and(|mut me| me.round(udp, tun, shared))
            {
                backoff.reset();
            } else if backoff.idle() {
                shared.tx_bell.park(IDLE_WAIT, || {
                    baton.try_take().is_none_or(|me| me.has_work())
                });
            }
        }
    }

    /// The TX thread's loop.
    pub fn run(mut self, udp: &impl DatagramIo, tun: &impl PacketIo, shared: &Shared) {
        shared.tx_bell.register_current();
        let mut backoff = Backoff::new(self.spin);
        while !shared.stopped() {
            shared.beat(Role::Tx, Instant::now());
            if self.round(udp, tun, shared) {
                backoff.reset();
            } else if backoff.idle() {
                shared.tx_bell.park(IDLE_WAIT, || {
                    !self.from_crypto.is_empty() || !self.handshakes.is_empty()
                });
            }
        }
    }
}

impl ControlThread {
    /// One round: feed the driver everything that arrived, run its timers, and
    /// pass on what it produced. Returns the driver's next deadline.
    pub fn round(&mut self, driver: &mut impl ControlDriver, shared: &Shared) -> Option<Instant> {
        let now = Instant::now();
        driver.set_handshake_backlog(self.handshakes.slots(), now);
        // Bounded per round so events and timers are not starved by a flood.
        for _ in 0..256 {
            let Ok(msg) = self.handshakes.pop() else {
                break;
            };
            driver.on_handshake(msg, now);
        }
        while let Ok(ev) = self.events.pop() {
            driver.on_event(ev, now);
        }
        driver.poll_admin(now);
        if shared.drain_requested.load(Ordering::Relaxed) && !self.draining {
            self.draining = true;
            driver.begin_drain(now);
        }
        if driver.next_deadline().is_some_and(|d| d <= now) {
            driver.on_timeout(now);
        }
        self.forward(driver, shared);
        if self.draining && driver.drained() {
            shared.drain_done.store(true, Ordering::SeqCst);
        }
        driver.next_deadline()
    }

    fn forward(&mut self, driver: &mut impl ControlDriver, shared: &Shared) {
        let mut sent_cmd = false;
        while let Some(cmd) = driver.poll_command() {
            self.backlog.push_back(cmd);
        }
        while let Some(cmd) = self.backlog.pop_front() {
            match self.commands.push(cmd) {
                Ok(()) => sent_cmd = true,
                Err(rtrb::PushError::Full(cmd)) => {
                    self.backlog.push_front(cmd);
                    break;
                }
            }
        }
        if sent_cmd {
            shared.crypto_bell.ring();
        }
        let mut sent = false;
        while let Some(msg) = driver.poll_transmit() {
            // A full ring means TX is far behind: the message is dropped like a lost datagram.
            sent |= self.to_tx.push(msg).is_ok();
        }
        if sent {
            shared.tx_bell.ring();
        }
    }

    fn has_work(&self) -> bool {
        !self.handshakes.is_empty() || !self.events.is_empty()
    }

    /// The control thread's loop.
    pub fn run(mut self, driver: &mut impl ControlDriver, shared: &Shared) {
        shared.control_bell.register_current();
        while !shared.stopped() {
            let now = Instant::now();
            shared.beat(Role::Control, now);
            let deadline = self.round(driver, shared);
            if self.has_work() || !self.backlog.is_empty() && self.commands.slots() > 0 {
                continue;
            }
            let wait = deadline
                .map_or(IDLE_WAIT, |d| d.saturating_duration_since(Instant::now()))
                .min(IDLE_WAIT);
            if !wait.is_zero() {
                shared.control_bell.park(wait, || self.has_work());
            }
        }
        // Last commands (e.g. keys to clear) still reach the crypto stage's ring.
        self.forward(driver, shared);
    }
}

/// Everything of one pipeline run on one thread: the same stage functions, in one loop.
pub struct SingleThread {
    rx: RxThread,
    crypto: CryptoThread,
    tx: TxThread,
    control: ControlThread,
}

impl std::fmt::Debug for SingleThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SingleThread")
    }
}

impl SingleThread {
    /// Build from the four ends of one pipeline.
    pub fn new(parts: (RxThread, CryptoThread, TxThread, ControlThread)) -> Self {
        let (rx, crypto, tx, control) = parts;
        Self {
            rx,
            crypto,
            tx,
            control,
        }
    }

    /// The loop: read, process, write, control, then sleep in poll until the
    /// fds are readable or the control thread's next deadline.
    pub fn run(
        mut self,
        udp: &impl DatagramIo,
        tun: &impl PacketIo,
        waiter: &impl Waiter,
        driver: &mut impl ControlDriver,
        shared: &Shared,
    ) {
        self.rx.ready = Readiness::BOTH;
        while !shared.stopped() {
            shared.beat(Role::Single, Instant::now());
            let mut moved = self.rx.round_ready(udp, tun, shared);
            if !self.rx.settle_errors(Role::Single, waiter, shared) {
                break;
            }
            moved |= self.crypto.round(shared);
            moved |= self.tx.round(udp, tun, shared);
            let deadline = self.control.round(driver, shared);
            // Commands and handshake replies the control round produced.
            moved |= self.crypto.round(shared);
            moved |= self.tx.round(udp, tun, shared);
            // One thread runs every stage: nothing else can fill a ring while it spins, so
            // it parks in poll as soon as there is nothing left to do.
            if moved || self.control.has_work() {
                continue;
            }
            let wait = deadline
                .map_or(IDLE_WAIT, |d| d.saturating_duration_since(Instant::now()))
                .min(IDLE_WAIT);
            shared.rx_bell.prepare_park();
            self.rx.ready = if self.rx.has_batch() && !self.rx.ready.any() {
                waiter.wait_io(wait)
            } else {
                // A source is still ready but was not read (no batch free): wait for
                // the timers only, then look at both again.
                waiter.wait_bell(wait);
                Readiness::BOTH
            };
            shared.rx_bell.cancel();
        }
        self.control.forward(driver, shared);
        self.crypto.round(shared);
    }
}
