//! Handshakes per second through the responder: checking an initiation (MAC1, the Noise
//! static and timestamp, two DH) and answering it (two more DH, the session keys). Also the
//! cheap paths a responder under load takes: a cookie reply instead of DH work, and an
//! initiation dropped for a bad MAC1.
//!
//! `cargo bench -p veil-control --bench handshake`. Criterion's "thrpt" is handshakes/s.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand_core::OsRng;
use veil_control::{consume_initiation, InitiationOutcome, PeerHandshake, StaticIdentity};

fn handshake(c: &mut Criterion) {
    let client = StaticIdentity::from_secret([0x11; 32]);
    let server = StaticIdentity::from_secret([0x22; 32]);
    let mut at_client = PeerHandshake::new(&client, *server.public_key(), None);
    let mut at_server = PeerHandshake::new(&server, *client.public_key(), None);
    let mut cookies = server.cookie_checker();
    let src: SocketAddr = "198.51.100.7:40000".parse().expect("literal address");
    let now = Instant::now();
    // Each initiation needs a newer timestamp than the last one the responder accepted, and
    // must come at least MIN_INITIATION_INTERVAL after it: both clocks advance a second a call.
    let mut tick = 0u64;
    let mut next_clocks = move || {
        tick += 1;
        let wall: SystemTime = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + tick);
        (now + Duration::from_secs(tick), wall)
    };

    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    g.bench_function("responder_consume_and_respond", |b| {
        b.iter_batched(
            || {
                let (at, wall) = next_clocks();
                let init = at_client
                    .create_initiation(&client, 1, at, wall, &mut OsRng)
                    .expect("initiation");
                (init, at)
            },
            |(init, at)| {
                let outcome =
                    consume_initiation(&server, &mut cookies, &init, src, false, at, &mut OsRng)
                        .expect("valid initiation");
                let InitiationOutcome::Valid(valid) = outcome else {
                    panic!("cookie reply while not under load");
                };
                at_server
                    .respond(&server, valid, 2, at, &mut OsRng)
                    .expect("response")
            },
            BatchSize::SmallInput,
        )
    });

    let (at, wall) = next_clocks();
    let init = at_client
        .create_initiation(&client, 1, at, wall, &mut OsRng)
        .expect("initiation");
    g.bench_function("responder_under_load_cookie_reply", |b| {
        b.iter(|| {
            consume_initiation(&server, &mut cookies, &init, src, true, now, &mut OsRng)
                .expect("cookie reply")
        })
    });

    let mut forged = init;
    forged[20] ^= 1; // breaks MAC1
    g.bench_function("responder_bad_mac1_dropped", |b| {
        b.iter(|| {
            consume_initiation(&server, &mut cookies, &forged, src, false, now, &mut OsRng).is_err()
        })
    });
    g.finish();
}

criterion_group!(benches, handshake);
criterion_main!(benches);
