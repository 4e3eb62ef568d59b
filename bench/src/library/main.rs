//! `quire-library-bench`: similarity search at a library's size.
//!
//! - `scale`: generates a library of text-like chunks (the local embedder over passages of the
//!   corpus's real books, each passage varied so that no two chunks are equal) and loads it
//!   through the store's own fenced write path (`replace_chunks`, `store_embeddings`), one
//!   1,000-chunk document at a time. Then, for a new ~1,200-chunk book, it measures the
//!   nearest-neighbour seam as `detect_connections` calls it (top 6 for every chunk of the book)
//!   through the index and exactly, recall@5 of the index against exact search, and single-query
//!   latency as `quire search` sees it. Backends: SQLite, PostgreSQL without pgvector (the
//!   in-process index) and PostgreSQL with pgvector.
//! - `ann`: the candidate index crates side by side on the same vectors, in memory: build time,
//!   batch query time, recall@5 against exact search and memory.
//! - `--keep DIR` (scale) leaves the generated library of the largest size: on SQLite as a data
//!   directory, so that a real `quire process BOOK --data-dir DIR` can be measured against it; on
//!   PostgreSQL in its schema, whose name it prints (`quire --database-schema SCHEMA`).
//!
//! ```text
//! CARGO_TARGET_DIR=target cargo build --release --manifest-path bench/Cargo.toml
//! target/release/quire-library-bench scale --chunks 10000,100000 --backend sqlite,postgres,pgvector
//! target/release/quire-library-bench ann --chunks 100000
//! ```

#[path = "../pipeline/stats.rs"]
mod stats;

mod ann;
mod generate;
mod scale;

use clap::{Parser, Subcommand};

/// Result type of the benchmark: any error ends the run with its message.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Similarity search at a library's size.
#[derive(Debug, Parser)]
#[command(name = "quire-library-bench")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// The nearest-neighbour seam on each backend at growing library sizes.
    Scale(scale::Args),
    /// Index crates compared on the same vectors.
    Ann(ann::Args),
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> BenchResult<()> {
    let cli = Cli::parse();
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    println!("Command: `quire-library-bench {command}`");
    match cli.command {
        Bench::Scale(args) => scale::run(args).await,
        Bench::Ann(args) => ann::run(args),
    }
}

/// The resident memory of this process now, in KiB (`VmRSS` of `/proc/self/status`).
pub fn rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(f64::NAN)
}
