//! virtio-net headers and TCP segmentation offload, done by hand where a
//! loss must hit one segment.
//!
//! Why: with `IFF_VNET_HDR` and TSO offload the TUN device hands the line
//! ~62 KB "super-packets" (one TCP header, up to ~44 MSS of payload) instead
//! of one packet per MSS, which cuts the line's CPU cost from a core to a
//! fifth at 100 MB/s. The line forwards them whole. But a real link drops
//! *segments*: dropping a whole super-packet would turn one loss into a burst
//! of ~44, which TCP answers very differently. So when a segment must go, the
//! super-packet is split here into pieces around the dropped segments, each a
//! valid (possibly still GSO) packet: IP total length, id and checksum; TCP
//! sequence number; CWR only on the first piece, FIN and PSH only on the last;
//! and the partial (pseudo-header) checksum that `VIRTIO_NET_HDR_F_NEEDS_CSUM`
//! asks the receiving kernel to complete.

/// Size of `struct virtio_net_hdr` (no `num_buffers`), as set with `TUNSETVNETHDRSZ`.
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_ECN`: a flag bit on top of the type.
pub const GSO_ECN: u8 = 0x80;

const IPPROTO_TCP: u8 = 6;
const TCP_CHECK_OFFSET: usize = 16;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// `struct virtio_net_hdr`, in the TUN device's (little-endian) byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` and friends.
    pub flags: u8,
    /// `GSO_*`, possibly with `GSO_ECN`.
    pub gso_type: u8,
    /// Length of the IP + TCP headers.
    pub hdr_len: u16,
    /// The MSS of a GSO packet.
    pub gso_size: u16,
    /// Where checksumming starts (the TCP header).
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header at the start of `frame`.
    pub fn parse(frame: &[u8]) -> Option<Self> {
        let h = frame.get(..VNET_HDR_LEN)?;
        let u = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        Some(Self {
            flags: h[0],
            gso_type: h[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }
}

/// How a frame (vnet header + IP packet) divides into MSS segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Number of segments the wire would carry.
    pub segments: usize,
    /// IP bytes of every segment but the last.
    pub full_segment_len: u64,
    /// IP bytes of the last segment.
    pub last_segment_len: u64,
    /// The TCP fields needed to split, when the frame can be split.
    pub tcp: Option<TcpLayout>,
}

/// Where the headers of a splittable TCP frame sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLayout {
    /// True for IPv6.
    pub v6: bool,
    /// Length of the IP header (IPv6: the fixed 40 bytes; extension headers are not split).
    pub ip_hdr_len: usize,
    /// Length of the TCP header with options.
    pub tcp_hdr_len: usize,
    /// Payload bytes after the TCP header.
    pub payload_len: usize,
    /// Payload per segment.
    pub mss: usize,
}

impl Layout {
    /// IP bytes of segment `i`.
    pub fn segment_len(&self, i: usize) -> u64 {
        if i + 1 == self.segments {
            self.last_segment_len
        } else {
            self.full_segment_len
        }
    }

    /// All IP bytes the wire carries for this frame.
    pub fn wire_len(&self) -> u64 {
        self.full_segment_len * (self.segments as u64 - 1) + self.last_segment_len
    }
}

/// Reads the segment layout of `frame` (vnet header + IP packet). Anything
/// that is not a TCP/IPv4 or TCP/IPv6 packet counts as one unsplittable segment.
pub fn layout(frame: &[u8]) -> Layout {
    let packet_len = frame.len().saturating_sub(VNET_HDR_LEN) as u64;
    let single = Layout {
        segments: 1,
        full_segment_len: packet_len,
        last_segment_len: packet_len,
        tcp: None,
    };
    let Some(hdr) = VnetHdr::parse(frame) else {
        return single;
    };
    let Some(tcp) = tcp_layout(&frame[VNET_HDR_LEN..], &hdr) else {
        return single;
    };
    if tcp.mss == 0 || tcp.payload_len <= tcp.mss {
        return Layout {
            tcp: Some(tcp),
            ..single
        };
    }
    let hdrs = (tcp.ip_hdr_len + tcp.tcp_hdr_len) as u64;
    let segments = tcp.payload_len.div_ceil(tcp.mss);
    let last_payload = tcp.payload_len - (segments - 1) * tcp.mss;
    Layout {
        segments,
        full_segment_len: hdrs + tcp.mss as u64,
        last_segment_len: hdrs + last_payload as u64,
        tcp: Some(tcp),
    }
}

