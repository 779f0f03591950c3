//! Batches between two threads through rtrb rings, the way the pipeline moves them: a producer
//! takes a batch from its free ring, pushes it to the consumer and rings the consumer's
//! doorbell; the consumer spins a little (`Backoff`), parks on its `Doorbell` when idle, and
//! hands each batch back through a recycle ring.
//!
//! - `stream`: the producer pushes as fast as batches come back (16 batches in flight, like the
//!   RX pool): batches per second, the rings' throughput ceiling.
//! - `ping_pong`: one batch in flight; the time of one round trip, the hand-off latency a
//!   packet pays twice per hop in pipeline mode (producer to consumer and back).
//!
//! `cargo bench -p veil-dataplane --bench ring_transfer`. On a 2-core machine with other work
//! running the two threads share cores with everything else: read ratios, not absolutes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rtrb::{Consumer, Producer, RingBuffer};
use veil_dataplane::batch::{buffer_size, Batch, Home, BATCH_MAX};
use veil_dataplane::doorbell::{Backoff, Doorbell};

const IDLE_WAIT: Duration = Duration::from_millis(500);

/// The consumer thread: pop, touch, give back; spin then park when idle.
fn consumer(
    mut from: Consumer<Batch>,
    mut back: Producer<Batch>,
    bell: Arc<Doorbell>,
    back_bell: Arc<Doorbell>,
    stop: Arc<AtomicBool>,
) {
    bell.register_current();
    let mut backoff = Backoff::default();
    while !stop.load(Ordering::Relaxed) {
        let mut moved = false;
        while let Ok(mut batch) = from.pop() {
            batch.len = BATCH_MAX;
            let _ = back.push(batch);
            back_bell.ring();
            moved = true;
        }
        if moved {
            backoff.reset();
        } else if backoff.idle() {
            bell.park(IDLE_WAIT, || {
                !from.is_empty() || stop.load(Ordering::Relaxed)
            });
        }
    }
}

struct Rig {
    to: Producer<Batch>,
    free: Consumer<Batch>,
    bell: Arc<Doorbell>,
    my_bell: Arc<Doorbell>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Rig {
    fn new(in_flight: usize) -> Self {
        let (mut free_p, free) = RingBuffer::new(in_flight);
        let (to, from) = RingBuffer::new(in_flight);
        for _ in 0..in_flight {
            let _ = free_p.push(Batch::new(Home::Rx, buffer_size(1420)));
        }
        let bell = Arc::new(Doorbell::for_thread());
        let my_bell = Arc::new(Doorbell::for_thread());
        my_bell.register_current();
        let stop = Arc::new(AtomicBool::new(false));
        let (b, mb, s) = (bell.clone(), my_bell.clone(), stop.clone());
        let thread = Some(std::thread::spawn(move || consumer(from, free_p, b, mb, s)));
        Self {
            to,
            free,
            bell,
            my_bell,
            stop,
            thread,
        }
    }

    /// Move `n` batches to the consumer and wait until all came back.
    fn transfer(&mut self, n: u64, in_flight: usize) -> Duration {
        let start = Instant::now();
        let mut sent = 0u64;
        let mut outstanding = 0usize;
        let mut backoff = Backoff::default();
        while sent < n || outstanding > 0 {
            let mut moved = false;
            while sent < n && outstanding < in_flight {
                let Ok(batch) = self.free.pop() else { break };
                let _ = self.to.push(batch);
                self.bell.ring();
                sent += 1;
                outstanding += 1;
                moved = true;
            }
            // Returned batches sit in `free`; count them back.
            let back = in_flight - outstanding;
            let now_free = self.free.slots();
            if now_free > back {
                outstanding -= now_free - back;
                moved = true;
            }
            if moved {
                backoff.reset();
            } else if backoff.idle() {
                let free = &self.free;
                self.my_bell.park(IDLE_WAIT, || free.slots() > back);
            }
        }
        start.elapsed()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.bell.wake_now();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ring_transfer(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_transfer");
    g.throughput(Throughput::Elements(1));
    g.bench_function("stream_16_in_flight", |b| {
        let mut rig = Rig::new(16);
        b.iter_custom(|iters| rig.transfer(iters, 16))
    });
    g.bench_function("ping_pong", |b| {
        let mut rig = Rig::new(1);
        b.iter_custom(|iters| rig.transfer(iters, 1))
    });
    g.finish();
}

criterion_group!(benches, ring_transfer);
criterion_main!(benches);
