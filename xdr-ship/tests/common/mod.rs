//! Fixtures shared by this crate's loopback integration tests: a receiver
//! on 127.0.0.1 and a scratch directory, both gone when dropped (even when
//! a test panics).
// Each test binary compiles this module and uses its own part of it.
#![allow(dead_code)]

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use xdr_ship::{
    server::{self, ServerConfig, ServerStats, Sink},
    ship::{self, ShipConfig, ShipError, ShipSummary, Source},
    store::Store,
};

/// The longest any single wait in these tests may take.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Ships `source` with `cfg`, printing nothing; `cancel` ends it at once.
/// Panics if it takes longer than [`LIMIT`].
pub async fn ship_quietly(
    cfg: ShipConfig,
    source: impl Source,
    cancel: CancellationToken,
) -> Result<ShipSummary, ShipError> {
    tokio::time::timeout(
        LIMIT,
        ship::run(cfg, source, |_| {}, CancellationToken::new(), cancel),
    )
    .await
    .expect("shipping finished in time")
}

/// A scratch directory under the system's temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new, empty directory named after `tag`, this process and the time.
    pub fn new(tag: &str) -> Self {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("xdr-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    /// Writes `content` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A receiver serving on loopback in this process; stops when dropped.
pub struct Recv {
    pub addr: SocketAddr,
    pub stats: Arc<ServerStats>,
    store: Option<Store>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Recv {
    /// A memory store behind `cfg` (kernel buffer autotuning), on
    /// 127.0.0.1 at a free port.
    pub fn start(cfg: ServerConfig) -> Self {
        let store = Store::memory();
        let mut recv = Self::serve(Arc::new(store.clone()), cfg, None);
        recv.store = Some(store);
        recv
    }

    /// `store` behind the default configuration, at `at` (a free loopback
    /// port if `None`): a restart can take the address of a killed one.
    pub fn with_store(store: Store, at: Option<SocketAddr>) -> Self {
        let mut recv = Self::serve(Arc::new(store.clone()), ServerConfig::default(), at);
        recv.store = Some(store);
        recv
    }

    /// Writes go to `sink` (the source log, a faulty wrapper).
    pub fn with_sink(sink: Arc<dyn Sink>) -> Self {
        Self::serve(sink, ServerConfig::default(), None)
    }

    /// [`Recv::with_sink`] at `at` (a free loopback port if `None`).
    #[allow(dead_code)] // not every test binary restarts a receiver
    pub fn with_sink_at(sink: Arc<dyn Sink>, at: Option<SocketAddr>) -> Self {
        Self::serve(sink, ServerConfig::default(), at)
    }

    fn serve(sink: Arc<dyn Sink>, cfg: ServerConfig, at: Option<SocketAddr>) -> Self {
        let cfg = ServerConfig {
            rcvbuf: None,
            ..cfg
        };
        let addr = at.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let (listener, _) = server::bind(addr, &cfg).expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ServerStats::default());
        let shutdown = CancellationToken::new();
        let (s, t) = (stats.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            server::serve(listener, sink, cfg, s, t)
                .await
                .expect("serve");
        });
        Self {
            addr,
            stats,
            store: None,
            shutdown,
            task: Some(task),
        }
    }

    /// The store writes were applied to (not for a sink-backed receiver).
    pub fn store(&self) -> &Store {
        self.store
            .as_ref()
            .expect("a receiver started with a store")
    }

    /// Records in the store.
    pub fn records(&self) -> u64 {
        self.store().digest().unwrap().records
    }

    /// Kills the receiver abruptly: every connection drops mid-stream.
    pub async fn kill(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for Recv {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
