//! The command line: global options, every command and its flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
  quire dlq list                              jobs that failed for good";

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalOptions {
    /// Directory holding the SQLite database and the uploaded files.
    #[arg(long, global = true, env = "QUIRE_DATA_DIR", default_value = "./quire-data")]
    pub data_dir: PathBuf,
    /// Database URL (sqlite://PATH or postgres://…); overrides the SQLite file in the data directory.
    #[arg(long, global = true, env = "QUIRE_DATABASE_URL")]
    pub database_url: Option<String>,
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit EPUB files and process them now, with a progress bar per book.
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
    Submit {
        /// EPUB files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a worker: lease jobs and process them until stopped (SIGTERM or Ctrl-C).
    Worker(WorkerOptions),
    /// Show documents and jobs.
    Status {
        /// One document or job id.
        id: Option<String>,
        /// Print JSON (a stable contract, see the README).
        #[arg(long)]
        json: bool,
    },
    /// Apply database migrations.
    Migrate,
    /// Runs one step of book parsing in isolation (used by the worker itself).
    #[command(hide = true, disable_help_flag = true)]
    Isolated {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Which embedder, and how it is reached.
#[derive(Debug, Clone, Args)]
pub struct EmbedderOptions {
    /// Embedding backend: `local` (offline, deterministic) or `openai` (any OpenAI-compatible API).
    #[arg(long, env = "QUIRE_EMBEDDER", value_enum, default_value_t = EmbedderKind::Local)]
    pub embedder: EmbedderKind,
    /// Base URL of the OpenAI-compatible API.
    #[arg(long, env = "OPENAI_BASE_URL")]
    pub openai_base_url: Option<String>,
    /// Embedding model name.
    #[arg(long, env = "QUIRE_EMBEDDING_MODEL")]
    pub embedding_model: Option<String>,
    /// Vector size.
    #[arg(long, env = "QUIRE_EMBEDDING_DIMENSIONS")]
    pub embedding_dimensions: Option<usize>,
    /// Inputs per embedding request.
    #[arg(long, env = "QUIRE_EMBEDDING_BATCH_SIZE")]
    pub embedding_batch_size: Option<usize>,
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
    #[arg(long, env = "QUIRE_LEASE_TTL", value_parser = parse_duration, default_value = "60s")]
    pub lease_ttl: Duration,
    /// How often leases are renewed (default: a third of the lease).
    #[arg(long, env = "QUIRE_HEARTBEAT_INTERVAL", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// How often stale and timed-out jobs are recovered.
    #[arg(long, env = "QUIRE_REAPER_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub reaper_interval: Duration,
    /// How long in-flight jobs may finish after SIGTERM before they are handed back.
    #[arg(long, env = "QUIRE_SHUTDOWN_GRACE", value_parser = parse_duration, default_value = "30s")]
    pub shutdown_grace: Duration,
    /// How often an idle worker polls for work.
    #[arg(long, env = "QUIRE_POLL_INTERVAL", value_parser = parse_duration, default_value = "500ms")]
    pub poll_interval: Duration,
    /// Exit once no job is pending or processing (delayed ones included).
    #[arg(long, env = "QUIRE_EXIT_WHEN_IDLE")]
    pub exit_when_idle: bool,
    /// Name written to each leased job (default: host:pid).
    #[arg(long, env = "QUIRE_WORKER_NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub embedder: EmbedderOptions,
}

/// Parses `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (use e.g. 500ms, 30s, 5m)"))
}
