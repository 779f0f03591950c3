//! rtnetlink: bring the TUN interface up and give it addresses and routes.
//!
//! One `NETLINK_ROUTE` socket, one request at a time, each sent with
//! `NLM_F_ACK` and answered by the kernel's ACK (or errno) before the call
//! returns, so a call that returns `Ok` has taken effect. Messages are encoded
//! by hand into a stack buffer with native-endian integers (netlink is
//! host-endian); the few requests we need do not justify a netlink crate.
//!
//! The socket belongs to the network namespace of the thread that called
//! [`Netlink::new`]; all requests act on that namespace.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::{cvt, cvt_size, setsockopt_int, socklen_of};

/// How long to wait for the kernel's answer. rtnetlink answers in
/// microseconds; this only bounds a wedged kernel or a lost reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

const NLMSG_HDR_LEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
/// `struct rtmsg` and `struct fib_rule_hdr` are both 12 bytes.
const RTMSG_BODY_LEN: usize = 12;
const RTATTR_HDR_LEN: usize = 4;

// Attribute types from <linux/if_link.h>; libc exposes them only as an enum.
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;

// Header flags, narrowed once here to the `u16` the header carries.
const NLM_F_REQUEST: u16 = libc::NLM_F_REQUEST as u16;
const NLM_F_ACK: u16 = libc::NLM_F_ACK as u16;
const NLM_F_EXCL: u16 = libc::NLM_F_EXCL as u16;
const NLM_F_CREATE: u16 = libc::NLM_F_CREATE as u16;
const NLM_F_DUMP: u16 = libc::NLM_F_DUMP as u16;
const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;

/// What the kernel reports about one interface ([`Netlink::link`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name.
    pub name: String,
    /// Current MTU.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// All `IFF_*` flags as the kernel reports them.
    pub flags: u32,
}

/// A `NETLINK_ROUTE` socket for configuring interfaces.
///
/// Not `Sync`: the sequence counter assumes one request in flight. Create one
/// per configuring thread; it is cheap.
pub struct Netlink {
    fd: OwnedFd,
    seq: Cell<u32>,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.fd.as_raw_fd())
            .field("seq", &self.seq.get())
            .finish()
    }
}

