//! Socket set-up shared by the shipper and the receiver.
//!
//! Why buffers get this much care: on a 156 ms link at 100 MB/s the
//! bandwidth-delay product is 15.6 MB, and a TCP connection can never have
//! more than its receive window (the peer's SO_RCVBUF) or its send buffer in
//! flight. The seed raised the receiver's SO_RCVBUF to 15 MiB and the
//! sender's to 5 MiB. But Linux silently caps an explicit SO_RCVBUF/SO_SNDBUF
//! at `net.core.rmem_max`/`wmem_max` (212992 bytes by default), and setting
//! either at all turns off the kernel's buffer autotuning, which on its own
//! could have grown to `tcp_rmem`/`tcp_wmem`'s maximum. So when the cap would
//! bite, we leave autotuning on and say which sysctl to raise; when it does
//! not, we set the size and read back what the kernel really gave us.
pub mod lowat;
pub mod route;

use std::{io, os::fd::AsRawFd};

use socket2::Socket;

/// Which buffer of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffer {
    /// SO_RCVBUF: bounds the window this side advertises.
    Receive,
    /// SO_SNDBUF: bounds what this side can have unacknowledged plus queued.
    Send,
}

impl Buffer {
    fn option_name(self) -> &'static str {
        match self {
            Buffer::Receive => "SO_RCVBUF",
            Buffer::Send => "SO_SNDBUF",
        }
    }
    fn core_max_sysctl(self) -> &'static str {
        match self {
            Buffer::Receive => "net.core.rmem_max",
            Buffer::Send => "net.core.wmem_max",
        }
    }
    fn tcp_sysctl(self) -> &'static str {
        match self {
            Buffer::Receive => "net.ipv4.tcp_rmem",
            Buffer::Send => "net.ipv4.tcp_wmem",
        }
    }
}

/// What happened when a buffer size was requested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferReport {
    /// Which buffer.
    pub buffer: Buffer,
    /// Bytes asked for.
    pub requested: usize,
    /// What the kernel reports now (it doubles the set value for
    /// bookkeeping; this is the halved, usable figure), or, with
    /// autotuning left on, the most autotuning may grow to.
    pub effective: usize,
    /// Whether the size was set, or autotuning was left on because the
    /// system cap would have made an explicit size smaller.
    pub autotuned: bool,
    /// A warning with the exact fix, when the result is below the request.
    pub warning: Option<String>,
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// `net.core.{r,w}mem_max` in bytes.
fn core_max(buffer: Buffer) -> Option<usize> {
    let file = match buffer {
        Buffer::Receive => "/proc/sys/net/core/rmem_max",
        Buffer::Send => "/proc/sys/net/core/wmem_max",
    };
    read_sysctl(file)?.parse().ok()
}

/// The third field of `net.ipv4.tcp_{r,w}mem`: how far autotuning may grow.
fn autotune_max(buffer: Buffer) -> Option<usize> {
    let file = match buffer {
        Buffer::Receive => "/proc/sys/net/ipv4/tcp_rmem",
        Buffer::Send => "/proc/sys/net/ipv4/tcp_wmem",
    };
    read_sysctl(file)?.split_whitespace().nth(2)?.parse().ok()
}

/// Requests `bytes` for `buffer` on `socket` (call before connect/listen so
/// the window scale is negotiated for it), and reports what it got.
pub fn request_buffer(socket: &Socket, buffer: Buffer, bytes: usize) -> io::Result<BufferReport> {
    let cap = core_max(buffer).unwrap_or(usize::MAX);
    let auto = autotune_max(buffer).unwrap_or(0);
    let fix = |needed: usize| {
        format!(
            "sysctl -w {}={needed} (and the third field of {} to at least {needed})",
            buffer.core_max_sysctl(),
            buffer.tcp_sysctl()
        )
    };
    if bytes > cap {
        // An explicit size would be capped below the request and would
        // switch off autotuning: keep autotuning, report its ceiling.
        let effective = auto.max(cap);
        let warning = (effective < bytes).then(|| {
            format!(
                "{} of {} requested but {} = {cap} caps it; left autotuning on \
                 (up to {auto} bytes from {}); to get the full size: {}",
                buffer.option_name(),
                bytes,
                buffer.core_max_sysctl(),
                buffer.tcp_sysctl(),
                fix(bytes)
            )
        });
        return Ok(BufferReport {
            buffer,
            requested: bytes,
            effective,
            autotuned: true,
            warning,
        });
    }
    match buffer {
        Buffer::Receive => socket.set_recv_buffer_size(bytes)?,
        Buffer::Send => socket.set_send_buffer_size(bytes)?,
    }
    let reported = match buffer {
        Buffer::Receive => socket.recv_buffer_size()?,
        Buffer::Send => socket.send_buffer_size()?,
    };
    let effective = reported / 2;
    let warning = (effective < bytes).then(|| {
        format!(
            "{} of {bytes} requested, the kernel gave {effective}; fix: {}",
            buffer.option_name(),
            fix(bytes)
        )
    });
    Ok(BufferReport {
        buffer,
        requested: bytes,
        effective,
        autotuned: false,
        warning,
    })
}

