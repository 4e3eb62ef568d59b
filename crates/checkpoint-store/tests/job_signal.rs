//! The job signal ([`JobStore::job_signal`]) moves when jobs may have become due: on SQLite for
//! this process's own commits, on PostgreSQL for any process's, through the database's
//! notifications; and stays still for changes that make no job due.

mod common;

use std::time::Duration;

use checkpoint_store::{EnqueueOptions, Failure, JobKind, JobStore, PgStore, PgStoreOptions};
use common::{Backend, backends};
use serde_json::json;
use tokio::sync::watch::Receiver;

/// Waits (at most 30 s, far beyond a notification's round trip) for the signal to move.
async fn moved(signal: &mut Receiver<u64>, what: &str, backend: &str) {
    tokio::time::timeout(Duration::from_secs(30), signal.changed())
        .await
        .unwrap_or_else(|_| panic!("{backend}: the signal did not move after {what}"))
        .unwrap();
    signal.borrow_and_update();
}

#[tokio::test]
async fn the_signal_moves_when_a_job_is_queued_retried_or_handed_back() {
    for h in backends().await {
        let mut signal = h.store.job_signal().expect("both backends signal");
        if matches!(h.backend, Backend::Postgres(_)) {
            // Its listening connection raises the signal once when it starts listening.
            moved(&mut signal, "listening", h.name).await;
        }
        h.enqueue("d1").await;
        moved(&mut signal, "an enqueue", h.name).await;

        let lease = h.lease_one("w1").await;
        h.store.fail(lease, "try again", Failure::Retryable).await.unwrap();
        moved(&mut signal, "a retryable failure", h.name).await;

        h.clock.advance(Duration::from_secs(3600));
        let lease = h.lease_one("w1").await;
        h.store.postpone(lease, Duration::ZERO, "rate limited").await.unwrap();
        moved(&mut signal, "a hand-back", h.name).await;

        // Completing the job makes nothing due: no signal.
        let lease = h.lease_one("w1").await;
        h.store.complete(lease, None).await.unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(300), signal.changed()).await;
        assert!(quiet.is_err(), "{}: the signal moved for a completion", h.name);
    }
}

#[tokio::test]
async fn on_postgresql_a_job_queued_by_another_process_moves_the_signal() {
    let Some(url) = common::postgres_url() else { return };
    for h in backends().await {
        let Backend::Postgres(store) = &h.backend else { continue };
        let mut signal = h.store.job_signal().expect("the store signals");
        // The listener's first connection raises the signal once; wait for it.
        moved(&mut signal, "listening", h.name).await;
        // Another connection pool on the same schema stands for another worker's process.
        let options = PgStoreOptions { schema: store.schema().to_owned(), ..PgStoreOptions::default() };
        let elsewhere = PgStore::connect(&url, options).await.unwrap();
        elsewhere.enqueue(JobKind::ProcessDocument, json!({}), EnqueueOptions::default()).await.unwrap();
        moved(&mut signal, "an enqueue by another store", h.name).await;

        // Another schema's jobs are not this store's.
        let other_schema = PgStoreOptions { schema: common::test_schema(), ..PgStoreOptions::default() };
        let other = PgStore::connect(&url, other_schema).await.unwrap();
        other.enqueue(JobKind::ProcessDocument, json!({}), EnqueueOptions::default()).await.unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(500), signal.changed()).await;
        assert!(quiet.is_err(), "the signal moved for another schema's job");
        let drop = format!("DROP SCHEMA {} CASCADE", other.schema());
        sqlx::query(sqlx::AssertSqlSafe(drop)).execute(other.pool()).await.unwrap();
        other.close().await;
        elsewhere.close().await;
    }
}