impl AsFd for Netlink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Netlink {
    /// Open and bind a `NETLINK_ROUTE` socket in the calling thread's network namespace.
    pub fn new() -> io::Result<Netlink> {
        // SAFETY: plain socket(2) call with constant arguments; no pointers.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        })?;
        // SAFETY: `raw` was just returned by socket(2), is open, and nothing
        // else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        // Ask for short ACKs (no echo of our request); older kernels lack the
        // option, and full ACKs parse the same, so failure is fine.
        let _ = setsockopt_int(fd.as_fd(), libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        set_recv_timeout(fd.as_fd(), REPLY_TIMEOUT)?;

        let addr = kernel_addr();
        // SAFETY: `addr` is a valid sockaddr_nl on our stack and the length
        // passed is its size. nl_pid 0 lets the kernel pick our port id.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                socklen_of::<libc::sockaddr_nl>(),
            )
        })?;
        Ok(Netlink {
            fd,
            seq: Cell::new(1),
        })
    }

    /// Set the MTU of interface `ifindex`.
    pub fn set_mtu(&self, ifindex: u32, mtu: u32) -> io::Result<()> {
        let mut msg = Message::new(libc::RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK);
        msg.put_ifinfomsg(ifindex, 0, 0)?;
        msg.put_attr(IFLA_MTU, &mtu.to_ne_bytes())?;
        self.transact(&mut msg).map(drop)
    }

    /// Set interface `ifindex` administratively up.
    pub fn set_up(&self, ifindex: u32) -> io::Result<()> {
        self.set_updown(ifindex, true)
    }

    /// Set interface `ifindex` administratively down.
    pub fn set_down(&self, ifindex: u32) -> io::Result<()> {
        self.set_updown(ifindex, false)
    }

    fn set_updown(&self, ifindex: u32, up: bool) -> io::Result<()> {
        let iff_up = libc::IFF_UP as u32;
        let mut msg = Message::new(libc::RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK);
        msg.put_ifinfomsg(ifindex, if up { iff_up } else { 0 }, iff_up)?;
        self.transact(&mut msg).map(drop)
    }

    /// Add `addr/prefix_len` to interface `ifindex`. Already present is success.
    ///
    /// IPv6 addresses are added with `IFA_F_NODAD`: a tunnel address has no
    /// link neighbours to collide with, and DAD would leave it unusable
    /// ("tentative") for a second or more after setup. Even so the kernel
    /// installs the IPv6 local route from a workqueue once the link is up,
    /// so packets *to* the new address can be dropped for a moment after
    /// [`Netlink::set_up`] returns (IPv4 is ready on return).
    pub fn add_address(&self, ifindex: u32, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
        check_prefix(addr, prefix_len)?;
        let mut msg = Message::new(
            libc::RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        );
        let (family, flags) = match addr {
            IpAddr::V4(_) => (libc::AF_INET, 0),
            IpAddr::V6(_) => (libc::AF_INET6, libc::IFA_F_NODAD as u8),
        };
        // struct ifaddrmsg { family, prefixlen, flags, scope, index }
        msg.put(&[family as u8, prefix_len, flags, libc::RT_SCOPE_UNIVERSE])?;
        msg.put(&ifindex.to_ne_bytes())?;
        let octets = AddrOctets::from(addr);
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS the same
        // (it would be the peer's on a point-to-point /32, which we do not use).
        msg.put_attr(libc::IFA_LOCAL, octets.as_slice())?;
        msg.put_attr(libc::IFA_ADDRESS, octets.as_slice())?;
        ignore_eexist(self.transact(&mut msg).map(drop))
    }

    /// Add a route to `dest/prefix_len` out of interface `ifindex` (main
    /// table, no gateway: the TUN is point-to-point). Host bits of `dest` are
    /// cleared. Already present is success.
    pub fn add_route(&self, ifindex: u32, dest: IpAddr, prefix_len: u8) -> io::Result<()> {
        let mut msg = Message::new(
            libc::RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        );
        put_route(&mut msg, ifindex, dest, prefix_len, RouteOp::Add)?;
        ignore_eexist(self.transact(&mut msg).map(drop))
    }

    /// [`Netlink::add_route`] into routing table `table` (wg-quick's `ip route add NET dev
    /// IFACE table N`). Already present is success.
    pub fn add_route_in(
        &self,
        table: u32,
        ifindex: u32,
        dest: IpAddr,
        prefix_len: u8,
    ) -> io::Result<()> {
        let mut msg = Message::new(
            libc::RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        );
        put_route_in(&mut msg, table, ifindex, dest, prefix_len, RouteOp::Add)?;
        ignore_eexist(self.transact(&mut msg).map(drop))
    }

    /// Does routing table `table` hold any route of `family` (IPv4 when `v6` is false)?
    pub fn table_has_routes(&self, table: u32, v6: bool) -> io::Result<bool> {
        let mut msg = Message::new(libc::RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP);
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // struct rtmsg, all zero but the family: every route of the family.
        msg.put(&[family as u8, 0, 0, 0, 0, 0, 0, 0])?;
        msg.put(&0u32.to_ne_bytes())?;
        let mut found = false;
        self.transact_each(&mut msg, |route| found |= route_table(route) == Some(table))?;
        Ok(found)
    }

    /// Add a policy-routing rule (`ip rule add ...`). An identical rule already there is an
    /// error (`EEXIST`, kind `AlreadyExists`), so a caller knows whether the rule is its own.
    pub fn add_rule(&self, rule: &Rule) -> io::Result<()> {
        let mut msg = Message::new(
            libc::RTM_NEWRULE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        );
        put_rule(&mut msg, rule)?;
        self.transact(&mut msg).map(drop)
    }

    /// Delete one rule matching `rule` (`ip rule delete ...`). None left is an error
    /// (`ENOENT`, kind `NotFound`).
    pub fn delete_rule(&self, rule: &Rule) -> io::Result<()> {
        let mut msg = Message::new(libc::RTM_DELRULE, NLM_F_REQUEST | NLM_F_ACK);
        put_rule(&mut msg, rule)?;
        self.transact(&mut msg).map(drop)
    }

    /// Delete the route to `dest/prefix_len` out of interface `ifindex`.
    /// A missing route is an error (`ESRCH`, kind `NotFound`).
    pub fn delete_route(&self, ifindex: u32, dest: IpAddr, prefix_len: u8) -> io::Result<()> {
        let mut msg = Message::new(libc::RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK);
        put_route(&mut msg, ifindex, dest, prefix_len, RouteOp::Delete)?;
        self.transact(&mut msg).map(drop)
    }

    /// Read name, MTU and flags of interface `ifindex`.
    pub fn link(&self, ifindex: u32) -> io::Result<LinkInfo> {
        let mut msg = Message::new(libc::RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK);
        msg.put_ifinfomsg(ifindex, 0, 0)?;
        let reply = self.transact(&mut msg)?;
        let body = reply.ok_or_else(|| bad_reply("RTM_GETLINK answered without a link"))?;
        parse_link(&body)
    }

    /// Send `msg` and wait for the kernel's answer to it. Returns the payload
    /// of the one data message that preceded the ACK, if any.
    fn transact(&self, msg: &mut Message) -> io::Result<Option<Vec<u8>>> {
        let mut data = None;
        self.transact_each(msg, |payload| data = Some(payload.to_vec()))?;
        Ok(data)
    }

    /// Send `msg` and hand every data message of the answer to `each`, until the ACK
    /// or the end of a dump.
    fn transact_each(&self, msg: &mut Message, mut each: impl FnMut(&[u8])) -> io::Result<()> {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        msg.finish(seq);

        let dest = kernel_addr();
        let bytes = msg.as_slice();
        // SAFETY: `bytes` is valid for reads of its length and `dest` is a
        // sockaddr_nl on our stack whose size we pass; the kernel copies both.
        let sent = cvt_size(unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&dest as *const libc::sockaddr_nl).cast(),
                socklen_of::<libc::sockaddr_nl>(),
            )
        })?;
        if sent != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short netlink send",
            ));
        }

        // Large enough for any single RTM_NEWLINK (stats, af_spec, …).
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = self.recv_from_kernel(&mut buf)?;
            let mut rest = buf.get(..n).unwrap_or_default();
            while let Some((kind, msg_seq, payload, next)) = split_message(rest)? {
                rest = next;
                if msg_seq != seq {
                    // A late answer to an earlier request that timed out.
                    continue;
                }
                match kind {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        return match code {
                            Some(0) => Ok(()),
                            Some(e) if e < 0 => {
                                Err(io::Error::from_raw_os_error(e.saturating_neg()))
                            }
                            _ => Err(bad_reply("malformed NLMSG_ERROR")),
                        };
                    }
                    NLMSG_DONE => return Ok(()),
                    _ => each(payload),
                }
            }
        }
    }

    /// Receive one datagram, dropping any not sent by the kernel (port 0).
    fn recv_from_kernel(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut from = kernel_addr();
            let mut from_len = socklen_of::<libc::sockaddr_nl>();
            // SAFETY: `buf` is valid for `buf.len()` bytes of writes; `from`
            // and `from_len` are valid for writes and `from_len` holds the
            // size of `from`, so the kernel writes no further.
            let ret = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_nl).cast(),
                    &mut from_len,
                )
            };
            match cvt_size(ret) {
                Ok(_) if from.nl_pid != 0 => continue,
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no netlink reply from the kernel",
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RouteOp {
    Add,
    Delete,
}

fn put_route(
    msg: &mut Message,
    ifindex: u32,
    dest: IpAddr,
    prefix_len: u8,
    op: RouteOp,
) -> io::Result<()> {
    put_route_in(msg, MAIN_TABLE, ifindex, dest, prefix_len, op)
}

/// The main routing table's id.
const MAIN_TABLE: u32 = libc::RT_TABLE_MAIN as u32;

/// The one-byte table field of `struct rtmsg` / `struct fib_rule_hdr`: the id when it fits,
/// else `RT_TABLE_UNSPEC` and the id goes in a `*_TABLE` attribute (as iproute2 does).
fn table_byte(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(libc::RT_TABLE_UNSPEC)
}

/// The table a dumped route (an `rtmsg` and its attributes) belongs to.
fn route_table(route: &[u8]) -> Option<u32> {
    let short = *route.get(4)?;
    let long = attrs(route.get(RTMSG_BODY_LEN..)?)
        .find(|(kind, _)| *kind == libc::RTA_TABLE)
        .and_then(|(_, v)| u32_at(v, 0));
    Some(long.unwrap_or(u32::from(short)))
}

fn put_route_in(
    msg: &mut Message,
    table: u32,
    ifindex: u32,
    dest: IpAddr,
    prefix_len: u8,
    op: RouteOp,
) -> io::Result<()> {
    check_prefix(dest, prefix_len)?;
    let family = match dest {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    };
    // Like iproute2: a delete leaves protocol/type unspecified and scope
    // NOWHERE, which the kernel treats as "match any".
    let (protocol, scope, kind) = match op {
        RouteOp::Add => (libc::RTPROT_BOOT, libc::RT_SCOPE_LINK, libc::RTN_UNICAST),
        RouteOp::Delete => (0, libc::RT_SCOPE_NOWHERE, 0),
    };
    // struct rtmsg { family, dst_len, src_len, tos, table, protocol, scope, type, flags: u32 }
    msg.put(&[
        family as u8,
        prefix_len,
        0,
        0,
        table_byte(table),
        protocol,
        scope,
        kind,
    ])?;
    msg.put(&0u32.to_ne_bytes())?;
    // The kernel rejects IPv4 destinations with host bits set.
    let net = AddrOctets::from(mask(dest, prefix_len));
    msg.put_attr(libc::RTA_DST, net.as_slice())?;
    if table != MAIN_TABLE {
        msg.put_attr(libc::RTA_TABLE, &table.to_ne_bytes())?;
    }
    msg.put_attr(libc::RTA_OIF, &ifindex.to_ne_bytes())
}

/// A policy-routing rule of the two kinds wg-quick adds for a full tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// IPv6 rather than IPv4.
    pub v6: bool,
    /// What the rule selects and where it sends it.
    pub kind: RuleKind,
}