fn tcp_layout(packet: &[u8], hdr: &VnetHdr) -> Option<TcpLayout> {
    let version = packet.first()? >> 4;
    let (v6, ip_hdr_len, total) = match version {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            if ihl < 20 || packet.len() < ihl || packet[9] != IPPROTO_TCP {
                return None;
            }
            // Fragments are never GSO; refuse to touch them anyway.
            let frag = u16::from_be_bytes([packet[6], packet[7]]);
            if frag & 0x3fff != 0 {
                return None;
            }
            (
                false,
                ihl,
                usize::from(u16::from_be_bytes([packet[2], packet[3]])),
            )
        }
        6 => {
            if packet.len() < 40 || packet[6] != IPPROTO_TCP {
                return None;
            }
            (
                true,
                40,
                40 + usize::from(u16::from_be_bytes([packet[4], packet[5]])),
            )
        }
        _ => return None,
    };
    if total != packet.len() {
        return None;
    }
    let tcp = packet.get(ip_hdr_len..)?;
    let tcp_hdr_len = usize::from(tcp.get(12)? >> 4) * 4;
    if tcp_hdr_len < 20 || tcp.len() < tcp_hdr_len {
        return None;
    }
    let gso = hdr.gso_type & !GSO_ECN;
    let mss = if gso == GSO_TCPV4 || gso == GSO_TCPV6 {
        usize::from(hdr.gso_size)
    } else {
        0
    };
    Some(TcpLayout {
        v6,
        ip_hdr_len,
        tcp_hdr_len,
        payload_len: tcp.len() - tcp_hdr_len,
        mss,
    })
}

/// Builds the frames that carry the kept segments of `frame`: one piece per
/// run of consecutive kept segments. `keep[i]` decides segment `i`; a frame
/// without a TCP layout is kept or dropped whole by `keep[0]`.
pub fn split(frame: &[u8], layout: &Layout, keep: &[bool]) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let Some(tcp) = layout.tcp.filter(|_| layout.segments > 1) else {
        if keep.first().copied().unwrap_or(true) {
            pieces.push(frame.to_vec());
        }
        return pieces;
    };
    let mut i = 0;
    while i < layout.segments {
        if !keep.get(i).copied().unwrap_or(true) {
            i += 1;
            continue;
        }
        let first = i;
        while i < layout.segments && keep.get(i).copied().unwrap_or(true) {
            i += 1;
        }
        pieces.push(piece(frame, layout.segments, &tcp, first, i));
    }
    pieces
}

