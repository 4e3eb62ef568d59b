//! The nearest-neighbour seam at growing library sizes, on each backend.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use checkpoint_store::{
    EnqueueOptions, JobKind, Lease, LeaseRequest, NeighbourQuery, NewDocument, PgStore, PgStoreOptions, SearchMode,
    SqliteStore, Store, StoreOptions, StoredChunk,
};
use collision_detector::{CandidateQuery, LexicalEngine, TermStatistics};
use clap::ValueEnum;
use embedder::Embedder;

use crate::BenchResult;
use crate::generate::{Passages, embedder};
use crate::stats::{Spread, cell, ms};

/// Options of `scale`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Library sizes in chunks, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    chunks: Vec<u64>,
    /// Backends, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sqlite")]
    backend: Vec<Backend>,
    /// PostgreSQL without pgvector (each run gets a fresh schema, dropped after it).
    #[arg(long, env = "QUIRE_BENCH_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database_url: String,
    /// PostgreSQL with pgvector (see `.ci/pgvector-server`).
    #[arg(long, env = "QUIRE_BENCH_PGVECTOR_URL", default_value = "postgres://postgres@127.0.0.1:5433/postgres")]
    pgvector_url: String,
    /// The corpus whose books the chunks are drawn from.
    #[arg(long, default_value = "../shared/corpus")]
    corpus: PathBuf,
    /// Chunks of the new book whose neighbours are looked up.
    #[arg(long, default_value_t = 1200)]
    book_chunks: u64,
    /// Rounds of each indexed measurement.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Rounds of exact search (linear in the library, so fewer at large sizes).
    #[arg(long, default_value_t = 3)]
    exact_rounds: u32,
    /// Keep the SQLite library of the largest size as a data directory here.
    #[arg(long)]
    keep: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, strum::Display)]
#[strum(serialize_all = "snake_case")]
enum Backend {
    /// SQLite, in-process HNSW index.
    Sqlite,
    /// PostgreSQL, in-process HNSW index.
    Postgres,
    /// PostgreSQL, pgvector's HNSW index.
    Pgvector,
}

/// The store under test and how to clean it up.
struct Opened {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    drop_schema: Option<(String, String)>,
}


async fn open(backend: Backend, args: &Args, size: u64, keep: bool) -> BenchResult<Opened> {
    match backend {
        Backend::Sqlite => {
            let (dir, path) = match (&args.keep, keep) {
                (Some(path), true) => {
                    std::fs::create_dir_all(path)?;
                    (None, path.join("quire.db"))
                }
                _ => {
                    let dir = tempfile::tempdir()?;
                    let path = dir.path().join("quire.db");
                    (Some(dir), path)
                }
            };
            // Kept as a data directory: the index snapshot goes where `quire` looks for it.
            let vector_snapshots = path.parent().filter(|_| dir.is_none()).map(|root| root.join("index"));
            let store = SqliteStore::open(&path, StoreOptions { vector_snapshots, ..StoreOptions::default() }).await?;
            Ok(Opened { store: Arc::new(store), _dir: dir, drop_schema: None })
        }
        Backend::Postgres | Backend::Pgvector => {
            let url = if backend == Backend::Pgvector { &args.pgvector_url } else { &args.database_url };
            let schema = format!("quire_bench_{}_{size}_{}", backend, std::process::id());
            let options = PgStoreOptions {
                schema: schema.clone(),
                use_pgvector: backend == Backend::Pgvector,
                ..PgStoreOptions::default()
            };
            let store = PgStore::connect(url, options).await?;
            if store.has_pgvector() != (backend == Backend::Pgvector) {
                return Err(format!("{url}: pgvector in use is {}, expected for {backend}", store.has_pgvector()).into());
            }
            Ok(Opened { store: Arc::new(store), _dir: None, drop_schema: Some((url.clone(), schema)) })
        }
    }
}

