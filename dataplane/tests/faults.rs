//! I/O faults on the dataplane threads, with in-memory fds: a fatal TUN error
//! stops the pipeline with a recorded fault, a persistent transient error does
//! not make RX spin, and an ENOBUFS on send is retried.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use veil_dataplane::batch::{Action, Batch, Home, PacketMeta};
use veil_dataplane::fault::{IoOp, BACKOFF_MAX};
use veil_dataplane::io::{DatagramIo, PacketIo, SendTally};
use veil_dataplane::link::Epoch;
use veil_dataplane::pipeline::{self, PipelineConfig, Readiness, Shared, Waiter};
use veil_dataplane::stage::TxStage;

/// A socket whose every receive fails with `errno` (0: nothing to read).
struct FailingUdp {
    recv_errno: i32,
    recv_calls: AtomicUsize,
}

impl DatagramIo for FailingUdp {
    fn recv_batch(&self, _: &mut [Box<[u8]>], _: &mut [PacketMeta]) -> io::Result<usize> {
        self.recv_calls.fetch_add(1, Ordering::Relaxed);
        if self.recv_errno == 0 {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Err(io::Error::from_raw_os_error(self.recv_errno))
        }
    }
    fn send_batch(&self, p: &[&[u8]], _: &[SocketAddr], _: &mut SendTally) -> io::Result<usize> {
        Ok(p.len())
    }
    fn send_to(&self, pkt: &[u8], _: SocketAddr) -> io::Result<usize> {
        Ok(pkt.len())
    }
    fn wait_writable(&self, _: Duration) -> io::Result<bool> {
        Ok(true)
    }
}

/// A TUN device whose reads fail with `errno` (0: nothing to read).
struct FailingTun {
    read_errno: i32,
}

impl PacketIo for FailingTun {
    fn read_packet(&self, _: &mut [u8]) -> io::Result<usize> {
        if self.read_errno == 0 {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Err(io::Error::from_raw_os_error(self.read_errno))
        }
    }
    fn write_packet(&self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
}

/// Like a kernel fd in error state: poll returns at once. Sleeps only on the bell.
struct ImpatientWaiter;

impl Waiter for ImpatientWaiter {
    fn wait_io(&self, _: Duration) -> Readiness {
        Readiness::BOTH
    }
    fn wait_bell(&self, timeout: Duration) {
        std::thread::sleep(timeout);
    }
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared::new(Epoch::new(Instant::now()), || {}))
}

#[test]
fn deleted_tun_stops_rx_with_a_fault() {
    let shared = shared();
    let (rx, _crypto, _tx, _control) = pipeline::build(&PipelineConfig::default(), &shared);
    let udp = FailingUdp {
        recv_errno: 0,
        recv_calls: AtomicUsize::new(0),
    };
    let tun = FailingTun {
        read_errno: libc::EBADFD,
    };
    // Returns on its own: the stop flag is set by the fault, not by us.
    rx.run(&udp, &tun, &ImpatientWaiter, &shared);
    assert!(
        shared.stop.load(Ordering::SeqCst),
        "fault must stop every loop"
    );
    let fault = shared.fault.get().expect("a recorded fault");
    assert_eq!(fault.thread, "veil-rx");
    assert_eq!(fault.op, IoOp::TunRead);
    assert_eq!(fault.error.raw_os_error(), Some(libc::EBADFD));
}

#[test]
fn persistent_transient_error_backs_off_instead_of_spinning() {
    let shared = shared();
    let (rx, _crypto, _tx, _control) = pipeline::build(&PipelineConfig::default(), &shared);
    let udp = Arc::new(FailingUdp {
        recv_errno: libc::ENOBUFS,
        recv_calls: AtomicUsize::new(0),
    });
    let tun = FailingTun { read_errno: 0 };
    let (s, u) = (shared.clone(), udp.clone());
    let h = std::thread::spawn(move || rx.run(&*u, &tun, &ImpatientWaiter, &s));
    let run = Duration::from_millis(600);
    std::thread::sleep(run);
    shared.shutdown();
    h.join().unwrap();
    assert!(shared.fault.get().is_none(), "ENOBUFS is not fatal");
    let calls = udp.recv_calls.load(Ordering::Relaxed) as u64;
    let pauses = shared.rx.io_pauses.load(Ordering::Relaxed);
    let errors = shared.rx.io_errors.load(Ordering::Relaxed);
    // Without backoff this loop makes millions of calls; with it, the pauses
    // grow to BACKOFF_MAX, so a few dozen.
    let ceiling = 16 + run.as_millis() as u64 / BACKOFF_MAX.as_millis() as u64 * 2;
    assert!(
        calls <= ceiling,
        "{calls} receive calls in {run:?}: spinning"
    );
    assert_eq!(errors, calls, "every failed receive is counted");
    assert!(pauses >= 3, "only {pauses} pauses");
}

