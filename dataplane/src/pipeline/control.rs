//! The control thread's loop: feeds the sans-IO driver and carries what it yields.

use super::*;

/// Commands the control thread holds back for a full command ring at most.
const COMMAND_BACKLOG: usize = 4096;

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

    pub(super) fn forward(&mut self, driver: &mut impl ControlDriver, shared: &Shared) {
        let mut sent_cmd = false;
        // Bounded: beyond, commands wait in the driver, whose queue is bounded and counted.
        while self.backlog.len() < COMMAND_BACKLOG {
            let Some(cmd) = driver.poll_command() else {
                break;
            };
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

    pub(super) fn has_work(&self) -> bool {
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
