//! `quire worker`: the worker, and beside it the `/metrics` and `/healthz` endpoint.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use worker::{Worker, WorkerConfig, default_owner};

use crate::app::App;
use crate::cli::{GlobalOptions, MetricsAddr, WorkerOptions};
use crate::metrics::{MetricsSource, WorkerProbe};

/// Where the metrics endpoint listens when no address was given.
pub const DEFAULT_METRICS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// How many ports, the default's included, a worker tries before it serves no metrics.
const DEFAULT_PORTS_TRIED: u16 = 16;

/// The worker configuration the options describe, refused when the worker could not keep its
/// leases under it.
pub fn config(options: &WorkerOptions) -> anyhow::Result<WorkerConfig> {
    let mut config = WorkerConfig::new(options.name.clone().unwrap_or_else(default_owner));
    if let Some(concurrency) = options.concurrency {
        config.concurrency = concurrency;
    }
    config.prefetch = options.prefetch;
    config.lease_ttl = options.lease_ttl.into();
    config.heartbeat_interval =
        options.heartbeat_interval.unwrap_or_else(|| WorkerConfig::heartbeat_for(config.lease_ttl));
    config.reaper_interval = options.reaper_interval.into();
    config.shutdown_grace = options.shutdown_grace.into();
    config.poll_interval = options.poll_interval.into();
    config.exit_when_idle = options.exit_when_idle;
    config.validate()?;
    Ok(config)
}

/// Runs a worker until `shutdown` (a signal) or, with `--exit-when-idle`, an empty queue.
pub async fn run(
    global: &GlobalOptions,
    options: &WorkerOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let config = config(options)?;
    let app = App::open(global).await?;
    let pipeline = app.pipeline_for(&options.embedder)?;
    app.warm_indexes(&pipeline);
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
    let endpoint = match bind_metrics(options.metrics_addr, DEFAULT_METRICS_ADDR).await? {
        None => None,
        Some(listener) => {
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
            Some(tokio::spawn(crate::http::serve(
                listener,
                source.router(),
                crate::http::DEFAULT_HEADER_TIMEOUT,
                endpoint_stop.clone(),
            )))
        }
    };
    let result = worker.run(shutdown).await;
    // Stopped (a signal, or an empty queue): the indexes' deferred upkeep is done before the
    // process exits. A second signal exits at once.
    app.settle_indexes().await;
    endpoint_stop.cancel();
    if let Some(endpoint) = endpoint
        && let Err(error) = endpoint.await?
    {
        tracing::warn!(%error, "the metrics endpoint failed");
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The metrics listener, or `None` for no endpoint.
///
/// An address the operator chose (flag, environment or `quire.toml`) must be free: they will
/// scrape it, so a worker that silently listened elsewhere would look dead. Without one, `default`
/// being taken is not a reason to refuse work: running a second worker to use more cores is the
/// first thing an operator tries, so the worker takes the next free port after it and says which,
/// or, with none free, serves no metrics and says so.
pub async fn bind_metrics(chosen: Option<MetricsAddr>, default: SocketAddr) -> anyhow::Result<Option<TcpListener>> {
    match chosen {
        Some(MetricsAddr::Off) => return Ok(None),
        Some(MetricsAddr::On(addr)) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for metrics (use --metrics-addr off to disable)"))?;
            return Ok(Some(listener));
        }
        None => {}
    }
    for port in (0..DEFAULT_PORTS_TRIED).filter_map(|offset| default.port().checked_add(offset)) {
        let addr = SocketAddr::new(default.ip(), port);
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                if port != default.port() {
                    tracing::warn!(%default, %addr, "the default metrics port is taken (another worker?); using the next free one");
                }
                return Ok(Some(listener));
            }
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(error) => {
                tracing::warn!(%addr, %error, "cannot listen for metrics; serving none (set --metrics-addr to insist)");
                return Ok(None);
            }
        }
    }
    tracing::warn!(
        %default,
        tried = DEFAULT_PORTS_TRIED,
        "the default metrics port and the ones after it are taken; serving no metrics (set --metrics-addr to choose)"
    );
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port of the loopback interface held by the test, as another worker would hold 9464.
    fn taken_port() -> std::net::TcpListener {
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free port")
    }

    #[tokio::test]
    async fn second_worker_takes_the_next_free_port_when_the_default_metrics_port_is_taken() {
        let holder = taken_port();
        let default = holder.local_addr().unwrap();
        let listener = bind_metrics(None, default).await.unwrap().expect("a listener on another port");
        let local = listener.local_addr().unwrap();
        assert_eq!(local.ip(), default.ip());
        assert_ne!(local.port(), default.port());
        assert!(local.port() > default.port() && local.port() < default.port() + DEFAULT_PORTS_TRIED, "{local}");
    }

    #[tokio::test]
    async fn a_taken_metrics_address_given_explicitly_stays_a_hard_error() {
        let holder = taken_port();
        let addr = holder.local_addr().unwrap();
        let error = bind_metrics(Some(MetricsAddr::On(addr)), DEFAULT_METRICS_ADDR).await.unwrap_err();
        assert!(format!("{error:#}").contains(&format!("cannot listen on {addr} for metrics")), "{error:#}");
    }

    #[tokio::test]
    async fn metrics_off_binds_nothing() {
        assert!(bind_metrics(Some(MetricsAddr::Off), DEFAULT_METRICS_ADDR).await.unwrap().is_none());
    }
}
