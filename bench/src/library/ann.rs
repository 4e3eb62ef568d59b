//! Index crates side by side on the same text-like vectors, in memory: usearch (f32 and f16, as
//! quire wraps it in `vector-index`), hnsw_rs, and exact search as the reference.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use hnsw_rs::prelude::{DistCosine, Hnsw};
use vector_index::{AnnIndex, Quantization, Scored, TopK, unit, unit_cosine};

use crate::BenchResult;
use crate::generate::{Passages, embedder};
use crate::stats::{Spread, cell, ms};

/// Options of `ann`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Vectors in the index.
    #[arg(long, default_value_t = 100_000)]
    chunks: u64,
    /// Queries per round (a new book's chunks).
    #[arg(long, default_value_t = 1200)]
    queries: u64,
    /// Rounds of queries.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// The corpus whose books the chunks are drawn from.
    #[arg(long, default_value = "../shared/corpus")]
    corpus: PathBuf,
    /// Search breadths (ef) to measure, from wide to narrow.
    #[arg(long, value_delimiter = ',', default_value = "96,64,48,32,24,16")]
    breadths: Vec<usize>,
    /// Only the index quire uses (usearch, f16): no f32 and no hnsw_rs rows.
    #[arg(long)]
    quire_only: bool,
}

fn millis(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

fn recall(found: &[Vec<u64>], truth: &[Vec<u64>]) -> f64 {
    let mut hits = 0;
    let mut total = 0;
    for (found, truth) in found.iter().zip(truth) {
        let truth: HashSet<u64> = truth.iter().copied().collect();
        total += truth.len();
        hits += found.iter().filter(|k| truth.contains(k)).count();
    }
    hits as f64 / total.max(1) as f64
}

pub fn run(args: Args) -> BenchResult<()> {
    let passages = Passages::from_corpus(&args.corpus)?;
    let embedder = embedder();
    let started = Instant::now();
    let data: Vec<Vec<f32>> =
        (0..args.chunks).map(|n| unit(&embedder.embed_text(&passages.chunk(n))).unwrap_or_default()).collect();
    let queries: Vec<Vec<f32>> =
        (0..args.queries).map(|n| embedder.embed_text(&passages.chunk(1_000_000_000 + n))).collect();
    println!("{} vectors of {} dimensions embedded in {}", data.len(), data[0].len(), ms(millis(started)));

    // Exact: the reference answer, and its cost.
    let mut exact_times = Vec::new();
    let mut truth: Vec<Vec<u64>> = Vec::new();
    for _ in 0..args.rounds.min(3) {
        let started = Instant::now();
        truth = queries
            .iter()
            .map(|q| {
                let q = unit(q).unwrap_or_default();
                let mut top = TopK::new(5);
                for (key, v) in data.iter().enumerate() {
                    top.offer(Scored { score: unit_cosine(&q, v), key: key as u64 });
                }
                top.into_sorted().into_iter().map(|s| s.key).collect()
            })
            .collect();
        exact_times.push(millis(started));
    }
    let mut rows = vec![format!("| exact (reference) | – | {} | 1.000 | – |", cell(Spread::of(exact_times), ms))];

    let quantizations: &[Quantization] =
        if args.quire_only { &[Quantization::F16] } else { &[Quantization::F32, Quantization::F16] };
    for &quantization in quantizations {
        let rss_before = crate::rss_kib();
        let started = Instant::now();
        let mut index = AnnIndex::new(data[0].len(), quantization)?;
        let entries: Vec<(u64, Vec<f32>)> = data.iter().cloned().enumerate().map(|(k, v)| (k as u64, v)).collect();
        index.add_batch(&entries)?;
        drop(entries);
        let build = millis(started);
        // From wide to narrow: what each search breadth (ef) costs in time and recall. quire
        // searches at 32 up to 200k vectors; the semantic engine asks each chunk's top 6.
        for &breadth in &args.breadths {
            index.set_search_breadth(breadth);
            let mut times = Vec::new();
            let mut found = Vec::new();
            for _ in 0..args.rounds {
                let started = Instant::now();
                found = index.search_batch(&queries, 5)?;
                times.push(millis(started));
            }
            let found: Vec<Vec<u64>> = found.iter().map(|l| l.iter().map(|s| s.key).collect()).collect();
            rows.push(format!(
                "| usearch 2.26 ({quantization:?}, M 16, ef 128/{breadth}, 2 threads) | {} | {} | {:.3} | {:.0} MiB (index), {:.0} MiB (RSS growth) |",
                ms(build),
                cell(Spread::of(times), ms),
                recall(&found, &truth),
                index.memory_usage() as f64 / 1048576.0,
                (crate::rss_kib() - rss_before) / 1024.0,
            ));
            println!("{}", rows.last().unwrap_or(&String::new()));
        }
    }

    if !args.quire_only {
        let rss_before = crate::rss_kib();
        let started = Instant::now();
        let hnsw: Hnsw<f32, DistCosine> = Hnsw::new(16, data.len(), 16, 128, DistCosine {});
        let refs: Vec<(&Vec<f32>, usize)> = data.iter().enumerate().map(|(k, v)| (v, k)).collect();
        hnsw.parallel_insert(&refs);
        let build = millis(started);
        let mut times = Vec::new();
        let mut found: Vec<Vec<u64>> = Vec::new();
        for _ in 0..args.rounds {
            let started = Instant::now();
            let results = hnsw.parallel_search(&queries, 5, 96);
            found = results.iter().map(|l| l.iter().map(|n| n.d_id as u64).collect()).collect();
            times.push(millis(started));
        }
        rows.push(format!(
            "| hnsw_rs 0.3 (f32, M 16, ef 128/96, parallel) | {} | {} | {:.3} | {:.0} MiB (RSS growth) |",
            ms(build),
            cell(Spread::of(times), ms),
            recall(&found, &truth),
            (crate::rss_kib() - rss_before) / 1024.0,
        ));
        println!("{}", rows.last().unwrap_or(&String::new()));
    }

    println!();
    println!("| index | build ({} vectors) | {} queries, top 5 | recall@5 | memory |", args.chunks, args.queries);
    println!("|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}
