//! The control thread's loop: feeds the sans-IO driver and carries what it yields, for one
//! pipeline or several ([`ControlThread::serve`]).

use super::*;

/// Commands the control thread holds back for a full command ring at most.
const COMMAND_BACKLOG: usize = 4096;

/// A dataplane thread whose heartbeat is older than this has stopped (the watchdog's limit):
/// its pipeline moves nothing more, so a drain does not wait for it to go quiet.
const STALLED_AFTER: Duration = Duration::from_secs(2);

impl ControlThread {
    /// Serve a further pipeline too: `other` is the control end [`build`] made for it, `shared`
    /// its shared state (made with [`Shared::member`], so its RX wakes this thread). Its
    /// handshakes and events are read here, and every command is split over all pipelines
    /// ([`crate::fanout`]). Handshake replies leave through the first pipeline.
    pub fn serve(&mut self, other: ControlThread, shared: Arc<Shared>) {
        for mut lane in other.lanes {
            lane.shared = Some(shared.clone());
            self.lanes.push(lane);
            self.fanout.grow();
        }
    }

    /// How many pipelines this thread serves.
    pub fn pipelines(&self) -> usize {
        self.fanout.pipelines()
    }

    /// One round: feed the driver everything that arrived, run its timers, and
    /// pass on what it produced. Returns the driver's next deadline.
    pub fn round(&mut self, driver: &mut impl ControlDriver, shared: &Shared) -> Option<Instant> {
        let now = Instant::now();
        let queued = self.lanes.iter().map(|l| l.handshakes.slots()).sum();
        driver.set_handshake_backlog(queued, now);
        // Bounded per round so events and timers are not starved by a flood.
        let mut budget = 256usize;
        for lane in &mut self.lanes {
            while budget > 0 {
                let Ok(msg) = lane.handshakes.pop() else {
                    break;
                };
                budget -= 1;
                driver.on_handshake(msg, now);
            }
        }
        for i in 0..self.lanes.len() {
            while let Ok(ev) = self.lanes[i].events.pop() {
                if let Some(cmd) = self.fanout.follow(&ev) {
                    self.send_to_others(i, cmd);
                }
                driver.on_event(ev, now);
            }
        }
        driver.poll_admin(now);
        if shared.drain_requested.load(Ordering::Relaxed) && !self.draining {
            self.draining = true;
            driver.begin_drain(now);
        }
        if self.draining {
            driver.set_dataplane_quiet(self.quiet(shared, now), now);
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

    /// Is nothing left in any pipeline: RX read both sources to EAGAIN, no bytes are between
    /// RX and TX in either direction, and the rings to and from this thread are empty (the
    /// crypto stage took every command, TX every handshake message)? A pipeline with a stalled
    /// thread counts as quiet: nothing more comes out of it, and the drain would otherwise
    /// last until its timeout.
    fn quiet(&self, shared: &Shared, now: Instant) -> bool {
        self.lanes.iter().all(|l| {
            let s = l.shared.as_deref().unwrap_or(shared);
            let stalled = [Role::Rx, Role::Crypto, Role::Tx].iter().any(|r| {
                let beat = s.heartbeats[r.slot()].load(Ordering::Relaxed);
                s.epoch
                    .instant(beat)
                    .is_some_and(|t| now.saturating_duration_since(t) > STALLED_AFTER)
            });
            stalled
                || s.rx_idle.load(Ordering::Relaxed)
                    && s.inbound.in_flight() == 0
                    && s.outbound.in_flight() == 0
                    && l.backlog.is_empty()
                    && l.commands.slots() == l.commands.buffer().capacity()
                    && l.to_tx.slots() == l.to_tx.buffer().capacity()
                    && l.handshakes.is_empty()
                    && l.events.is_empty()
        })
    }

    /// Queue `cmd` for every pipeline but `from`.
    fn send_to_others(&mut self, from: usize, cmd: Command) {
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            if i != from {
                lane.backlog.push_back(cmd.clone());
            }
        }
    }

    pub(super) fn forward(&mut self, driver: &mut impl ControlDriver, shared: &Shared) {
        // Bounded: beyond, commands wait in the driver, whose queue is bounded and counted.
        while self.lanes.iter().all(|l| l.backlog.len() < COMMAND_BACKLOG) {
            let Some(cmd) = driver.poll_command() else {
                break;
            };
            for (lane, copy) in self.lanes.iter_mut().zip(self.fanout.split(cmd)) {
                lane.backlog.extend(copy);
            }
        }
        // Every pipeline's commands are in its ring before any handshake reply leaves: a
        // peer's answer to it finds its keypair on whichever pipeline it arrives.
        for lane in &mut self.lanes {
            let mut sent_cmd = false;
            while let Some(cmd) = lane.backlog.pop_front() {
                match lane.commands.push(cmd) {
                    Ok(()) => sent_cmd = true,
                    Err(rtrb::PushError::Full(cmd)) => {
                        lane.backlog.push_front(cmd);
                        break;
                    }
                }
            }
            if sent_cmd {
                lane.shared.as_deref().unwrap_or(shared).crypto_bell.ring();
            }
        }
        let mut sent = false;
        let Some(first) = self.lanes.first_mut() else {
            return;
        };
        while let Some(msg) = driver.poll_transmit() {
            // A full ring means TX is far behind: the message is dropped like a lost datagram.
            sent |= first.to_tx.push(msg).is_ok();
        }
        if sent {
            shared.tx_bell.ring();
        }
    }

    pub(super) fn has_work(&self) -> bool {
        self.lanes
            .iter()
            .any(|l| !l.handshakes.is_empty() || !l.events.is_empty())
    }

    /// Commands wait for room that is there now.
    fn can_forward(&self) -> bool {
        self.lanes
            .iter()
            .any(|l| !l.backlog.is_empty() && l.commands.slots() > 0)
    }

    /// The control thread's loop.
    pub fn run(mut self, driver: &mut impl ControlDriver, shared: &Shared) {
        shared.control_bell.register_current();
        while !shared.stopped() {
            let now = Instant::now();
            shared.beat(Role::Control, now);
            // This thread is every pipeline's control thread.
            for s in self.lanes.iter().filter_map(|l| l.shared.as_deref()) {
                s.beat(Role::Control, now);
            }
            let deadline = self.round(driver, shared);
            if self.has_work() || self.can_forward() {
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
