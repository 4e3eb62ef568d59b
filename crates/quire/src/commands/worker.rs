//! `quire worker`: the worker, and beside it the `/metrics` and `/healthz` endpoint.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use worker::{Worker, WorkerConfig, default_owner};

use crate::app::App;
use crate::cli::{GlobalOptions, MetricsAddr, WorkerOptions};
use crate::metrics::{MetricsSource, WorkerProbe};

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
pub async fn run(
    global: &GlobalOptions,
    options: &WorkerOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let app = App::open(global).await?;
    let pipeline = app.pipeline_for(&options.embedder)?;
    let config = config(options);
    tracing::info!(
        owner = %config.owner,
        concurrency = config.concurrency,
        prefetch = config.prefetch,
        lease_ttl = ?config.lease_ttl,
        heartbeat = ?config.heartbeat_interval,
        reaper = ?config.reaper_interval,
        model = %pipeline.embedder.model(),
        batching = ?pipeline.batching,
        "worker starting"
    );
    let worker = Worker::new(app.store.clone(), pipeline.handlers(), config.clone());

    // The endpoint lives as long as the worker: it stops when the worker has stopped.
    let endpoint_stop = CancellationToken::new();
    let endpoint = match options.metrics_addr {
        MetricsAddr::Off => None,
        MetricsAddr::On(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for metrics (use --metrics-addr off to disable)"))?;
            let local = listener.local_addr()?;
            let source = MetricsSource {
                store: app.store.clone(),
                lease_ttl: config.lease_ttl,
                worker: Some(WorkerProbe {
                    metrics: worker.metrics(),
                    stats: pipeline.stats.clone(),
                    reaper_interval: config.reaper_interval,
                }),
            };
            tracing::info!(%local, "metrics endpoint listening (/metrics, /healthz)");
            // One line on stdout, so that scripts started with port 0 learn the address.
            println!("metrics listening on {local}");
            let _ = std::io::stdout().flush();
            Some(tokio::spawn(crate::metrics::serve(listener, source.router(), endpoint_stop.clone())))
        }
    };
    let result = worker.run(shutdown).await;
    endpoint_stop.cancel();
    if let Some(endpoint) = endpoint
        && let Err(error) = endpoint.await?
    {
        tracing::warn!(%error, "the metrics endpoint failed");
    }
    result?;
    Ok(ExitCode::SUCCESS)
}