/// The kernel's socket cookie (`SO_COOKIE`): the key the eBPF programs see
/// for this socket (`tcp:tcp_probe` carries `sock_cookie`).
pub fn socket_cookie(socket: &impl AsRawFd) -> io::Result<u64> {
    cookie_of_fd(socket.as_raw_fd())
}

fn cookie_of_fd(fd: std::os::fd::RawFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are valid for writes of the sizes given.
    // `getsockopt` on any integer is memory-safe: the kernel validates the
    // fd (a closed one gives EBADF).
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(cookie)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The kernel's `struct tcp_info` (uapi `linux/tcp.h`) up to
/// `tcpi_total_rto_time` (Linux 6.7+). libc's copy stops at `tcpi_segs_out`
/// and lacks what diagnosis needs most: `notsent_bytes`, the chrono timers
/// `busy_time` / `rwnd_limited` / `sndbuf_limited`, `delivery_rate`, and the
/// peer's window. An older kernel fills a prefix and leaves the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    pub state: u8,
    pub ca_state: u8,
    pub retransmits: u8,
    pub probes: u8,
    pub backoff: u8,
    pub options: u8,
    /// `snd_wscale:4, rcv_wscale:4`.
    pub wscale: u8,
    /// `delivery_rate_app_limited:1, fastopen_client_fail:2`.
    pub app_limited_bits: u8,
    pub rto_us: u32,
    pub ato_us: u32,
    pub snd_mss: u32,
    pub rcv_mss: u32,
    pub unacked: u32,
    pub sacked: u32,
    pub lost: u32,
    pub retrans: u32,
    pub fackets: u32,
    pub last_data_sent_ms: u32,
    pub last_ack_sent_ms: u32,
    pub last_data_recv_ms: u32,
    pub last_ack_recv_ms: u32,
    pub pmtu: u32,
    pub rcv_ssthresh: u32,
    /// Smoothed RTT, µs.
    pub rtt_us: u32,
    pub rttvar_us: u32,
    pub snd_ssthresh: u32,
    /// Congestion window, segments.
    pub snd_cwnd: u32,
    pub advmss: u32,
    pub reordering: u32,
    pub rcv_rtt_us: u32,
    pub rcv_space: u32,
    pub total_retrans: u32,
    /// Bytes per second.
    pub pacing_rate: u64,
    pub max_pacing_rate: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub segs_out: u32,
    pub segs_in: u32,
    /// Bytes written by the application and not yet sent.
    pub notsent_bytes: u32,
    pub min_rtt_us: u32,
    pub data_segs_in: u32,
    pub data_segs_out: u32,
    /// Bytes per second.
    pub delivery_rate: u64,
    /// µs the connection had data in flight.
    pub busy_time_us: u64,
    /// µs it was limited by the peer's receive window.
    pub rwnd_limited_us: u64,
    /// µs it was limited by its own send buffer.
    pub sndbuf_limited_us: u64,
    pub delivered: u32,
    pub delivered_ce: u32,
    pub bytes_sent: u64,
    pub bytes_retrans: u64,
    pub dsack_dups: u32,
    pub reord_seen: u32,
    pub rcv_ooopack: u32,
    /// The peer's advertised window, bytes.
    pub snd_wnd: u32,
    /// Our advertised window, bytes.
    pub rcv_wnd: u32,
    pub rehash: u32,
    pub total_rto: u16,
    pub total_rto_recoveries: u16,
    pub total_rto_time_ms: u32,
}

