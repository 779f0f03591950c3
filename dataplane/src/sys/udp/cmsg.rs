//! The control messages of the UDP socket: read on receive (`UDP_GRO`'s segment size, the
//! `IP_PKTINFO` / `IPV6_PKTINFO` local address) and written on send (`UDP_SEGMENT`, and the
//! same packet-info messages to choose the source address).
//!
//! Both buffers are plain bytes, 8-aligned like `cmsghdr`; headers and payloads are read and
//! written with unaligned copies, so nothing here needs more than the bounds it checks.

use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::batch::LocalAddr;

/// `UDP_SEGMENT` (linux/udp.h): the GSO segment size, as a socket option or a control message.
pub(super) const UDP_SEGMENT: libc::c_int = 103;
/// `UDP_GRO` (linux/udp.h): coalesce on receive; the control message carries the segment size.
pub(super) const UDP_GRO: libc::c_int = 104;

const HDR: usize = mem::size_of::<libc::cmsghdr>();
const ALIGN: usize = mem::size_of::<usize>();

/// `CMSG_ALIGN`.
const fn align(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// `CMSG_SPACE(data)`.
const fn space(data: usize) -> usize {
    align(HDR) + align(data)
}

/// Room for what the kernel may attach to one received datagram: the `UDP_GRO` segment size
/// and one packet-info message (the IPv6 one is the larger), with room to spare.
const RECV_ROOM: usize = space(mem::size_of::<libc::c_int>())
    + space(mem::size_of::<libc::in6_pktinfo>())
    + space(mem::size_of::<libc::in_pktinfo>());

/// Room for what veil attaches to one message it sends: `UDP_SEGMENT` and one packet-info.
const SEND_ROOM: usize = space(mem::size_of::<u16>()) + space(mem::size_of::<libc::in6_pktinfo>());

/// The control buffer of one received datagram.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub(super) struct RecvCmsg {
    bytes: [u8; RECV_ROOM],
}

/// What the control messages of one received datagram said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Received {
    /// `UDP_GRO`'s segment size; 0 when the datagram was not coalesced.
    pub segment: usize,
    /// The local address the datagram arrived on.
    pub local: Option<LocalAddr>,
}

impl RecvCmsg {
    pub(super) const ZERO: RecvCmsg = RecvCmsg {
        bytes: [0; RECV_ROOM],
    };

    pub(super) const LEN: usize = RECV_ROOM;

    pub(super) fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        self.bytes.as_mut_ptr().cast()
    }

    /// Read the `len` bytes of control messages the kernel wrote (`msg_controllen`).
    pub(super) fn parse(&self, len: usize) -> Received {
        let mut out = Received::default();
        let bytes = self.bytes.get(..len.min(RECV_ROOM)).unwrap_or_default();
        let mut off = 0;
        while let Some(head) = bytes.get(off..off + HDR) {
            // SAFETY: `head` is HDR = size_of::<cmsghdr>() initialised bytes (the buffer is
            // zeroed at first and the kernel wrote the first `len`); cmsghdr is plain
            // integers, and read_unaligned needs no alignment.
            let h = unsafe { std::ptr::read_unaligned(head.as_ptr().cast::<libc::cmsghdr>()) };
            // cmsg_len is a size_t on glibc, a socklen_t on musl: never wider than usize.
            let clen = h.cmsg_len as usize;
            if clen < HDR || clen > bytes.len() - off {
                break;
            }
            let data = bytes.get(off + align(HDR)..off + clen).unwrap_or_default();
            match (h.cmsg_level, h.cmsg_type) {
                (libc::SOL_UDP, UDP_GRO) => {
                    if let Some(v) = data.get(..4) {
                        let v = i32::from_ne_bytes([v[0], v[1], v[2], v[3]]);
                        out.segment = usize::try_from(v).unwrap_or(0);
                    }
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    out.local = v4_pktinfo(data).or(out.local);
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    out.local = v6_pktinfo(data).or(out.local);
                }
                _ => {}
            }
            off += align(clen);
        }
        out
    }
}

/// `in_pktinfo`: the local address is `ipi_spec_dst` (what wireguard-go keeps too).
fn v4_pktinfo(data: &[u8]) -> Option<LocalAddr> {
    if data.len() < mem::size_of::<libc::in_pktinfo>() {
        return None;
    }
    // SAFETY: `data` holds at least one in_pktinfo (checked), plain integers; unaligned read.
    let info = unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<libc::in_pktinfo>()) };
    let ip = Ipv4Addr::from(info.ipi_spec_dst.s_addr.to_ne_bytes());
    (!ip.is_unspecified()).then(|| LocalAddr {
        ip: IpAddr::V4(ip),
        ifindex: u32::try_from(info.ipi_ifindex).unwrap_or(0),
    })
}

/// `in6_pktinfo`; an IPv4 datagram on a dual-stack socket reports a v4-mapped address, which
/// is given back plain.
fn v6_pktinfo(data: &[u8]) -> Option<LocalAddr> {
    if data.len() < mem::size_of::<libc::in6_pktinfo>() {
        return None;
    }
    // SAFETY: `data` holds at least one in6_pktinfo (checked), plain bytes and integers;
    // unaligned read.
    let info = unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<libc::in6_pktinfo>()) };
    let ip6 = Ipv6Addr::from(info.ipi6_addr.s6_addr);
    let ip = match ip6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(ip6),
    };
    (!ip.is_unspecified()).then_some(LocalAddr {
        ip,
        ifindex: info.ipi6_ifindex,
    })
}

