//! Idle links stay up: a shipper with nothing to send for longer than the
//! receiver's idle timeout keeps its connections, because it sends a PING
//! after `ping_interval` of silence (#15 item 4). The second test is the
//! same run with the pings off: the receiver closes every idle connection,
//! so the first test's assertions can fail. Loopback only, bounded in time.
mod common;

use common::{ship_quietly, Recv};

use std::{sync::atomic::Ordering, time::Duration};

use tokio_util::sync::CancellationToken;
use xdr_ship::{
    server::ServerConfig,
    ship::{ShipConfig, ShipSummary, Source, SourceRecord, WindowSetting},
    wire::Write,
};

/// The receiver closes a connection silent for this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// The quiet spell: three idle timeouts with nothing to send.
const QUIET: Duration = Duration::from_secs(3);
/// Connections of the shipper.
const CONNECTIONS: usize = 2;
/// Records before and after the quiet spell.
const RECORDS_EACH_SIDE: u64 = 50;

/// `RECORDS_EACH_SIDE` records, then nothing for [`QUIET`], then as many
/// again, then the end.
struct QuietNight {
    next_seq: u64,
}

impl Source for QuietNight {
    async fn next(&mut self) -> Option<SourceRecord> {
        let seq = self.next_seq;
        if seq == 2 * RECORDS_EACH_SIDE {
            return None;
        }
        if seq == RECORDS_EACH_SIDE {
            tokio::time::sleep(QUIET).await;
        }
        self.next_seq += 1;
        Some(SourceRecord {
            seq,
            write: Write::put(format!("key:{seq}"), format!("value-{seq}"), seq + 1, 1),
        })
    }
    fn backlog(&self) -> u64 {
        0
    }
    fn describe(&self) -> String {
        "a quiet night".to_owned()
    }
}

async fn ship_over_a_quiet_night(ping_interval: Duration) -> (Recv, ShipSummary) {
    let recv = Recv::start(ServerConfig {
        idle_timeout: IDLE_TIMEOUT,
        ..ServerConfig::default()
    });
    let mut cfg = ShipConfig::new(recv.addr.to_string());
    cfg.connections = CONNECTIONS;
    cfg.window = WindowSetting::Fixed(16);
    cfg.sndbuf = None;
    cfg.ping_interval = ping_interval;
    let summary = ship_quietly(cfg, QuietNight { next_seq: 0 }, CancellationToken::new())
        .await
        .expect("shipping succeeded");
    assert_eq!(summary.counters.delivered(), 2 * RECORDS_EACH_SIDE);
    (recv, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_shipper_pings_and_keeps_its_connections() {
    let (recv, summary) = ship_over_a_quiet_night(IDLE_TIMEOUT / 3).await;
    assert_eq!(recv.stats.timed_out.load(Ordering::Relaxed), 0);
    // One session per connection, plus the preflight's.
    assert_eq!(
        recv.stats.accepted.load(Ordering::Relaxed),
        CONNECTIONS as u64 + 1
    );
    assert_eq!(summary.counters.retry_conn_reset, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pings_the_receiver_closes_idle_connections() {
    let (recv, _) = ship_over_a_quiet_night(Duration::ZERO).await;
    assert!(recv.stats.timed_out.load(Ordering::Relaxed) >= CONNECTIONS as u64);
    assert!(recv.stats.accepted.load(Ordering::Relaxed) > CONNECTIONS as u64 + 1);
}
