//! Prometheus metrics and the health check, for `quire worker` and `quire serve`.
//!
//! The text exposition format is written by hand: the families are few, most values are read at
//! scrape time from the database (queue depth, stale jobs, processing ages) or from atomics the
//! worker already keeps ([`WorkerMetrics`], [`PipelineStats`]), so a registry that owns its
//! metrics would only add copying between the two.
//!
//! Every value is computed when `/metrics` is scraped; nothing here runs in the background.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use checkpoint_store::{JobFilter, JobKind, JobStatus, Store};
use serde_json::json;
use strum::VariantArray;
use worker::{DurationHistogram, PipelineStats, WorkerMetrics};

/// Upper bounds (seconds) of the processing-age histogram's buckets.
const AGE_BUCKETS: [f64; 5] = [30.0, 60.0, 120.0, 300.0, 600.0];

/// Most processing jobs looked at per scrape (far more than any worker fleet runs at once).
const MAX_PROCESSING: u32 = 10_000;

/// What the endpoint reads.
#[derive(Clone)]
pub struct MetricsSource {
    /// The queue.
    pub store: Arc<dyn Store>,
    /// A processing job silent this long counts as stale.
    pub lease_ttl: Duration,
    /// The worker running in this process, if any (`quire serve` runs none).
    pub worker: Option<WorkerProbe>,
}

/// A worker's counters, and how often its reaper should run.
#[derive(Clone)]
pub struct WorkerProbe {
    /// Job outcomes, leases, the reaper.
    pub metrics: Arc<WorkerMetrics>,
    /// Work done by the pipeline (AI requests, cache hits).
    pub stats: Arc<PipelineStats>,
    /// The reaper's interval; the health check wants a pass within three of them.
    pub reaper_interval: Duration,
}

