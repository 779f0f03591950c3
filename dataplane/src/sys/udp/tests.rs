//! Unit tests of the UDP socket wrapper, on loopback.
use super::*;
use crate::sys::wait_readable;
use std::net::IpAddr;
use std::time::{Duration, Instant};

fn bind(addr: &str) -> UdpSocket {
    UdpSocket::bind(addr.parse().expect("socket address"), false).expect("bind")
}

/// Datagram `i` of a test batch: its own size and content.
fn datagram(i: usize) -> Vec<u8> {
    let len = 1 + i * 23;
    (0..len).map(|j| (i * 7 + j) as u8).collect()
}

/// Receive until `want` datagrams arrived (or 5 s passed): each one's bytes and meta.
fn recv_metas(sock: &UdpSocket, want: usize, buf_len: usize) -> Vec<(Vec<u8>, PacketMeta)> {
    let mut got = Vec::new();
    let mut bufs = vec![vec![0u8; buf_len]; BATCH_MAX];
    let mut metas = [PacketMeta::default(); BATCH_MAX];
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < want && Instant::now() < deadline {
        match sock.recv_batch(&mut bufs, &mut metas) {
            Ok(n) => {
                for (buf, m) in bufs.iter().zip(&metas).take(n) {
                    got.push((buf[..m.len].to_vec(), *m));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_readable(&[sock.as_fd()], Some(Duration::from_millis(100))).expect("poll");
            }
            Err(e) => panic!("recv_batch: {e}"),
        }
    }
    got
}

/// [`recv_metas`]: bytes, length and source.
fn recv_all(sock: &UdpSocket, want: usize, buf_len: usize) -> Vec<(Vec<u8>, usize, SocketAddr)> {
    recv_metas(sock, want, buf_len)
        .into_iter()
        .map(|(b, m)| (b, m.len, m.addr))
        .collect()
}

fn round_trip(rx_addr: &str, tx_addr: &str) {
    let rx = bind(rx_addr);
    let tx = bind(tx_addr);
    let pkts: Vec<Vec<u8>> = (0..64).map(datagram).collect();
    let dest = rx.local_addr().expect("rx addr");
    let dests = vec![dest; pkts.len()];
    let mut off = 0;
    while off < pkts.len() {
        match tx.send_batch(&pkts[off..], &dests[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                crate::sys::wait_writable(tx.as_fd(), Some(Duration::from_millis(100)))
                    .expect("poll");
            }
            Err(e) => panic!("send_batch: {e}"),
        }
    }
    assert_eq!(tx.send_errors(), 0);
    let got = recv_all(&rx, 64, 2048);
    assert_eq!(got.len(), 64);
    let from = tx.local_addr().expect("tx addr");
    for (i, (data, len, src)) in got.iter().enumerate() {
        assert_eq!(*len, pkts[i].len(), "datagram {i} length");
        assert_eq!(
            data, &pkts[i],
            "datagram {i} content (loopback keeps order)"
        );
        assert_eq!(*src, from);
    }
}

#[test]
fn batch_round_trip_v4() {
    round_trip("127.0.0.1:0", "127.0.0.1:0");
}

#[test]
fn batch_round_trip_v6() {
    if UdpSocket::bind("[::1]:0".parse().expect("addr"), false).is_err() {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    }
    round_trip("[::1]:0", "[::1]:0");
}

#[test]
fn dual_stack_reports_plain_v4_and_sends_to_it() {
    let rx = bind("[::]:0");
    assert!(rx.is_dual_stack());
    let port = rx.local_addr().expect("addr").port();
    let tx = bind("127.0.0.1:0");
    let tx_addr = tx.local_addr().expect("addr");
    let to: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    assert_eq!(tx.send_batch(&[b"hello"], &[to]).expect("send"), 1);
    let got = recv_all(&rx, 1, 1500);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, b"hello");
    assert_eq!(
        got[0].2, tx_addr,
        "a v4 peer is SocketAddr::V4, not ::ffff:127.0.0.1"
    );

    // Replies to a plain V4 address leave the v6 socket v4-mapped, both
    // batched and single.
    assert_eq!(rx.send_batch(&[b"batch"], &[tx_addr]).expect("send"), 1);
    assert_eq!(rx.send_to(b"single", tx_addr).expect("send_to"), 6);
    let got = recv_all(&tx, 2, 1500);
    let payloads: Vec<&[u8]> = got.iter().map(|g| g.0.as_slice()).collect();
    assert_eq!(payloads, vec![&b"batch"[..], &b"single"[..]]);
    assert_eq!(got[0].2, to);

    // A v4-mapped destination on a v4 socket is unmapped, too.
    let mapped = SocketAddr::V6(SocketAddrV6::new(
        Ipv4Addr::LOCALHOST.to_ipv6_mapped(),
        port,
        0,
        0,
    ));
    assert_eq!(tx.send_batch(&[b"mapped"], &[mapped]).expect("send"), 1);
    assert_eq!(recv_all(&rx, 1, 1500)[0].0, b"mapped");
}