/// One frame carrying segments `first..end` of `frame`.
fn piece(frame: &[u8], segments: usize, tcp: &TcpLayout, first: usize, end: usize) -> Vec<u8> {
    let packet = &frame[VNET_HDR_LEN..];
    let hdrs = tcp.ip_hdr_len + tcp.tcp_hdr_len;
    let pay_from = first * tcp.mss;
    let pay_to = (end * tcp.mss).min(tcp.payload_len);
    let payload = &packet[hdrs + pay_from..hdrs + pay_to];
    let tcp_len = tcp.tcp_hdr_len + payload.len();

    let mut out = Vec::with_capacity(VNET_HDR_LEN + hdrs + payload.len());
    out.extend_from_slice(&frame[..VNET_HDR_LEN]);
    out.extend_from_slice(&packet[..hdrs]);
    out.extend_from_slice(payload);

    let orig = VnetHdr::parse(frame).unwrap_or_default();
    let count = end - first;
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if count > 1 { orig.gso_type } else { GSO_NONE },
        hdr_len: hdrs as u16,
        gso_size: if count > 1 { tcp.mss as u16 } else { 0 },
        csum_start: tcp.ip_hdr_len as u16,
        csum_offset: TCP_CHECK_OFFSET as u16,
    };
    hdr.write(&mut out);

    let ip = &mut out[VNET_HDR_LEN..VNET_HDR_LEN + tcp.ip_hdr_len];
    if tcp.v6 {
        ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    } else {
        ip[2..4].copy_from_slice(&((tcp.ip_hdr_len + tcp_len) as u16).to_be_bytes());
        let id = u16::from_be_bytes([ip[4], ip[5]]).wrapping_add(first as u16);
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = !fold(sum_be_words(ip, 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let pseudo = pseudo_header_sum(&out[VNET_HDR_LEN..], tcp.v6, tcp_len);

    let th = VNET_HDR_LEN + tcp.ip_hdr_len;
    let seq = u32::from_be_bytes([out[th + 4], out[th + 5], out[th + 6], out[th + 7]])
        .wrapping_add((first * tcp.mss) as u32);
    out[th + 4..th + 8].copy_from_slice(&seq.to_be_bytes());
    if first > 0 {
        out[th + 13] &= !TCP_CWR;
    }
    if end < segments {
        out[th + 13] &= !(TCP_FIN | TCP_PSH);
    }
    // Partial checksum: the folded pseudo-header sum, not complemented; the
    // receiving kernel adds the segment and complements.
    out[th + TCP_CHECK_OFFSET..th + TCP_CHECK_OFFSET + 2]
        .copy_from_slice(&fold(pseudo).to_be_bytes());
    out
}

/// Sum of the TCP pseudo-header of `packet` (starting at the IP header).
fn pseudo_header_sum(packet: &[u8], v6: bool, tcp_len: usize) -> u32 {
    let (addrs, len) = if v6 {
        (&packet[8..40], tcp_len as u32)
    } else {
        (&packet[12..20], tcp_len as u32)
    };
    let mut s = sum_be_words(addrs, 0);
    s += u32::from(IPPROTO_TCP);
    s += len >> 16;
    s += len & 0xffff;
    s
}

/// One's-complement accumulation of big-endian 16-bit words (odd tail padded).
pub fn sum_be_words(bytes: &[u8], mut acc: u32) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        acc = (acc & 0xffff) + (acc >> 16);
    }
    if let [b] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*b) << 8);
    }
    acc
}

/// Folds a 32-bit accumulator to 16 bits.
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The TCP fields the RTT probe reads: ports, addresses, timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpMeta {
    /// Source address (IPv4 mapped into the low 4 bytes) and port.
    pub src: ([u8; 16], u16),
    /// Destination address and port.
    pub dst: ([u8; 16], u16),
    /// TSval and TSecr of the timestamp option, when present.
    pub ts: Option<(u32, u32)>,
}

/// Reads the flow and timestamp option of a TCP packet (no vnet header).
pub fn tcp_meta(packet: &[u8]) -> Option<TcpMeta> {
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    let ip_len = match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            if packet.len() < ihl.max(20) || packet[9] != IPPROTO_TCP {
                return None;
            }
            src[12..].copy_from_slice(&packet[12..16]);
            dst[12..].copy_from_slice(&packet[16..20]);
            ihl
        }
        6 => {
            if packet.len() < 40 || packet[6] != IPPROTO_TCP {
                return None;
            }
            src.copy_from_slice(&packet[8..24]);
            dst.copy_from_slice(&packet[24..40]);
            40
        }
        _ => return None,
    };
    let tcp = packet.get(ip_len..)?;
    let hl = usize::from(*tcp.get(12)? >> 4) * 4;
    let opts = tcp.get(20..hl)?;
    let port = |i: usize| u16::from_be_bytes([tcp[i], tcp[i + 1]]);
    let mut ts = None;
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = usize::from(*opts.get(i + 1)?);
                if len < 2 || i + len > opts.len() {
                    break;
                }
                if kind == 8 && len == 10 {
                    let o = &opts[i + 2..i + 10];
                    ts = Some((
                        u32::from_be_bytes([o[0], o[1], o[2], o[3]]),
                        u32::from_be_bytes([o[4], o[5], o[6], o[7]]),
                    ));
                }
                i += len;
            }
        }
    }
    Some(TcpMeta {
        src: (src, port(0)),
        dst: (dst, port(2)),
        ts,
    })
}

#[cfg(test)]
mod tests;
