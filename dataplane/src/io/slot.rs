//! The outer UDP socket, replaceable while the dataplane runs (UAPI `listen_port=`).
//!
//! The RX and TX threads each hold a [`UdpHandle`]: a cached `Arc` of the current socket and
//! the generation it belongs to. Every batched call first compares the generation with the
//! [`UdpSlot`]'s (one relaxed-then-acquire load of a read-mostly cache line, no lock, no
//! atomic write) and only after a rebind takes the slot's lock to pick up the new socket. So
//! the per-packet path stays lock-free, and a rebind is: bind the new socket first (a busy port
//! fails without touching anything), publish it, wake RX out of poll(2) so it polls the new
//! fd. The old socket closes when the last thread has moved on (TX only moves on at its next
//! send, so the old port can stay bound until then).

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::sys::UdpSocket;

/// Socket buffer size asked for (the kernel may cap it without CAP_NET_ADMIN; it doubles what
/// it grants for bookkeeping). Small enough that a datagram backlog the dataplane cannot keep up
/// with is dropped (and pushes back on the inner TCP) within a few ms instead of standing in an
/// 8 MB queue in front of every ping; large enough for a GSO batch and a descheduled RX thread
/// (issue 12; perf/README.md "Latency").
pub const SOCKET_BUFFER: usize = 512 << 10;

/// Bind the tunnel's outer socket on `port` (0: any free port): dual-stack `[::]`, or
/// `0.0.0.0` on hosts with IPv6 disabled, with [`SOCKET_BUFFER`]-sized buffers where the
/// kernel allows, and with `offload` UDP GSO and GRO where the kernel has them. The one place veil
/// binds its listening socket (start and rebind). `reuse_port`: one of several pipelines'
/// sockets on one port (`SO_REUSEPORT`, see [`bind_pipelines`]).
pub fn bind_listen(port: u16, offload: bool, reuse_port: bool) -> io::Result<UdpSocket> {
    if reuse_port && port != 0 {
        // SO_REUSEPORT would share the port with any other process that sets it too (a
        // second veil): the port must be free first. A probe without the option fails with
        // EADDRINUSE if anything holds it.
        drop(bind_any(port, false)?);
    }
    let socket = bind_any(port, reuse_port)?;
    tune(&socket, offload);
    Ok(socket)
}

/// A pipeline's socket that another veil process bound and passed over (a live hand-off),
/// tuned as [`bind_listen`] tunes a new one.
pub fn adopt_socket(fd: std::os::fd::OwnedFd, offload: bool) -> io::Result<UdpSocket> {
    let socket = UdpSocket::adopt(fd)?;
    tune(&socket, offload);
    Ok(socket)
}

/// Dual-stack `[::]:port`, or `0.0.0.0:port` on hosts with IPv6 disabled.
fn bind_any(port: u16, reuse_port: bool) -> io::Result<UdpSocket> {
    match UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), reuse_port) {
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port)), reuse_port)
        }
        other => other,
    }
}

/// The sockets of `pipelines` pipelines on one `port` (0: any free port): one socket for a
/// single pipeline, as [`bind_listen`] makes it; for more, each bound with `SO_REUSEPORT`, so
/// the kernel spreads peers over them by the hash of their address (one peer's datagrams stay
/// on one socket). The first socket checks the port is free.
pub fn bind_pipelines(port: u16, offload: bool, pipelines: usize) -> io::Result<Vec<UdpSocket>> {
    let shared = pipelines > 1;
    let first = bind_listen(port, offload, shared)?;
    let port = first.local_addr()?.port();
    let mut all = vec![first];
    for _ in 1..pipelines {
        // The port is ours now: the others join it without the probe.
        all.push(join_listen(port, offload)?);
    }
    Ok(all)
}

/// One more `SO_REUSEPORT` socket on a port a pipeline's socket holds already.
fn join_listen(port: u16, offload: bool) -> io::Result<UdpSocket> {
    let socket = bind_any(port, true)?;
    tune(&socket, offload);
    Ok(socket)
}

fn tune(socket: &UdpSocket, offload: bool) {
    if let Ok((rcv, snd)) = socket.set_buffer_sizes(SOCKET_BUFFER) {
        log::debug!("socket buffers: receive {rcv} bytes, send {snd} bytes");
    }
    if offload {
        socket.enable_gso();
        socket.enable_gro();
    }
}

/// Move every pipeline's socket to `port` (0: any free port): the first binds it (and checks
/// it is free), the others join it. Returns the port now in use; on an error the first
/// socket's old port stays if it failed, and a pipeline that failed to join keeps its old one
/// (logged by the caller).
pub fn rebind_pipelines(slots: &[Arc<UdpSlot>], port: u16) -> io::Result<u16> {
    let Some((first, rest)) = slots.split_first() else {
        return Ok(port);
    };
    let bound = first.rebind(port)?;
    for slot in rest {
        slot.rebind_with(bound, |p| join_listen(p, slot.offload))?;
    }
    Ok(bound)
}

/// The current outer socket, shared by every thread that sends or receives.
pub struct UdpSlot {
    socket: RwLock<Arc<UdpSocket>>,
    generation: AtomicU64,
    port: AtomicU16,
    /// Offloads wanted on rebound sockets.
    offload: bool,
    /// One of several pipelines' sockets on one port (`SO_REUSEPORT`).
    reuse_port: bool,
    /// `SO_MARK` of the socket, carried over to rebound ones (0: none).
    mark: AtomicU32,
    /// Serialises rebinds (two UAPI clients at once).
    rebinding: Mutex<()>,
}

impl std::fmt::Debug for UdpSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSlot")
            .field("port", &self.port())
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish()
    }
}