#[test]
fn specific_v6_address_is_v6_only() {
    if let Ok(s) = UdpSocket::bind("[::1]:0".parse().expect("addr"), false) {
        assert!(!s.is_dual_stack());
    }
}

#[test]
fn truncated_datagram_has_length_zero() {
    let rx = bind("127.0.0.1:0");
    let tx = bind("127.0.0.1:0");
    let dest = rx.local_addr().expect("addr");
    let pkts = [vec![1u8; 100], vec![2u8; 2000], vec![3u8; 50]];
    assert_eq!(tx.send_batch(&pkts, &[dest; 3]).expect("send"), 3);
    let got = recv_all(&rx, 3, 1500);
    let lens: Vec<usize> = got.iter().map(|g| g.1).collect();
    assert_eq!(lens, vec![100, 0, 50]);

    assert_eq!(tx.send_to(&[9u8; 2000], dest).expect("send_to"), 2000);
    assert_eq!(tx.send_to(&[8u8; 10], dest).expect("send_to"), 10);
    wait_readable(&[rx.as_fd()], Some(Duration::from_secs(5))).expect("poll");
    let mut buf = [0u8; 1500];
    assert_eq!(
        rx.recv_from(&mut buf).expect("recv").0,
        0,
        "truncated single datagram"
    );
    wait_readable(&[rx.as_fd()], Some(Duration::from_secs(5))).expect("poll");
    let (n, from) = rx.recv_from(&mut buf).expect("recv");
    assert_eq!((n, from), (10, tx.local_addr().expect("addr")));
    assert_eq!(&buf[..10], &[8u8; 10]);
}

#[test]
fn empty_socket_would_block() {
    let rx = bind("127.0.0.1:0");
    let mut bufs = [[0u8; 64]; 4];
    let mut metas = [PacketMeta::default(); 4];
    let err = rx
        .recv_batch(&mut bufs, &mut metas)
        .expect_err("nothing queued");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    let err = rx.recv_from(&mut bufs[0]).expect_err("nothing queued");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    // Zero capacity is not an error.
    assert_eq!(rx.recv_batch(&mut bufs, &mut metas[..0]).expect("empty"), 0);
}

