//! The tunnel's outer UDP socket, with batched `recvmmsg` / `sendmmsg`.
//!
//! One syscall moves up to [`BATCH_MAX`] datagrams. The batch paths keep
//! their `mmsghdr` / `iovec` / address arrays on the stack (about 14 KiB) and
//! never allocate, so they can run on the per-packet path.
//!
//! Addresses: a socket bound to an unspecified IPv6 address (`[::]:port`) is
//! dual-stack and serves IPv4 peers too. Sources are always reported in their
//! plain form (an IPv4 peer is a [`SocketAddr::V4`], never `::ffff:a.b.c.d`),
//! and a `V4` destination is mapped on the way out, so callers never see the
//! socket's family.

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::{cvt, cvt_size, getsockopt_int, setsockopt_int, socklen_of};
use crate::batch::{LocalAddr, PacketMeta, BATCH_MAX};

mod cmsg;
mod gone;
use cmsg::{RecvCmsg, SendCmsg, UDP_GRO, UDP_SEGMENT};

/// What one [`UdpSocket::send_batch_outcome`] call did with the front of the batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOutcome {
    /// Datagrams the kernel accepted.
    pub sent: usize,
    /// Datagrams the kernel rejected one by one (unreachable, not permitted,
    /// too big, …) and that were skipped.
    pub failed: usize,
    /// errno of the last rejected datagram, for the control thread to log.
    pub last_errno: Option<i32>,
    /// Messages that carried more than one datagram (UDP GSO).
    pub gso_messages: usize,
    /// Datagrams sent in those messages.
    pub gso_datagrams: usize,
    /// The kernel refused a GSO message, and GSO is now off for this socket.
    pub gso_disabled: bool,
}

impl SendOutcome {
    /// How many datagrams from the front of the batch are finished with
    /// (sent or skipped); the rest were not attempted because the socket
    /// buffer was full.
    pub fn consumed(&self) -> usize {
        self.sent + self.failed
    }
}

/// A non-blocking UDP socket.
///
/// All methods take `&self`, so one RX and one TX thread can share it.
///
/// Sticky source addresses: the socket asks for each datagram's local address
/// (`IP_PKTINFO` / `IPV6_RECVPKTINFO`, reported in [`PacketMeta::local`]), and the send
/// paths take a source per datagram and send it as an `IP_PKTINFO` / `IPV6_PKTINFO`
/// control message, so replies leave from the address the peer talks to. A source the
/// kernel refuses (`EINVAL`: the address is gone from this host) is sent without and is
/// remembered as gone, so later sends to every endpoint that kept it go without at once,
/// until a datagram arrives on that address again.
#[derive(Debug)]
pub struct UdpSocket {
    fd: OwnedFd,
    /// An AF_INET6 socket: destinations are written as `sockaddr_in6`.
    v6: bool,
    /// An AF_INET6 socket with IPV6_V6ONLY off.
    dual_stack: bool,
    send_errors: AtomicU64,
    /// Send runs of equal-size datagrams with `UDP_SEGMENT`.
    gso: AtomicBool,
    /// Receive coalesced datagrams (`UDP_GRO`).
    gro: AtomicBool,
    /// The kernel reports each datagram's local address.
    pktinfo: bool,
    /// Source addresses the kernel refused (gone from the host), at most [`GONE_MAX`].
    gone: Mutex<Vec<IpAddr>>,
    /// `gone` is not empty: the only thing the packet path reads when no address went away.
    gone_any: AtomicBool,
}

/// Most gone source addresses remembered; the oldest is forgotten first.
const GONE_MAX: usize = 8;