const _: () = assert!(std::mem::size_of::<TcpInfo>() == 248);

impl TcpInfo {
    /// Whether the last delivery-rate sample was limited by the application.
    pub fn delivery_rate_app_limited(&self) -> bool {
        self.app_limited_bits & 1 == 1
    }
}

/// `getsockopt(TCP_INFO)` of a TCP socket.
pub fn tcp_info(socket: &impl AsRawFd) -> io::Result<TcpInfo> {
    tcp_info_of_fd(socket.as_raw_fd())
}

/// `TCP_INFO` of the socket `cookie` names, read through `fd`, which another
/// task owns and may close (and the process may reuse) at any time: the
/// socket's cookie is checked before and after, so the answer is either this
/// socket's or `None`, never a stranger's.
pub fn tcp_info_if_cookie(fd: std::os::fd::RawFd, cookie: u64) -> Option<TcpInfo> {
    if fd < 0 || cookie == 0 || cookie_of_fd(fd).ok()? != cookie {
        return None;
    }
    let info = tcp_info_of_fd(fd).ok()?;
    (cookie_of_fd(fd).ok()? == cookie).then_some(info)
}

fn tcp_info_of_fd(fd: std::os::fd::RawFd) -> io::Result<TcpInfo> {
    let mut info = TcpInfo::default();
    let mut len = std::mem::size_of::<TcpInfo>() as libc::socklen_t;
    // SAFETY: `info` is a plain-old-data `repr(C)` struct valid for writes of
    // `len` bytes; the kernel writes at most `len` bytes and updates `len`,
    // and validates the fd itself.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut TcpInfo).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(info)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Type};

    #[test]
    fn a_size_under_the_cap_is_set_and_read_back() {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let r = request_buffer(&s, Buffer::Send, 64 * 1024).unwrap();
        assert!(!r.autotuned);
        assert!(r.effective >= 64 * 1024, "{r:?}");
        assert!(r.warning.is_none(), "{r:?}");
    }

    #[test]
    fn a_size_over_the_cap_keeps_autotuning_and_names_the_sysctl() {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let cap = core_max(Buffer::Receive).unwrap();
        let r = request_buffer(&s, Buffer::Receive, cap + 1).unwrap();
        assert!(r.autotuned, "{r:?}");
        if let Some(w) = r.warning {
            assert!(w.contains("net.core.rmem_max"), "{w}");
            assert!(
                w.contains(&format!("sysctl -w net.core.rmem_max={}", cap + 1)),
                "{w}"
            );
        }
    }

    #[test]
    fn tcp_info_of_a_connected_socket_sees_the_bytes_sent() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        c.write_all(&[7u8; 10_000]).unwrap();
        let mut buf = vec![0u8; 10_000];
        s.read_exact(&mut buf).unwrap();
        let info = tcp_info(&c).unwrap();
        assert_eq!(info.state, 1, "TCP_ESTABLISHED");
        assert_eq!(info.bytes_acked, 10_001, "SYN + payload");
        assert!(info.snd_cwnd > 0 && info.rtt_us > 0, "{info:?}");
        assert!(info.snd_wnd > 0 && info.rcv_wnd > 0, "{info:?}");
    }

    #[test]
    fn tcp_info_by_fd_answers_only_for_the_socket_the_cookie_names() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let cookie = socket_cookie(&c).unwrap();
        assert!(tcp_info_if_cookie(c.as_raw_fd(), cookie).is_some());
        assert!(tcp_info_if_cookie(c.as_raw_fd(), cookie + 1).is_none());
        let fd = c.as_raw_fd();
        drop(c);
        assert!(tcp_info_if_cookie(fd, cookie).is_none(), "closed fd");
    }

    #[test]
    fn every_socket_has_a_distinct_nonzero_cookie() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (ca, cb) = (socket_cookie(&a).unwrap(), socket_cookie(&b).unwrap());
        assert_ne!(ca, 0);
        assert_ne!(ca, cb);
    }
}