#[test]
fn bad_destinations_are_skipped_and_counted() {
    let rx = bind("127.0.0.1:0");
    let tx = bind("127.0.0.1:0");
    let good = rx.local_addr().expect("addr");
    // Port 0 is EINVAL; an IPv6 destination on an IPv4 socket is
    // EAFNOSUPPORT. Both are refused locally: nothing leaves the host.
    let port0 = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
    let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, good.port(), 0, 0));
    let pkts = [&b"a"[..], b"x", b"b", b"y", b"c"];
    let dests = [good, port0, good, v6, good];
    let out = tx.send_batch_outcome(&pkts, &dests).expect("send");
    assert_eq!(out.sent, 3);
    assert_eq!(out.failed, 2);
    assert_eq!(out.consumed(), 5);
    assert!(matches!(
        out.last_errno,
        Some(libc::EAFNOSUPPORT | libc::EINVAL)
    ));
    assert_eq!(tx.send_errors(), 2);
    let got: Vec<Vec<u8>> = recv_all(&rx, 3, 64).into_iter().map(|g| g.0).collect();
    assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);

    // A batch of only bad destinations is finished, not WouldBlock.
    assert_eq!(tx.send_batch(&[b"z"], &[port0]).expect("all skipped"), 1);
    assert_eq!(tx.send_errors(), 3);
    // The single-datagram path reports the error itself.
    assert_eq!(
        tx.send_to(b"z", port0).expect_err("port 0").raw_os_error(),
        Some(libc::EINVAL)
    );
}

#[test]
fn mismatched_slices_are_invalid_input() {
    let tx = bind("127.0.0.1:0");
    let dest = tx.local_addr().expect("addr");
    let err = tx.send_batch(&[b"a", b"b"], &[dest]).expect_err("mismatch");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(tx.send_batch::<&[u8]>(&[], &[]).expect("empty"), 0);
}

#[test]
fn oversized_batches_are_capped() {
    let rx = bind("127.0.0.1:0");
    rx.set_buffer_sizes(1 << 20).expect("buffers");
    let tx = bind("127.0.0.1:0");
    let dest = rx.local_addr().expect("addr");
    let pkts = vec![[7u8; 16]; BATCH_MAX + 10];
    let dests = vec![dest; pkts.len()];
    assert_eq!(tx.send_batch(&pkts, &dests).expect("send"), BATCH_MAX);
    let mut bufs = vec![[0u8; 32]; BATCH_MAX + 10];
    let mut metas = vec![PacketMeta::default(); BATCH_MAX + 10];
    wait_readable(&[rx.as_fd()], Some(Duration::from_secs(5))).expect("poll");
    let n = rx.recv_batch(&mut bufs, &mut metas).expect("recv");
    assert!(n > 0 && n <= BATCH_MAX);
}

#[test]
fn gso_sends_runs_as_one_message_and_arrives_as_datagrams() {
    let rx = bind("127.0.0.1:0");
    rx.set_buffer_sizes(1 << 20).expect("buffers");
    let tx = bind("127.0.0.1:0");
    if !tx.enable_gso() {
        eprintln!("skipped: no UDP_SEGMENT on this kernel");
        return;
    }
    let dest = rx.local_addr().expect("addr");
    let other = tx.local_addr().expect("addr");
    // A run of 10 to `dest` (the last shorter), one to another destination, then 3 more.
    let mut pkts: Vec<Vec<u8>> = (0..10).map(|i| vec![i as u8; 1200]).collect();
    pkts[9].truncate(700);
    pkts.push(vec![99; 1200]);
    pkts.extend((0..3).map(|i| vec![50 + i as u8; 300]));
    let mut dests = vec![dest; 10];
    dests.push(other);
    dests.extend([dest; 3]);
    let out = tx.send_batch_outcome(&pkts, &dests).expect("send");
    assert_eq!((out.sent, out.failed), (14, 0));
    assert_eq!((out.gso_messages, out.gso_datagrams), (2, 13));
    assert!(tx.gso());
    let got = recv_all(&rx, 13, 2048);
    let want: Vec<Vec<u8>> = pkts
        .iter()
        .zip(&dests)
        .filter(|(_, d)| **d == dest)
        .map(|(p, _)| p.clone())
        .collect();
    let got: Vec<Vec<u8>> = got.into_iter().map(|g| g.0).collect();
    assert_eq!(
        got, want,
        "each segment arrives as its own datagram, in order"
    );
    assert_eq!(recv_all(&tx, 1, 2048)[0].0, vec![99; 1200]);
}

