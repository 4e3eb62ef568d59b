//! `quire-pipeline-bench`: the whole pipeline, measured through the `quire` binary.
//!
//! - `stages`: processes EPUB books with `quire process FILE --json` (local embedder) into a
//!   fresh data directory per run, reads the `process_document` job's checkpoint
//!   (`stage_timestamps`) and the `detect_connections` job back from `<data-dir>/quire.db`, and
//!   reports time per stage, total wall time and peak memory; then, on the same data
//!   directory, `quire replay JOB --from-stage embedding --inline` (or, if the binary has no
//!   `replay`, the same rewind done through `JobStore::requeue_with_checkpoint` and a
//!   `quire worker --exit-when-idle`).
//! - `recovery`: from a SIGKILL of the worker holding a job to the job leased again.
//!
//! Peak memory is `ru_maxrss` from `wait4(2)` on the `quire` child. On Linux that is the
//! largest of the child's own peak RSS and the peak RSS of each descendant it waited for (the
//! isolated extraction and chunking processes): a maximum over processes, not their sum at one
//! moment. While an isolated child runs, the parent's memory is resident too, so the machine's
//! true peak for one book is at most the parent's peak plus the child's.
//!
//! ```text
//! CARGO_TARGET_DIR=target cargo build --release --manifest-path bench/Cargo.toml
//! target/release/quire-pipeline-bench stages --all-books
//! target/release/quire-pipeline-bench recovery --quire /path/to/quire-with-failpoints
//! ```

mod child;
mod recovery;
mod stages;
mod stats;
mod store;

use clap::{Parser, Subcommand};

/// Result type of the benchmark: any error ends the run with its message.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Pipeline benchmarks driving the `quire` binary.
#[derive(Debug, Parser)]
#[command(name = "quire-pipeline-bench")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Time per stage, wall time and peak RSS of `quire process`, and a replay from embedding.
    Stages(stages::Args),
    /// SIGKILL → leased again, over many kills.
    Recovery(recovery::Args),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> BenchResult<()> {
    let cli = Cli::parse();
    let load_before = load_average();
    let started = std::time::Instant::now();
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    println!("Command: `quire-pipeline-bench {command}`");
    match cli.command {
        Bench::Stages(args) => stages::run(args).await?,
        Bench::Recovery(args) => recovery::run(args).await?,
    }
    println!();
    println!(
        "Load average (1, 5, 15 min): before {load_before}, after {}; total {:.0?}",
        load_average(),
        started.elapsed()
    );
    Ok(())
}

/// The system load average (1, 5 and 15 minutes), where the OS exposes it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}
