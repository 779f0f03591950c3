//! Handshake timing around the control thread's driver.

use std::time::Instant;

use veil_dataplane::link::{Command, Event, HandshakeDatagram};
use veil_dataplane::pipeline::ControlDriver;

use super::hub::{nanos, HandshakeRecorders};

/// The control thread's driver with handshake timing around it. Reading the clock twice per
/// handshake message is nothing next to the Diffie-Hellman work in it.
#[derive(Debug)]
pub struct MeteredDevice<D> {
    inner: D,
    recorders: HandshakeRecorders,
}

impl<D> MeteredDevice<D> {
    /// Wrap `inner`.
    pub fn new(inner: D, recorders: HandshakeRecorders) -> Self {
        Self { inner, recorders }
    }
}

impl<D: ControlDriver> ControlDriver for MeteredDevice<D> {
    fn on_handshake(&mut self, msg: HandshakeDatagram, now: Instant) {
        let received = msg.received;
        let start = Instant::now();
        self.inner.on_handshake(msg, now);
        let end = Instant::now();
        self.recorders
            .processing
            .record(nanos(end.saturating_duration_since(start)));
        if let Some(r) = received {
            self.recorders
                .queue
                .record(nanos(start.saturating_duration_since(r)));
        }
    }

    fn on_event(&mut self, ev: Event, now: Instant) {
        self.inner.on_event(ev, now);
    }

    fn on_timeout(&mut self, now: Instant) {
        self.inner.on_timeout(now);
    }

    fn poll_command(&mut self) -> Option<Command> {
        self.inner.poll_command()
    }

    fn poll_transmit(&mut self) -> Option<HandshakeDatagram> {
        self.inner.poll_transmit()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }

    fn poll_admin(&mut self, now: Instant) {
        self.recorders.processing.flush_if_due(now);
        self.recorders.queue.flush_if_due(now);
        self.inner.poll_admin(now);
    }

    fn set_handshake_backlog(&mut self, queued: usize, now: Instant) {
        self.inner.set_handshake_backlog(queued, now);
    }

    fn begin_drain(&mut self, now: Instant) {
        self.inner.begin_drain(now);
    }

    fn drained(&self) -> bool {
        self.inner.drained()
    }
}
