//! The RX thread's shell: reads, hands batches on, and runs small batches to completion.

use super::*;

impl RxThread {
    pub(super) fn take_batch(&mut self, which_udp: bool) -> Option<Batch> {
        // The express reserve is filled first: a batch read while the pool is low still has
        // somewhere to put its small packets.
        if self.spare_express.is_none() {
            self.spare_express = self.free.pop().ok();
        }
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
    pub(super) fn round_ready(
        &mut self,
        udp: &impl DatagramIo,
        tun: &impl PacketIo,
        shared: &Shared,
    ) -> bool {
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
        shared.rx_idle.store(!self.ready.any(), Ordering::Relaxed);
        moved
    }

    /// Is there room under the byte queue limit of this direction? Counts when not.
    pub(super) fn room(&self, queue: &ByteQueue, shared: &Shared) -> bool {
        let room = queue.has_room();
        if !room {
            bump(&shared.rx.bql_held, 1);
        }
        room
    }

    /// Could a round read anything: a ready source with room and a batch?
    pub(super) fn can_read(&self, shared: &Shared) -> bool {
        self.has_batch()
            && (self.ready.udp && shared.inbound.has_room()
                || self.ready.tun && shared.outbound.has_room())
    }

    /// Hand a batch RX read to the crypto stage, its small lone packets on the express lane
    /// ([`express`]).
    pub(super) fn push(&mut self, mut batch: Batch, shared: &Shared) {
        match self
            .spare_express
            .as_mut()
            .map(|e| express::split(&mut batch, e))
        {
            Some(express::Split::Moved(n)) => {
                bump(&shared.rx.express_packets, n as u64);
                if let Some(e) = self.spare_express.take() {
                    self.push_lane(e, shared);
                }
            }
            Some(express::Split::AllExpress) => {
                bump(&shared.rx.express_packets, batch.len as u64);
                batch.express = true;
            }
            Some(express::Split::Bulk) | None => {}
        }
        self.push_lane(batch, shared);
    }

    fn push_lane(&mut self, mut batch: Batch, shared: &Shared) {
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
    pub(super) fn settle_errors(
        &mut self,
        role: Role,
        waiter: &impl Waiter,
        shared: &Shared,
    ) -> bool {
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
    pub(super) fn has_batch(&self) -> bool {
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

    pub(super) fn run_loop(
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
            if shared.is_paused() {
                // A hand-off is capturing the state: read nothing until it resumes or stops.
                shared.rx_bell.prepare_park();
                if shared.is_paused() {
                    waiter.wait_bell(IDLE_WAIT);
                }
                shared.rx_bell.cancel();
                self.ready = Readiness::BOTH;
                continue;
            }
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
    pub(super) fn run_to_completion(
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
        drop(crypto);
        bump(&shared.rx.run_to_completion, 1);
        // A stage's thread that found its baton taken parked; look again now that it is back
        // (work may have come in while RX held it) and wake the thread if there is any. A
        // baton taken again by then is its own thread's, running. A thread that found the
        // baton taken by this very look (work from the control thread or TX may come during
        // it, unseen) noted so and is woken too (the loom model `baton_hand_off_loses_no_item`).
        if stages.crypto.try_take().is_some_and(|c| c.has_work()) || stages.crypto.waited_for() {
            shared.crypto_bell.wake_now();
        }
        if let Some(mut tx) = tx.take() {
            tx.round(udp, tun, shared);
            drop(tx);
            if stages.tx.try_take().is_some_and(|t| t.has_work()) || stages.tx.waited_for() {
                shared.tx_bell.wake_now();
            }
        }
        true
    }
}
