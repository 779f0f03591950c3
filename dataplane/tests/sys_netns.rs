//! TUN + rtnetlink tests. They need root and /dev/net/tun and otherwise
//! print `skipped: <reason>` and pass.
//!
//! Each test runs its body on a dedicated thread that first moves itself into
//! a fresh network namespace (`unshare(CLONE_NEWNET)` affects only the calling
//! thread), so nothing it creates is visible on the host and the namespace,
//! with its TUN devices, vanishes when the thread ends. Every socket and
//! netlink handle is created on that thread, so they live in that namespace.
//! The only traffic is between a UDP socket and a TUN fd inside it.
#![cfg(target_os = "linux")]

use std::fs::OpenOptions;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sched::{unshare, CloneFlags};
use veil_dataplane::sys::{wait_readable, Netlink, Tun, UdpSocket};

const TUN_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const ROUTED_V4: Ipv4Addr = Ipv4Addr::new(10, 78, 1, 2);
const TUN_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
const ROUTE_V4: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 0);

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (CAP_NET_ADMIN) for TUN devices and network namespaces".into());
    }
    if let Err(e) = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        return Some(format!("/dev/net/tun cannot be opened: {e}"));
    }
    None
}

/// Run `body` on a new thread inside a new, empty network namespace.
fn in_fresh_netns(body: impl FnOnce() + Send + 'static) {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let thread = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET)?;
        body();
        Ok::<(), nix::Error>(())
    });
    match thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("skipped: unshare(CLONE_NEWNET) failed: {e}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Give `ifindex` the test addresses and route, MTU 1420, up.
fn configure(nl: &Netlink, ifindex: u32) {
    nl.set_mtu(ifindex, 1420).expect("set MTU");
    nl.add_address(ifindex, IpAddr::V4(TUN_V4), 24)
        .expect("add 10.77.0.1/24");
    nl.add_address(ifindex, IpAddr::V6(TUN_V6), 64)
        .expect("add fd77::1/64");
    nl.set_up(ifindex).expect("set up");
    nl.add_route(ifindex, IpAddr::V4(ROUTE_V4), 16)
        .expect("add 10.78.0.0/16");
}

/// Read packets from any of `queues` until one satisfies `want`, for up to 5 s.
fn read_until(queues: &[&Tun], want: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let fds: Vec<_> = queues.iter().map(|q| q.as_fd()).collect();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let ready = wait_readable(&fds, Some(Duration::from_millis(100))).expect("poll TUN");
        for (i, q) in queues.iter().enumerate() {
            if !ready.is_readable(i) {
                continue;
            }
            match q.read(&mut buf) {
                Ok(n) if want(&buf[..n]) => return Some(buf[..n].to_vec()),
                // Something else (e.g. IPv6 router solicitations): keep reading.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("TUN read: {e}"),
            }
        }
    }
    None
}

/// An IPv4/UDP packet to `dst` carrying `payload`?
fn is_udp4_to(pkt: &[u8], dst: Ipv4Addr, payload: &[u8]) -> bool {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 || pkt[9] != 17 {
        return false;
    }
    let ihl = usize::from(pkt[0] & 0xf) * 4;
    pkt[16..20] == dst.octets() && pkt.get(ihl + 8..) == Some(payload)
}

/// An IPv6/UDP packet (no extension headers) to `dst` carrying `payload`?
fn is_udp6_to(pkt: &[u8], dst: Ipv6Addr, payload: &[u8]) -> bool {
    pkt.len() >= 48
        && pkt[0] >> 4 == 6
        && pkt[6] == 17
        && pkt[24..40] == dst.octets()
        && &pkt[48..] == payload
}

fn checksum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum_words(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// An IPv4/UDP packet as a peer behind the tunnel would send it (UDP checksum 0: allowed in v4).
fn udp4_packet(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let csum = checksum_fold(sum_words(&p));
    p[10..12].copy_from_slice(&csum.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// An IPv6/UDP packet with its (mandatory) UDP checksum.
fn udp6_packet(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = (8 + payload.len()) as u16;
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let pseudo = sum_words(&src.octets()) + sum_words(&dst.octets()) + u32::from(udp_len) + 17;
    let csum = checksum_fold(pseudo + sum_words(&udp));
    udp[6..8].copy_from_slice(&csum.to_be_bytes());

    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&udp);
    p
}

/// Write `pkt` into `tun` until `sock` receives it (up to 5 s); returns the
/// payload and source. Rewriting covers the moment after link-up when the
/// kernel has not yet installed the local route for a new IPv6 address (it
/// does that from a workqueue) and drops the packet as not addressed to us.
fn deliver(tun: &Tun, pkt: &[u8], sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        assert_eq!(tun.write(pkt).expect("TUN write"), pkt.len());
        let wait_until = Instant::now() + Duration::from_millis(50);
        while Instant::now() < wait_until {
            wait_readable(&[sock.as_fd()], Some(Duration::from_millis(10))).expect("poll UDP");
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => return (buf[..n].to_vec(), from),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("recv_from: {e}"),
            }
        }
    }
    panic!("a packet written to the TUN never reached the socket within 5 s");
}

