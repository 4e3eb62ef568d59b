//! The signal a worker waits on between polls ([`JobStore::job_signal`](crate::JobStore::job_signal)):
//! a counter that moves each time jobs may have become due, so an idle worker starts new work at
//! once instead of at its next poll. It says "look again", never "there is a job": the lease
//! decides, and the poll stays as the fallback for whatever the signal cannot see.
//!
//! - SQLite raises it after each commit of this process that makes a job pending (an enqueue, a
//!   retry, a hand-back, a take-back, an operator's requeue); other processes on the same file
//!   are found by their poll.
//! - PostgreSQL raises it on each notification of the channel [`CHANNEL`], which a trigger on
//!   `jobs` sends (payload: the schema) whenever a row becomes pending, from any process; one
//!   listening connection per store, opened by the first subscriber and closed once the store and
//!   its subscribers are gone.

use std::sync::Arc;

use tokio::sync::watch;

/// The PostgreSQL notification channel of pending jobs (migration 0013).
pub(crate) const CHANNEL: &str = "quire_jobs_pending";

/// The counter behind the signal, shared by a store's clones.
#[derive(Debug, Clone)]
pub(crate) struct JobSignal(Arc<watch::Sender<u64>>);

impl JobSignal {
    pub(crate) fn new() -> JobSignal {
        JobSignal(Arc::new(watch::channel(0).0))
    }

    /// Jobs may have become due.
    pub(crate) fn raise(&self) {
        bump(&self.0);
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }

    /// A handle that does not keep the signal alive: a listener holding it stops once the store
    /// is gone.
    pub(crate) fn downgrade(&self) -> std::sync::Weak<watch::Sender<u64>> {
        Arc::downgrade(&self.0)
    }
}

/// Raises the signal behind `weak`, if the store still exists; false once it does not.
pub(crate) fn raise(weak: &std::sync::Weak<watch::Sender<u64>>) -> bool {
    weak.upgrade().map(|sender| bump(&sender)).is_some()
}

fn bump(sender: &watch::Sender<u64>) {
    sender.send_modify(|raised| *raised = raised.wrapping_add(1));
}
