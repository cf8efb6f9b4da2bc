//! The auto window against a receiver that takes its time over loopback:
//! Little's law then asks for far more records in flight than the
//! configured maximum, and the maximum must hold, connection by connection,
//! in every snapshot. No root needed; bounded in time.
mod common;

use common::{Recv, LIMIT};

use std::{sync::Arc, sync::Mutex, time::Duration};

use tokio_util::sync::CancellationToken;
use xdr_ship::{
    server::ServerConfig,
    ship::{self, GenerateSpec, Generator, ShipConfig, WindowSetting},
    wire::OrderingMode,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_window_never_exceeds_its_configured_maximum() {
    // Every request is answered 20 ms late: at tens of thousands of
    // records/s that needs thousands in flight, against a maximum of 100.
    let recv = Recv::start(ServerConfig {
        apply_delay: Some(Duration::from_millis(20)),
        ..ServerConfig::default()
    });
    const MAX: u64 = 100;
    let mut cfg = ShipConfig::new(recv.addr.to_string());
    cfg.connections = 2;
    cfg.window = WindowSetting::Auto;
    cfg.auto_window_max = MAX;
    cfg.mode = OrderingMode::Unordered;
    cfg.sndbuf = None;
    cfg.interval = Duration::from_millis(100);
    cfg.duration = Some(Duration::from_secs(3));
    let spec = GenerateSpec {
        rate: None,
        value_size: 100,
        keys: 1000,
    };
    let seen = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let s = seen.clone();
    let summary = tokio::time::timeout(
        LIMIT,
        ship::run(
            cfg,
            Generator::new(spec, 1, None),
            move |snap| {
                let mut s = s.lock().unwrap();
                for c in &snap.connections {
                    s.push((c.window, c.inflight));
                }
            },
            CancellationToken::new(),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("shipping finished in time")
    .expect("shipping succeeded");
    assert!(summary.counters.delivered() > 0);
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty(), "no snapshot");
    let (window, inflight) = seen
        .iter()
        .fold((0, 0), |(w, i), (cw, ci)| (w.max(*cw), i.max(*ci)));
    assert!(
        window <= MAX && inflight <= MAX,
        "largest window {window}, in flight {inflight}, maximum {MAX}"
    );
    // The maximum is what bound it (the path wanted more), not something else.
    assert_eq!(window, MAX, "the window grew to its maximum");
}
