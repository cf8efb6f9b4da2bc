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
