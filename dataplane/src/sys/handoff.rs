//! What a live hand-off needs of the kernel: passing descriptors over a Unix socket
//! (`SCM_RIGHTS`) and asking who is at the other end of one (`SO_PEERCRED`).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{
    getsockopt, recvmsg, sendmsg, sockopt::PeerCredentials, ControlMessage, ControlMessageOwned,
    MsgFlags,
};

/// Most descriptors one message carries (pipelines × 2, with room).
pub const MAX_FDS: usize = 64;

/// The user id and process id of the process at the other end of `sock`, as the kernel
/// recorded them when it connected.
pub fn peer_credentials(sock: &UnixStream) -> io::Result<(u32, i32)> {
    let cred = getsockopt(sock, PeerCredentials).map_err(io::Error::from)?;
    Ok((cred.uid(), cred.pid()))
}

/// Send `data` with `fds` attached, in one message. The descriptors stay open here too.
pub fn send_with_fds(sock: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one message",
        ));
    }
    let iov = [IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let sent = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(io::Error::from)?;
    if sent != data.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the message with the descriptors was cut short",
        ));
    }
    Ok(())
}

/// Receive one message into `buf` and the descriptors that came with it (close-on-exec).
/// Returns the bytes read and the descriptors, owned (closed when dropped).
pub fn recv_with_fds(sock: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    // Truncated control data (ENOBUFS) is refused: some descriptors would be missing.
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel just installed `fd` in this process for this message
                // (SCM_RIGHTS); nothing else knows of it, so it is owned here alone.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok((msg.bytes, fds))
}