impl UdpSocket {
    /// Bind a non-blocking UDP socket to `addr`.
    ///
    /// An unspecified IPv6 address makes the socket dual-stack
    /// (`IPV6_V6ONLY` = 0, whatever the `bindv6only` sysctl says); a specific
    /// IPv6 address makes it IPv6 only. `reuse_port` sets `SO_REUSEPORT`, so
    /// N pipelines can bind N sockets to one port and the kernel spreads
    /// peers across them by flow hash.
    pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
        let v6 = addr.is_ipv6();
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: plain socket(2) call with constant arguments; no pointers.
        let raw = cvt(unsafe {
            libc::socket(
                family,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_UDP,
            )
        })?;
        // SAFETY: `raw` was just returned by socket(2), is open, and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let mut dual_stack = false;
        if let SocketAddr::V6(a) = addr {
            // A v4-mapped bind address only works with V6ONLY off, too.
            dual_stack = a.ip().is_unspecified() || a.ip().to_ipv4_mapped().is_some();
            setsockopt_int(
                fd.as_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                libc::c_int::from(!dual_stack),
            )?;
        }
        if reuse_port {
            setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        }
        // On a dual-stack socket IPv4 datagrams report IPV6_PKTINFO with a v4-mapped address.
        let pktinfo = if v6 {
            setsockopt_int(fd.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
        } else {
            setsockopt_int(fd.as_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
        }
        .is_ok();

        let (name, len) = RawAddr::encode(addr, v6);
        // SAFETY: `name` is a sockaddr_in / sockaddr_in6 on our stack and
        // `len` is the size of the variant written; the kernel only reads it.
        cvt(unsafe { libc::bind(fd.as_raw_fd(), name.as_ptr(), len) })?;
        Ok(UdpSocket {
            fd,
            v6,
            dual_stack,
            send_errors: AtomicU64::new(0),
            gso: AtomicBool::new(false),
            gro: AtomicBool::new(false),
            pktinfo,
            gone: Mutex::new(Vec::new()),
            gone_any: AtomicBool::new(false),
        })
    }

    /// A bound UDP socket that another veil process opened and passed over (a live hand-off).
    /// GSO and GRO start off here; turn them on again with [`UdpSocket::enable_gso`] and
    /// [`UdpSocket::enable_gro`] (setting an option on a shared socket is harmless).
    pub fn adopt(fd: OwnedFd) -> io::Result<UdpSocket> {
        let ty = getsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_TYPE)?;
        if ty != libc::SOCK_DGRAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the descriptor passed over is not a datagram socket",
            ));
        }
        let mut socket = UdpSocket {
            fd,
            v6: false,
            dual_stack: false,
            send_errors: AtomicU64::new(0),
            gso: AtomicBool::new(false),
            gro: AtomicBool::new(false),
            pktinfo: false,
            gone: Mutex::new(Vec::new()),
            gone_any: AtomicBool::new(false),
        };
        socket.v6 = socket.local_addr()?.is_ipv6();
        if socket.v6 {
            socket.dual_stack =
                getsockopt_int(socket.fd.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)? == 0;
        }
        // The sticky source address, as `bind` asks for it (the option may be on already).
        socket.pktinfo = if socket.v6 {
            setsockopt_int(
                socket.fd.as_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_RECVPKTINFO,
                1,
            )
        } else {
            setsockopt_int(socket.fd.as_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
        }
        .is_ok();
        Ok(socket)
    }

    /// The bound address (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        let mut name = MaybeUninit::<RawAddr>::uninit();
        let mut len = socklen_of::<RawAddr>();
        // SAFETY: `name` is valid for `len` bytes of writes and `len` is
        // valid for writes; the kernel writes at most `len` bytes and stores
        // the full address length in `len`.
        cvt(unsafe { libc::getsockname(self.fd.as_raw_fd(), name.as_mut_ptr().cast(), &mut len) })?;
        // SAFETY: getsockname succeeded, so the first `len` bytes (bounded by
        // the buffer size) of `name` are initialised.
        unsafe { RawAddr::decode(name.as_ptr(), len) }
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "socket has no IP address"))
    }

    /// Send runs of equal-size datagrams as one message with `UDP_SEGMENT`, if the kernel
    /// has it (Linux 4.18+). Returns whether GSO is now on.
    pub fn enable_gso(&self) -> bool {
        let has = getsockopt_int(self.fd.as_fd(), libc::SOL_UDP, UDP_SEGMENT).is_ok();
        self.gso.store(has, Ordering::Relaxed);
        has
    }

    /// Have the kernel coalesce arriving datagrams of one flow (`UDP_GRO`, Linux 5.0+); the
    /// batch receive then reports each one's segment size in [`PacketMeta::segment`].
    /// Returns whether GRO is now on.
    pub fn enable_gro(&self) -> bool {
        let on = setsockopt_int(self.fd.as_fd(), libc::SOL_UDP, UDP_GRO, 1).is_ok();
        self.gro.store(on, Ordering::Relaxed);
        on
    }

    /// Is UDP GRO on?
    pub fn gro(&self) -> bool {
        self.gro.load(Ordering::Relaxed)
    }

    /// Does the socket report each datagram's local address ([`PacketMeta::local`])?
    pub fn sticky(&self) -> bool {
        self.pktinfo
    }

    /// Is UDP GSO on (enabled and not turned off after a refusal)?
    pub fn gso(&self) -> bool {
        self.gso.load(Ordering::Relaxed)
    }

    /// Mark every packet this socket sends with `mark` (`SO_MARK`; 0 clears it), so policy
    /// routing can keep the tunnel's own datagrams out of the tunnel (wg-quick's `FwMark`).
    pub fn set_mark(&self, mark: u32) -> io::Result<()> {
        // SO_MARK takes the mark's 32 bits as an int.
        let value = libc::c_int::from_ne_bytes(mark.to_ne_bytes());
        setsockopt_int(self.fd.as_fd(), libc::SOL_SOCKET, libc::SO_MARK, value)
    }

    /// The socket's `SO_MARK`, as the kernel has it.
    pub fn mark(&self) -> io::Result<u32> {
        let value = getsockopt_int(self.fd.as_fd(), libc::SOL_SOCKET, libc::SO_MARK)?;
        Ok(u32::from_ne_bytes(value.to_ne_bytes()))
    }

    /// Is this an IPv6 socket that also carries IPv4?
    pub fn is_dual_stack(&self) -> bool {
        self.dual_stack
    }

    /// Set receive and send buffers to `bytes` each. Tries the `*BUFFORCE`
    /// options first (they pass `net.core.{r,w}mem_max`, needing
    /// `CAP_NET_ADMIN`) and falls back to the capped ones. Returns the
    /// (receive, send) sizes now in force, as the kernel reports them (it
    /// doubles the request to account for bookkeeping).
    pub fn set_buffer_sizes(&self, bytes: usize) -> io::Result<(usize, usize)> {
        let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        let fd = self.fd.as_fd();
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if let Err(e) = setsockopt_int(fd, libc::SOL_SOCKET, force, want) {
                if e.raw_os_error() != Some(libc::EPERM) {
                    return Err(e);
                }
                setsockopt_int(fd, libc::SOL_SOCKET, plain, want)?;
            }
        }
        let rcv = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)?;
        let snd = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)?;
        Ok((
            usize::try_from(rcv).unwrap_or(0),
            usize::try_from(snd).unwrap_or(0),
        ))
    }

    /// Receive up to `min(bufs.len(), metas.len(), BATCH_MAX)` datagrams
    /// without blocking. For each datagram `i < n`, `metas[i]` gets offset 0,
    /// its length in `bufs[i]`, its source and the local address it arrived on.
    ///
    /// A datagram longer than its buffer (`MSG_TRUNC`) gets length 0: the
    /// caller drops and counts it, as it does an (invalid) empty one.
    /// Returns `WouldBlock` when nothing is queued.
    pub fn recv_batch<B: AsMut<[u8]>>(
        &self,
        bufs: &mut [B],
        metas: &mut [PacketMeta],
    ) -> io::Result<usize> {
        let n = bufs.len().min(metas.len()).min(BATCH_MAX);
        if n == 0 {
            return Ok(0);
        }
        let mut names = [const { MaybeUninit::<RawAddr>::uninit() }; BATCH_MAX];
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; BATCH_MAX];
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; BATCH_MAX];
        let gro = self.gro.load(Ordering::Relaxed);
        let control = gro || self.pktinfo;
        let mut cmsgs = [RecvCmsg::ZERO; BATCH_MAX];

        for ((((buf, iov), name), hdr), cmsg) in bufs
            .iter_mut()
            .zip(&mut iovs)
            .zip(&mut names)
            .zip(&mut hdrs)
            .zip(&mut cmsgs)
            .take(n)
        {
            let buf = buf.as_mut();
            let iov = iov.write(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            });
            let mut msg = zeroed_msghdr();
            msg.msg_name = name.as_mut_ptr().cast();
            msg.msg_namelen = socklen_of::<RawAddr>();
            msg.msg_iov = iov;
            msg.msg_iovlen = 1;
            if control {
                msg.msg_control = cmsg.as_mut_ptr();
                msg.msg_controllen = RecvCmsg::LEN;
            }
            hdr.write(libc::mmsghdr {
                msg_hdr: msg,
                msg_len: 0,
            });
        }

        let got = loop {
            // SAFETY: the first `n` entries of `hdrs` are initialised; each
            // points at one initialised iovec over a live, exclusively
            // borrowed buffer and at a `RawAddr`-sized name slot, all of
            // which outlive the call. The kernel writes only within those.
            let ret = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                    ptr::null_mut(),
                )
            };
            match cvt(ret) {
                // recvmmsg returns at most `n`.
                Ok(got) => break (got as usize).min(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };

        for (((hdr, name), meta), cmsg) in hdrs
            .iter()
            .zip(&names)
            .zip(metas.iter_mut())
            .zip(&cmsgs)
            .take(got)
        {
            // SAFETY: all of the first `n >= got` headers were initialised above.
            let hdr = unsafe { hdr.assume_init_ref() };
            // SAFETY: the kernel filled `msg_namelen` bytes of this name slot
            // (bounded by its size) for each of the `got` datagrams.
            let from = unsafe { RawAddr::decode(name.as_ptr(), hdr.msg_hdr.msg_namelen) };
            let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            meta.offset = 0;
            meta.len = if truncated || from.is_none() {
                0
            } else {
                hdr.msg_len as usize
            };
            meta.addr = from.unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)));
            let info = if control {
                cmsg.parse(hdr.msg_hdr.msg_controllen)
            } else {
                cmsg::Received::default()
            };
            meta.segment = if gro { info.segment } else { 0 };
            meta.local = info.local;
        }
        if self.gone_any.load(Ordering::Relaxed) {
            for meta in metas.iter().take(got) {
                if let Some(l) = meta.local {
                    self.forget_gone(l.ip);
                }
            }
        }
        Ok(got)
    }

    /// Send `pkts[i]` to `dests[i]` without blocking, up to [`BATCH_MAX`].
    ///
    /// Returns how many datagrams from the front of `pkts` are finished
    /// with: each was either sent, or rejected by the kernel on its own
    /// (`EHOSTUNREACH`, `EACCES`, `EMSGSIZE`, …), skipped and counted in
    /// [`UdpSocket::send_errors`]. One bad destination never wedges the
    /// batch. Fewer than `pkts.len()` means the socket buffer filled: wait
    /// for [`super::wait_writable`] and resend the rest. Returns `WouldBlock`
    /// only when none was finished; `InvalidInput` if the slices' lengths
    /// differ.
    pub fn send_batch<B: AsRef<[u8]>>(
        &self,
        pkts: &[B],
        dests: &[SocketAddr],
    ) -> io::Result<usize> {
        self.send_batch_outcome(pkts, dests).map(|o| o.consumed())
    }

    /// [`UdpSocket::send_batch`], telling sent and rejected datagrams apart.
    ///
    /// With GSO on ([`UdpSocket::enable_gso`]), each run of datagrams to one destination of
    /// one size (the last may be shorter) goes as one message with `UDP_SEGMENT`, within the
    /// kernel's limits on segments and bytes. A kernel that refuses such a message (`EIO`:
    /// the device cannot segment; `EINVAL`/`EMSGSIZE`: the route cannot take it) has GSO
    /// turned off for this socket (reported in [`SendOutcome::gso_disabled`]) and the rest is
    /// sent one datagram per message.
    pub fn send_batch_outcome<B: AsRef<[u8]>>(
        &self,
        pkts: &[B],
        dests: &[SocketAddr],
    ) -> io::Result<SendOutcome> {
        self.send_batch_from(pkts, dests, &[])
    }

    /// [`UdpSocket::send_batch_outcome`], each datagram `i` from source `srcs[i]` (`None`,
    /// or `srcs` empty: the kernel picks). A source of the other family than its destination
    /// is not used. Datagrams to one destination go in one GSO message only with one source.
    /// A source the kernel refuses with `EINVAL` is sent without and remembered as gone
    /// (see [`UdpSocket`]).
    pub fn send_batch_from<B: AsRef<[u8]>>(
        &self,
        pkts: &[B],
        dests: &[SocketAddr],
        srcs: &[Option<LocalAddr>],
    ) -> io::Result<SendOutcome> {
        if pkts.len() != dests.len() || !(srcs.is_empty() || srcs.len() == pkts.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "send_batch: pkts, dests and srcs differ in length",
            ));
        }
        let n = pkts.len().min(BATCH_MAX);
        let mut outcome = SendOutcome::default();
        if n == 0 {
            return Ok(outcome);
        }
        let mut names = [const { MaybeUninit::<RawAddr>::uninit() }; BATCH_MAX];
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; BATCH_MAX];
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; BATCH_MAX];
        let mut cmsgs = [SendCmsg::ZERO; BATCH_MAX];
        // Datagrams carried by each message, and whether it named a source.
        let mut carried = [0usize; BATCH_MAX];
        let mut sourced = [false; BATCH_MAX];
        let src_of = |i: usize| srcs.get(i).copied().flatten();

        let mut done = 0usize;
        'build: while done < n {
            let gso = self.gso.load(Ordering::Relaxed);
            let gone = self.gone_sources();
            let mut msgs = 0usize;
            let mut i = done;
            while i < n {
                let first = i;
                let size = pkts[i].as_ref().len();
                let dest = dests[i];
                let src = src_of(i);
                let mut total = size;
                i += 1;
                if gso && size > 0 {
                    while i < n
                        && i - first < GSO_MAX_SEGMENTS
                        && dests[i] == dest
                        && src_of(i) == src
                        && pkts[i].as_ref().len() <= size
                        && total + pkts[i].as_ref().len() <= GSO_MAX_BYTES
                    {
                        let len = pkts[i].as_ref().len();
                        total += len;
                        i += 1;
                        if len < size {
                            break; // only the last segment may be shorter
                        }
                    }
                }
                for (iov, pkt) in iovs[first - done..i - done].iter_mut().zip(&pkts[first..i]) {
                    let pkt = pkt.as_ref();
                    // The kernel only reads through iov_base on send; the *mut is the C type's.
                    iov.write(libc::iovec {
                        iov_base: pkt.as_ptr().cast_mut().cast(),
                        iov_len: pkt.len(),
                    });
                }
                let (raw, len) = RawAddr::encode(dest, self.v6);
                let name = names[msgs].write(raw);
                let mut msg = zeroed_msghdr();
                msg.msg_name = (name as *mut RawAddr).cast();
                msg.msg_namelen = len;
                msg.msg_iov = iovs[first - done].as_mut_ptr();
                msg.msg_iovlen = i - first;
                let segment = (i - first > 1).then_some(size as u16);
                let src =
                    src.filter(|s| s.ip.is_ipv4() == dest.is_ipv4() && !gone.contains(&Some(s.ip)));
                sourced[msgs] = src.is_some();
                let used = cmsgs[msgs].build(segment, src);
                if used > 0 {
                    msg.msg_control = cmsgs[msgs].as_mut_ptr();
                    msg.msg_controllen = used;
                }
                hdrs[msgs].write(libc::mmsghdr {
                    msg_hdr: msg,
                    msg_len: 0,
                });
                carried[msgs] = i - first;
                msgs += 1;
            }

            let mut m = 0usize;
            while m < msgs {
                let rest = hdrs.get_mut(m..msgs).unwrap_or_default();
                // SAFETY: `rest` is the initialised tail of `hdrs` (entries `m..msgs`); each
                // points at initialised iovecs over live packets, an initialised name and,
                // for GSO messages, an initialised control message, all outliving the call.
                // The kernel reads those and writes only `msg_len`.
                let ret = unsafe {
                    libc::sendmmsg(
                        self.fd.as_raw_fd(),
                        rest.as_mut_ptr().cast::<libc::mmsghdr>(),
                        rest.len() as libc::c_uint,
                        libc::MSG_DONTWAIT as _,
                    )
                };
                let err = match cvt(ret) {
                    // sendmmsg reports an error only when it sent nothing; after a partial
                    // send the next call hits the failing message first.
                    Ok(0) => break 'build,
                    Ok(k) => {
                        for &c in &carried[m..(m + k as usize).min(msgs)] {
                            outcome.sent += c;
                            done += c;
                            if c > 1 {
                                outcome.gso_messages += 1;
                                outcome.gso_datagrams += c;
                            }
                        }
                        m += k as usize;
                        continue;
                    }
                    Err(e) => e,
                };
                match classify_send_error(&err) {
                    SendErrorClass::Interrupted => continue,
                    SendErrorClass::Full => break 'build,
                    SendErrorClass::Socket | SendErrorClass::Shortage if done == 0 => {
                        return Err(err)
                    }
                    // Leave it for the next call to report; report progress now.
                    SendErrorClass::Socket | SendErrorClass::Shortage => break 'build,
                    // Our source address went away: send without it (the kernel's
                    // WireGuard and wireguard-go clear the endpoint's source and retry).
                    SendErrorClass::Message
                        if sourced[m] && src_of(done).is_some_and(|s| self.refused(&err, s)) =>
                    {
                        continue 'build;
                    }
                    SendErrorClass::Message
                        if carried[m] > 1
                            && matches!(
                                err.raw_os_error(),
                                Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE)
                            ) =>
                    {
                        self.gso.store(false, Ordering::Relaxed);
                        outcome.gso_disabled = true;
                        continue 'build;
                    }
                    SendErrorClass::Message => {
                        outcome.failed += carried[m];
                        outcome.last_errno = err.raw_os_error();
                        self.send_errors
                            .fetch_add(carried[m] as u64, Ordering::Relaxed);
                        done += carried[m];
                        m += 1;
                    }
                }
            }
        }
        if done == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(outcome)
    }

    /// Datagrams skipped by the batch send paths because the kernel rejected
    /// them individually, since the socket was created.
    pub fn send_errors(&self) -> u64 {
        self.send_errors.load(Ordering::Relaxed)
    }

    /// Send one datagram (handshakes, cookie replies). Errors, including
    /// `WouldBlock`, are returned as they are.
    pub fn send_to(&self, buf: &[u8], dest: SocketAddr) -> io::Result<usize> {
        self.send_to_from(buf, dest, None)
    }

    /// [`UdpSocket::send_to`] from source `src` (`None`: the kernel picks), with the rules of
    /// [`UdpSocket::send_batch_from`] for a source of the other family or one that is gone.
    pub fn send_to_from(
        &self,
        buf: &[u8],
        dest: SocketAddr,
        src: Option<LocalAddr>,
    ) -> io::Result<usize> {
        let src = src.filter(|s| {
            s.ip.is_ipv4() == dest.is_ipv4() && !self.gone_sources().contains(&Some(s.ip))
        });
        if src.is_none() {
            return self.send_plain(buf, dest);
        }
        let (mut name, len) = RawAddr::encode(dest, self.v6);
        let mut cmsg = SendCmsg::ZERO;
        let used = cmsg.build(None, src);
        let mut iov = libc::iovec {
            // The kernel only reads through iov_base on send; the *mut is the C type's.
            iov_base: buf.as_ptr().cast_mut().cast(),
            iov_len: buf.len(),
        };
        let mut msg = zeroed_msghdr();
        msg.msg_name = (&mut name as *mut RawAddr).cast();
        msg.msg_namelen = len;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr();
        msg.msg_controllen = used;
        loop {
            // SAFETY: `msg` points at a name, one iovec over `buf` and a control buffer of
            // `used` initialised bytes, all on our stack or borrowed for the call; the
            // kernel only reads them.
            let ret = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
            match cvt_size(ret) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if src.is_some_and(|s| self.refused(&e, s)) => {
                    return self.send_plain(buf, dest);
                }
                other => return other,
            }
        }
    }

    fn send_plain(&self, buf: &[u8], dest: SocketAddr) -> io::Result<usize> {
        let (name, len) = RawAddr::encode(dest, self.v6);
        loop {
            // SAFETY: `buf` is valid for `buf.len()` bytes of reads and `name`
            // is a sockaddr of `len` bytes on our stack; the kernel copies both.
            let ret = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    name.as_ptr(),
                    len,
                )
            };
            match cvt_size(ret) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// Receive one datagram without blocking. A datagram longer than `buf`
    /// reports length 0, as in [`UdpSocket::recv_batch`].
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let mut name = MaybeUninit::<RawAddr>::uninit();
            let mut len = socklen_of::<RawAddr>();
            // SAFETY: `buf` is valid for `buf.len()` bytes of writes; `name`
            // for `len` bytes, and `len` for writes. With MSG_TRUNC the
            // kernel still writes at most `buf.len()` bytes but returns the
            // datagram's real length.
            let ret = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    name.as_mut_ptr().cast(),
                    &mut len,
                )
            };
            let full = match cvt_size(ret) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            };
            // SAFETY: recvfrom succeeded, so the kernel wrote `len` bytes
            // (bounded by the slot size) of `name`.
            let from = unsafe { RawAddr::decode(name.as_ptr(), len) }.ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "datagram without an IP source")
            })?;
            return Ok((if full > buf.len() { 0 } else { full }, from));
        }
    }
}