/// Text in the Prometheus exposition format.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.0, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &DurationHistogram) {
        for (bound, count) in histogram.cumulative() {
            let bound = bound.to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &bound));
            self.sample(&format!("{name}_bucket"), &with_le, count as f64);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &with_le, histogram.count() as f64);
        self.sample(&format!("{name}_sum"), labels, histogram.sum_seconds());
        self.sample(&format!("{name}_count"), labels, histogram.count() as f64);
    }

    fn counter(&mut self, name: &str, help: &str, value: &AtomicU64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value.load(Ordering::Relaxed) as f64);
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl MetricsSource {
    /// Renders every family. Fails only when the database cannot be read.
    pub async fn render(&self) -> anyhow::Result<String> {
        // The worker's counters first, the database after: a worker counts an outcome only once
        // the database has it, so the queue read later holds at least every outcome counted, and
        // one scrape never shows a completion the queue does not.
        let mut worker_families = Exposition::default();
        if let Some(worker) = &self.worker {
            render_worker(&mut worker_families, worker);
        }
        let mut out = Exposition::default();
        let counts = self.store.counts().await?;
        out.family("quire_jobs", "gauge", "Jobs in the queue by status and kind (dead = the dead-letter queue).");
        for status in JobStatus::VARIANTS {
            for kind in JobKind::VARIANTS {
                let count =
                    counts.iter().filter(|c| c.status == *status && c.kind == *kind).map(|c| c.count).sum::<u64>();
                out.sample("quire_jobs", &[("status", status.into()), ("kind", kind.into())], count as f64);
            }
        }

        let filter =
            JobFilter { status: Some(JobStatus::Processing), limit: Some(MAX_PROCESSING), ..Default::default() };
        let processing = self.store.list_jobs(&filter).await?;
        let now = crate::output::now_millis();
        let lease = self.lease_ttl.as_millis() as i64;
        let stale = processing
            .iter()
            .filter(|job| {
                let expired = job.lock_until.is_some_and(|until| until < now);
                let silent_since = job.last_heartbeat.or(job.started_at).unwrap_or(job.updated_at);
                expired || now - silent_since >= lease
            })
            .count();
        out.family(
            "quire_jobs_stale",
            "gauge",
            "Processing jobs whose lease expired or that have been silent longer than a lease.",
        );
        out.sample("quire_jobs_stale", &[], stale as f64);

        let ages: Vec<f64> = processing
            .iter()
            .map(|job| job.started_at.map_or(0.0, |started| (now - started).max(0) as f64 / 1000.0))
            .collect();
        let name = "quire_job_processing_age_seconds";
        out.family(name, "histogram", "How long the processing jobs have been running, at scrape time.");
        for bound in AGE_BUCKETS {
            let within = ages.iter().filter(|&&age| age <= bound).count();
            out.sample(&format!("{name}_bucket"), &[("le", &bound.to_string())], within as f64);
        }
        out.sample(&format!("{name}_bucket"), &[("le", "+Inf")], ages.len() as f64);
        out.sample(&format!("{name}_sum"), &[], ages.iter().sum());
        out.sample(&format!("{name}_count"), &[], ages.len() as f64);

        out.0.push_str(&worker_families.0);
        Ok(out.0)
    }

    /// The health check: the database answers and, in a worker, the reaper ran recently.
    pub async fn health(&self) -> (StatusCode, serde_json::Value) {
        let database = self.store.ping().await;
        let mut body = json!({ "database": if database.is_ok() { "ok" } else { "unreachable" } });
        let mut healthy = database.is_ok();
        let mut degraded = false;
        if let Err(error) = &database {
            body["error"] = json!(error.to_string());
        }
        if let Some(worker) = &self.worker {
            let last = worker.metrics.reaper_last_success.load(Ordering::Relaxed);
            let window = 3 * worker.reaper_interval.as_millis() as i64;
            let recent = last > 0 && crate::output::now_millis() - last <= window;
            healthy &= recent;
            body["reaper_last_success_ms"] = json!(last);
            body["reaper"] = json!(if recent { "ok" } else { "late" });
            // Restarting the worker would not help: it stays up and says why AI work waits.
            let paused_until = worker.metrics.ai_paused_until.load(Ordering::Relaxed);
            if paused_until > crate::output::now_millis() {
                degraded = true;
                body["ai_service"] = json!("account refused");
                body["ai_paused_until_ms"] = json!(paused_until);
                let reason = worker.metrics.ai_pause_reason.lock().ok().and_then(|reason| reason.clone());
                body["ai_pause_reason"] = json!(reason);
            }
        }
        body["status"] = json!(match (healthy, degraded) {
            (false, _) => "unhealthy",
            (true, true) => "degraded",
            (true, false) => "ok",
        });
        (if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
    }

    /// `/metrics` and `/healthz`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/healthz", get(health_handler))
            .with_state(Arc::new(self))
    }
}