/// See [`Rule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// `not fwmark MARK table TABLE`: packets without the tunnel socket's mark look up TABLE.
    NotMarkTable {
        /// The socket's mark.
        mark: u32,
        /// The table holding the default route into the tunnel.
        table: u32,
    },
    /// `table main suppress_prefixlength 0`: the main table, but not its default route.
    MainSuppressDefault,
}

// From <linux/fib_rules.h>.
const FRA_FWMARK: u16 = 10;
const FRA_SUPPRESS_PREFIXLEN: u16 = 14;
const FRA_TABLE: u16 = 15;

/// `FIB_RULE_INVERT`: the rule matches what its selectors do not (`ip rule add not ...`).
const FIB_RULE_INVERT: u32 = 0x2;

fn put_rule(msg: &mut Message, rule: &Rule) -> io::Result<()> {
    // FR_ACT_TO_TBL: look the packet up in the rule's table.
    const FR_ACT_TO_TBL: u8 = 1;
    let family = if rule.v6 {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    let (table, flags) = match rule.kind {
        RuleKind::NotMarkTable { table, .. } => (table, FIB_RULE_INVERT),
        RuleKind::MainSuppressDefault => (MAIN_TABLE, 0),
    };
    // struct fib_rule_hdr { family, dst_len, src_len, tos, table, res1, res2, action, flags: u32 }
    msg.put(&[
        family as u8,
        0,
        0,
        0,
        table_byte(table),
        0,
        0,
        FR_ACT_TO_TBL,
    ])?;
    msg.put(&flags.to_ne_bytes())?;
    msg.put_attr(FRA_TABLE, &table.to_ne_bytes())?;
    match rule.kind {
        RuleKind::NotMarkTable { mark, .. } => msg.put_attr(FRA_FWMARK, &mark.to_ne_bytes()),
        RuleKind::MainSuppressDefault => msg.put_attr(FRA_SUPPRESS_PREFIXLEN, &0u32.to_ne_bytes()),
    }
}

fn check_prefix(addr: IpAddr, prefix_len: u8) -> io::Result<()> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "prefix length longer than the address",
        ));
    }
    Ok(())
}

