//! One keypair shared by pipelines (issue 14): what the shared send counter and replay window
//! cost. Seal and open 64-byte messages (so the lock and the atomics, not the cipher, dominate)
//! from one thread, and from two threads on one keypair at once (the worst case: one peer's
//! traffic crossing two pipelines at the same moment), against two threads on two keypairs
//! (two peers: nothing shared). Time is per message, summed over both threads' messages.
//!
//! `cargo bench -p veil-dataplane --bench shared_keypair`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use veil_dataplane::crypto::Keypair;
use veil_dataplane::wire::TRANSPORT_MIN_LEN;

const LEN: usize = 64;

/// (name, threads, one keypair for all threads?).
const CASES: [(&str, u64, bool); 3] = [
    ("one_thread", 1, true),
    ("two_threads_one_keypair", 2, true),
    ("two_threads_two_keypairs", 2, false),
];

fn pair() -> (Arc<Keypair>, Arc<Keypair>) {
    let now = Instant::now();
    let (a, b) = ([1u8; 32], [2u8; 32]);
    (
        Arc::new(Keypair::new(&a, &b, 10, 20, now, true)),
        Arc::new(Keypair::new(&b, &a, 20, 10, now, false)),
    )
}

fn sealed(kp: &Keypair, n: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let mut buf = vec![0u8; TRANSPORT_MIN_LEN + LEN];
            let len = kp.seal(&mut buf, LEN).expect("seal");
            buf.truncate(len);
            buf
        })
        .collect()
}

/// Run `work(thread, iters)` on `threads` threads at once; the wall time.
fn parallel(threads: u64, iters: u64, work: impl Fn(u64, u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let work = &work;
            s.spawn(move || work(t, iters / threads));
        }
    });
    start.elapsed()
}

/// One benchmark per case of [`CASES`]: `run(iters, threads, shared)` is the wall time.
fn cases(c: &mut Criterion, group: &str, run: impl Fn(u64, u64, bool) -> Duration) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    for (name, threads, shared) in CASES {
        g.bench_function(name, |b| b.iter_custom(|iters| run(iters, threads, shared)));
    }
    g.finish();
}

fn seal(c: &mut Criterion) {
    cases(c, "shared_keypair_seal", |iters, threads, shared| {
        let keys = [pair().0, pair().0];
        parallel(threads, iters, |t, n| {
            let kp = &keys[if shared { 0 } else { t as usize }];
            let mut buf = [0u8; TRANSPORT_MIN_LEN + LEN];
            for _ in 0..n {
                std::hint::black_box(kp.seal(&mut buf, LEN).expect("seal"));
            }
        })
    });
}

fn open(c: &mut Criterion) {
    cases(c, "shared_keypair_open", |iters, threads, shared| {
        let pairs = [pair(), pair()];
        // One peer's messages interleaved over the threads as two pipelines would
        // receive them; or each thread its own peer's.
        let msgs: Vec<Vec<Vec<u8>>> = if shared {
            let all = sealed(&pairs[0].0, iters);
            (0..threads as usize)
                .map(|t| {
                    all.iter()
                        .skip(t)
                        .step_by(threads as usize)
                        .cloned()
                        .collect()
                })
                .collect()
        } else {
            (0..threads as usize)
                .map(|t| sealed(&pairs[t].0, iters / threads))
                .collect()
        };
        parallel(threads, iters, |t, _| {
            let (_, recv) = &pairs[if shared { 0 } else { t as usize }];
            let mut buf = [0u8; TRANSPORT_MIN_LEN + LEN];
            for m in &msgs[t as usize] {
                let b = &mut buf[..m.len()];
                b.copy_from_slice(m);
                std::hint::black_box(recv.open(b).is_ok());
            }
        })
    });
}

criterion_group!(benches, seal, open);
criterion_main!(benches);