/// Refuses with ENOBUFS `refusals` times, then takes everything.
struct ShortOfBuffers {
    refusals: Cell<u32>,
    sent: AtomicU64,
}

impl DatagramIo for ShortOfBuffers {
    fn recv_batch(&self, _: &mut [Box<[u8]>], _: &mut [PacketMeta]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn send_batch(&self, p: &[&[u8]], _: &[SocketAddr], _: &mut SendTally) -> io::Result<usize> {
        if self.refusals.get() > 0 {
            self.refusals.set(self.refusals.get() - 1);
            return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
        }
        self.sent.fetch_add(p.len() as u64, Ordering::Relaxed);
        Ok(p.len())
    }
    fn send_to(&self, pkt: &[u8], _: SocketAddr) -> io::Result<usize> {
        Ok(pkt.len())
    }
    fn wait_writable(&self, _: Duration) -> io::Result<bool> {
        Ok(true)
    }
}

fn udp_batch(n: usize) -> Batch {
    let mut batch = Batch::new(Home::Rx, veil_dataplane::batch::buffer_size(1420));
    for i in 0..n {
        let (buf, meta) = batch.packet_mut(i).expect("room");
        buf[..32].fill(4);
        meta.offset = 0;
        meta.len = 32;
        meta.action = Action::Udp;
        meta.addr = SocketAddr::from(([192, 0, 2, 1], 51820));
    }
    batch.len = n;
    batch
}

#[test]
fn enobufs_on_send_is_retried_and_counted() {
    let shared = shared();
    let mut tx = TxStage::new(shared.tx.clone());
    // One refusal: the retry after the first pause is made whatever the clock says, so this
    // holds however long a loaded machine keeps the thread off its core during the pause
    // (with more refusals, a pause stretched past SEND_STALL_LIMIT would end the retries).
    let udp = ShortOfBuffers {
        refusals: Cell::new(1),
        sent: AtomicU64::new(0),
    };
    let tun = FailingTun { read_errno: 0 };
    tx.flush(&udp_batch(5), &udp, &tun);
    assert_eq!(
        udp.sent.load(Ordering::Relaxed),
        5,
        "all sent after the retry"
    );
    assert_eq!(shared.tx.udp_retries.load(Ordering::Relaxed), 1);
    assert_eq!(shared.tx.udp_datagrams.load(Ordering::Relaxed), 5);
    assert_eq!(shared.tx.udp_errors.load(Ordering::Relaxed), 0);
}

#[test]
fn persistent_enobufs_on_send_gives_up_after_the_stall_limit() {
    let shared = shared();
    let mut tx = TxStage::new(shared.tx.clone());
    let udp = ShortOfBuffers {
        refusals: Cell::new(u32::MAX),
        sent: AtomicU64::new(0),
    };
    let tun = FailingTun { read_errno: 0 };
    let start = Instant::now();
    tx.flush(&udp_batch(5), &udp, &tun);
    let took = start.elapsed();
    assert!(
        took >= veil_dataplane::stage::tx::SEND_STALL_LIMIT,
        "{took:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(
        shared.tx.udp_errors.load(Ordering::Relaxed),
        5,
        "dropped, counted"
    );
    // At least the retry after the first pause; at most what pauses growing from 20 µs to
    // 250 µs fit into the stall limit (about 15), with room: more means it spins. The number
    // between depends on how long the pauses really took, which a loaded machine stretches.
    let retries = shared.tx.udp_retries.load(Ordering::Relaxed);
    assert!(
        (1..=200).contains(&retries),
        "{retries} retries: not backing off"
    );
}
