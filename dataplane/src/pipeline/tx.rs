//! The TX thread's shell around the TX stage.

use super::*;

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
            let Some(batch) = self.from_crypto.pop() else {
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

    pub(super) fn give_back(&mut self, batch: Batch, shared: &Shared) {
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

    pub(super) fn has_work(&self) -> bool {
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
                // Held by RX: park; RX wakes this thread after it if work is left.
                shared.tx_bell.park(IDLE_WAIT, || {
                    baton.try_take_or_wait().is_some_and(|me| me.has_work())
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