impl UdpSlot {
    /// A slot holding `socket`; sockets bound later get offloads if `offload`.
    pub fn new(socket: UdpSocket, offload: bool) -> io::Result<Self> {
        let port = socket.local_addr()?.port();
        Ok(Self {
            socket: RwLock::new(Arc::new(socket)),
            generation: AtomicU64::new(0),
            port: AtomicU16::new(port),
            offload,
            reuse_port: false,
            mark: AtomicU32::new(0),
            rebinding: Mutex::new(()),
        })
    }

    /// A slot for one of several pipelines' sockets ([`bind_pipelines`]): rebound sockets
    /// share their port too.
    pub fn for_pipeline(socket: UdpSocket, offload: bool) -> io::Result<Self> {
        Ok(Self {
            reuse_port: true,
            ..Self::new(socket, offload)?
        })
    }

    /// Mark the socket's packets with `mark` (0: no mark), now and after any rebind.
    pub fn set_mark(&self, mark: u32) -> io::Result<()> {
        let _one_at_a_time = self
            .rebinding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.current().set_mark(mark)?;
        self.mark.store(mark, Ordering::Relaxed);
        Ok(())
    }

    /// The mark set by [`UdpSlot::set_mark`] (0: none).
    pub fn mark(&self) -> u32 {
        self.mark.load(Ordering::Relaxed)
    }

    /// The socket in use now.
    pub fn current(&self) -> Arc<UdpSocket> {
        // A panic elsewhere cannot leave the Arc half-written: use it as it is.
        self.socket
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The port the current socket is bound to.
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }

    /// A handle for one thread.
    pub fn handle(self: &Arc<Self>) -> UdpHandle {
        UdpHandle {
            generation: Cell::new(self.generation.load(Ordering::Acquire)),
            socket: RefCell::new(self.current()),
            slot: self.clone(),
        }
    }

    /// Move to `port` (0: any free port) with a socket made by [`bind_listen`], which
    /// replaces the current one. The same port again changes nothing. Returns the port now
    /// in use; on an error the old socket stays.
    pub fn rebind(&self, port: u16) -> io::Result<u16> {
        self.rebind_with(port, |p| bind_listen(p, self.offload, self.reuse_port))
    }

    /// [`UdpSlot::rebind`] with `bind` making the new socket.
    fn rebind_with(
        &self,
        port: u16,
        bind: impl FnOnce(u16) -> io::Result<UdpSocket>,
    ) -> io::Result<u16> {
        let _one_at_a_time = self
            .rebinding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if port != 0 && port == self.port() {
            return Ok(port);
        }
        let socket = bind(port)?;
        let mark = self.mark();
        if mark != 0 {
            socket.set_mark(mark)?;
        }
        let bound = socket.local_addr()?.port();
        let old = std::mem::replace(
            &mut *self.socket.write().unwrap_or_else(PoisonError::into_inner),
            Arc::new(socket),
        );
        self.port.store(bound, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
        drop(old);
        Ok(bound)
    }
}

/// One thread's view of the [`UdpSlot`]. Not `Sync`: each thread makes its own.
pub struct UdpHandle {
    slot: Arc<UdpSlot>,
    generation: Cell<u64>,
    socket: RefCell<Arc<UdpSocket>>,
}

impl std::fmt::Debug for UdpHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpHandle")
            .field("generation", &self.generation.get())
            .finish()
    }
}

impl UdpHandle {
    /// Run `f` on the current socket, picking it up first if it was replaced.
    #[inline]
    pub fn with<T>(&self, f: impl FnOnce(&UdpSocket) -> T) -> T {
        let now = self.slot.generation.load(Ordering::Acquire);
        if now != self.generation.get() {
            *self.socket.borrow_mut() = self.slot.current();
            self.generation.set(now);
        }
        f(&self.socket.borrow())
    }
}

impl super::WithSocket for UdpHandle {
    #[inline]
    fn with_socket<T>(&self, f: impl FnOnce(&UdpSocket) -> T) -> T {
        self.with(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn bind(port: u16) -> io::Result<UdpSocket> {
        UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), false)
    }

    #[test]
    fn handles_follow_a_rebind() {
        let slot = Arc::new(UdpSlot::new(bind(0).unwrap(), false).unwrap());
        let h = slot.handle();
        let first = h.with(|s| s.local_addr().unwrap().port());
        assert_eq!(first, slot.port());
        let second = slot.rebind_with(0, bind).unwrap();
        assert_ne!(first, second);
        assert_eq!(h.with(|s| s.local_addr().unwrap().port()), second);
        // Same port: nothing happens.
        assert_eq!(
            slot.rebind_with(second, |_| unreachable!()).unwrap(),
            second
        );
    }

    #[test]
    fn the_mark_follows_a_rebind() {
        let slot = Arc::new(UdpSlot::new(bind(0).unwrap(), false).unwrap());
        if slot.set_mark(0x5a).is_err() {
            // SO_MARK needs CAP_NET_ADMIN; nothing to check without it.
            return;
        }
        assert_eq!(slot.current().mark().unwrap(), 0x5a);
        slot.rebind_with(0, bind).unwrap();
        assert_eq!(slot.current().mark().unwrap(), 0x5a);
        slot.set_mark(0).unwrap();
        assert_eq!(slot.current().mark().unwrap(), 0);
    }

    #[test]
    fn a_busy_port_keeps_the_old_socket() {
        let slot = Arc::new(UdpSlot::new(bind(0).unwrap(), false).unwrap());
        let busy = bind(0).unwrap();
        let busy_port = busy.local_addr().unwrap().port();
        let before = slot.port();
        let err = slot.rebind_with(busy_port, bind).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(slot.port(), before);
    }
}