fn render_worker(out: &mut Exposition, worker: &WorkerProbe) {
    let m = &worker.metrics;
    out.family(
        "quire_worker_jobs_reaped_total",
        "counter",
        "Stale or timed-out jobs taken back by this worker's reaper, by action.",
    );
    out.sample(
        "quire_worker_jobs_reaped_total",
        &[("action", "requeued")],
        m.reaped_requeued.load(Ordering::Relaxed) as f64,
    );
    out.sample(
        "quire_worker_jobs_reaped_total",
        &[("action", "dead_lettered")],
        m.reaped_dead.load(Ordering::Relaxed) as f64,
    );
    out.counter("quire_worker_jobs_completed_total", "Jobs this worker completed.", &m.completed);
    out.counter("quire_worker_jobs_retried_total", "Failed attempts this worker scheduled for a retry.", &m.retried);
    out.counter("quire_worker_jobs_dead_lettered_total", "Jobs this worker dead-lettered.", &m.dead_lettered);
    out.counter(
        "quire_worker_jobs_rate_limited_total",
        "Jobs postponed because the AI service asked to wait.",
        &m.rate_limited,
    );
    out.counter(
        "quire_worker_jobs_account_refused_total",
        "Jobs postponed because the AI service refused the account (key, access or credit).",
        &m.account_refused,
    );
    out.family(
        "quire_worker_ai_paused",
        "gauge",
        "1 while AI work is paused because the AI service refused the account, else 0.",
    );
    let paused = m.ai_paused_until.load(Ordering::Relaxed) > crate::output::now_millis();
    out.sample("quire_worker_ai_paused", &[], if paused { 1.0 } else { 0.0 });
    out.counter(
        "quire_worker_jobs_interrupted_total",
        "Jobs handed back with their checkpoint at shutdown.",
        &m.interrupted,
    );
    out.counter(
        "quire_worker_jobs_cancelled_total",
        "Running jobs stopped at a stage boundary and cancelled at an operator's request.",
        &m.cancelled,
    );
    out.counter("quire_worker_leases_lost_total", "Leases this worker lost.", &m.leases_lost);
    out.counter("quire_worker_jobs_released_total", "Leased but unstarted jobs this worker gave back.", &m.released);
    out.counter("quire_worker_reaper_errors_total", "Reaper passes that failed.", &m.reaper_errors);
    out.family("quire_worker_jobs_in_flight", "gauge", "Jobs this worker is running now.");
    out.sample("quire_worker_jobs_in_flight", &[], m.in_flight.load(Ordering::Relaxed) as f64);
    out.family(
        "quire_worker_reaper_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the reaper's last successful pass (0 before the first).",
    );
    out.sample(
        "quire_worker_reaper_last_success_timestamp_seconds",
        &[],
        m.reaper_last_success.load(Ordering::Relaxed) as f64 / 1000.0,
    );
    let name = "quire_job_attempt_duration_seconds";
    out.family(name, "histogram", "How long this worker's job attempts ran, by kind.");
    for kind in JobKind::VARIANTS {
        out.histogram(name, &[("kind", kind.into())], m.attempt_durations(*kind));
    }
    let s = &worker.stats;
    let name = "quire_stage_duration_seconds";
    out.family(
        name,
        "histogram",
        "How long each pipeline stage took in this worker, from its start to its checkpoint.",
    );
    for (stage, histogram) in PipelineStats::TIMED_STAGES.iter().zip(&s.stage_durations) {
        out.histogram(name, &[("stage", stage.into())], histogram);
    }
    out.counter("quire_ai_requests_total", "Embedding requests sent to the AI service.", &s.embedding_requests);
    out.counter(
        "quire_ai_cache_hits_total",
        "Chunks whose embedding came from the cache instead of the AI service.",
        &s.embedding_cache_hits,
    );
    out.counter("quire_extractions_total", "Books extracted.", &s.extractions);
    out.counter("quire_chunkings_total", "Markdown documents chunked.", &s.chunkings);
    out.counter("quire_detections_total", "Connection detections run.", &s.detections);
    let load = |value: &AtomicU64| value.load(Ordering::Relaxed) as f64;
    let name = "quire_ai_batch_status_checks_total";
    out.family(name, "counter", "Batch API status checks, by outcome (error: the service could not be asked).");
    out.sample(name, &[("outcome", "ok")], load(&s.batch_checks_ok));
    out.sample(name, &[("outcome", "error")], load(&s.batch_checks_failed));
    let name = "quire_ai_batches_total";
    out.family(name, "counter", "Batch API batches: submitted, then found completed, failed, expired or cancelled; cancel_requested when a dead job's batch was cancelled.");
    out.sample(name, &[("state", "submitted")], load(&s.batches_submitted));
    out.sample(name, &[("state", "completed")], load(&s.batches_completed));
    out.sample(name, &[("state", "failed")], load(&s.batches_failed));
    out.sample(name, &[("state", "expired")], load(&s.batches_expired));
    out.sample(name, &[("state", "cancelled")], load(&s.batches_cancelled));
    out.sample(name, &[("state", "cancel_requested")], load(&s.batch_cancel_requests));
    let name = "quire_ai_inputs_embedded_total";
    out.family(name, "counter", "Inputs embedded by the AI service, by mode (direct requests or the Batch API).");
    out.sample(name, &[("mode", "direct")], load(&s.inputs_direct));
    out.sample(name, &[("mode", "batch")], load(&s.inputs_batch));
}

async fn metrics_handler(State(source): State<Arc<MetricsSource>>) -> Response {
    match source.render().await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Err(error) => {
            tracing::warn!(%error, "metrics: the database could not be read");
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "error": format!("cannot read the queue: {error}") })))
                .into_response()
        }
    }
}

async fn health_handler(State(source): State<Arc<MetricsSource>>) -> Response {
    let (status, body) = source.health().await;
    (status, axum::Json(body)).into_response()
}