#[test]
fn gro_receives_a_run_whole_with_its_segment_size() {
    let rx = bind("127.0.0.1:0");
    let tx = bind("127.0.0.1:0");
    if !tx.enable_gso() || !rx.enable_gro() {
        eprintln!("skipped: no UDP_SEGMENT / UDP_GRO on this kernel");
        return;
    }
    let dest = rx.local_addr().expect("addr");
    let mut pkts: Vec<Vec<u8>> = (0..8).map(|i| vec![i as u8; 1000]).collect();
    pkts[7].truncate(300);
    let out = tx.send_batch_outcome(&pkts, &[dest; 8]).expect("send");
    assert_eq!((out.sent, out.gso_messages), (8, 1));
    wait_readable(&[rx.as_fd()], Some(Duration::from_secs(5))).expect("poll");
    let mut bufs = vec![vec![0u8; 65535]; 2];
    let mut metas = [PacketMeta::default(); 2];
    let n = rx.recv_batch(&mut bufs, &mut metas).expect("recv");
    assert_eq!(n, 1, "one coalesced datagram");
    assert_eq!((metas[0].len, metas[0].segment), (7300, 1000));
    assert_eq!(metas[0].addr, tx.local_addr().expect("addr"));
    let want: Vec<u8> = pkts.concat();
    assert_eq!(&bufs[0][..7300], &want[..]);
}

#[test]
fn buffer_sizes_and_reuse_port() {
    let a = UdpSocket::bind("127.0.0.1:0".parse().expect("addr"), true).expect("bind");
    let (rcv, snd) = a.set_buffer_sizes(4 << 20).expect("buffers");
    assert!(rcv > 0 && snd > 0);
    if nix::unistd::geteuid().is_root() {
        // The FORCE options apply past rmem_max; the kernel doubles the request.
        assert!(rcv >= 4 << 20 && snd >= 4 << 20, "got {rcv}/{snd}");
    }
    let port = a.local_addr().expect("addr").port();
    let same = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let b = UdpSocket::bind(same, true).expect("second SO_REUSEPORT socket on the same port");
    assert_eq!(b.local_addr().expect("addr"), same);
    let err = UdpSocket::bind(same, false).expect_err("port taken without SO_REUSEPORT");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
}