/// `addr` with all bits past `prefix_len` cleared.
fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    // The address's `width` bits, as the low bits of `bits`, with those past the prefix cleared.
    let masked = |bits: u128, width: u32| {
        let keep = u32::from(prefix_len).min(width);
        bits & u128::MAX.checked_shl(width - keep).unwrap_or(0)
    };
    match addr {
        // A masked IPv4 address keeps to its 32 bits.
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(masked(u32::from(a).into(), 32) as u32)),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(masked(u128::from(a), 128))),
    }
}

fn ignore_eexist(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

fn bad_reply(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn kernel_addr() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is a plain C struct of integers; all-zero is valid.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr
}

fn set_recv_timeout(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: `fd` is live; `tv` is a timeval on our stack and we pass its size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            socklen_of::<libc::timeval>(),
        )
    })
    .map(drop)
}

/// Address bytes in network order, as rtnetlink address attributes carry them.
struct AddrOctets {
    bytes: [u8; 16],
    len: usize,
}

impl AddrOctets {
    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

impl From<IpAddr> for AddrOctets {
    fn from(addr: IpAddr) -> Self {
        let mut bytes = [0u8; 16];
        match addr {
            IpAddr::V4(a) => {
                bytes[..4].copy_from_slice(&a.octets());
                AddrOctets { bytes, len: 4 }
            }
            IpAddr::V6(a) => AddrOctets {
                bytes: a.octets(),
                len: 16,
            },
        }
    }
}

/// One outgoing netlink message, built in place: header, family struct, attributes.
struct Message {
    buf: [u8; 256],
    len: usize,
}

impl Message {
    fn new(kind: u16, flags: u16) -> Message {
        let mut m = Message {
            buf: [0; 256],
            len: NLMSG_HDR_LEN,
        };
        // struct nlmsghdr { len: u32, type: u16, flags: u16, seq: u32, pid: u32 };
        // len and seq are filled in by finish().
        m.buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        m.buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        m
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        let end = self
            .len
            .checked_add(bytes.len())
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(too_long)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or_else(too_long)?
            .copy_from_slice(bytes);
        self.len = align4(end);
        if self.len > self.buf.len() {
            return Err(too_long());
        }
        Ok(())
    }

