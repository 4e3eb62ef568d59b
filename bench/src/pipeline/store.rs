//! Reading a data directory's jobs back after (or while) `quire` runs on it.

use std::path::Path;

use checkpoint_store::{Job, JobFilter, JobKind, JobStore, SqliteStore, SqliteStoreOptions};
use stage_machine::Stage;

use crate::BenchResult;

/// Opens `<data_dir>/quire.db` (the same file the `quire` processes use; WAL lets us read
/// while they write).
pub async fn open(data_dir: &Path) -> BenchResult<SqliteStore> {
    Ok(SqliteStore::open(data_dir.join("quire.db"), SqliteStoreOptions::default()).await?)
}

/// The newest job of `kind`, if any.
pub async fn newest(store: &SqliteStore, kind: JobKind) -> BenchResult<Option<Job>> {
    let filter = JobFilter { kind: Some(kind), limit: Some(1), ..JobFilter::default() };
    Ok(store.list_jobs(&filter).await?.into_iter().next())
}

/// Milliseconds from when working stage `stage` began to when its milestone was reached,
/// from the job's checkpoint `stage_timestamps`.
pub fn stage_ms(job: &Job, stage: Stage) -> Option<f64> {
    let timestamps = job.checkpoint().stage_timestamps;
    let began = timestamps.get(&stage)?;
    let reached = timestamps.get(&stage.milestone()?)?;
    Some((reached - began) as f64)
}

/// Milliseconds from a job's (last) lease to its finish.
pub fn run_ms(job: &Job) -> Option<f64> {
    Some((job.finished_at? - job.started_at?) as f64)
}
