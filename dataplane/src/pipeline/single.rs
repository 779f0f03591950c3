//! Single-threaded mode: the same stages, one loop.

use super::*;

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
            // While a hand-off captures the state, nothing is read (the rest still runs).
            let paused = shared.is_paused();
            let mut moved = !paused && self.rx.round_ready(udp, tun, shared);
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
            self.rx.ready = if !paused && self.rx.has_batch() && !self.rx.ready.any() {
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
