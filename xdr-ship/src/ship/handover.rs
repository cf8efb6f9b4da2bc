//! The hand-over queue between the dispatcher (or the cluster router) and
//! the connections' writers: bounded, many producers and many consumers,
//! and taken in runs: a producer puts a burst in under one lock, a writer
//! takes as many records as it holds window permits for under one lock.
//!
//! Why not `async-channel`, which this replaced: it moves one record per
//! operation, and each operation notifies the other side. With 64 writers
//! parked on an empty queue, every record the dispatcher put in woke
//! another writer, which mostly found the record already taken by the one
//! woken before and parked again. On loopback (1 KB records) the channel's
//! notifications and queue operations were 13% of the shipper's CPU, and
//! 31% with 100-byte records, more than encoding and the socket writes
//! together. Here a put wakes one writer, and a writer that leaves records
//! behind wakes the next one: a wake per run of records, not per record.
//!
//! Why not another crate: the channels on offer move one message per
//! operation or drain the whole queue at once; a writer must take no more
//! records than its window has room for (the rest are for the other
//! connections), which is what [`Receiver::try_recv_while`] does.
//!
//! Closing: [`Sender::close`] or the last sender dropped lets the
//! receivers take what is queued, then tells them the queue is over; the
//! last receiver dropped refuses further puts.
use std::{collections::VecDeque, sync::Arc};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// A queue of at most `capacity` items (at least 1).
pub(crate) fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            items: VecDeque::with_capacity(capacity.max(1)),
            closed: false,
            ends: [1, 1],
        }),
        capacity: capacity.max(1),
        not_empty: Notify::new(),
        not_full: Notify::new(),
    });
    (
        Sender(End {
            inner: inner.clone(),
            side: SENDERS,
        }),
        Receiver(End {
            inner,
            side: RECEIVERS,
        }),
    )
}

struct Inner<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// Wakes a receiver: something was put in (or the queue closed).
    not_empty: Notify,
    /// Wakes a sender: something was taken out (or the queue closed).
    not_full: Notify,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
    /// Live senders and receivers ([`SENDERS`], [`RECEIVERS`]).
    ends: [usize; 2],
}

const SENDERS: usize = 0;
const RECEIVERS: usize = 1;

impl<T> Inner<T> {
    fn close(&self) {
        self.state.lock().closed = true;
        self.not_empty.notify_waiters();
        self.not_full.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.state.lock().closed
    }
}

/// One end of the queue, counted: the last of a side dropped closes it.
struct End<T> {
    inner: Arc<Inner<T>>,
    side: usize,
}

impl<T> Clone for End<T> {
    fn clone(&self) -> Self {
        self.inner.state.lock().ends[self.side] += 1;
        End {
            inner: self.inner.clone(),
            side: self.side,
        }
    }
}

impl<T> Drop for End<T> {
    fn drop(&mut self) {
        let last = {
            let mut st = self.inner.state.lock();
            st.ends[self.side] -= 1;
            st.ends[self.side] == 0
        };
        if last {
            self.inner.close();
        }
    }
}

/// Why [`Sender::try_send`] gave the item back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TrySendError<T> {
    /// The queue holds `capacity` items.
    Full(T),
    /// The queue is closed: nothing will take the item.
    Closed(T),
}

/// Why [`Receiver::try_recv`] returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TryRecvError {
    /// Nothing queued now.
    Empty,
    /// Nothing queued, and nothing will be.
    Closed,
}

/// The queue is closed and (for a receiver) empty.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the hand-over queue is closed")]
pub(crate) struct Closed;

/// The putting end.
pub(crate) struct Sender<T>(End<T>);

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender(self.0.clone())
    }
}

impl<T> Sender<T> {
    /// Puts `item` in if there is room.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        {
            let mut st = self.0.inner.state.lock();
            if st.closed {
                return Err(TrySendError::Closed(item));
            }
            if st.items.len() >= self.0.inner.capacity {
                return Err(TrySendError::Full(item));
            }
            st.items.push_back(item);
        }
        self.0.inner.not_empty.notify_one();
        Ok(())
    }

    /// Moves items from the front of `items` into the queue while there is
    /// room (one lock, one wake); returns how many it moved. What is left
    /// in `items` did not fit.
    pub(crate) fn try_send_from(&self, items: &mut VecDeque<T>) -> Result<usize, Closed> {
        let moved = {
            let mut st = self.0.inner.state.lock();
            if st.closed {
                return Err(Closed);
            }
            let room = self.0.inner.capacity.saturating_sub(st.items.len());
            let n = room.min(items.len());
            st.items.extend(items.drain(..n));
            n
        };
        if moved > 0 {
            self.0.inner.not_empty.notify_one();
        }
        Ok(moved)
    }

    /// Puts `item` in, waiting for room. Cancel-safe in the sense that a
    /// dropped future drops its item and queues nothing.
    pub(crate) async fn send(&self, item: T) -> Result<(), Closed> {
        let mut item = item;
        loop {
            let room = self.0.inner.not_full.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(_)) => return Err(Closed),
                Err(TrySendError::Full(back)) => item = back,
            }
            room.await;
        }
    }

    /// Closes the queue: receivers take what is queued, then see it closed.
    pub(crate) fn close(&self) {
        self.0.inner.close();
    }

    /// Whether the queue is closed (every receiver gone, or closed).
    pub(crate) fn is_closed(&self) -> bool {
        self.0.inner.is_closed()
    }
}