/// Interface names disappear asynchronously-but-promptly after the last fd closes.
fn assert_gone(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while nix::net::if_::if_nametoindex(name).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{name} still exists after its fds were closed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn tun_configured_over_netlink_carries_traffic() {
    in_fresh_netns(|| {
        let tun = Tun::create("veiltest0").expect("create TUN");
        assert_eq!(tun.name(), "veiltest0");
        let idx = tun.ifindex();
        let nl = Netlink::new().expect("netlink socket");
        configure(&nl, idx);
        // Adding what exists already is success.
        nl.add_address(idx, IpAddr::V4(TUN_V4), 24)
            .expect("re-add address");
        nl.add_route(idx, IpAddr::V4(ROUTE_V4), 16)
            .expect("re-add route");

        let link = nl.link(idx).expect("RTM_GETLINK");
        assert_eq!(
            (link.ifindex, link.name.as_str(), link.mtu, link.up),
            (idx, "veiltest0", 1420, true)
        );

        // The addresses as getifaddrs(3) sees them (it asks netlink too, but not our code).
        let addrs: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
            .expect("getifaddrs")
            .filter(|a| a.interface_name == "veiltest0")
            .filter_map(|a| {
                let a = a.address?;
                a.as_sockaddr_in()
                    .map(|s| IpAddr::V4(s.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
            })
            .collect();
        assert!(addrs.contains(&IpAddr::V4(TUN_V4)), "{addrs:?}");
        assert!(addrs.contains(&IpAddr::V6(TUN_V6)), "{addrs:?}");

        // Out through the TUN: a datagram to the on-link peer proves address
        // and link state; one into 10.78/16 proves the route.
        let sock = UdpSocket::bind("0.0.0.0:0".parse().expect("addr"), false).expect("bind v4");
        for (dst, payload) in [
            (PEER_V4, &b"to the peer"[..]),
            (ROUTED_V4, &b"via the route"[..]),
        ] {
            sock.send_to(payload, SocketAddr::new(IpAddr::V4(dst), 5555))
                .expect("send into the tunnel");
            let pkt = read_until(&[&tun], |p| is_udp4_to(p, dst, payload))
                .unwrap_or_else(|| panic!("no IPv4 packet to {dst} on the TUN"));
            assert_eq!(pkt[12..16], TUN_V4.octets(), "source is the TUN address");
        }

        // IPv6, through a dual-stack socket (usable at once: added without DAD).
        let sock6 = UdpSocket::bind("[::]:0".parse().expect("addr"), false).expect("bind v6");
        sock6
            .send_to(b"v6 peer", SocketAddr::new(IpAddr::V6(PEER_V6), 5555))
            .expect("send v6");
        let pkt = read_until(&[&tun], |p| is_udp6_to(p, PEER_V6, b"v6 peer"))
            .expect("IPv6 packet on the TUN");
        assert_eq!(pkt[8..24], TUN_V6.octets());

        // In through the TUN: packets written to it reach local sockets.
        let port = sock.local_addr().expect("addr").port();
        let port6 = sock6.local_addr().expect("addr").port();
        for (to, pkt, want) in [
            (
                &sock,
                udp4_packet(PEER_V4, 4000, TUN_V4, port, b"from the peer"),
                (
                    b"from the peer".to_vec(),
                    SocketAddr::new(IpAddr::V4(PEER_V4), 4000),
                ),
            ),
            (
                &sock6,
                udp6_packet(PEER_V6, 4001, TUN_V6, port6, b"from the v6 peer"),
                (
                    b"from the v6 peer".to_vec(),
                    SocketAddr::new(IpAddr::V6(PEER_V6), 4001),
                ),
            ),
        ] {
            assert_eq!(deliver(&tun, &pkt, to), want);
        }

        // Deleting the route makes its destinations unreachable; a second
        // delete reports the missing route.
        nl.delete_route(idx, IpAddr::V4(ROUTE_V4), 16)
            .expect("delete route");
        let err = sock
            .send_to(b"x", SocketAddr::new(IpAddr::V4(ROUTED_V4), 5555))
            .expect_err("no route");
        assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
        let err = nl
            .delete_route(idx, IpAddr::V4(ROUTE_V4), 16)
            .expect_err("already deleted");
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH), "{err}");

        // IPv6 routes too.
        let v6_net = IpAddr::V6(Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 0));
        nl.add_route(idx, v6_net, 48).expect("add fd78::/48");
        let dst6 = Ipv6Addr::new(0xfd78, 0, 0, 1, 0, 0, 0, 9);
        sock6
            .send_to(b"routed v6", SocketAddr::new(IpAddr::V6(dst6), 5555))
            .expect("send v6 via route");
        assert!(read_until(&[&tun], |p| is_udp6_to(p, dst6, b"routed v6")).is_some());
        nl.delete_route(idx, v6_net, 48).expect("delete fd78::/48");

        nl.set_down(idx).expect("set down");
        assert!(!nl.link(idx).expect("link").up);

        drop(tun);
        assert_gone("veiltest0");
    });
}

