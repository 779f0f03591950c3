//! The admin channel: requests from outside the dataplane — the UAPI socket, the metrics
//! endpoint, `veil show` — to the control thread.
//!
//! Other threads hold an [`AdminHandle`]; each [`AdminHandle::call`] puts a request in a bounded
//! queue, rings the control thread's doorbell and waits (with a timeout) for the answer on a
//! reply channel of its own. The control-thread shell holds the [`AdminInbox`] and, every
//! round, hands what is queued to [`Device::handle_admin`](super::Device::handle_admin) as
//! plain calls, so every change to the peer table happens on the thread that owns it, between
//! two rounds of handshake and timer work, and reaches the dataplane as ordinary commands. The
//! device itself owns no channel.
//!
//! ```
//! # use std::time::{Duration, Instant, SystemTime};
//! # use rand_core::OsRng;
//! # use veil_control::device::{admin_channel, Device};
//! # use veil_dataplane::link::Epoch;
//! # use veil_dataplane::timing::Timing;
//! let now = Instant::now();
//! let wall = (now, SystemTime::now());
//! let mut device = Device::new(&[7; 32], Timing::default(), Epoch::new(now), wall, OsRng);
//! // The runtime passes a closure that wakes the control thread.
//! let (handle, inbox) = admin_channel(|| {});
//! let asker =
//!     std::thread::spawn(move || handle.snapshot(false, SystemTime::now(), Duration::from_secs(5)));
//! // The control thread's shell serves the inbox every round.
//! while !asker.is_finished() {
//!     inbox.serve(|request| device.handle_admin(request, Instant::now()));
//!     std::thread::sleep(Duration::from_millis(1));
//! }
//! let snapshot = asker.join().unwrap().unwrap();
//! assert!(snapshot.peers.is_empty());
//! ```

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::requests::{
    AdminRequest, AdminResponse, ChangeOutcome, ConfigureError, DeviceChange, DeviceSnapshot,
};

/// Requests that may wait in the queue; more are refused with [`AdminError::Busy`].
pub const ADMIN_QUEUE: usize = 16;

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminError {
    /// The queue is full: too many requests at once. Retry later.
    Busy,
    /// No answer within the timeout (a change may still be applied later).
    Timeout,
    /// The control thread is gone (shutting down).
    Closed,
    /// An answer of the wrong kind (a bug).
    Mismatch,
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AdminError::Busy => "the control thread has too many requests queued",
            AdminError::Timeout => "the control thread did not answer in time",
            AdminError::Closed => "the control thread has stopped",
            AdminError::Mismatch => "the control thread answered a different request",
        })
    }
}

impl std::error::Error for AdminError {}

struct Envelope {
    request: AdminRequest,
    reply: SyncSender<AdminResponse>,
}

/// The callers' end of the admin channel; cheap to clone, one per serving thread.
#[derive(Clone)]
pub struct AdminHandle {
    queue: SyncSender<Envelope>,
    wake: Arc<dyn Fn() + Send + Sync>,
    /// Where refusals are counted ([`AdminHandle::counting`]).
    counters: Option<Arc<super::ControlCounters>>,
}

impl std::fmt::Debug for AdminHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminHandle")
    }
}

/// The control thread's end of the admin channel: the control-thread shell pops requests and
/// hands them to [`Device::handle_admin`](super::Device::handle_admin).
pub struct AdminInbox {
    queue: Receiver<Envelope>,
}

impl std::fmt::Debug for AdminInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminInbox")
    }
}

impl AdminInbox {
    /// Answer what is queued with `handle` (at most one queue's worth, so a flood cannot
    /// starve the control loop).
    pub fn serve(&self, mut handle: impl FnMut(AdminRequest) -> AdminResponse) {
        for _ in 0..ADMIN_QUEUE {
            let Ok(envelope) = self.queue.try_recv() else {
                break;
            };
            // The caller may have timed out and gone; that is its business.
            let _ = envelope.reply.try_send(handle(envelope.request));
        }
    }
}

/// A new admin channel. `wake` must wake the control thread (ring its doorbell) so a parked
/// control thread serves the request at once rather than at its next timer.
pub fn admin_channel(wake: impl Fn() + Send + Sync + 'static) -> (AdminHandle, AdminInbox) {
    let (tx, rx) = mpsc::sync_channel(ADMIN_QUEUE);
    (
        AdminHandle {
            queue: tx,
            wake: Arc::new(wake),
            counters: None,
        },
        AdminInbox { queue: rx },
    )
}