/// The taking end.
pub(crate) struct Receiver<T>(End<T>);

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver(self.0.clone())
    }
}

impl<T> Receiver<T> {
    /// Takes the front item, if any.
    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        let (item, more) = {
            let mut st = self.0.inner.state.lock();
            match st.items.pop_front() {
                Some(item) => (item, !st.items.is_empty()),
                None if st.closed => return Err(TryRecvError::Closed),
                None => return Err(TryRecvError::Empty),
            }
        };
        self.taken(more);
        Ok(item)
    }

    /// Takes items from the front into `into` while `take` says yes to the
    /// next one, at most `max` (one lock); returns how many it took. `take`
    /// sees each item before it is taken: the writer's byte budget.
    pub(crate) fn try_recv_while(
        &self,
        into: &mut Vec<T>,
        max: usize,
        mut take: impl FnMut(&T) -> bool,
    ) -> usize {
        let (n, more) = {
            let mut st = self.0.inner.state.lock();
            let mut n = 0;
            while n < max && st.items.front().is_some_and(&mut take) {
                into.extend(st.items.pop_front());
                n += 1;
            }
            (n, !st.items.is_empty())
        };
        if n > 0 {
            self.taken(more);
        }
        n
    }

    /// After a take: room for a sender, and, if items are left, the next
    /// receiver's turn (a put wakes only one).
    fn taken(&self, more: bool) {
        self.0.inner.not_full.notify_one();
        if more {
            self.0.inner.not_empty.notify_one();
        }
    }

    /// Takes the front item, waiting for one; `Err` once the queue is
    /// closed and empty. Cancel-safe: nothing is taken until it returns.
    pub(crate) async fn recv(&self) -> Result<T, Closed> {
        loop {
            let ready = self.0.inner.not_empty.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            match self.try_recv() {
                Ok(item) => return Ok(item),
                Err(TryRecvError::Closed) => return Err(Closed),
                Err(TryRecvError::Empty) => {}
            }
            ready.await;
        }
    }

    /// Items queued now.
    pub(crate) fn len(&self) -> usize {
        self.0.inner.state.lock().items.len()
    }

    /// Whether nothing is queued now.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the queue is closed (it may still hold items).
    pub(crate) fn is_closed(&self) -> bool {
        self.0.inner.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_full_queue_gives_the_item_back() {
        let (tx, _rx) = bounded(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
    }

    #[test]
    fn a_run_is_put_in_as_far_as_there_is_room() {
        let (tx, rx) = bounded(3);
        tx.try_send(0).unwrap();
        let mut burst: VecDeque<_> = (1..=4).collect();
        assert_eq!(tx.try_send_from(&mut burst), Ok(2));
        assert_eq!(burst, [3, 4]);
        let mut got = Vec::new();
        rx.try_recv_while(&mut got, 10, |_| true);
        assert_eq!(got, [0, 1, 2], "in order, nothing lost");
    }

    #[test]
    fn a_writer_takes_no_more_than_its_count_and_budget() {
        let (tx, rx) = bounded(16);
        let mut burst: VecDeque<_> = (0..10).collect();
        tx.try_send_from(&mut burst).unwrap();
        let mut got = Vec::new();
        assert_eq!(rx.try_recv_while(&mut got, 3, |_| true), 3);
        let mut budget = 2;
        let took = rx.try_recv_while(&mut got, 10, |_| {
            budget -= 1;
            budget >= 0
        });
        assert_eq!(took, 2);
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert_eq!(rx.len(), 5, "the rest stays for the other writers");
    }

    #[test]
    fn receivers_drain_what_was_queued_before_they_see_the_close() {
        let (tx, rx) = bounded(4);
        tx.try_send(7).unwrap();
        drop(tx);
        assert!(rx.is_closed());
        assert_eq!(rx.try_recv(), Ok(7));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn the_last_receiver_gone_refuses_puts() {
        let (tx, rx) = bounded(4);
        let rx2 = rx.clone();
        drop(rx);
        assert_eq!(tx.try_send(1), Ok(()));
        drop(rx2);
        assert!(tx.is_closed());
        assert_eq!(tx.try_send(2), Err(TrySendError::Closed(2)));
    }

    #[tokio::test]
    async fn a_parked_receiver_wakes_for_a_put() {
        let (tx, rx) = bounded(4);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send(5).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.unwrap().unwrap(), Ok(5));
    }

    #[tokio::test]
    async fn every_parked_receiver_gets_its_turn_at_a_run() {
        // One put of a run wakes one receiver; each that leaves items
        // behind wakes the next, so all of them are served.
        let (tx, rx) = bounded(16);
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let rx = rx.clone();
                tokio::spawn(async move { rx.recv().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut run: VecDeque<_> = (0..4).collect();
        tx.try_send_from(&mut run).unwrap();
        let mut got = Vec::new();
        for w in waiters {
            let r = tokio::time::timeout(Duration::from_secs(5), w).await;
            got.push(r.expect("a receiver was never woken").unwrap().unwrap());
        }
        got.sort();
        assert_eq!(got, [0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_sender_waiting_for_room_puts_once_an_item_is_taken() {
        let (tx, rx) = bounded(1);
        tx.try_send(1).unwrap();
        let sender = tokio::spawn(async move { tx.send(2).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(rx.try_recv(), Ok(1));
        let sent = tokio::time::timeout(Duration::from_secs(5), sender).await;
        assert_eq!(sent.unwrap().unwrap(), Ok(()));
        assert_eq!(rx.try_recv(), Ok(2));
    }

    #[tokio::test]
    async fn closing_wakes_a_parked_receiver_with_the_end() {
        let (tx, rx) = bounded::<u32>(4);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.close();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.unwrap().unwrap(), Err(Closed));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_putters_and_takers_move_every_item_once_within_capacity() {
        // 2 putters in runs, 6 takers in runs of random size, some parked
        // in `recv` with a timeout racing it (as a writer's select! does).
        const CAP: usize = 32;
        const PER_PUTTER: u32 = 20_000;
        let (tx, rx) = bounded::<u32>(CAP);
        let putters: Vec<_> = (0..2u32)
            .map(|p| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut run = VecDeque::new();
                    let mut next = 0;
                    while next < PER_PUTTER || !run.is_empty() {
                        while run.len() < 1 + fastrand::usize(..64) && next < PER_PUTTER {
                            run.push_back(p * PER_PUTTER + next);
                            next += 1;
                        }
                        tx.try_send_from(&mut run).unwrap();
                        if let Some(item) = run.pop_front() {
                            tx.send(item).await.unwrap();
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let takers: Vec<_> = (0..6)
            .map(|_| {
                let rx = rx.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    loop {
                        let first = tokio::select! {
                            r = rx.recv() => r,
                            _ = tokio::time::sleep(Duration::from_micros(50)) => continue,
                        };
                        let Ok(first) = first else { return got };
                        got.push(first);
                        rx.try_recv_while(&mut got, fastrand::usize(..16), |_| true);
                        assert!(rx.len() <= CAP, "the queue held {}", rx.len());
                    }
                })
            })
            .collect();
        drop(rx);
        let all = tokio::time::timeout(Duration::from_secs(30), async {
            for p in putters {
                p.await.unwrap();
            }
            let mut all = Vec::new();
            for t in takers {
                all.extend(t.await.unwrap());
            }
            all
        })
        .await
        .expect("the queue stalled");
        let mut all = all;
        all.sort_unstable();
        let want: Vec<u32> = (0..2 * PER_PUTTER).collect();
        assert_eq!(all.len(), want.len(), "items lost or doubled");
        assert_eq!(all, want);
    }

    #[tokio::test]
    async fn a_cancelled_receive_passes_its_wake_on() {
        // A writer's select! drops its recv when another branch wins; the
        // put it was woken for must reach the receiver still waiting.
        let (tx, rx) = bounded(4);
        let rx2 = rx.clone();
        let patient = tokio::spawn(async move { rx2.recv().await });
        {
            let impatient = rx.recv();
            tokio::pin!(impatient);
            // Poll once so it is registered, then drop it after the put.
            assert!(futures_util::poll!(impatient.as_mut()).is_pending());
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.try_send(9).unwrap();
        }
        let got = tokio::time::timeout(Duration::from_secs(5), patient).await;
        assert_eq!(got.unwrap().unwrap(), Ok(9));
    }
}