    /// struct ifinfomsg { family: u8, pad: u8, type: u16, index: i32, flags: u32, change: u32 }
    fn put_ifinfomsg(&mut self, ifindex: u32, flags: u32, change: u32) -> io::Result<()> {
        let mut b = [0u8; IFINFOMSG_LEN];
        b[0] = libc::AF_UNSPEC as u8;
        b[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        b[8..12].copy_from_slice(&flags.to_ne_bytes());
        b[12..16].copy_from_slice(&change.to_ne_bytes());
        self.put(&b)
    }

    /// struct rtattr { len: u16, type: u16 } followed by the payload, padded to 4.
    fn put_attr(&mut self, kind: u16, payload: &[u8]) -> io::Result<()> {
        let len = u16::try_from(RTATTR_HDR_LEN + payload.len()).map_err(|_| too_long())?;
        let mut hdr = [0u8; RTATTR_HDR_LEN];
        hdr[0..2].copy_from_slice(&len.to_ne_bytes());
        hdr[2..4].copy_from_slice(&kind.to_ne_bytes());
        // The header is 4 bytes, so put() adds no padding between it and the payload.
        self.put(&hdr)?;
        self.put(payload)
    }

    fn finish(&mut self, seq: u32) {
        // len <= 256, fits u32.
        let len = self.len as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
    }

    fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

fn too_long() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "netlink request too long")
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

type Split<'a> = (u16, u32, &'a [u8], &'a [u8]);

/// Split the first netlink message off `b`: (type, seq, payload, rest).
fn split_message(b: &[u8]) -> io::Result<Option<Split<'_>>> {
    if b.len() < NLMSG_HDR_LEN {
        return Ok(None);
    }
    let malformed = || bad_reply("malformed netlink message header");
    let len = u32_at(b, 0).ok_or_else(malformed)? as usize;
    let kind = u16_at(b, 4).ok_or_else(malformed)?;
    let seq = u32_at(b, 8).ok_or_else(malformed)?;
    if len < NLMSG_HDR_LEN || len > b.len() {
        return Err(malformed());
    }
    let payload = b.get(NLMSG_HDR_LEN..len).ok_or_else(malformed)?;
    let rest = b.get(align4(len).min(b.len())..).unwrap_or_default();
    Ok(Some((kind, seq, payload, rest)))
}

/// Iterate the rtattrs in `b` as (type, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let kind = u16_at(b, 2)?;
        let payload = b.get(RTATTR_HDR_LEN..len)?;
        b = b.get(align4(len).min(b.len())..)?;
        // Drop NLA_F_NESTED / NLA_F_NET_BYTEORDER from the type.
        Some((kind & 0x3fff, payload))
    })
}

fn parse_link(body: &[u8]) -> io::Result<LinkInfo> {
    let short = || bad_reply("short RTM_NEWLINK");
    let ifindex = u32_at(body, 4).ok_or_else(short)?;
    let flags = u32_at(body, 8).ok_or_else(short)?;
    let mut info = LinkInfo {
        ifindex,
        name: String::new(),
        mtu: 0,
        up: flags & libc::IFF_UP as u32 != 0,
        flags,
    };
    for (kind, payload) in attrs(body.get(IFINFOMSG_LEN..).unwrap_or_default()) {
        match kind {
            IFLA_MTU => info.mtu = u32_at(payload, 0).ok_or_else(short)?,
            IFLA_IFNAME => {
                let name = payload.split(|&c| c == 0).next().unwrap_or_default();
                info.name = String::from_utf8_lossy(name).into_owned();
            }
            _ => {}
        }
    }
    Ok(info)
}

#[cfg(test)]
#[path = "netlink_tests.rs"]
mod tests;
