//! The operating-system calls std does not offer, in one place: the fan-out's direct write
//! on a socket another task owns ([`DirectWrite`], [`LentSocket`]) and the effective uid.
//! Both go through `nix`, so the crate itself has no `unsafe` code (`#![forbid(unsafe_code)]`
//! in `lib.rs`).
//!
//! The direct write's invariant is the hub's, not the kernel's: a [`LentSocket`] is only ever
//! held (in the subscriber's queue, under its lock) while the stream's sink holds the open
//! socket; the sink takes it back, under the same lock, before it writes itself or closes the
//! socket. So the descriptor can never be closed, or reused by another connection, while the
//! fan-out may still write on it.

use nix::sys::socket::{send, MsgFlags};
use std::os::fd::{AsRawFd, RawFd};

/// A non-blocking write the hub's fan-out makes on a stream's behalf.
pub trait DirectWrite {
    /// Writes what the socket buffer takes of `buf` now, never waiting: `Ok(n)` for `n`
    /// bytes (possibly fewer than `buf.len()`), `WouldBlock` when it takes none.
    fn send_now(&self, buf: &[u8]) -> std::io::Result<usize>;
}

/// A stream's socket lent to the fan-out (see the module header for when that is sound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LentSocket(RawFd);

impl LentSocket {
    /// Lends `socket`; the lender takes it back (drops every copy) before it writes on or
    /// closes the socket itself.
    pub fn of(socket: &impl AsRawFd) -> LentSocket {
        LentSocket(socket.as_raw_fd())
    }
}

impl DirectWrite for LentSocket {
    fn send_now(&self, buf: &[u8]) -> std::io::Result<usize> {
        // MSG_NOSIGNAL: a peer that is gone gives EPIPE, never SIGPIPE.
        send(self.0, buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL)
            .map_err(std::io::Error::from)
    }
}

/// The process's effective user id.
pub fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lent_socket_writes_what_fits_and_reports_a_closed_peer() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let lent = LentSocket::of(&a);
        assert_eq!(lent.send_now(b"hi").expect("send"), 2);
        let mut buf = [0u8; 2];
        std::io::Read::read_exact(&mut &b, &mut buf).expect("read");
        assert_eq!(&buf, b"hi");
        drop(b);
        assert!(lent.send_now(b"x").is_err(), "EPIPE, not a signal");
    }

    #[test]
    fn a_full_socket_would_block() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let lent = LentSocket::of(&a);
        let chunk = vec![0u8; 64 * 1024];
        let err = loop {
            match lent.send_now(&chunk) {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    }
}
