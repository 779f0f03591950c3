//! Single-threaded mode: the same stages, one loop per pipeline.
//!
//! With one pipeline the loop also runs the control work. With several (`pipelines = N` in
//! single mode) pipeline 0's thread runs it for all of them (`ControlThread::serve`), and every
//! further pipeline's thread runs RX, crypto and TX only: the control thread's commands reach
//! it through its command ring, and its crypto doorbell writes the same eventfd its poll waits
//! on ([`Shared::single_member`]).

use super::*;

/// Everything of one pipeline run on one thread: the same stage functions, in one loop.
pub struct SingleThread {
    rx: RxThread,
    crypto: CryptoThread,
    tx: TxThread,
    /// The control work, on pipeline 0's thread only.
    control: Option<ControlThread>,
}

impl std::fmt::Debug for SingleThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SingleThread")
    }
}

impl SingleThread {
    /// Build from the four ends of one pipeline (or of pipeline 0 of several).
    pub fn new(parts: (RxThread, CryptoThread, TxThread, ControlThread)) -> Self {
        let (rx, crypto, tx, control) = parts;
        Self {
            rx,
            crypto,
            tx,
            control: Some(control),
        }
    }

    /// Build a further pipeline's loop from its RX, crypto and TX ends: its control end has
    /// gone to pipeline 0's control work (`ControlThread::serve`), and its [`Shared`] comes
    /// from [`Shared::single_member`].
    pub fn member(parts: (RxThread, CryptoThread, TxThread)) -> Self {
        let (rx, crypto, tx) = parts;
        Self {
            rx,
            crypto,
            tx,
            control: None,
        }
    }

    /// The loop of pipeline 0 (built with [`SingleThread::new`]): read, process, write, the
    /// control work through `driver`, then sleep in poll until the fds are readable or the
    /// control work's next deadline.
    pub fn run(
        self,
        udp: &impl DatagramIo,
        tun: &impl PacketIo,
        waiter: &impl Waiter,
        driver: &mut impl ControlDriver,
        shared: &Shared,
    ) {
        self.serve(udp, tun, waiter, shared, |control, shared, last| {
            if last {
                control.forward(driver, shared);
                None
            } else {
                control.round(driver, shared)
            }
        });
    }

    /// The loop of a further pipeline (built with [`SingleThread::member`]): read, process,
    /// write, then sleep in poll until the fds are readable or a command arrives.
    pub fn run_member(
        self,
        udp: &impl DatagramIo,
        tun: &impl PacketIo,
        waiter: &impl Waiter,
        shared: &Shared,
    ) {
        self.serve(udp, tun, waiter, shared, |_, _, _| None);
    }

    /// The loop itself; `control(end, shared, last)` runs a control round (returning its next
    /// deadline), or with `last` the final forward after the loop, on the thread that has the
    /// control end.
    fn serve(
        mut self,
        udp: &impl DatagramIo,
        tun: &impl PacketIo,
        waiter: &impl Waiter,
        shared: &Shared,
        mut control_work: impl FnMut(&mut ControlThread, &Shared, bool) -> Option<Instant>,
    ) {
        self.rx.ready = Readiness::BOTH;
        while !shared.stopped() {
            shared.beat(Role::Single, Instant::now());
            // While a hand-off captures the state, nothing is read (the rest still runs).
            let paused = shared.is_paused();
            let mut moved = !paused && self.rx.round_ready(udp, tun, shared);
            if !self.rx.settle_errors(Role::Single, waiter, shared) {
                break;
            }
            moved |= self.crypto.round(shared);
            moved |= self.tx.round(udp, tun, shared);
            let mut deadline = None;
            if let Some(control) = self.control.as_mut() {
                deadline = control_work(control, shared, false);
                // Commands and handshake replies the control round produced.
                moved |= self.crypto.round(shared);
                moved |= self.tx.round(udp, tun, shared);
                moved |= control.has_work();
            }
            // One thread runs every stage of its pipeline: nothing else fills its rings
            // while it spins (but the control work's commands, which ring the crypto
            // doorbell), so it parks in poll as soon as there is nothing left to do.
            if moved {
                continue;
            }
            let wait = deadline
                .map_or(IDLE_WAIT, |d| d.saturating_duration_since(Instant::now()))
                .min(IDLE_WAIT);
            shared.rx_bell.prepare_park();
            shared.crypto_bell.prepare_park();
            if self.crypto.has_work() {
                // A command arrived after the crypto round looked.
                shared.crypto_bell.cancel();
                shared.rx_bell.cancel();
                continue;
            }
            self.rx.ready = if !paused && self.rx.has_batch() && !self.rx.ready.any() {
                waiter.wait_io(wait)
            } else {
                // A source is still ready but was not read (no batch free): wait for
                // the timers only, then look at both again.
                waiter.wait_bell(wait);
                Readiness::BOTH
            };
            shared.crypto_bell.cancel();
            shared.rx_bell.cancel();
        }
        if let Some(control) = self.control.as_mut() {
            control_work(control, shared, true);
        }
        self.crypto.round(shared);
    }
}
