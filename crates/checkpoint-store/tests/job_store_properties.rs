//! Random interleavings of every queue operation, across three workers and a moving clock,
//! checked against the store's three promises after every step:
//! no job is lost, no job is owned by two workers, and no fenced write gets through.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use checkpoint_store::{EnqueueOptions, Failure, Job, JobFilter, JobId, JobStatus, Lease};
use common::{Harness, TTL};
use proptest::prelude::*;
use stage_machine::{Checkpoint, Stage};

const OWNERS: [&str; 3] = ["w0", "w1", "w2"];

#[derive(Debug, Clone)]
enum Op {
    Enqueue,
    Lease { owner: usize, max_jobs: u32 },
    Heartbeat { owner: usize },
    Checkpoint { owner: usize, pick: usize },
    Complete { owner: usize, pick: usize },
    Fail { owner: usize, pick: usize, permanent: bool },
    Postpone { owner: usize, pick: usize },
    Release { owner: usize, pick: usize },
    RecoverStale,
    EnforceTimeouts,
    Advance { seconds: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let owner = 0..OWNERS.len();
    prop_oneof![
        3 => Just(Op::Enqueue),
        3 => (owner.clone(), 1..4u32).prop_map(|(owner, max_jobs)| Op::Lease { owner, max_jobs }),
        2 => owner.clone().prop_map(|owner| Op::Heartbeat { owner }),
        2 => (owner.clone(), any::<usize>()).prop_map(|(owner, pick)| Op::Checkpoint { owner, pick }),
        2 => (owner.clone(), any::<usize>()).prop_map(|(owner, pick)| Op::Complete { owner, pick }),
        1 => (owner.clone(), any::<usize>(), any::<bool>()).prop_map(|(owner, pick, permanent)| Op::Fail { owner, pick, permanent }),
        1 => (owner.clone(), any::<usize>()).prop_map(|(owner, pick)| Op::Postpone { owner, pick }),
        1 => (owner.clone(), any::<usize>()).prop_map(|(owner, pick)| Op::Release { owner, pick }),
        1 => Just(Op::RecoverStale),
        1 => Just(Op::EnforceTimeouts),
        2 => (0..100u64).prop_map(|seconds| Op::Advance { seconds }),
    ]
}

/// What the test remembers: every lease each worker was ever given, stale or not.
#[derive(Default)]
struct Model {
    enqueued: Vec<JobId>,
    leases: [Vec<Lease>; 3],
    /// The highest token handed out per job, to check tokens never repeat.
    last_token: HashMap<JobId, i64>,
    /// Who was given each (job, token).
    given_to: HashMap<(JobId, i64), usize>,
}

fn holds(job: &Job, lease: Lease) -> bool {
    job.status == JobStatus::Processing && job.lease_token == lease.token
}

async fn run(h: Harness, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    for op in ops {
        step(&h, &mut model, op).await?;
        check_invariants(&h, &model).await?;
    }
    Ok(())
}

/// Runs a fenced write; it must succeed exactly when the lease still holds, and change nothing
/// when it does not.
async fn fenced<F, Fut, T>(h: &Harness, lease: Lease, write: F) -> Result<(), TestCaseError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = checkpoint_store::StoreResult<T>>,
{
    let before = h.job(lease.job_id).await;
    let held = holds(&before, lease);
    match write().await {
        Ok(_) => prop_assert!(held, "a write with a stale lease {lease:?} got through"),
        Err(error) => {
            prop_assert!(error.is_lease_lost(), "unexpected error {error}");
            prop_assert!(!held, "a write with a valid lease {lease:?} was refused");
            prop_assert_eq!(h.job(lease.job_id).await, before, "a refused write changed the job");
        }
    }
    Ok(())
}

fn pick(model: &Model, owner: usize, pick: usize) -> Option<Lease> {
    let leases = &model.leases[owner];
    (!leases.is_empty()).then(|| leases[pick % leases.len()])
}

async fn step(h: &Harness, model: &mut Model, op: Op) -> Result<(), TestCaseError> {
    let store = &h.store;
    match op {
        Op::Enqueue => {
            let options =
                EnqueueOptions { timeout: Some(Duration::from_secs(150)), max_attempts: Some(3), ..Default::default() };
            let job = h.enqueue_with("d", options).await;
            model.enqueued.push(job.id);
        }
        Op::Lease { owner, max_jobs } => {
            for job in h.lease(OWNERS[owner], max_jobs).await {
                let lease = job.lease().unwrap();
                let previous = model.last_token.insert(job.id, lease.token);
                prop_assert!(previous.is_none_or(|p| p < lease.token), "token reused for {}", job.id);
                model.given_to.insert((job.id, lease.token), owner);
                model.leases[owner].push(lease);
            }
        }
        Op::Heartbeat { owner } => {
            let leases = model.leases[owner].clone();
            let mut expected_lost = Vec::new();
            for &lease in &leases {
                if !holds(&h.job(lease.job_id).await, lease) {
                    expected_lost.push(lease.job_id);
                }
            }
            let report = store.heartbeat(OWNERS[owner], &leases, TTL).await.unwrap();
            prop_assert_eq!(report.lost, expected_lost);
            // Forget leases the store says are gone, as a worker would.
            model.leases[owner].retain(|lease| report.renewed.contains(&lease.job_id));
        }
        Op::Checkpoint { owner, pick: p } => {
            if let Some(lease) = pick(model, owner, p) {
                let mut checkpoint = Checkpoint::default();
                checkpoint.complete(Stage::Extracted, lease.token).unwrap();
                fenced(h, lease, || store.save_checkpoint(lease, &checkpoint)).await?;
            }
        }
        Op::Complete { owner, pick: p } => {
            if let Some(lease) = pick(model, owner, p) {
                fenced(h, lease, || store.complete(lease, None)).await?;
            }
        }
        Op::Fail { owner, pick: p, permanent } => {
            if let Some(lease) = pick(model, owner, p) {
                let failure = if permanent { Failure::Permanent } else { Failure::Retryable };
                fenced(h, lease, || store.fail(lease, "boom", failure)).await?;
            }
        }
        Op::Postpone { owner, pick: p } => {
            if let Some(lease) = pick(model, owner, p) {
                fenced(h, lease, || store.postpone(lease, Duration::from_secs(5), "later")).await?;
            }
        }
        Op::Release { owner, pick: p } => {
            if let Some(lease) = pick(model, owner, p) {
                let before = h.job(lease.job_id).await;
                let mine = before.status == JobStatus::Processing
                    && before.lock_owner.as_deref() == Some(OWNERS[owner])
                    && before.lease_token == lease.token;
                let released = store.release(OWNERS[owner], &[lease]).await.unwrap();
                prop_assert_eq!(released.len(), usize::from(mine));
                if !mine {
                    prop_assert_eq!(h.job(lease.job_id).await, before);
                }
            }
        }
        Op::RecoverStale => {
            store.recover_stale().await.unwrap();
        }
        Op::EnforceTimeouts => {
            store.enforce_timeouts().await.unwrap();
        }
        Op::Advance { seconds } => h.clock.advance(Duration::from_secs(seconds)),
    }
    Ok(())
}

async fn check_invariants(h: &Harness, model: &Model) -> Result<(), TestCaseError> {
    let filter = JobFilter { limit: Some(10_000), ..Default::default() };
    let jobs = h.store.list_jobs(&filter).await.unwrap();
    // No job is lost.
    prop_assert_eq!(jobs.len(), model.enqueued.len());
    for job in &jobs {
        prop_assert!(job.attempts <= job.max_attempts);
        // No job is owned by two workers: at most one remembered lease holds it, and it belongs
        // to the worker the store names as owner.
        let holders: Vec<usize> = (0..OWNERS.len())
            .filter(|&owner| model.leases[owner].iter().any(|&lease| lease.job_id == job.id && holds(job, lease)))
            .collect();
        prop_assert!(holders.len() <= 1, "job {} held by {:?}", job.id, holders);
        if job.status == JobStatus::Processing {
            let owner = model.given_to.get(&(job.id, job.lease_token)).copied();
            prop_assert!(owner.is_some(), "processing job {} under a token nobody was given", job.id);
            prop_assert_eq!(job.lock_owner.as_deref(), owner.map(|o| OWNERS[o]));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_keep_the_queue_promises(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async { run(common::sqlite().await, ops).await })?;
    }
}

proptest! {
    // Each case opens a fresh schema and runs the migrations: fewer cases keep the suite fast.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_keep_the_queue_promises_on_postgres(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            match common::postgres().await {
                Some(h) => run(h, ops).await,
                None => Ok(()),
            }
        })?;
    }
}