super::fd_wrapper!(UdpSocket, fd);

/// Most segments in one GSO message (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO message: one IPv6 datagram's worth.
const GSO_MAX_BYTES: usize = 65535 - 40 - 8;

enum SendErrorClass {
    /// EINTR: try again.
    Interrupted,
    /// The socket buffer is full: stop, the caller waits for POLLOUT.
    Full,
    /// The socket itself is unusable: every later message would fail too.
    Socket,
    /// The host is short of buffers or memory (ENOBUFS, ENOMEM): every message
    /// would fail for now; the caller pauses and retries.
    Shortage,
    /// Only this datagram is bad (its destination, size or permission).
    Message,
}

fn classify_send_error(e: &io::Error) -> SendErrorClass {
    match e.kind() {
        io::ErrorKind::Interrupted => return SendErrorClass::Interrupted,
        io::ErrorKind::WouldBlock => return SendErrorClass::Full,
        _ => {}
    }
    match e.raw_os_error() {
        Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EOPNOTSUPP | libc::EPIPE) => {
            SendErrorClass::Socket
        }
        Some(libc::ENOBUFS | libc::ENOMEM) => SendErrorClass::Shortage,
        _ => SendErrorClass::Message,
    }
}

fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is a plain C struct of integers and raw pointers (plus
    // private padding on some libcs); all-zero bytes are a valid value.
    unsafe { mem::zeroed() }
}

