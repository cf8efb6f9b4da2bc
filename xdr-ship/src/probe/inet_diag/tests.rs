use super::*;

#[test]
fn the_cookie_is_low_half_first_in_host_order() {
    let value: u64 = 0x0123_4567_89ab_cdef;
    let mut raw = [0u8; 8];
    raw[..4].copy_from_slice(&(value as u32).to_ne_bytes());
    raw[4..].copy_from_slice(&((value >> 32) as u32).to_ne_bytes());
    assert_eq!(cookie_from_kernel(raw), value);
}

#[test]
fn a_short_tcp_info_fills_a_prefix_and_leaves_the_rest_zero() {
    let mut full = TcpInfo {
        state: 1,
        rtt_us: 1234,
        snd_cwnd: 10,
        total_rto_time_ms: 99,
        ..TcpInfo::default()
    };
    full.bytes_acked = 10_001;
    let bytes = tcp_info_as_bytes(&full);
    // A struct that ends at `total_retrans` (104 bytes), as Linux 3.x sent.
    let short = tcp_info_from_bytes(&bytes[..104]);
    assert_eq!((short.state, short.rtt_us, short.snd_cwnd), (1, 1234, 10));
    assert_eq!((short.bytes_acked, short.total_rto_time_ms), (0, 0));
}

#[test]
fn a_longer_tcp_info_is_cut_to_ours() {
    let full = TcpInfo {
        rtt_us: 7,
        total_rto_time_ms: 99,
        ..TcpInfo::default()
    };
    let mut bytes = tcp_info_as_bytes(&full);
    bytes.extend_from_slice(&[0xff; 32]);
    assert_eq!(tcp_info_from_bytes(&bytes), full);
}

#[test]
fn socket_links_give_inodes_and_other_links_nothing() {
    assert_eq!(socket_inode(Path::new("socket:[123456]")), Some(123_456));
    assert_eq!(socket_inode(Path::new("pipe:[123456]")), None);
    assert_eq!(socket_inode(Path::new("/dev/null")), None);
    assert_eq!(socket_inode(Path::new("socket:[x]")), None);
}

#[test]
fn state_sets_hold_what_they_name() {
    let set = StateSet::of(&[TcpState::Listen, TcpState::Established]);
    assert!(set.contains(TcpState::Listen) && set.contains(TcpState::Established));
    assert!(!set.contains(TcpState::TimeWait));
    assert!(StateSet::CONNECTED.contains(TcpState::CloseWait));
    assert!(!StateSet::CONNECTED.contains(TcpState::Listen));
    assert!(!StateSet::CONNECTED.contains(TcpState::TimeWait));
    for code in 1..=11 {
        assert!(StateSet::ALL.contains(TcpState::from_kernel(code)));
        assert_eq!(TcpState::from_kernel(code).to_kernel(), code);
    }
}

#[test]
fn ports_keep_a_socket_by_either_end() {
    let mut response = InetResponse {
        header: netlink_packet_sock_diag::inet::InetResponseHeader {
            family: AF_INET,
            state: 1,
            timer: None,
            socket_id: SocketId {
                source_port: 40_000,
                destination_port: 5000,
                ..SocketId::new_v4()
            },
            recv_queue: 0,
            send_queue: 0,
            uid: 0,
            inode: 1,
        },
        nlas: Default::default(),
    };
    assert!(to_diag_socket(&response, &[]).is_some());
    assert!(to_diag_socket(&response, &[5000]).is_some());
    assert!(to_diag_socket(&response, &[40_000]).is_some());
    assert!(to_diag_socket(&response, &[5001]).is_none());
    response.nlas.push(Nla::Congestion("cubic".into()));
    let s = to_diag_socket(&response, &[]).unwrap();
    assert_eq!(s.congestion.as_deref(), Some("cubic"));
    assert_eq!(s.info, None);
    assert_eq!(s.dst, "0.0.0.0:5000".parse().unwrap());
}

fn tcp_info_as_bytes(info: &TcpInfo) -> Vec<u8> {
    let mut bytes = vec![0u8; std::mem::size_of::<TcpInfo>()];
    // SAFETY: `TcpInfo` is `repr(C)`, made of integers with no padding
    // (its size, 248, is the sum of its fields); reading its bytes is
    // sound, and `bytes` is exactly that long and separate.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (info as *const TcpInfo).cast::<u8>(),
            bytes.as_mut_ptr(),
            bytes.len(),
        );
    }
    bytes
}
