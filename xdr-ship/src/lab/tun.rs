//! Opening a TUN device in GSO mode.
//!
//! Why GSO mode: per-packet TUN costs about a full core at 100 MB/s on these
//! machines, which the sender and receiver need. With `IFF_VNET_HDR` and TSO
//! offload the kernel hands over ~62 KB super-packets, each with a
//! `virtio_net_hdr` in front, and the cost drops to ~0.15–0.2 core.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use super::gso::VNET_HDR_LEN;

/// `struct ifreq` as `TUNSETIFF` reads it: a name and the flags, padded to 40 bytes.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens `/dev/net/tun` and creates the device `name` in the calling
/// thread's network namespace: `IFF_TUN | IFF_NO_PI | IFF_VNET_HDR`, a
/// 10-byte vnet header, checksum and TSO offload. The fd is close-on-exec
/// and non-blocking; the device disappears when it is closed.
pub fn open_gso(name: &str) -> io::Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TUN name '{name}' must be 1 to 15 bytes"),
        ));
    }
    let path = CString::new("/dev/net/tun").map_err(io::Error::other)?;
    // SAFETY: `path` is a valid NUL-terminated string; `open` has no other preconditions.
    let raw = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly opened descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads (and may write back) a `struct ifreq`; `req` is
    // a properly sized, initialised, exclusively borrowed one.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReqFlags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let hdr_len = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer, which is valid.
    if unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETVNETHDRSZ,
            &hdr_len as *const libc::c_int,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    let offload = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    // SAFETY: TUNSETOFFLOAD takes the flags as the integer argument itself.
    if unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            offload as libc::c_ulong,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}