/// The control buffer of one message to send.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub(super) struct SendCmsg {
    bytes: [u8; SEND_ROOM],
}

impl SendCmsg {
    pub(super) const ZERO: SendCmsg = SendCmsg {
        bytes: [0; SEND_ROOM],
    };

    pub(super) fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        self.bytes.as_mut_ptr().cast()
    }

    /// Write a `UDP_SEGMENT` message if `segment` is given, and a packet-info message naming
    /// `src` as the source if it is given (`v6_socket`: how the socket takes an IPv4 source;
    /// both kinds work on a dual-stack socket, only `IP_PKTINFO` on an IPv4 one). Returns
    /// the bytes used (`msg_controllen`; 0: no control message).
    pub(super) fn build(&mut self, segment: Option<u16>, src: Option<LocalAddr>) -> usize {
        let mut off = 0;
        if let Some(size) = segment {
            off += self.put(off, libc::SOL_UDP, UDP_SEGMENT, &size.to_ne_bytes());
        }
        match src.map(|s| (s.ip, s.ifindex)) {
            Some((IpAddr::V4(ip), _)) => {
                let info = libc::in_pktinfo {
                    // 0: routing picks the interface, as the kernel's WireGuard does.
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from_ne_bytes(ip.octets()),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                // SAFETY: in_pktinfo is plain integers with no padding; viewing it as bytes
                // for its size is sound.
                let raw = unsafe { as_bytes(&info) };
                off += self.put(off, libc::IPPROTO_IP, libc::IP_PKTINFO, raw);
            }
            Some((IpAddr::V6(ip), ifindex)) => {
                let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: if link_local { ifindex } else { 0 },
                };
                // SAFETY: in6_pktinfo is 16 bytes then a u32, no padding; viewing it as
                // bytes for its size is sound.
                let raw = unsafe { as_bytes(&info) };
                off += self.put(off, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, raw);
            }
            None => {}
        }
        off
    }

    /// Write one control message at `off`; returns its `CMSG_SPACE`.
    fn put(&mut self, off: usize, level: libc::c_int, kind: libc::c_int, data: &[u8]) -> usize {
        let used = space(data.len());
        let Some(slot) = self.bytes.get_mut(off..off + used) else {
            return 0;
        };
        slot.fill(0);
        let hdr = libc::cmsghdr {
            // CMSG_LEN(data): the (aligned) header, then the data.
            cmsg_len: (align(HDR) + data.len()) as _,
            cmsg_level: level,
            cmsg_type: kind,
        };
        // SAFETY: cmsghdr is plain integers without padding on Linux (size_t + 2 ints).
        slot[..HDR].copy_from_slice(unsafe { as_bytes(&hdr) });
        slot[align(HDR)..align(HDR) + data.len()].copy_from_slice(data);
        used
    }
}

/// The bytes of a plain C struct.
///
/// # Safety
/// `T` must have no padding bytes (every byte of a value is initialised).
unsafe fn as_bytes<T>(v: &T) -> &[u8] {
    // SAFETY: `v` is a live reference, valid for size_of::<T>() bytes of reads, and the
    // caller promises every one of them is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), mem::size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(segment: Option<u16>, src: Option<LocalAddr>) -> Received {
        let mut out = SendCmsg::ZERO;
        let len = out.build(segment, src);
        // What the kernel reads on send, read back as if it had come on receive (the packet
        // info messages have the same layout both ways; UDP_SEGMENT is a u16, UDP_GRO an int,
        // so only check the source here).
        let mut inn = RecvCmsg::ZERO;
        inn.bytes[..len].copy_from_slice(&out.bytes[..len]);
        inn.parse(len)
    }

    #[test]
    fn packet_info_is_written_and_read_back() {
        let v4 = LocalAddr {
            ip: "192.0.2.7".parse().expect("ip"),
            ifindex: 3,
        };
        // An IPv4 source goes without its interface.
        assert_eq!(
            round_trip(Some(1400), Some(v4)).local,
            Some(LocalAddr { ifindex: 0, ..v4 })
        );
        let global = LocalAddr {
            ip: "2001:db8::7".parse().expect("ip"),
            ifindex: 3,
        };
        assert_eq!(
            round_trip(None, Some(global)).local,
            Some(LocalAddr {
                ifindex: 0,
                ..global
            })
        );
        let link = LocalAddr {
            ip: "fe80::7".parse().expect("ip"),
            ifindex: 3,
        };
        assert_eq!(round_trip(Some(100), Some(link)).local, Some(link));
        assert_eq!(round_trip(Some(100), None).local, None);
        let mut none = SendCmsg::ZERO;
        assert_eq!(none.build(None, None), 0);
    }

    #[test]
    fn garbage_control_bytes_are_ignored() {
        let mut c = RecvCmsg::ZERO;
        // A header claiming more than the buffer, then one claiming less than a header.
        c.bytes.fill(0xff);
        assert_eq!(c.parse(RECV_ROOM), Received::default());
        c.bytes.fill(0);
        c.bytes[0] = 3;
        assert_eq!(c.parse(RECV_ROOM), Received::default());
        assert_eq!(c.parse(usize::MAX), Received::default());
    }
}
