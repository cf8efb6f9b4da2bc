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
mod tests {
    use super::*;

    const MSS: usize = 1448;

    /// A TSO frame as the kernel hands it over: IPv4, TCP with a 12-byte
    /// timestamp option, partial checksum over the whole super-packet.
    fn super_packet_v4(payload_len: usize, flags: u8) -> Vec<u8> {
        let tcp_hdr = 32;
        let total = 20 + tcp_hdr + payload_len;
        let mut p = vec![0u8; VNET_HDR_LEN + total];
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: (20 + tcp_hdr) as u16,
            gso_size: MSS as u16,
            csum_start: 20,
            csum_offset: 16,
        }
        .write(&mut p);
        let ip = &mut p[VNET_HDR_LEN..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&0xfffeu16.to_be_bytes()); // id wraps in the 3rd piece
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
        ip[16..20].copy_from_slice(&[198, 18, 0, 2]);
        let t = &mut ip[20..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&0xffff_f000u32.to_be_bytes()); // seq wraps too
        t[8..12].copy_from_slice(&77u32.to_be_bytes());
        t[12] = (tcp_hdr as u8 / 4) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&1000u16.to_be_bytes());
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7]);
        for (i, b) in t[tcp_hdr..].iter_mut().enumerate() {
            *b = (i * 7 + i / 251) as u8;
        }
        p
    }

    /// Checksum reference, written independently of `sum_be_words`/`fold`:
    /// the RFC 1071 sum over a byte buffer, 64-bit accumulator, folded at the end.
    fn rfc1071(data: &[u8]) -> u16 {
        let mut acc: u64 = 0;
        for i in (0..data.len()).step_by(2) {
            let hi = u64::from(data[i]) << 8;
            let lo = data.get(i + 1).map_or(0, |b| u64::from(*b));
            acc += hi | lo;
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    /// What the receiving kernel does with `F_NEEDS_CSUM`: sum from
    /// `csum_start` to the end (the field holds the pseudo-header seed) and
    /// store the complement.
    fn complete_checksum(frame: &mut [u8]) {
        let h = VnetHdr::parse(frame).unwrap();
        assert_eq!(h.flags & F_NEEDS_CSUM, F_NEEDS_CSUM);
        let pkt = &mut frame[VNET_HDR_LEN..];
        let start = usize::from(h.csum_start);
        let at = start + usize::from(h.csum_offset);
        let c = rfc1071(&pkt[start..]);
        pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }

    /// Verifies a complete TCP/IPv4 segment: IP header and TCP checksums.
    fn assert_valid_v4(pkt: &[u8]) {
        let ihl = usize::from(pkt[0] & 0xf) * 4;
        assert_eq!(rfc1071(&pkt[..ihl]), 0, "IP header checksum");
        let tcp = &pkt[ihl..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&pkt[12..20]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(tcp);
        assert_eq!(rfc1071(&pseudo), 0, "TCP checksum");
    }

    fn seq(pkt: &[u8]) -> u32 {
        u32::from_be_bytes(pkt[24..28].try_into().unwrap())
    }

    #[test]
    fn layout_counts_segments_and_wire_bytes() {
        let f = super_packet_v4(10 * MSS + 100, 0x18);
        let l = layout(&f);
        assert_eq!(l.segments, 11);
        assert_eq!(l.full_segment_len, 52 + MSS as u64);
        assert_eq!(l.last_segment_len, 152);
        assert_eq!(l.wire_len(), 10 * (52 + MSS as u64) + 152);
        // A plain ACK is one segment, no GSO.
        let mut ack = super_packet_v4(0, 0x10);
        ack[1] = GSO_NONE;
        let l = layout(&ack);
        assert_eq!((l.segments, l.wire_len()), (1, 52));
    }

    #[test]
    fn split_into_single_segments_gives_valid_packets() {
        let payload = 3 * MSS + 500;
        let f = super_packet_v4(payload, 0x80 | 0x18 | 0x01); // CWR, ACK|PSH, FIN
        let l = layout(&f);
        let pieces = split(&f, &l, &[true, false, true, true]);
        // Segment 1 dropped: pieces are [0] and [2, 3].
        assert_eq!(pieces.len(), 2);
        let whole = split(&f, &l, &[true; 4]);
        assert_eq!(whole.len(), 1, "nothing dropped: one piece");

        // Split into every segment to check each against the original payload.
        let mut singles = Vec::new();
        for keep_only in 0..4 {
            let mut keep = [false; 4];
            keep[keep_only] = true;
            let mut p = split(&f, &l, &keep);
            assert_eq!(p.len(), 1);
            singles.push(p.remove(0));
        }
        let orig_payload = &f[VNET_HDR_LEN + 52..];
        for (i, mut s) in singles.into_iter().enumerate() {
            let h = VnetHdr::parse(&s).unwrap();
            assert_eq!(h.gso_type, GSO_NONE);
            assert_eq!(h.gso_size, 0);
            assert_eq!((h.csum_start, h.csum_offset, h.hdr_len), (20, 16, 52));
            complete_checksum(&mut s);
            let pkt = &s[VNET_HDR_LEN..];
            assert_valid_v4(pkt);
            let want_len = if i == 3 { 500 } else { MSS };
            assert_eq!(
                usize::from(u16::from_be_bytes([pkt[2], pkt[3]])),
                52 + want_len
            );
            assert_eq!(pkt.len(), 52 + want_len);
            assert_eq!(
                u16::from_be_bytes([pkt[4], pkt[5]]),
                0xfffeu16.wrapping_add(i as u16),
                "IP id advances per segment"
            );
            assert_eq!(seq(pkt), 0xffff_f000u32.wrapping_add((i * MSS) as u32));
            assert_eq!(&pkt[52..], &orig_payload[i * MSS..i * MSS + want_len]);
            let fl = pkt[33];
            assert_eq!(fl & 0x80 != 0, i == 0, "CWR only on the first piece");
            assert_eq!(fl & 0x01 != 0, i == 3, "FIN only on the last piece");
            assert_eq!(fl & 0x08 != 0, i == 3, "PSH only on the last piece");
            assert_eq!(fl & 0x10, 0x10, "ACK everywhere");
            assert_eq!(
                &pkt[40..52],
                &f[VNET_HDR_LEN + 40..VNET_HDR_LEN + 52],
                "options kept"
            );
        }
    }

    #[test]
    fn multi_segment_piece_stays_gso_and_segments_like_the_kernel() {
        let f = super_packet_v4(5 * MSS, 0x18);
        let l = layout(&f);
        let pieces = split(&f, &l, &[false, true, true, true, false]);
        assert_eq!(pieces.len(), 1);
        let mut p = pieces[0].clone();
        let h = VnetHdr::parse(&p).unwrap();
        assert_eq!((h.gso_type, usize::from(h.gso_size)), (GSO_TCPV4, MSS));
        let pl = layout(&p);
        assert_eq!(pl.segments, 3);
        assert_eq!(
            seq(&p[VNET_HDR_LEN..]),
            0xffff_f000u32.wrapping_add(MSS as u32)
        );
        assert_eq!(
            p[VNET_HDR_LEN + 33] & 0x08,
            0,
            "PSH cleared: not the last segment"
        );
        // The whole piece checksums correctly as one (GRO-like) packet...
        complete_checksum(&mut p);
        assert_valid_v4(&p[VNET_HDR_LEN..]);
        // ...and re-splitting it yields valid single segments too.
        let mut again = split(&pieces[0], &pl, &[true, false, true]);
        assert_eq!(again.len(), 2);
        for s in &mut again {
            complete_checksum(s);
            assert_valid_v4(&s[VNET_HDR_LEN..]);
        }
    }

    #[test]
    fn ipv6_pieces_carry_payload_length_and_checksum() {
        let payload = 2 * MSS + 10;
        let tcp_hdr = 20;
        let mut f = vec![0u8; VNET_HDR_LEN + 40 + tcp_hdr + payload];
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV6,
            hdr_len: 60,
            gso_size: MSS as u16,
            csum_start: 40,
            csum_offset: 16,
        }
        .write(&mut f);
        let ip = &mut f[VNET_HDR_LEN..];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&((tcp_hdr + payload) as u16).to_be_bytes());
        ip[6] = 6;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        ip[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        ip[40 + 12] = 5 << 4;
        ip[40 + 13] = 0x10;
        for (i, b) in ip[60..].iter_mut().enumerate() {
            *b = i as u8 ^ 0x5a;
        }
        let l = layout(&f);
        assert_eq!(l.segments, 3);
        let pieces = split(&f, &l, &[true, false, true]);
        assert_eq!(pieces.len(), 2);
        for (mut p, want) in pieces.into_iter().zip([MSS, 10]) {
            complete_checksum(&mut p);
            let pkt = &p[VNET_HDR_LEN..];
            assert_eq!(usize::from(u16::from_be_bytes([pkt[4], pkt[5]])), 20 + want);
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&pkt[8..40]);
            pseudo.extend_from_slice(&((20 + want) as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 6]);
            pseudo.extend_from_slice(&pkt[40..]);
            assert_eq!(rfc1071(&pseudo), 0, "TCP/IPv6 checksum");
        }
    }

    #[test]
    fn non_tcp_frames_are_one_unsplittable_segment() {
        let mut f = super_packet_v4(100, 0x10);
        f[VNET_HDR_LEN + 9] = 17; // UDP
        let l = layout(&f);
        assert_eq!((l.segments, l.tcp), (1, None));
        assert_eq!(split(&f, &l, &[true]), vec![f.clone()]);
        assert!(split(&f, &l, &[false]).is_empty());
    }

    #[test]
    fn timestamps_and_flow_are_read() {
        let f = super_packet_v4(10, 0x10);
        let m = tcp_meta(&f[VNET_HDR_LEN..]).unwrap();
        assert_eq!(m.ts, Some((9, 7)));
        assert_eq!(m.src.1, 40000);
        assert_eq!(m.dst.1, 5201);
        assert_eq!(&m.dst.0[12..], &[198, 18, 0, 2]);
    }
}
