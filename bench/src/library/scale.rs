//! The nearest-neighbour seam at growing library sizes, on each backend.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use checkpoint_store::{
    EnqueueOptions, JobKind, Lease, LeaseRequest, NeighbourQuery, NewDocument, PgStore, PgStoreOptions, SearchMode,
    SqliteStore, SqliteStoreOptions, Store, StoredChunk,
};
use clap::ValueEnum;
use collision_detector::{CandidateQuery, ChunkRef, ConnectionEngine, LexicalEngine};
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
    /// Keep the library of the largest size: SQLite's as a data directory here; PostgreSQL's in
    /// its schema, whose name is printed (the directory is then unused).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Candidate plans of the lexical half to measure besides the default, each
    /// `TERMS/POSTINGS/CANDIDATES` (comma-separated), e.g. `32/2000/25`.
    #[arg(long, value_delimiter = ',')]
    lexical_plans: Vec<String>,
    /// Measure the lexical half's recall only up to this many library chunks: its reference reads
    /// the whole library's text into memory (about 2.5 GB per 100k chunks).
    #[arg(long, default_value_t = 200_000)]
    lexical_reference_up_to: u64,
}

impl Args {
    /// The worker's plan first, then the others asked for.
    fn plans(&self) -> Vec<CandidateQuery> {
        let mut plans = vec![CandidateQuery::default()];
        for plan in &self.lexical_plans {
            let numbers: Vec<u64> = plan.split('/').filter_map(|n| n.parse().ok()).collect();
            if let [terms, postings, candidates] = numbers[..] {
                plans.push(CandidateQuery {
                    max_terms: terms as usize,
                    max_postings: postings,
                    candidates_per_source: candidates as usize,
                });
            }
        }
        plans
    }
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

/// Gathers the planner's statistics of a freshly loaded PostgreSQL library, as a server's
/// autovacuum does within a minute of a bulk load (and `pg_restore` asks of whoever restores):
/// without them the planner takes the 100k rows just loaded for a few dozen and plans joins
/// over whole tables. Servers that run without autovacuum (such as this machine's) never would.
async fn analyze(url: &str, schema: &str) -> BenchResult<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let statement = format!("SET search_path = {schema}; ANALYZE");
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut conn).await?;
    Ok(())
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
            let store =
                SqliteStore::open(&path, SqliteStoreOptions { vector_snapshots, ..SqliteStoreOptions::default() })
                    .await?;
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
                return Err(
                    format!("{url}: pgvector in use is {}, expected for {backend}", store.has_pgvector()).into()
                );
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
        .create_document(NewDocument {
            content_hash: format!("bench-{name}"),
            file_name: format!("{name}.epub"),
            byte_size: 1,
        })
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
    let mut plan_rows = Vec::new();
    for &size in &args.chunks {
        for &backend in &args.backend {
            let kept = args.keep.is_some() && size == largest;
            let opened = open(backend, &args, size, backend == Backend::Sqlite && kept).await?;
            let store = opened.store.as_ref();
            store
                .enqueue(
                    JobKind::ProcessDocument,
                    serde_json::json!({ "document_id": "bench" }),
                    EnqueueOptions { document_id: Some("bench".into()), ..EnqueueOptions::default() },
                )
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
            let mut library_documents = Vec::new();
            for d in 0..size.div_ceil(PER_DOCUMENT) {
                let count = PER_DOCUMENT.min(size - d * PER_DOCUMENT);
                let (id, _) =
                    store_document(store, lease, &passages, &format!("lib-{d}"), d * PER_DOCUMENT, count).await?;
                library_documents.push(id);
            }
            let load_ms = seconds(loading.elapsed());
            if let Some((url, schema)) = &opened.drop_schema {
                analyze(url, schema).await?;
            }
            // The new book: passages varied past anything in the library.
            let (book_id, book) =
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
            // The new book's vectors, searched exactly by that query, join the graph once the
            // index is idle: settle that now, untimed, so the rounds measure the graph.
            store.settle_indexes().await?;
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
            // The lexical half of a connections job, as the worker runs it (term counts, then
            // shortlists from the term index, candidates read in bounded rounds, scored exactly),
            // with each candidate plan; its recall against the exact engine over the library.
            let sources = store.embedded_chunks(Some(&book_id), &model, dimensions).await?;
            let exact = if size <= args.lexical_reference_up_to {
                Some(exact_lexical(store, &library_documents, &sources).await?)
            } else {
                eprintln!("{size} chunks: the lexical half's recall is not measured (--lexical-reference-up-to)");
                None
            };
            // The first term-index answer builds the store's term cache (SQLite) from the database
            // or its snapshot: timed apart, as the vector index's build is.
            let started = Instant::now();
            store.term_counts(&[]).await?;
            let term_build_ms = seconds(started.elapsed());
            let mut lexical = Vec::new();
            let mut lexical_recall = f64::NAN;
            for (index, plan) in args.plans().into_iter().enumerate() {
                let mut times = Vec::new();
                let mut found = Vec::new();
                for _ in 0..args.rounds {
                    let started = Instant::now();
                    found = worker::lexical_connections(store, &sources, plan).await.map_err(|e| e.to_string())?;
                    times.push(seconds(started.elapsed()));
                }
                let recall = exact.as_ref().map_or(f64::NAN, |exact| {
                    let kept = found
                        .iter()
                        .filter(|c| exact.contains(&(c.source_chunk_id.clone(), c.target_chunk_id.clone())))
                        .count();
                    kept as f64 / exact.len().max(1) as f64
                });
                let line = format!(
                    "| {backend} | {size} | {} terms, {} postings, {} candidates | {} | {recall:.3} |",
                    plan.max_terms,
                    plan.max_postings,
                    plan.candidates_per_source,
                    cell(Spread::of(times.clone()), ms)
                );
                println!("{line}");
                plan_rows.push(line);
                if index == 0 {
                    lexical = times;
                    lexical_recall = recall;
                }
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
                "| {backend} | {size} | {} | {} | {} | {} | {recall:.3} | {} | {} | {lexical_recall:.3} | {} | {} | {:.0} MiB |",
                ms(load_ms),
                ms(build_ms),
                cell(Spread::of(indexed), ms),
                cell(Spread::of(exact_times), ms),
                ms(term_build_ms),
                cell(Spread::of(lexical), ms),
                format_args!("{:.1} ms", single[single.len() / 2]),
                format_args!("{:.1} ms", single[single.len() * 99 / 100]),
                crate::rss_kib() / 1024.0,
            );
            println!("{row}");
            rows.push(row);
            // A kept library must not hold a leased job: `quire` would wait for it.
            store.complete(lease, None).await?;
            if let Some((url, schema)) = &opened.drop_schema {
                if kept {
                    println!("kept the {backend} library in schema {schema} of {url}");
                } else {
                    use sqlx::Connection;
                    let mut conn = sqlx::PgConnection::connect(url).await?;
                    let drop = format!("DROP SCHEMA {schema} CASCADE");
                    sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await?;
                }
            }
        }
    }
    println!();
    println!(
        "| backend | library chunks | load | index build (first query) | {} book chunks, indexed (top 6 each) | the same, exact | recall@5 | term cache build (first answer) | lexical half of the job | its recall@5 | one query p50 | p99 | bench RSS after |",
        args.book_chunks
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!();
    println!("| backend | library chunks | lexical candidate plan | lexical half of the job | its recall@5 |");
    println!("|---|---|---|---|---|");
    for row in plan_rows {
        println!("{row}");
    }
    Ok(())
}

/// The exact lexical engine's top 5 per chunk of the book, over every chunk of the library read
/// into memory (what `detect_connections` did before the term index): the reference for recall.
async fn exact_lexical(
    store: &dyn Store,
    library_documents: &[String],
    sources: &[checkpoint_store::EmbeddedChunk],
) -> BenchResult<HashSet<(String, String)>> {
    let mut library = Vec::new();
    for document in library_documents {
        library.extend(store.chunks(document).await?);
    }
    let mut candidates: Vec<ChunkRef<'_>> = library.iter().map(chunk_ref).collect();
    let book: Vec<ChunkRef<'_>> = sources.iter().map(|s| chunk_ref(&s.chunk)).collect();
    candidates.extend(book.iter().copied());
    Ok(LexicalEngine::DEFAULT
        .connect(&book, &candidates)
        .into_iter()
        .map(|c| (c.source_chunk_id, c.target_chunk_id))
        .collect())
}

fn chunk_ref(chunk: &StoredChunk) -> ChunkRef<'_> {
    ChunkRef { chunk_id: &chunk.id, document_id: &chunk.document_id, text: &chunk.text, embedding: None }
}
