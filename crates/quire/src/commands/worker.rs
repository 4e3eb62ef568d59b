//! `quire worker`

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use worker::{Worker, WorkerConfig, default_owner};

use crate::app::{App, embedder};
use crate::cli::{GlobalOptions, WorkerOptions};

/// The worker configuration the options describe.
pub fn config(options: &WorkerOptions) -> WorkerConfig {
    let mut config = WorkerConfig::new(options.name.clone().unwrap_or_else(default_owner));
    if let Some(concurrency) = options.concurrency {
        config.concurrency = concurrency.max(1);
    }
    config.prefetch = options.prefetch;
    config.lease_ttl = options.lease_ttl;
    config.heartbeat_interval = options.heartbeat_interval.unwrap_or(options.lease_ttl / 3);
    config.reaper_interval = options.reaper_interval;
    config.shutdown_grace = options.shutdown_grace;
    config.poll_interval = options.poll_interval;
    config.exit_when_idle = options.exit_when_idle;
    config
}

/// Runs a worker until `shutdown` (a signal) or, with `--exit-when-idle`, an empty queue.
pub async fn run(global: &GlobalOptions, options: &WorkerOptions, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let app = App::open(global).await?;
    let pipeline = app.pipeline(embedder(&options.embedder)?)?;
    let config = config(options);
    tracing::info!(
        owner = %config.owner,
        concurrency = config.concurrency,
        prefetch = config.prefetch,
        lease_ttl = ?config.lease_ttl,
        heartbeat = ?config.heartbeat_interval,
        reaper = ?config.reaper_interval,
        model = %pipeline.embedder.model(),
        "worker starting"
    );
    Worker::new(app.store.clone(), pipeline.handlers(), config).run(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