/// Room for an IPv4 or IPv6 socket address: all this socket ever sees.
#[repr(C)]
#[derive(Clone, Copy)]
union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl RawAddr {
    /// Encode `addr` for a socket of the given family. On an IPv6 socket a
    /// V4 address becomes v4-mapped; on an IPv4 socket a v4-mapped V6
    /// address becomes plain V4 (any other V6 is left for the kernel to refuse).
    fn encode(addr: SocketAddr, v6_socket: bool) -> (RawAddr, libc::socklen_t) {
        let (ip, port, flowinfo, scope_id) = match addr {
            SocketAddr::V4(a) if !v6_socket => {
                return (
                    Self::from_v4(*a.ip(), a.port()),
                    socklen_of::<libc::sockaddr_in>(),
                )
            }
            SocketAddr::V4(a) => (a.ip().to_ipv6_mapped(), a.port(), 0, 0),
            SocketAddr::V6(a) => {
                if let (false, Some(v4)) = (v6_socket, a.ip().to_ipv4_mapped()) {
                    return (
                        Self::from_v4(v4, a.port()),
                        socklen_of::<libc::sockaddr_in>(),
                    );
                }
                (*a.ip(), a.port(), a.flowinfo(), a.scope_id())
            }
        };
        let sin6 = libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: port.to_be(),
            sin6_flowinfo: flowinfo.to_be(),
            sin6_addr: libc::in6_addr {
                s6_addr: ip.octets(),
            },
            sin6_scope_id: scope_id,
        };
        (RawAddr { v6: sin6 }, socklen_of::<libc::sockaddr_in6>())
    }

    fn from_v4(ip: Ipv4Addr, port: u16) -> RawAddr {
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            // s_addr holds the address in network order, i.e. its octets in memory order.
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ip.octets()),
            },
            sin_zero: [0; 8],
        };
        RawAddr { v4: sin }
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        (self as *const RawAddr).cast()
    }

    /// Decode a kernel-written address, unmapping v4-mapped IPv6 sources.
    ///
    /// # Safety
    /// The first `min(len, size_of::<RawAddr>())` bytes at `p` must be initialised.
    unsafe fn decode(p: *const RawAddr, len: libc::socklen_t) -> Option<SocketAddr> {
        let len = len as usize;
        if len < mem::size_of::<libc::sa_family_t>() {
            return None;
        }
        // SAFETY: at least the family field's bytes are initialised (checked
        // above) and `p` is aligned for RawAddr, hence for the family field
        // at offset 0 of both variants.
        let family = unsafe { ptr::read(p.cast::<libc::sa_family_t>()) };
        match libc::c_int::from(family) {
            libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
                // SAFETY: a whole sockaddr_in is initialised (length checked).
                let sin = unsafe { ptr::read(p.cast::<libc::sockaddr_in>()) };
                let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
                // SAFETY: a whole sockaddr_in6 is initialised (length checked).
                let sin6 = unsafe { ptr::read(p.cast::<libc::sockaddr_in6>()) };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                let port = u16::from_be(sin6.sin6_port);
                Some(match ip.to_ipv4_mapped() {
                    Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                    None => SocketAddr::V6(SocketAddrV6::new(
                        ip,
                        port,
                        u32::from_be(sin6.sin6_flowinfo),
                        sin6.sin6_scope_id,
                    )),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
