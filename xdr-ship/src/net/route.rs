//! Which network device a peer's packets use, read from the kernel's
//! routing tables in `/proc/net/route` and `/proc/net/ipv6_route`.
//!
//! Why: the interrupts remedy names the exact file to write
//! (`/sys/class/net/DEV/queues/rx-*/rps_cpus`), and DEV is the device the
//! flow's packets arrive on — on a symmetric path, the one the route to
//! the peer leaves by. Why these files and not netlink: a longest-prefix
//! match over the main table is all the remedy needs, it costs one small
//! read per flow set, and it works without privileges.
use std::net::IpAddr;

/// The device the main routing table sends `peer` through: `lo` for a
/// loopback address, else the longest matching prefix (`None`: no route,
/// or the tables cannot be read).
pub fn device_for(peer: IpAddr) -> Option<String> {
    if peer.is_loopback() {
        return Some("lo".to_owned());
    }
    match peer {
        IpAddr::V4(v4) => {
            let table = std::fs::read_to_string("/proc/net/route").ok()?;
            best_v4(&table, u32::from(v4))
        }
        IpAddr::V6(v6) => {
            let table = std::fs::read_to_string("/proc/net/ipv6_route").ok()?;
            best_v6(&table, u128::from(v6))
        }
    }
}

/// [`device_for`] remembered for the last peer asked about: a live view
/// asks every interval, and its peer rarely changes.
#[derive(Clone, Debug, Default)]
pub struct DeviceCache {
    last: Option<(IpAddr, Option<String>)>,
}

impl DeviceCache {
    /// The device for `peer`, read from the tables only when the peer is
    /// not the one asked about last.
    pub fn device_for(&mut self, peer: IpAddr) -> Option<String> {
        match &self.last {
            Some((ip, dev)) if *ip == peer => dev.clone(),
            _ => {
                let dev = device_for(peer);
                self.last = Some((peer, dev.clone()));
                dev
            }
        }
    }
}

/// Longest-prefix match in `/proc/net/route`'s text (addresses and masks
/// are hexadecimal in the kernel's byte order: little-endian here).
fn best_v4(table: &str, ip: u32) -> Option<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = network_order(f.get(1)?)?;
            let mask = network_order(f.get(7)?)?;
            (ip & mask == dest & mask).then(|| (mask.count_ones(), f[0].to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, dev)| dev)
}

/// A `/proc/net/route` field: the address's bytes as the kernel holds
/// them (network order) printed as a native-endian hex number.
fn network_order(hex: &str) -> Option<u32> {
    Some(u32::from_be_bytes(
        u32::from_str_radix(hex, 16).ok()?.to_ne_bytes(),
    ))
}

/// Longest-prefix match in `/proc/net/ipv6_route`'s text (destination as
/// 32 hex digits, prefix length in hex, the device last); the kernel lists
/// `lo` for local and unreachable entries, which are skipped unless
/// nothing else matches.
fn best_v6(table: &str, ip: u128) -> Option<String> {
    table
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = u128::from_str_radix(f.first()?, 16).ok()?;
            let len = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len.min(128))
            };
            let dev = (*f.last()?).to_owned();
            (ip & mask == dest & mask).then_some((dev != "lo", len, dev))
        })
        .max_by_key(|(real, len, _)| (*real, *len))
        .map(|(_, _, dev)| dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
veth-near\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    #[test]
    fn the_longest_matching_ipv4_prefix_names_the_device() {
        let ip = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
        assert_eq!(
            best_v4(ROUTE, ip("198.18.0.2")).as_deref(),
            Some("veth-near")
        );
        assert_eq!(best_v4(ROUTE, ip("10.0.0.7")).as_deref(), Some("eth0"));
        // Only the default route matches.
        assert_eq!(best_v4(ROUTE, ip("192.0.2.1")).as_deref(), Some("eth0"));
        assert_eq!(best_v4("Iface\tDestination\n", ip("192.0.2.1")), None);
    }

    #[test]
    fn the_longest_matching_ipv6_prefix_names_the_device_and_lo_only_last() {
        let table = "\
20010db8000000000000000000000000 20 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";
        let ip = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        assert_eq!(best_v6(table, ip("2001:db8::5")).as_deref(), Some("eth1"));
        assert_eq!(best_v6(table, ip("2001:db9::5")).as_deref(), Some("lo"));
    }

    #[test]
    fn loopback_addresses_are_lo() {
        assert_eq!(
            device_for("127.0.0.1".parse().unwrap()).as_deref(),
            Some("lo")
        );
        assert_eq!(device_for("::1".parse().unwrap()).as_deref(), Some("lo"));
    }
}