/// [`recv_metas`]: bytes, source and local address.
fn recv_local(sock: &UdpSocket, want: usize) -> Vec<(Vec<u8>, SocketAddr, Option<LocalAddr>)> {
    recv_metas(sock, want, 65535)
        .into_iter()
        .map(|(b, m)| (b, m.addr, m.local))
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// A server bound to the unspecified address on a host with two addresses (127.0.0.1 and
/// 127.0.0.2, both on lo): the client talks to the second, and every reply (batched, GSO,
/// single) comes from the second too, not from the address the kernel would pick (the first).
fn replies_leave_from_the_address_the_client_used(server: &str) {
    let rx = bind(server);
    assert!(rx.sticky(), "the socket reports local addresses");
    let port = rx.local_addr().expect("addr").port();
    let client = bind("127.0.0.1:0");
    let second = SocketAddr::new(ip("127.0.0.2"), port);
    assert_eq!(client.send_to(b"hello", second).expect("send"), 5);
    let got = recv_local(&rx, 1);
    assert_eq!(got.len(), 1);
    let (_, from, local) = got[0].clone();
    let local = local.expect("the local address of the datagram");
    assert_eq!(local.ip, ip("127.0.0.2"));
    assert!(local.ifindex > 0, "lo's index");

    let gso = rx.enable_gso();
    let pkts: Vec<Vec<u8>> = (0..4).map(|i| vec![i as u8; 500]).collect();
    let out = rx
        .send_batch_from(&pkts, &[from; 4], &[Some(local); 4])
        .expect("send");
    assert_eq!((out.sent, out.failed), (4, 0));
    if gso {
        assert_eq!(out.gso_messages, 1, "one source: still one GSO message");
    }
    rx.send_to_from(b"single", from, Some(local))
        .expect("send_to");
    // Without a source the kernel picks the first address: the check above can fail.
    rx.send_to(b"picked", from).expect("send_to");
    let got = recv_local(&client, 6);
    assert_eq!(got.len(), 6);
    for (data, src, _) in &got[..5] {
        assert_eq!(*src, second, "{} bytes came from {src}", data.len());
    }
    assert_eq!(got[5].1, SocketAddr::new(ip("127.0.0.1"), port));
}

#[test]
fn sticky_source_v4() {
    replies_leave_from_the_address_the_client_used("0.0.0.0:0");
}

#[test]
fn sticky_source_dual_stack() {
    replies_leave_from_the_address_the_client_used("[::]:0");
}

#[test]
fn sticky_source_v6_and_with_gro() {
    if UdpSocket::bind("[::1]:0".parse().expect("addr"), false).is_err() {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    }
    let rx = bind("[::]:0");
    let gro = rx.enable_gro();
    let port = rx.local_addr().expect("addr").port();
    let client = bind("[::1]:0");
    let gso = client.enable_gso();
    let to = SocketAddr::new(ip("::1"), port);
    let pkts: Vec<Vec<u8>> = (0..4).map(|i| vec![i as u8; 800]).collect();
    client.send_batch(&pkts, &[to; 4]).expect("send");
    let got = recv_local(&rx, 1);
    assert!(!got.is_empty());
    if gro && gso {
        assert_eq!(
            got[0].0.len(),
            3200,
            "coalesced, and the local address still read"
        );
    }
    let local = got[0].2.expect("local address");
    assert_eq!(local.ip, ip("::1"));
    rx.send_to_from(b"back", got[0].1, Some(local))
        .expect("send");
    assert_eq!(recv_local(&client, 1)[0].1, to);
}

#[test]
fn a_source_that_is_gone_is_sent_without_then_forgotten_when_it_answers() {
    let rx = bind("0.0.0.0:0");
    let port = rx.local_addr().expect("addr").port();
    let client = bind("127.0.0.1:0");
    let dest = client.local_addr().expect("addr");
    // TEST-NET-1: not an address of this host; the kernel refuses it as a source (EINVAL).
    let gone = LocalAddr {
        ip: ip("192.0.2.77"),
        ifindex: 0,
    };
    let out = rx
        .send_batch_from(&[b"one", b"two"], &[dest; 2], &[Some(gone); 2])
        .expect("send");
    assert_eq!((out.sent, out.failed), (2, 0), "{out:?}");
    assert_eq!(
        rx.send_to_from(b"three", dest, Some(gone)).expect("send"),
        5
    );
    let got = recv_local(&client, 3);
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|g| g.1.port() == port));
    assert_eq!(rx.gone_sources()[0], Some(gone.ip));

    // An address comes back when a datagram arrives on it.
    rx.mark_gone(ip("127.0.0.2"));
    client
        .send_to(b"back", SocketAddr::new(ip("127.0.0.2"), port))
        .expect("send");
    assert_eq!(recv_local(&rx, 1).len(), 1);
    assert_eq!(
        rx.gone_sources(),
        [Some(gone.ip), None, None, None, None, None, None, None]
    );
}

#[test]
fn a_source_of_the_other_family_is_not_used() {
    let rx = bind("[::]:0");
    let client = bind("127.0.0.1:0");
    let dest = client.local_addr().expect("addr");
    let v6 = LocalAddr {
        ip: ip("::1"),
        ifindex: 0,
    };
    assert_eq!(rx.send_to_from(b"x", dest, Some(v6)).expect("send"), 1);
    assert_eq!(recv_local(&client, 1).len(), 1);
    assert_eq!(rx.gone_sources()[0], None, "not taken for a gone address");
}
