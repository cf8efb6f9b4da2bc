//! Joining by socket cookie: the one join of the shipper's connections (or
//! netlink's rows) with the kernel programs' rows.
//!
//! Why by cookie: the shipper reads `SO_COOKIE` for each of its sockets and
//! `tcp:tcp_probe` carries the same number, so the two halves of a
//! connection meet without guessing from addresses and ports (which NAT,
//! reconnects and IPv4-mapped addresses make ambiguous). A cookie of 0 is a
//! socket that is not connected: it joins nothing.
use std::collections::HashMap;

use serde::Serialize;

use crate::{
    metrics::{ConnSnapshot, ShipSnapshot},
    probe::tcp::KernelConn,
};

/// One of the shipper's connections with the kernel programs' row for the
/// same socket (by cookie), if they have one.
#[derive(Clone, Debug, Serialize)]
pub struct JoinedConn {
    /// The shipper's half: in flight, acks/s, window, its `TCP_INFO`.
    pub app: ConnSnapshot,
    /// The eBPF half.
    pub kernel: Option<KernelConn>,
}

/// The kernel's rows found by cookie.
#[derive(Debug)]
pub struct KernelRows<'a> {
    by_cookie: HashMap<u64, &'a KernelConn>,
}

impl<'a> KernelRows<'a> {
    /// Indexes `rows` by cookie.
    pub fn new(rows: &'a [KernelConn]) -> Self {
        Self {
            by_cookie: rows.iter().map(|k| (k.cookie, k)).collect(),
        }
    }

    /// The row of the socket with `cookie`; none for cookie 0.
    pub fn get(&self, cookie: u64) -> Option<&'a KernelConn> {
        if cookie == 0 {
            return None;
        }
        self.by_cookie.get(&cookie).copied()
    }
}

/// Joins the shipper's connections with the kernel's rows by socket cookie:
/// one row per shipper connection, in pool order.
pub fn join(app: &ShipSnapshot, kernel: &[KernelConn]) -> Vec<JoinedConn> {
    let rows = KernelRows::new(kernel);
    app.connections
        .iter()
        .map(|c| JoinedConn {
            app: c.clone(),
            kernel: rows.get(c.cookie).cloned(),
        })
        .collect()
}

/// The kernel's rows of the shipper's own sockets, sorted by cookie: what a
/// sample carries as its eBPF half (the rest of the machine's sockets are
/// not the shipper's business).
pub fn own_rows(app: &ShipSnapshot, kernel: &[KernelConn]) -> Vec<KernelConn> {
    let mut own: Vec<KernelConn> = join(app, kernel)
        .into_iter()
        .filter_map(|j| j.kernel)
        .collect();
    own.sort_by_key(|k| k.cookie);
    own.dedup_by_key(|k| k.cookie);
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kconn(cookie: u64) -> KernelConn {
        KernelConn::from_stat(cookie, &xdr_common::TcpConnStat::default(), 0)
    }

    fn app(cookies: &[u64]) -> ShipSnapshot {
        let mut app = ShipSnapshot::default();
        for (id, &cookie) in cookies.iter().enumerate() {
            app.connections.push(ConnSnapshot {
                id,
                cookie,
                ..ConnSnapshot::default()
            });
        }
        app
    }

    #[test]
    fn join_matches_each_shipper_connection_to_its_own_kernel_row() {
        let joined = join(&app(&[7, 9, 0]), &[kconn(9), kconn(7), kconn(11)]);
        assert_eq!(joined.len(), 3);
        assert_eq!(joined[0].kernel.as_ref().map(|k| k.cookie), Some(7));
        assert_eq!(joined[1].kernel.as_ref().map(|k| k.cookie), Some(9));
        assert!(
            joined[2].kernel.is_none(),
            "a disconnected connection joins nothing"
        );
    }

    #[test]
    fn own_rows_keep_only_the_shippers_sockets_sorted_by_cookie() {
        let own = own_rows(&app(&[9, 7, 0]), &[kconn(0), kconn(7), kconn(9), kconn(11)]);
        let cookies: Vec<u64> = own.iter().map(|k| k.cookie).collect();
        assert_eq!(cookies, [7, 9]);
    }
}
