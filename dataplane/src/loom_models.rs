//! loom models of the dataplane's own synchronisation: the real [`Doorbell`] and [`Baton`]
//! (built on loom's primitives through `crate::sync`) under every interleaving loom explores.
//! A lost wake-up leaves a thread parked for ever, which loom reports as a deadlock (parking
//! has no timeout under loom); two holders of a baton fail an assertion.
//!
//! ```sh
//! cargo test -p veil-dataplane --features loom --lib loom_models
//! ```
//!
//! The loops are the protocols of `pipeline/` cut down to what the primitives see: a ring is
//! a counter of queued items, a stage's round takes them all.

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use std::time::Duration;

use crate::baton::Baton;
use crate::doorbell::Doorbell;

/// The park timeout the pipeline uses; loom ignores it (see `crate::sync::park_for`).
const WAIT: Duration = Duration::from_millis(500);

/// Producer pushes and rings; the consumer parks when its ring looks empty. Every item is
/// consumed: no interleaving of push, ring, prepare-park, re-check and park loses the wake-up.
#[test]
fn doorbell_loses_no_wake_up() {
    loom::model(|| {
        let bell = Arc::new(Doorbell::for_thread());
        let queued = Arc::new(AtomicUsize::new(0));
        let (b, q) = (bell.clone(), queued.clone());
        let consumer = thread::spawn(move || {
            b.register_current();
            let mut taken = 0;
            while taken < 2 {
                let n = q.swap(0, Ordering::Acquire);
                if n > 0 {
                    taken += n;
                } else {
                    b.park(WAIT, || q.load(Ordering::Acquire) > 0);
                }
            }
        });
        for _ in 0..2 {
            queued.fetch_add(1, Ordering::Release);
            bell.ring();
        }
        consumer.join().expect("consumer");
    });
}

/// The eventfd RX parks on, as loom sees it: a counter that `write` adds to and wakes the
/// poller, that `poll` waits on until it is non-zero (no timeout: a lost wake-up deadlocks),
/// and that `drain` resets, each a step of its own as the syscalls are (the runtime's
/// `Waiter::wait_bell` polls, then drains in a second call: a write between the two is
/// drained unseen, which the model must show harmless).
struct EventFd {
    count: Mutex<u64>,
    readable: Condvar,
}

impl EventFd {
    fn new() -> Self {
        Self {
            count: Mutex::new(0),
            readable: Condvar::new(),
        }
    }

    /// write(2) of 1.
    fn write(&self) {
        let mut c = self.count.lock().expect("eventfd");
        *c += 1;
        self.readable.notify_all();
    }

    /// poll(2) for POLLIN.
    fn poll(&self) {
        let mut c = self.count.lock().expect("eventfd");
        while *c == 0 {
            c = self.readable.wait(c).expect("eventfd");
        }
    }

    /// read(2): take the count.
    fn drain(&self) {
        *self.count.lock().expect("eventfd") = 0;
    }
}

/// RX's doorbell (`Doorbell::custom`, which writes RX's eventfd) against RX's idle wait
/// (`RxThread::run_loop`: prepare-park, re-check the rings, poll the eventfd, drain it,
/// cancel): a producer's push-then-ring is never lost, wherever it falls among those steps.
#[test]
fn eventfd_doorbell_loses_no_wake_up() {
    loom::model(|| {
        let efd = Arc::new(EventFd::new());
        let writer = efd.clone();
        let bell = Arc::new(Doorbell::custom(move || writer.write()));
        let queued = Arc::new(AtomicUsize::new(0));
        let (b, q, e) = (bell.clone(), queued.clone(), efd.clone());
        let rx = thread::spawn(move || {
            let mut taken = 0;
            while taken < 2 {
                let n = q.swap(0, Ordering::Acquire);
                if n > 0 {
                    taken += n;
                    continue;
                }
                b.prepare_park();
                if q.load(Ordering::Acquire) == 0 {
                    e.poll();
                    e.drain();
                }
                b.cancel();
            }
        });
        for _ in 0..2 {
            queued.fetch_add(1, Ordering::Release);
            bell.ring();
        }
        rx.join().expect("rx");
    });
}

