//! The crypto thread's shell around the crypto stage.

use super::*;

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
            let Some(mut batch) = self.from_rx.pop() else {
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

    pub(super) fn has_work(&self) -> bool {
        !self.from_rx.is_empty()
            || !self.commands.is_empty()
            || (self.stage.has_originated() && !self.free.is_empty())
    }

    /// The crypto thread's loop when RX may hold the stage now and then ([`Stages`]). While
    /// RX holds it, this thread parks rather than spinning on the baton (on 2 cores a spin
    /// takes the CPU RX is using): RX looks again after it puts the baton back and wakes this
    /// thread if work is left ([`RxThread::run_to_completion`]).
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
                    baton.try_take_or_wait().is_some_and(|me| me.has_work())
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