/// One document of generated chunks, stored and embedded through the fenced write path.
async fn store_document(
    store: &dyn Store,
    lease: Lease,
    passages: &Passages,
    name: &str,
    first: u64,
    count: u64,
) -> BenchResult<(String, Vec<(String, Vec<f32>)>)> {
    let (document, _) = store
        .create_document(NewDocument { content_hash: format!("bench-{name}"), file_name: format!("{name}.epub"), byte_size: 1 })
        .await?;
    let embedder = embedder();
    let mut chunks = Vec::with_capacity(count as usize);
    let mut vectors = Vec::with_capacity(count as usize);
    for i in 0..count {
        let text = passages.chunk(first + i);
        let content_hash = format!("{:016x}{:08x}", first + i, text.len());
        vectors.push((content_hash.clone(), embedder.embed_text(&text)));
        chunks.push(StoredChunk {
            id: format!("{}-{i}", document.id),
            document_id: document.id.clone(),
            index: i as u32,
            heading_path: vec![],
            start: 0,
            end: text.len() as u64,
            text,
            content_hash,
        });
    }
    store.replace_chunks(lease, &document.id, &chunks).await?;
    store.store_embeddings(lease, &embedder.model(), embedder.dimensions(), &vectors).await?;
    let ids = chunks.into_iter().map(|c| c.id).zip(vectors.into_iter().map(|(_, v)| v)).collect();
    Ok((document.id, ids))
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Ids of the top `k` neighbours other than the source itself.
fn top_ids(found: &[checkpoint_store::Neighbour], source: &str, k: usize) -> Vec<String> {
    found.iter().filter(|n| n.chunk_id != source).take(k).map(|n| n.chunk_id.clone()).collect()
}

pub async fn run(args: Args) -> BenchResult<()> {
    let passages = Passages::from_corpus(&args.corpus)?;
    println!("{} source passages from {}", passages.len(), args.corpus.display());
    let embedder = embedder();
    let (model, dimensions) = (embedder.model(), embedder.dimensions());
    let largest = args.chunks.iter().copied().max().unwrap_or(0);
    let mut rows = Vec::new();
    for &size in &args.chunks {
        for &backend in &args.backend {
            let opened = open(backend, &args, size, backend == Backend::Sqlite && size == largest).await?;
            let store = opened.store.as_ref();
            store
                .enqueue(JobKind::ProcessDocument, serde_json::json!({ "document_id": "bench" }), EnqueueOptions::default())
                .await?;
            let leased = store
                .lease(LeaseRequest {
                    owner: "bench",
                    max_jobs: 1,
                    ttl: Duration::from_secs(24 * 3600),
                    kinds: &[JobKind::ProcessDocument],
                })
                .await?;
            let lease = leased[0].lease().ok_or("no lease")?;
            let loading = Instant::now();
            const PER_DOCUMENT: u64 = 1000;
            for d in 0..size.div_ceil(PER_DOCUMENT) {
                let count = PER_DOCUMENT.min(size - d * PER_DOCUMENT);
                store_document(store, lease, &passages, &format!("lib-{d}"), d * PER_DOCUMENT, count).await?;
            }
            let load_ms = seconds(loading.elapsed());
            // The new book: passages varied past anything in the library.
            let (_, book) =
                store_document(store, lease, &passages, "new-book", 1_000_000_000, args.book_chunks).await?;
            let vectors: Vec<Vec<f32>> = book.iter().map(|(_, v)| v.clone()).collect();
            let query = |mode, limit| NeighbourQuery {
                model: &model,
                dimensions,
                vectors: &vectors,
                limit,
                exclude_document: None,
                mode,
            };
            // The first indexed query builds (or catches up) the index.
            let started = Instant::now();
            store.nearest_chunks(query(SearchMode::Approximate, 6)).await?;
            let build_ms = seconds(started.elapsed());
            let mut indexed = Vec::new();
            let mut approximate = Vec::new();
            for _ in 0..args.rounds {
                let started = Instant::now();
                approximate = store.nearest_chunks(query(SearchMode::Approximate, 6)).await?;
                indexed.push(seconds(started.elapsed()));
            }
            let mut exact_times = Vec::new();
            let mut exact = Vec::new();
            for _ in 0..args.exact_rounds {
                let started = Instant::now();
                exact = store.nearest_chunks(query(SearchMode::Exact, 6)).await?;
                exact_times.push(seconds(started.elapsed()));
            }
            let mut hits = 0usize;
            let mut total = 0usize;
            for (((id, _), exact), approximate) in book.iter().zip(&exact).zip(&approximate) {
                let truth: HashSet<String> = top_ids(exact, id, 5).into_iter().collect();
                total += truth.len();
                hits += top_ids(approximate, id, 5).iter().filter(|n| truth.contains(*n)).count();
            }
            let recall = if total == 0 { f64::NAN } else { hits as f64 / total as f64 };
            // The lexical half of a connections job: the library's statistics for the book's
            // terms, then the chunks sharing each chunk's rarest terms (64 chunks per statement,
            // as the worker asks).
            let texts: Vec<String> = (0..args.book_chunks).map(|i| passages.chunk(1_000_000_000 + i)).collect();
            let mut lexical = Vec::new();
            let mut shortlisted = 0usize;
            for _ in 0..args.rounds {
                let started = Instant::now();
                let book_terms: std::collections::BTreeSet<String> =
                    texts.iter().flat_map(|text| terms::distinct_terms(text)).collect();
                let counts = store.term_counts(&book_terms.into_iter().collect::<Vec<_>>()).await?;
                let statistics =
                    TermStatistics { chunk_count: counts.chunk_count, document_frequency: counts.document_frequency };
                let plan = CandidateQuery::default();
                shortlisted = 0;
                for round in texts.chunks(64) {
                    let queries: Vec<Vec<String>> = round
                        .iter()
                        .map(|text| {
                            LexicalEngine::DEFAULT.query_terms(text, &statistics, &plan).into_iter().map(|(t, _)| t).collect()
                        })
                        .collect();
                    let found = store.chunks_sharing_terms(&queries, plan.candidates_per_source).await?;
                    shortlisted += found.iter().map(Vec::len).sum::<usize>();
                }
                lexical.push(seconds(started.elapsed()));
            }
            // One query at a time, as `quire search` asks.
            let mut single = Vec::new();
            for i in 0..50u64 {
                let one = vec![embedder.embed_text(&passages.chunk(7_000_000_000 + i))];
                let q = NeighbourQuery { vectors: &one, ..query(SearchMode::Approximate, 10) };
                let started = Instant::now();
                store.nearest_chunks(q).await?;
                single.push(seconds(started.elapsed()));
            }
            single.sort_by(f64::total_cmp);
            let row = format!(
                "| {backend} | {size} | {} | {} | {} | {} | {recall:.3} | {} ({:.0} per chunk) | {} | {} | {:.0} MiB |",
                ms(load_ms),
                ms(build_ms),
                cell(Spread::of(indexed), ms),
                cell(Spread::of(exact_times), ms),
                cell(Spread::of(lexical), ms),
                shortlisted as f64 / texts.len().max(1) as f64,
                format_args!("{:.1} ms", single[single.len() / 2]),
                format_args!("{:.1} ms", single[single.len() * 99 / 100]),
                crate::rss_kib() / 1024.0,
            );
            println!("{row}");
            rows.push(row);
            if let Some((url, schema)) = &opened.drop_schema {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(url).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&mut conn).await?;
            }
        }
    }
    println!();
    println!(
        "| backend | library chunks | load | index build (first query) | {} book chunks, indexed (top 6 each) | the same, exact | recall@5 | lexical candidates (term counts + shortlists) | one query p50 | p99 | bench RSS after |",
        args.book_chunks
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}