/// Shutdown: `stop` then an unconditional wake reaches a thread however far it got into
/// parking (`Shared::shutdown`).
#[test]
fn shutdown_wakes_a_parking_thread() {
    loom::model(|| {
        let bell = Arc::new(Doorbell::for_thread());
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bell.clone(), stop.clone());
        let worker = thread::spawn(move || {
            b.register_current();
            while !s.load(Ordering::Relaxed) {
                b.park(WAIT, || s.load(Ordering::Relaxed));
            }
        });
        stop.store(true, Ordering::SeqCst);
        bell.wake_now();
        worker.join().expect("worker");
    });
}

/// A stage's state in a baton with its items.
struct Stage {
    queue: Arc<AtomicUsize>,
    /// Items processed, read by the model's main thread without taking the baton (only RX
    /// and the stage's thread take it in the pipeline).
    done: Arc<AtomicUsize>,
    /// Set while held: two holders at once fail.
    inside: Arc<AtomicBool>,
}

impl Stage {
    /// One round: take every queued item. True if it did work.
    fn round(&mut self) -> bool {
        assert!(
            !self.inside.swap(true, Ordering::SeqCst),
            "two holders of a baton"
        );
        let n = self.queue.swap(0, Ordering::Acquire);
        self.done.fetch_add(n, Ordering::Release);
        self.inside.store(false, Ordering::SeqCst);
        n > 0
    }

    fn has_work(&self) -> bool {
        self.queue.load(Ordering::Acquire) > 0
    }
}

/// RX's run-to-completion hand-off (`RxThread::push`, `run_to_completion`,
/// `CryptoThread::run_shared`): RX queues an item and, when the crypto thread is parked,
/// defers the ring and runs the stage itself under the baton; it rings when it could not
/// take the baton, and after putting it back wakes the thread if the stage has work or the
/// thread noted that it found the baton taken (`Baton::try_take_or_wait`, `waited_for`). The
/// crypto thread parks when it finds the baton taken. A second producer (the control
/// thread's commands) pushes and rings at any moment. Every item is processed, by one holder
/// at a time. Without the note, an item pushed while RX looks at the stage one last time is
/// stranded: the crypto thread's look found the baton taken and parked, RX's look read the
/// queue before the push, and the producer's ring came before the thread announced parking
/// (in the pipeline: until the park's 500 ms timeout).
#[test]
fn baton_hand_off_loses_no_item() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.max_branches = 100_000;
    builder.check(|| {
        let queue = Arc::new(AtomicUsize::new(0));
        let inside = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let baton = Arc::new(Baton::new(Stage {
            queue: queue.clone(),
            done: done.clone(),
            inside,
        }));
        let bell = Arc::new(Doorbell::for_thread());
        let stop = Arc::new(AtomicBool::new(false));
        // Two from RX, one from another producer (the control thread's commands), which may
        // come while RX holds the stage: then only RX's wake after release gets it done.
        let items = 3;
        let (q, other) = (queue.clone(), bell.clone());
        let control = thread::spawn(move || {
            q.fetch_add(1, Ordering::Release);
            other.ring();
        });
        let (b, bell2, s) = (baton.clone(), bell.clone(), stop.clone());
        let crypto = thread::spawn(move || {
            bell2.register_current();
            while !s.load(Ordering::Relaxed) {
                if b.try_take().is_some_and(|mut me| me.round()) {
                    continue;
                }
                // Nothing to do, or RX holds the stage: park (RX wakes it after release).
                bell2.park(WAIT, || {
                    b.try_take_or_wait().is_some_and(|me| me.has_work())
                });
            }
        });
        for _ in 0..2 {
            let defer = bell.is_parked();
            queue.fetch_add(1, Ordering::Release);
            if !defer {
                bell.ring();
                continue;
            }
            match baton.try_take() {
                None => bell.ring(),
                Some(mut st) => {
                    st.round();
                    drop(st);
                    // After release: work that came in while RX held it wakes the thread.
                    if baton.try_take().is_some_and(|st| st.has_work()) || baton.waited_for() {
                        bell.wake_now();
                    }
                }
            }
        }
        // Every item gets done without any further wake-up (a lost one spins here until
        // loom gives up on the execution), then shutdown as `Shared::shutdown` does.
        while done.load(Ordering::Acquire) < items {
            thread::yield_now();
        }
        stop.store(true, Ordering::SeqCst);
        bell.wake_now();
        crypto.join().expect("crypto");
        control.join().expect("control");
    });
}
