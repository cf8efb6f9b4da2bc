//! Where a server's writes go.
//!
//! Why a trait: the same accept loop, handshake and ordered/unordered
//! answering serve two ports. `recv` applies writes to the destination
//! [`Store`]; a source node's ingest port (`ship --listen`) appends them to
//! the durable source log (`srclog::LogSink`). The sink answers per write,
//! or refuses the whole request with one code (Busy when the log is full).
use std::{future::Future, pin::Pin, sync::Arc};

use crate::{
    store::{ApplyOutcome, Store, StoreError},
    wire::{ResultCode, Write},
};

/// A sink's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// One code per write, in order.
    PerWrite(Vec<ResultCode>),
    /// None of the writes was taken, for this reason.
    Refused(ResultCode, String),
}

/// The future a sink returns.
pub type SinkFuture = Pin<Box<dyn Future<Output = Applied> + Send>>;

/// Takes the writes of one request.
pub trait Sink: Send + Sync + 'static {
    /// Applies (or stores) `writes` and answers once they are as durable as
    /// this sink promises.
    fn apply(&self, writes: Vec<Write>) -> SinkFuture;
}

impl Sink for Store {
    fn apply(&self, writes: Vec<Write>) -> SinkFuture {
        let store = self.clone();
        Box::pin(async move {
            match store.apply(writes).await {
                Ok(outcomes) => Applied::PerWrite(
                    outcomes
                        .iter()
                        .map(|o| match o {
                            ApplyOutcome::Applied => ResultCode::Ok,
                            ApplyOutcome::LostConflict => ResultCode::LostConflict,
                        })
                        .collect(),
                ),
                // A write the store can never take (empty or oversize key or
                // value) is permanent: resending it would loop forever.
                Err(StoreError::InvalidWrite { index, reason }) => {
                    let code = if reason.contains("empty") {
                        ResultCode::BadRequest
                    } else {
                        ResultCode::RecordTooLarge
                    };
                    Applied::Refused(code, format!("write {index}: {reason}"))
                }
                // A full disk: retryable, and the shipper backs off.
                Err(e @ StoreError::Full { .. }) => {
                    Applied::Refused(ResultCode::Busy, format!("store: {e}"))
                }
                Err(e) if !e.is_retryable() => {
                    Applied::Refused(ResultCode::BadRequest, format!("store: {e}"))
                }
                Err(e) => Applied::Refused(ResultCode::Unavailable, format!("store: {e}")),
            }
        })
    }
}

impl From<Store> for Arc<dyn Sink> {
    fn from(store: Store) -> Self {
        Arc::new(store)
    }
}
