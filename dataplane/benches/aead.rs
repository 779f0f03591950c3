//! AEAD seal and open through the `TransportAead` seam, for every library behind it, at
//! 64, 1400 and 65536 bytes.
//!
//! `cargo bench -p veil-dataplane --bench aead`. Criterion prints time per call and GiB/s; the
//! fastest backend is the one `[threading] aead = auto` should pick (perf/README.md).

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use veil_dataplane::crypto::{AwsLcChaChaPoly, ChaChaPoly, RingChaChaPoly, TransportAead};

const SIZES: [usize; 3] = [64, 1400, 65536];

fn bench_one<A: TransportAead>(c: &mut Criterion, lib: &str) {
    let key = [0x42u8; 32];
    let aead = A::new(&key);

    let mut g = c.benchmark_group(format!("aead_seal/{lib}"));
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0x5au8; size];
        let mut counter = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                counter += 1;
                std::hint::black_box(aead.seal(counter, std::hint::black_box(&mut buf)))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group(format!("aead_open/{lib}"));
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        // Open decrypts in place, so every call gets a fresh copy of the ciphertext (copied
        // outside the timed part).
        let mut sealed = vec![0x5au8; size];
        let tag = aead.seal(7, &mut sealed);
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| {
                    let ok = aead.open(7, std::hint::black_box(buf), &tag);
                    assert!(ok.is_ok(), "open failed");
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn aead(c: &mut Criterion) {
    bench_one::<ChaChaPoly>(c, "rustcrypto");
    bench_one::<RingChaChaPoly>(c, "ring");
    bench_one::<AwsLcChaChaPoly>(c, "aws-lc");
}

criterion_group!(benches, aead);
criterion_main!(benches);
