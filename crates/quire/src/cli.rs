//! The command line: global options, every command and its flags.
//!
//! One file past 500 lines: it is the declarative list of the binary's whole surface, which reads
//! best in one place (each command's handler lives in `commands/`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use checkpoint_store::{JobKind, JobStatus, PgStoreOptions, RetryPolicy};
use clap::{Args, Parser, Subcommand, ValueEnum};
use worker::WorkerConfig;

/// Turns EPUB books into markdown, chunks, embeddings and connections, through a durable job
/// queue that survives crashes, restarts and rate limits.
#[derive(Debug, Parser)]
#[command(name = "quire", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "Examples:
  quire process fixtures/sample.epub          process a book now, with the local embedder
  quire submit books/*.epub && quire worker   queue books, then run a worker
  quire status --json                         documents and jobs, for scripts
  quire jobs list --status processing         what the workers are doing
  quire search \"the white whale\"             chunks of the library nearest a question
  quire dlq list                              jobs that failed for good
  quire serve                                 the HTTP API on 127.0.0.1:8080

Configuration: every option with an environment variable (shown in each command's --help) can
also be set in quire.toml (current directory, or --config PATH / QUIRE_CONFIG), under its long
flag name: `concurrency = 4`, `lease-ttl = \"60s\"`, `data-dir = \"/var/lib/quire\"`.
Precedence: flag, then environment, then file, then the built-in default.";

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalOptions {
    /// Directory holding the SQLite database and the uploaded files.
    #[arg(long, global = true, env = "QUIRE_DATA_DIR", default_value = "./quire-data")]
    pub data_dir: PathBuf,
    /// Database URL (sqlite://PATH or postgres://…); overrides the SQLite file in the data directory.
    #[arg(long, global = true, env = "QUIRE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// PostgreSQL schema holding quire's tables (created if missing).
    #[arg(long, global = true, env = "QUIRE_DATABASE_SCHEMA", default_value_t = PgStoreOptions::default().schema)]
    pub database_schema: String,
    /// Backoff after a job's first failed attempt; it doubles with each further attempt.
    #[arg(long, global = true, env = "QUIRE_RETRY_BASE_DELAY", default_value_t = RetryPolicy::default().initial_delay.into())]
    pub retry_base_delay: humantime::Duration,
    /// Longest backoff between two attempts of a job.
    #[arg(long, global = true, env = "QUIRE_RETRY_MAX_DELAY", default_value_t = RetryPolicy::default().max_delay.into())]
    pub retry_max_delay: humantime::Duration,
    /// Configuration file (default: ./quire.toml when it exists). Its keys are long flag names;
    /// a flag or an environment variable wins over the file.
    #[arg(long, global = true, env = "QUIRE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, env = "QUIRE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit EPUB files and process them now, with a progress bar per book.
    #[command(after_help = "Examples:
  quire process book.epub
  quire process --json books/*.epub
  quire process --embedder openai --embedding-model text-embedding-3-small book.epub")]
    Process {
        /// EPUB files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        embedder: EmbedderOptions,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Store EPUB files and queue them for a worker.
    #[command(after_help = "Examples:
  quire submit book.epub
  quire submit --json books/*.epub | jq '.[].job_id'")]
    Submit {
        /// EPUB files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a worker: lease jobs and process them until stopped (SIGTERM or Ctrl-C).
    ///
    /// Serves Prometheus metrics on `/metrics` and a health check on `/healthz` at
    /// --metrics-addr (127.0.0.1:9464 unless set; the next free port when a second worker on
    /// the same machine finds it taken; `off` for none).
    #[command(after_help = "Examples:
  quire worker
  quire worker --concurrency 4 --lease-ttl 2m
  quire worker --exit-when-idle --metrics-addr off
  curl -s 127.0.0.1:9464/metrics")]
    Worker(WorkerOptions),
    /// Show documents and jobs.
    #[command(after_help = "Examples:
  quire status
  quire status doc-1f2e3d4c5b6a7980
  quire status 42 --json")]
    Status {
        /// One document or job id.
        id: Option<String>,
        /// Print JSON (a stable contract, see the README).
        #[arg(long)]
        json: bool,
    },
    /// Apply database migrations.
    Migrate,
    /// List and inspect jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Show a document's connections to the library, strongest first.
    #[command(after_help = "Examples:
  quire connections doc-1f2e3d4c5b6a7980
  quire connections doc-1f2e3d4c5b6a7980 --engine semantic --min-score 0.8 --limit 10
  quire connections doc-1f2e3d4c5b6a7980 --json")]
    Connections {
        /// The document.
        document_id: String,
        /// Only connections found by this engine.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(collision_detector::ENGINE_NAMES))]
        engine: Option<String>,
        /// Only connections scoring at least this much.
        #[arg(long)]
        min_score: Option<f32>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Search the library: the chunks whose embeddings are nearest the query's.
    ///
    /// The query is embedded with the configured embedder (the same options as `quire worker`)
    /// and the chunks embedded with that model are ranked by cosine similarity, through the
    /// store's nearest-neighbour index (pgvector's on PostgreSQL with the extension, an
    /// in-process HNSW index otherwise), or by comparing every vector with --exact.
    #[command(after_help = "Examples:
  quire search \"the white whale\"
  quire search --limit 5 --json \"harpoons and the sea\"
  quire search --exact \"harpoons and the sea\"")]
    Search {
        /// The text to look for.
        query: String,
        /// At most this many results.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
        /// Compare the query with every stored vector instead of using the index: exact, and
        /// slower as the library grows.
        #[arg(long)]
        exact: bool,
        #[command(flatten)]
        embedder: EmbedderOptions,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take back processing jobs whose worker is gone (crashed or hung).
    ///
    /// Lists processing jobs whose lease has expired (with --older-than, only those also silent
    /// that long), then (after confirmation) returns each to pending, or dead-letters it when it
    /// is out of attempts. A job whose lease is renewed between the listing and the confirmation
    /// is left alone.
    #[command(after_help = "Examples:
  quire clean --dry-run
  quire clean --older-than 5m
  quire clean --yes --json            in a script (no terminal to confirm on)")]
    Clean {
        /// Only list the jobs; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also require this much silence since the last heartbeat: seconds (`90`) or a
        /// duration (`5m`). Without it, an expired lease is enough.
        #[arg(long, value_parser = parse_seconds)]
        older_than: Option<Duration>,
        /// Do not ask for confirmation (required without a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The dead-letter queue: jobs that failed for good.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Run a job again: resume from its checkpoint, rewind to a stage, or start afresh.
    ///
    /// By default the job is queued again with its checkpoint, so it resumes where it stopped.
    /// --from-stage rewinds the checkpoint so that stage and every later one run again; cached
    /// embeddings are reused, so unchanged text costs no AI request. --fresh starts from nothing
    /// (chunks are replaced; the embedding cache is still used).
    ///
    /// With --inline the job is not left to the workers: this process runs a worker (one job at
    /// a time, verbose logs) until the queue is empty — which includes this job and the
    /// connection detection it queues, and any other queued job — then exits non-zero if the
    /// job (or its connection detection) ended dead-lettered.
    #[command(after_help = "Examples:
  quire replay 42
  quire replay 42 --from-stage chunking
  quire replay 42 --fresh --inline

Stages: extracting, extracted, saving_markdown, markdown_saved, chunking, chunked, embedding,
embedded. A milestone (extracted, …) means the stage that produces it.")]
    Replay {
        /// The job.
        job_id: i64,
        /// Rewind the checkpoint so that this stage runs again.
        #[arg(long, conflicts_with = "fresh", value_name = "STAGE")]
        from_stage: Option<String>,
        /// Start from an empty checkpoint.
        #[arg(long)]
        fresh: bool,
        /// Run the job in this process, in the foreground, with debug logs.
        #[arg(long)]
        inline: bool,
        #[command(flatten)]
        embedder: EmbedderOptions,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the HTTP API: upload books, read documents and jobs, metrics and health.
    ///
    /// Endpoints: POST /v1/documents (the EPUB as the body with Content-Type:
    /// application/epub+zip and an optional X-File-Name header, or as the multipart/form-data
    /// field `file`); lists of documents, jobs, chunks and connections, the queue, search;
    /// retry, replay, cancel and the dead-letter queue; GET /metrics, GET /healthz. Changes need
    /// QUIRE_API_TOKEN when one is set, and one must be set beyond loopback. Uploads are queued
    /// for `quire worker`; this command processes nothing.
    #[command(after_help = "Examples:
  quire serve
  QUIRE_API_TOKEN=… quire serve --addr 0.0.0.0:8080 --max-upload-bytes 20000000
  curl -F file=@book.epub 127.0.0.1:8080/v1/documents
  curl --data-binary @book.epub -H 'Content-Type: application/epub+zip' \\
       127.0.0.1:8080/v1/documents")]
    Serve(ServeOptions),
    /// Runs one step of book parsing in isolation (used by the worker itself).
    #[command(hide = true, disable_help_flag = true)]
    Isolated {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `quire serve`'s address and limits.
#[derive(Debug, Clone, Args)]
pub struct ServeOptions {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, env = "QUIRE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Largest accepted upload, in bytes (the file itself, raw or as a form field).
    #[arg(long, env = "QUIRE_MAX_UPLOAD_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_upload_bytes: u64,
    /// Uploads received at once; one more is answered 503 with Retry-After.
    #[arg(long, env = "QUIRE_MAX_CONCURRENT_UPLOADS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_uploads: u32,
    /// Longest wait for a request's headers (and for the next request on an idle connection)
    /// before the connection is closed.
    #[arg(long, env = "QUIRE_HEADER_TIMEOUT", default_value = "30s")]
    pub header_timeout: humantime::Duration,
    /// Longest silence while an upload's body is read before it is answered 408.
    #[arg(long, env = "QUIRE_BODY_TIMEOUT", default_value = "30s")]
    pub body_timeout: humantime::Duration,
    /// Longest an upload's whole body may take to arrive before it is answered 408.
    #[arg(long, env = "QUIRE_UPLOAD_TIMEOUT", default_value = "10m")]
    pub upload_timeout: humantime::Duration,
    /// The bearer token every request that changes something must carry
    /// (`Authorization: Bearer TOKEN`). Required to listen beyond loopback.
    #[arg(long, env = "QUIRE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// The embedder `GET /v1/search` embeds its queries with: the workers' own, so that queries
    /// meet the stored vectors of the same model.
    #[command(flatten)]
    pub embedder: EmbedderOptions,
}

/// `quire jobs …`
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    #[command(after_help = "Examples:
  quire jobs list
  quire jobs list --status processing --kind process_document
  quire jobs list --status dead --limit 10 --json")]
    List {
        /// Only this status.
        #[arg(long, value_parser = one_of::<JobStatus>())]
        status: Option<JobStatus>,
        /// Only this kind.
        #[arg(long, value_parser = one_of::<JobKind>())]
        kind: Option<JobKind>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: a pending one at once; a running one at its next stage boundary, keeping
    /// its checkpoint (its worker is told at its next heartbeat, and cancels the job's Batch API
    /// batch). A cancelled job is not retried; `quire replay` runs it again.
    #[command(after_help = "Examples:
  quire jobs cancel 42
  quire jobs cancel 42 --json")]
    Cancel {
        /// The job.
        job_id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `quire dlq …`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered jobs.
    #[command(after_help = "Examples:
  quire dlq list
  quire dlq list --json")]
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move dead-lettered jobs back to pending with a fresh attempt budget; each resumes from
    /// its checkpoint.
    #[command(after_help = "Examples:
  quire dlq retry 42
  quire dlq retry --all")]
    Retry {
        /// The job.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        job_id: Option<i64>,
        /// Every dead-lettered job.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete dead-lettered jobs for good.
    #[command(after_help = "Examples:
  quire dlq purge --older-than 7d
  quire dlq purge --yes               every dead job, without asking")]
    Purge {
        /// Only jobs that died at least this long ago (`30s`, `7d`). Default: all.
        #[arg(long, value_parser = parse_seconds, default_value = "0")]
        older_than: Duration,
        /// Do not ask for confirmation (required without a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which embedder, and how it is reached.
#[derive(Debug, Clone, Args)]
pub struct EmbedderOptions {
    /// Embedding backend: `local` (offline, deterministic) or `openai` (any OpenAI-compatible API).
    #[arg(long, env = "QUIRE_EMBEDDER", value_enum, default_value_t = EmbedderKind::Local)]
    pub embedder: EmbedderKind,
    /// Base URL of the OpenAI-compatible API (else `OPENAI_BASE_URL`, else OpenAI's).
    #[arg(long, env = "QUIRE_OPENAI_BASE_URL")]
    pub openai_base_url: Option<String>,
    /// OpenAI organisation to bill, sent with every request.
    #[arg(long, env = "OPENAI_ORG_ID")]
    pub openai_org_id: Option<String>,
    /// OpenAI project to bill, sent with every request.
    #[arg(long, env = "OPENAI_PROJECT_ID")]
    pub openai_project_id: Option<String>,
    /// Embedding model name.
    #[arg(long, env = "QUIRE_EMBEDDING_MODEL")]
    pub embedding_model: Option<String>,
    /// Vector size.
    #[arg(long, env = "QUIRE_EMBEDDING_DIMENSIONS")]
    pub embedding_dimensions: Option<usize>,
    /// Inputs per embedding request.
    #[arg(long, env = "QUIRE_EMBEDDING_BATCH_SIZE")]
    pub embedding_batch_size: Option<usize>,
    /// How chunks are embedded: `direct` requests, the `batch` API, or `auto` (the Batch API for
    /// documents with more than --batch-threshold inputs to embed). The local embedder is
    /// always direct.
    #[arg(long, env = "QUIRE_EMBEDDING_MODE", value_enum, default_value_t = EmbeddingModeArg::Auto)]
    pub embedding_mode: EmbeddingModeArg,
    /// In `auto` mode, documents with more inputs to embed than this use the Batch API.
    #[arg(long, env = "QUIRE_BATCH_THRESHOLD", default_value_t = worker::Batching::default().threshold)]
    pub batch_threshold: usize,
    /// First wait between two status checks of a running batch (doubles up to 60s).
    #[arg(long, env = "QUIRE_BATCH_POLL_INTERVAL", default_value_t = worker::Batching::default().poll_interval.into())]
    pub batch_poll_interval: humantime::Duration,
}

/// The embedding backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbedderKind {
    /// Offline feature hashing; no network.
    Local,
    /// An OpenAI-compatible embeddings endpoint.
    Openai,
}

/// `quire worker` options.
#[derive(Debug, Clone, Args)]
pub struct WorkerOptions {
    /// Jobs run at once (default: the number of cores).
    #[arg(long, env = "QUIRE_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Jobs leased ahead of free slots.
    #[arg(long, env = "QUIRE_PREFETCH", default_value_t = 0)]
    pub prefetch: usize,
    /// How long a lease lasts unless renewed.
    #[arg(long, env = "QUIRE_LEASE_TTL", default_value_t = WorkerConfig::DEFAULT_LEASE_TTL.into())]
    pub lease_ttl: humantime::Duration,
    /// How often leases are renewed (default: a third of the lease).
    #[arg(long, env = "QUIRE_HEARTBEAT_INTERVAL", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// How often stale and timed-out jobs are recovered.
    #[arg(long, env = "QUIRE_REAPER_INTERVAL", default_value_t = WorkerConfig::DEFAULT_REAPER_INTERVAL.into())]
    pub reaper_interval: humantime::Duration,
    /// How long in-flight jobs may finish after SIGTERM before they are handed back.
    #[arg(long, env = "QUIRE_SHUTDOWN_GRACE", default_value_t = WorkerConfig::DEFAULT_SHUTDOWN_GRACE.into())]
    pub shutdown_grace: humantime::Duration,
    /// How often an idle worker polls for work.
    #[arg(long, env = "QUIRE_POLL_INTERVAL", default_value_t = WorkerConfig::DEFAULT_POLL_INTERVAL.into())]
    pub poll_interval: humantime::Duration,
    /// Exit once no job is pending or processing (delayed ones included).
    #[arg(long, env = "QUIRE_EXIT_WHEN_IDLE")]
    pub exit_when_idle: bool,
    /// Name written to each leased job (default: host:pid).
    #[arg(long, env = "QUIRE_WORKER_NAME")]
    pub name: Option<String>,
    /// Address of the `/metrics` and `/healthz` endpoint; `off` (or empty) disables it. Unset:
    /// 127.0.0.1:9464, or the next free port when another worker on this machine holds it.
    #[arg(long, env = "QUIRE_METRICS_ADDR", value_parser = parse_metrics_addr)]
    pub metrics_addr: Option<MetricsAddr>,
    #[command(flatten)]
    pub embedder: EmbedderOptions,
}

/// How the worker sends chunks to an OpenAI-compatible embedder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbeddingModeArg {
    /// One request per planned batch of inputs.
    Direct,
    /// Always through the Batch API.
    Batch,
    /// Through the Batch API above --batch-threshold inputs.
    Auto,
}

/// Where the worker serves its metrics, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    /// No endpoint.
    Off,
    /// Listen here.
    On(SocketAddr),
}

/// Parses `HOST:PORT`, or `off`/empty for no endpoint.
pub fn parse_metrics_addr(text: &str) -> Result<MetricsAddr, String> {
    match text.trim() {
        "" | "off" | "none" | "false" => Ok(MetricsAddr::Off),
        addr => addr.parse().map(MetricsAddr::On).map_err(|e| format!("{e} (use e.g. 127.0.0.1:9464, or off)")),
    }
}

/// Parses a plain number of seconds (`90`) or a duration (`5m`, `500ms`).
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => parse_duration(text),
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (use e.g. 500ms, 30s, 5m)"))
}

/// A value parser for one of an enum's variants, by their names: `--help` lists them and a typo
/// is a usage error naming them. For the store's enums, which know their names (strum) but not
/// clap.
fn one_of<T>() -> impl clap::builder::TypedValueParser<Value = T>
where
    T: strum::VariantArray + Into<&'static str> + std::str::FromStr + Copy + Clone + Send + Sync + 'static,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(T::VARIANTS.iter().map(|&variant| PossibleValue::new(variant.into())))
        .try_map(|name| name.parse::<T>())
}
