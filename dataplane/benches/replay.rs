//! The replay window: in-order counters (the common case), reordered ones inside the window,
//! duplicates, and counters too old.
//!
//! `cargo bench -p veil-dataplane --bench replay`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use veil_dataplane::ReplayWindow;

fn replay(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(1));

    g.bench_function("in_order", |b| {
        let mut w = ReplayWindow::new();
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            std::hint::black_box(w.check_and_update(std::hint::black_box(n)))
        })
    });

    // Pairs swapped (1,0,3,2,...) plus a jump of 100 every 64 packets: reordering as a
    // multi-queue sender produces it, all inside the window.
    g.bench_function("reordered", |b| {
        let mut w = ReplayWindow::new();
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            let base = i + (i / 64) * 100;
            let n = base ^ 1;
            std::hint::black_box(w.check_and_update(std::hint::black_box(n)))
        })
    });

    g.bench_function("duplicate", |b| {
        let mut w = ReplayWindow::new();
        for n in 0..1000 {
            w.check_and_update(n);
        }
        b.iter(|| std::hint::black_box(w.check_and_update(std::hint::black_box(990))))
    });

    g.bench_function("too_old", |b| {
        let mut w = ReplayWindow::new();
        w.check_and_update(1 << 20);
        b.iter(|| std::hint::black_box(w.check(std::hint::black_box(5))))
    });
    g.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
