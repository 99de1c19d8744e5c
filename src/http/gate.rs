//! The bound on concurrent JSON API work: a request takes one of `slots`
//! before it asks for a census and keeps it until its document is written.
//! When every slot is taken, at most `max_waiting` requests wait, each at
//! most `wait`; any other request is refused at once (503, `Retry-After`).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(super) struct ApiGate {
    sem: Arc<Semaphore>,
    waiting: AtomicUsize,
    pub slots: usize,
    pub max_waiting: usize,
    wait: Duration,
}

/// Requests that may wait for a slot, per slot.
const WAITING_PER_SLOT: usize = 16;

/// Decrements the waiting count however the wait ends (a closed
/// connection drops the waiting future).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ApiGate {
    pub(super) fn new(slots: usize, wait: Duration) -> ApiGate {
        let slots = slots.max(1);
        ApiGate {
            sem: Arc::new(Semaphore::new(slots)),
            waiting: AtomicUsize::new(0),
            slots,
            max_waiting: slots * WAITING_PER_SLOT,
            wait,
        }
    }

    /// A slot, or `None` when the wait is full or the slot did not come
    /// in time.
    pub(super) async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.sem.clone().try_acquire_owned() {
            return Some(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let _w = Waiting(&self.waiting);
        tokio::time::timeout(self.wait, self.sem.clone().acquire_owned())
            .await
            .ok()
            .and_then(|r| r.ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_gate_refuses_beyond_its_queue_and_times_out_waiters() {
        let g = Arc::new(ApiGate::new(1, Duration::from_millis(300)));
        let held = g.enter().await.expect("a free slot");
        // 16 may wait; the 17th is refused at once.
        let mut waiters = Vec::new();
        for _ in 0..WAITING_PER_SLOT {
            let g = g.clone();
            waiters.push(tokio::spawn(async move { g.enter().await }));
        }
        tokio::task::yield_now().await;
        assert_eq!(g.waiting.load(Ordering::Acquire), WAITING_PER_SLOT);
        assert!(g.enter().await.is_none());
        // The slot freed: one waiter gets it and keeps it; the others
        // time out.
        drop(held);
        let mut got = Vec::new();
        for w in waiters {
            got.extend(w.await.unwrap());
        }
        assert_eq!(got.len(), 1);
        assert_eq!(g.waiting.load(Ordering::Acquire), 0);
    }
}