impl AdminHandle {
    /// Count the requests refused as [`AdminError::Busy`] in `counters`
    /// (`admin_refused_busy`).
    pub fn counting(mut self, counters: Arc<super::ControlCounters>) -> Self {
        self.counters = Some(counters);
        self
    }

    /// Send `request` and wait at most `timeout` for the answer.
    pub fn call(
        &self,
        request: AdminRequest,
        timeout: Duration,
    ) -> Result<AdminResponse, AdminError> {
        let (reply, answer) = mpsc::sync_channel(1);
        match self.queue.try_send(Envelope { request, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if let Some(c) = &self.counters {
                    veil_dataplane::counters::bump(&c.admin_refused_busy, 1);
                }
                return Err(AdminError::Busy);
            }
            Err(TrySendError::Disconnected(_)) => return Err(AdminError::Closed),
        }
        (self.wake)();
        match answer.recv_timeout(timeout) {
            Ok(r) => Ok(r),
            Err(RecvTimeoutError::Timeout) => Err(AdminError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(AdminError::Closed),
        }
    }

    /// Read the interface; `secrets` adds the private and pre-shared keys. `wall_now` is the
    /// wall clock now, for handshake times.
    pub fn snapshot(
        &self,
        secrets: bool,
        wall_now: SystemTime,
        timeout: Duration,
    ) -> Result<DeviceSnapshot, AdminError> {
        let request = AdminRequest::Snapshot { secrets, wall_now };
        match self.call(request, timeout)? {
            AdminResponse::Snapshot(s) => Ok(*s),
            _ => Err(AdminError::Mismatch),
        }
    }

    /// Apply a change.
    pub fn configure(
        &self,
        change: DeviceChange,
        timeout: Duration,
    ) -> Result<Result<ChangeOutcome, ConfigureError>, AdminError> {
        match self.call(AdminRequest::Configure(change), timeout)? {
            AdminResponse::Configured(r) => Ok(r),
            _ => Err(AdminError::Mismatch),
        }
    }

    /// A live hand-off: every session's state, captured on the control thread.
    pub fn capture(&self, timeout: Duration) -> Result<crate::handoff::HandoffState, AdminError> {
        match self.call(AdminRequest::Capture, timeout)? {
            AdminResponse::Captured(s) => Ok(*s),
            _ => Err(AdminError::Mismatch),
        }
    }

    /// A live hand-off was rolled back: this process serves on.
    pub fn resume_after_handoff(&self, timeout: Duration) -> Result<(), AdminError> {
        match self.call(AdminRequest::ResumeAfterHandoff, timeout)? {
            AdminResponse::Resumed => Ok(()),
            _ => Err(AdminError::Mismatch),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use rand_core::OsRng;
    use veil_dataplane::link::Epoch;
    use veil_dataplane::timing::Timing;

    use super::super::Device;
    use super::*;

    #[test]
    fn channel_round_trip_and_timeouts() {
        let now = Instant::now();
        let mut d = Device::new(
            &[7; 32],
            Timing::default(),
            Epoch::new(now),
            (now, SystemTime::now()),
            OsRng,
        );
        let (handle, inbox) = admin_channel(|| {});
        // Nobody serving yet: the caller times out.
        assert_eq!(
            handle
                .snapshot(false, SystemTime::now(), Duration::from_millis(20))
                .unwrap_err(),
            AdminError::Timeout
        );
        let h = handle.clone();
        let asker = std::thread::spawn(move || {
            h.snapshot(false, SystemTime::now(), Duration::from_secs(10))
        });
        while !asker.is_finished() {
            inbox.serve(|r| d.handle_admin(r, Instant::now()));
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(asker.join().unwrap().is_ok());
        // Nobody serving: the queue fills with requests whose callers gave up, then the
        // next request is refused as busy, and counted.
        let counters = d.counters().clone();
        let counted = handle.clone().counting(counters.clone());
        for _ in 0..ADMIN_QUEUE {
            let r = counted.snapshot(false, SystemTime::now(), Duration::from_millis(1));
            assert_eq!(r.unwrap_err(), AdminError::Timeout);
        }
        let r = counted.snapshot(false, SystemTime::now(), Duration::from_millis(1));
        assert_eq!(r.unwrap_err(), AdminError::Busy);
        assert_eq!(counters.admin_refused_busy.load(Ordering::Relaxed), 1);
        inbox.serve(|r| d.handle_admin(r, Instant::now()));
        drop(inbox);
        assert_eq!(
            handle
                .snapshot(false, SystemTime::now(), Duration::from_secs(1))
                .unwrap_err(),
            AdminError::Closed
        );
    }
}