#[test]
fn multiqueue_tun_has_two_working_queues() {
    in_fresh_netns(|| {
        let queues = Tun::create_multiqueue("veilmq%d", 2).expect("create multi-queue TUN");
        assert_eq!(queues.len(), 2);
        let name = queues[0].name().to_owned();
        assert!(name.starts_with("veilmq"), "{name}");
        assert_eq!(queues[1].name(), name);
        assert_eq!(queues[0].ifindex(), queues[1].ifindex());
        let nl = Netlink::new().expect("netlink socket");
        configure(&nl, queues[0].ifindex());

        // Each queue is attached: a packet written to either reaches the socket.
        let sock = UdpSocket::bind("0.0.0.0:0".parse().expect("addr"), false).expect("bind");
        let port = sock.local_addr().expect("addr").port();
        for (i, q) in queues.iter().enumerate() {
            let payload = format!("via queue {i}");
            let pkt = udp4_packet(PEER_V4, 4000 + i as u16, TUN_V4, port, payload.as_bytes());
            let (got, from) = deliver(q, &pkt, &sock);
            assert_eq!(got, payload.as_bytes());
            assert_eq!(from.port(), 4000 + i as u16);
        }

        // Outgoing flows are spread over the queues; every one arrives on some queue.
        let all: Vec<&Tun> = queues.iter().collect();
        for flow in 0..8u16 {
            let s = UdpSocket::bind("0.0.0.0:0".parse().expect("addr"), false).expect("bind");
            let payload = format!("flow {flow}");
            s.send_to(
                payload.as_bytes(),
                SocketAddr::new(IpAddr::V4(PEER_V4), 6000 + flow),
            )
            .expect("send");
            assert!(
                read_until(&all, |p| is_udp4_to(p, PEER_V4, payload.as_bytes())).is_some(),
                "flow {flow}"
            );
        }

        // The interface lives while any queue is open.
        let mut queues = queues;
        drop(queues.remove(0));
        assert!(
            nix::net::if_::if_nametoindex(name.as_str()).is_ok(),
            "one queue still open"
        );
        drop(queues);
        assert_gone(&name);
    });
}

#[test]
fn kernel_errors_surface_as_errno() {
    in_fresh_netns(|| {
        let tun = Tun::create("veil%d").expect("create with a pattern");
        assert!(
            tun.name().starts_with("veil") && tun.name() != "veil%d",
            "{}",
            tun.name()
        );
        // A second single-queue open of a busy name is refused.
        let err = Tun::create(tun.name()).expect_err("name in use");
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");

        let nl = Netlink::new().expect("netlink socket");
        let missing = tun.ifindex() + 1000;
        let err = nl.set_mtu(missing, 1400).expect_err("no such interface");
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{err}");
        assert!(nl.add_route(missing, IpAddr::V4(ROUTE_V4), 16).is_err());
        assert!(nl.link(missing).is_err());
        // MTU below the IPv4 minimum on a device carrying IPv4 is EINVAL.
        nl.add_address(tun.ifindex(), IpAddr::V4(TUN_V4), 24)
            .expect("address");
        let err = nl.set_mtu(tun.ifindex(), 10).expect_err("tiny MTU");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
        // The socket still works after errors (sequence numbers stay in step).
        nl.set_mtu(tun.ifindex(), 1400).expect("valid MTU");
        assert_eq!(nl.link(tun.ifindex()).expect("link").mtu, 1400);
    });
}
