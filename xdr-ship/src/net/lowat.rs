//! Wake a reader when its frame is whole (or 16 KB more of it has come),
//! not on every segment.
//!
//! Why: across a long link 64 connections share the line, so each
//! connection's 64 KiB BATCH arrives as ~45 segments spread over
//! milliseconds, interleaved with everyone else's. Each segment made the
//! socket readable: the receiver woke, read 1,448 bytes, found no whole
//! frame and slept again — ~30 wake-ups and syscalls per frame, and half of
//! `recv`'s CPU went to waking and switching (measured on the seed's lab
//! link: 44,000 syscalls/s and 15,700 context switches/s for 89,000
//! records/s). The codec knows, from a frame's header, exactly how many
//! bytes it still needs; `SO_RCVLOWAT` tells the kernel not to wake the
//! reader before that many are queued. Linux's `tcp_data_ready` still wakes
//! it on a FIN, an error, memory pressure or a receive window about to close,
//! so the low-water mark can delay a wake-up but never stall a connection.
//! Setting the option also signals `EPOLLIN` at once when the queue already
//! holds enough (`tcp_set_rcvlowat`), so lowering it never loses an edge.
use std::os::fd::RawFd;

/// The low-water mark is never set above this (a quarter of Linux's
/// initial 64 KB receive window): a frame larger than it is read in a few
/// wake-ups, not one. Why not the whole frame: the kernel grows a socket's
/// receive buffer from the bytes the reader takes each round trip, less
/// what still waits in the queue (Linux 6.18 here), so a reader that takes
/// nothing until a 64 KB batch is whole starves that growth while the
/// connection opens. Measured on the seed's lab link with the mark raised
/// to the rest of the frame at every wait and a 256 KB cap: the 64
/// connections sat at 21–25K records/s for 4–8 s (against 60–100K with
/// 16 KB), and the stuck sockets' buffers were still at their 128 KB
/// default, `rcv_space` at its initial 14,480, after 3 s.
pub const MAX_LOWAT: usize = 16 << 10;

/// One socket's `SO_RCVLOWAT`, changed only when the wanted value changes.
#[derive(Debug)]
pub struct RcvLowat {
    fd: RawFd,
    current: usize,
    broken: bool,
}

impl RcvLowat {
    /// Tracks the socket `fd`, whose low-water mark is the default (1).
    /// `fd` must stay open for as long as this value is used.
    pub fn new(fd: RawFd) -> Self {
        Self {
            fd,
            current: 1,
            broken: false,
        }
    }

    /// Asks to be woken only when `needed` more bytes are queued (clamped to
    /// 1..=[`MAX_LOWAT`]). A failed `setsockopt` (not a TCP socket) turns the
    /// tracking off: the reader is then woken as without it.
    pub fn want(&mut self, needed: usize) {
        let value = needed.clamp(1, MAX_LOWAT);
        if self.broken || value == self.current {
            return;
        }
        let v = value as libc::c_int;
        // SAFETY: `fd` is an open socket for this value's lifetime (the
        // caller's contract in `new`); `v` is a valid c_int that outlives the
        // call and its size is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            self.current = value;
        } else {
            self.broken = true;
        }
    }

    /// Bytes received and not yet read (`FIONREAD`): what waits below the
    /// mark, so that an idle close can still say a frame was unfinished.
    pub fn queued(&self) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: `fd` is an open socket (see `new`); FIONREAD writes one
        // c_int into `n`, which outlives the call.
        let rc = unsafe { libc::ioctl(self.fd, libc::FIONREAD, &mut n) };
        if rc == 0 {
            usize::try_from(n).unwrap_or(0)
        } else {
            0
        }
    }

    /// The low-water mark last set.
    pub fn current(&self) -> usize {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
        os::fd::AsRawFd,
        time::Duration,
    };

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    fn readable_within(s: &TcpStream, ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        n == 1 && p.revents & libc::POLLIN != 0
    }

    #[test]
    fn a_socket_is_not_readable_until_the_wanted_bytes_are_queued() {
        let (mut tx, rx) = pair();
        let mut lowat = RcvLowat::new(rx.as_raw_fd());
        lowat.want(1000);
        assert_eq!(lowat.current(), 1000);
        tx.write_all(&[7u8; 600]).unwrap();
        assert!(!readable_within(&rx, 100), "woken with 600 of 1000 bytes");
        tx.write_all(&[7u8; 400]).unwrap();
        assert!(readable_within(&rx, 1000), "not woken with all 1000 bytes");
    }

    #[test]
    fn lowering_the_mark_below_what_is_queued_wakes_the_reader_at_once() {
        let (mut tx, rx) = pair();
        let mut lowat = RcvLowat::new(rx.as_raw_fd());
        lowat.want(1000);
        tx.write_all(&[1u8; 600]).unwrap();
        assert!(!readable_within(&rx, 100));
        lowat.want(500);
        assert!(readable_within(&rx, 1000));
    }

    #[test]
    fn a_closing_peer_wakes_the_reader_below_the_mark() {
        let (mut tx, mut rx) = pair();
        let mut lowat = RcvLowat::new(rx.as_raw_fd());
        lowat.want(1000);
        tx.write_all(&[1u8; 10]).unwrap();
        drop(tx);
        assert!(readable_within(&rx, 1000), "a FIN must wake the reader");
        rx.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = Vec::new();
        rx.read_to_end(&mut buf).unwrap();
        assert_eq!(buf.len(), 10);
    }

    #[test]
    fn bytes_waiting_below_the_mark_are_counted_as_queued() {
        let (mut tx, rx) = pair();
        let mut lowat = RcvLowat::new(rx.as_raw_fd());
        lowat.want(1000);
        tx.write_all(&[1u8; 300]).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while lowat.queued() < 300 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(lowat.queued(), 300);
    }

    #[test]
    fn the_mark_is_clamped_to_one_and_to_the_maximum() {
        let (_tx, rx) = pair();
        let mut lowat = RcvLowat::new(rx.as_raw_fd());
        lowat.want(0);
        assert_eq!(lowat.current(), 1);
        lowat.want(usize::MAX);
        assert_eq!(lowat.current(), MAX_LOWAT);
    }
}
