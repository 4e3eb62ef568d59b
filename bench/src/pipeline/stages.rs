//! `quire-pipeline-bench stages`: time per pipeline stage, peak memory, and a replay from
//! `embedded`, for books of a corpus processed by the release `quire` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use checkpoint_store::{JobKind, JobStore};
use stage_machine::Stage;

use crate::child::{self, Finished};
use crate::stats::{Spread, cell, mib, ms};
use crate::{BenchResult, store};

/// The working stages, in order, with their table labels.
const STAGES: [(Stage, &str); 4] = [
    (Stage::Extracting, "extracting (→ extracted)"),
    (Stage::SavingMarkdown, "saving_markdown (→ markdown_saved)"),
    (Stage::Chunking, "chunking (→ chunked)"),
    (Stage::Embedding, "embedding (→ embedded)"),
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `quire` binary (a release build without the `failpoints` feature).
    #[arg(long, default_value = "target/release/quire")]
    quire: PathBuf,
    /// Directory of EPUB files.
    #[arg(long, default_value = "../shared/corpus/valid")]
    corpus: PathBuf,
    /// Runs of each focus book (fresh process, then replay from embedding, on the same data
    /// directory). Runs are interleaved across books.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// File names (in the corpus) to measure `--runs` times each.
    #[arg(long, default_values_t = [
        "idpf_accessible_epub_3.epub".to_owned(),
        "standardebooks_herman-melville_moby-dick.epub".to_owned(),
    ])]
    focus: Vec<String>,
    /// Also process every book of the corpus once, for the all-books table.
    #[arg(long)]
    all_books: bool,
    /// Skip the focus books (with --all-books: only the all-books table).
    #[arg(long)]
    no_focus: bool,
    /// A data directory holding a library (`quire-library-bench scale --keep DIR`): every run
    /// processes its book into a fresh copy of it, so connections are found against the library.
    #[arg(long)]
    library: Option<PathBuf>,
}

/// One fresh `quire process` run of one book.
struct Fresh {
    finished: Finished,
    /// Milliseconds per working stage, in `STAGES` order.
    stages: [Option<f64>; 4],
    /// The `detect_connections` job's lease → finish.
    detect: Option<f64>,
    chunks: Option<u32>,
    markdown_bytes: Option<u64>,
    connections: Option<u64>,
    job_id: i64,
}

impl Fresh {
    /// Wall time not inside a stage or the detection: process start-up, submit, the gaps
    /// between stages, the worker's poll for the detection job and `process`'s 150 ms progress
    /// poll.
    fn other(&self) -> f64 {
        let inside: f64 = self.stages.iter().flatten().sum::<f64>() + self.detect.unwrap_or(0.0);
        self.finished.wall.as_secs_f64() * 1000.0 - inside
    }
}

/// One replay from `embedding` on a data directory a fresh run left.
struct Retry {
    finished: Finished,
    embedding: Option<f64>,
    detect: Option<f64>,
    /// Inputs sent to the embedder in the replayed pass (0: all from the cache).
    pass_inputs: u64,
}

pub async fn run(args: Args) -> BenchResult<()> {
    if !args.corpus.is_dir() {
        println!("NOTICE: corpus {} is absent; the pipeline benchmark is skipped.", args.corpus.display());
        return Ok(());
    }
    let quire = std::fs::canonicalize(&args.quire).map_err(|e| format!("{}: {e}", args.quire.display()))?;
    let help = Command::new(&quire).arg("--help").output()?;
    let has_replay = String::from_utf8_lossy(&help.stdout).lines().any(|l| l.trim_start().starts_with("replay "));
    println!(
        "quire binary: {} ({} bytes); `quire replay`: {}",
        quire.display(),
        std::fs::metadata(&quire)?.len(),
        if has_replay {
            "available, used as `replay JOB --from-stage embedding --inline`"
        } else {
            "NOT available: emulated (requeue_with_checkpoint + worker --exit-when-idle)"
        }
    );

    if !args.no_focus {
        let mut fresh: Vec<Vec<Fresh>> = args.focus.iter().map(|_| Vec::new()).collect();
        let mut retry: Vec<Vec<Retry>> = args.focus.iter().map(|_| Vec::new()).collect();
        for round in 1..=args.runs {
            for (i, name) in args.focus.iter().enumerate() {
                let book = args.corpus.join(name);
                let dir = tempfile::Builder::new().prefix("quire-pipeline-bench-").tempdir()?;
                if let Some(library) = &args.library {
                    copy_dir(library, &dir.path().join("data"))?;
                }
                let f = process(&quire, &book, dir.path()).await?;
                eprintln!(
                    "round {round}: {name}: process {:.2?}, {} KiB; stages {:?}, detect {:?}",
                    f.finished.wall, f.finished.max_rss_kib, f.stages, f.detect
                );
                let r = replay(&quire, dir.path(), f.job_id, has_replay).await?;
                eprintln!(
                    "round {round}: {name}: replay {:.2?}, {} KiB; embedding {:?}, detect {:?}, inputs sent {}",
                    r.finished.wall, r.finished.max_rss_kib, r.embedding, r.detect, r.pass_inputs
                );
                fresh[i].push(f);
                retry[i].push(r);
            }
        }
        for (i, name) in args.focus.iter().enumerate() {
            print_focus(name, &args.corpus.join(name), &fresh[i], &retry[i], has_replay);
        }
    }

    if args.all_books {
        let mut books: Vec<PathBuf> = std::fs::read_dir(&args.corpus)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "epub"))
            .collect();
        books.sort();
        let mut rows = Vec::new();
        for book in books {
            let dir = tempfile::Builder::new().prefix("quire-pipeline-bench-").tempdir()?;
            match process(&quire, &book, dir.path()).await {
                Ok(f) => {
                    eprintln!("all books: {}: {:.2?}", book.display(), f.finished.wall);
                    rows.push((book, f));
                }
                Err(error) => {
                    eprintln!("all books: {}: FAILED: {error}", book.display());
                    println!("NOTICE: {} failed: {}", book.display(), error.to_string().lines().next().unwrap_or(""));
                }
            }
        }
        print_all(&rows);
    }
    Ok(())
}

fn quire_command(quire: &Path, data_dir: &Path) -> Command {
    let mut command = Command::new(quire);
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env("QUIRE_METRICS_ADDR", "off")
        .env("RUST_LOG", "info")
        .env_remove("FAILPOINTS")
        .env_remove("QUIRE_EMBEDDER");
    command
}

/// Copies a data directory (files and one level of folders, such as `index/`).
fn copy_dir(from: &Path, to: &Path) -> BenchResult<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// `quire process BOOK --json` into a data directory (fresh, or a copy of a library), then its
/// jobs read back.
async fn process(quire: &Path, book: &Path, dir: &Path) -> BenchResult<Fresh> {
    let data_dir = dir.join("data");
    let mut command = quire_command(quire, &data_dir);
    command.arg("process").arg(book).args(["--json", "--embedder", "local"]);
    let (out, err) = (dir.join("process.out"), dir.join("process.log"));
    let finished = child::run(command, &out, &err)?;
    if !finished.status.success() {
        return Err(format!(
            "quire process {} failed ({}):\n{}",
            book.display(),
            finished.status,
            child::tail(&err, 30)
        )
        .into());
    }
    let summary: serde_json::Value = serde_json::from_str(&finished.stdout)?;
    let connections = summary.get(0).and_then(|o| o.get("connections")).and_then(serde_json::Value::as_u64);
    let store = store::open(&data_dir).await?;
    let job = store::newest(&store, JobKind::ProcessDocument).await?.ok_or("no process_document job")?;
    let detect = store::newest(&store, JobKind::DetectConnections).await?;
    let checkpoint = job.checkpoint();
    let fresh = Fresh {
        stages: STAGES.map(|(stage, _)| store::stage_ms(&job, stage)),
        detect: detect.as_ref().and_then(store::run_ms),
        chunks: checkpoint.facts.chunk_count,
        markdown_bytes: checkpoint.facts.markdown_bytes,
        connections,
        job_id: job.id.0,
        finished,
    };
    store.close().await;
    Ok(fresh)
}

/// Replays the process job from `embedding` and runs it and its connection detection to the end.
async fn replay(quire: &Path, dir: &Path, job_id: i64, has_replay: bool) -> BenchResult<Retry> {
    let data_dir = dir.join("data");
    let mut command = quire_command(quire, &data_dir);
    if has_replay {
        command.args([
            "replay",
            &job_id.to_string(),
            "--from-stage",
            "embedding",
            "--inline",
            "--json",
            "--embedder",
            "local",
        ]);
    } else {
        // What `quire replay --from-stage embedding` does, done from here, then a worker.
        let store = store::open(&data_dir).await?;
        let job = store::newest(&store, JobKind::ProcessDocument).await?.ok_or("no process_document job")?;
        let mut checkpoint = job.checkpoint();
        checkpoint.rewind_to(Stage::Embedding);
        store.requeue_with_checkpoint(job.id, &checkpoint).await?;
        store.close().await;
        command.args([
            "worker",
            "--exit-when-idle",
            "--concurrency",
            "1",
            "--poll-interval",
            "100ms",
            "--embedder",
            "local",
        ]);
    }
    let (out, err) = (dir.join("replay.out"), dir.join("replay.log"));
    let finished = child::run(command, &out, &err)?;
    if !finished.status.success() {
        return Err(format!("replay of job {job_id} failed ({}):\n{}", finished.status, child::tail(&err, 30)).into());
    }
    let store = store::open(&data_dir).await?;
    let job = store::newest(&store, JobKind::ProcessDocument).await?.ok_or("no process_document job")?;
    let detect = store::newest(&store, JobKind::DetectConnections).await?;
    let retry = Retry {
        embedding: store::stage_ms(&job, Stage::Embedding),
        detect: detect.as_ref().and_then(store::run_ms),
        pass_inputs: job.checkpoint().facts.embedding_pass_inputs,
        finished,
    };
    store.close().await;
    Ok(retry)
}

fn wall_ms(f: &Finished) -> f64 {
    f.wall.as_secs_f64() * 1000.0
}

fn print_focus(name: &str, book: &Path, fresh: &[Fresh], retry: &[Retry], has_replay: bool) {
    let first = &fresh[0];
    println!();
    println!(
        "#### {name}: {} KiB file, {} KiB markdown, {} chunks, {} connections ({} runs)",
        std::fs::metadata(book).map(|m| m.len() / 1024).unwrap_or(0),
        first.markdown_bytes.unwrap_or(0) / 1024,
        first.chunks.unwrap_or(0),
        first.connections.unwrap_or(0),
        fresh.len(),
    );
    println!();
    let replay =
        if has_replay { "`replay --from-stage embedding --inline`" } else { "retry from `embedded` (emulated)" };
    println!("| | fresh `process`: median (min–max) | {replay}: median (min–max) |");
    println!("|---|---:|---:|");
    for (i, (stage, label)) in STAGES.iter().enumerate() {
        let retry_cell = if *stage == Stage::Embedding {
            cell(Spread::of(retry.iter().filter_map(|r| r.embedding)), ms)
        } else {
            "(kept)".to_owned()
        };
        println!("| {label} | {} | {retry_cell} |", cell(Spread::of(fresh.iter().filter_map(|f| f.stages[i])), ms));
    }
    println!(
        "| connection detection (detect_connections job) | {} | {} |",
        cell(Spread::of(fresh.iter().filter_map(|f| f.detect)), ms),
        cell(Spread::of(retry.iter().filter_map(|r| r.detect)), ms)
    );
    println!(
        "| other (start-up, submit, gaps, polls) | {} | {} |",
        cell(Spread::of(fresh.iter().map(Fresh::other)), ms),
        cell(
            Spread::of(
                retry.iter().map(|r| wall_ms(&r.finished) - r.embedding.unwrap_or(0.0) - r.detect.unwrap_or(0.0))
            ),
            ms
        )
    );
    println!(
        "| **total wall time** | **{}** | **{}** |",
        cell(Spread::of(fresh.iter().map(|f| wall_ms(&f.finished))), ms),
        cell(Spread::of(retry.iter().map(|r| wall_ms(&r.finished))), ms)
    );
    println!(
        "| CPU time (user+sys, incl. children) | {} | {} |",
        cell(Spread::of(fresh.iter().map(|f| f.finished.cpu.as_secs_f64() * 1000.0)), ms),
        cell(Spread::of(retry.iter().map(|r| r.finished.cpu.as_secs_f64() * 1000.0)), ms)
    );
    println!(
        "| peak RSS (wait4 `ru_maxrss`) | {} | {} |",
        cell(Spread::of(fresh.iter().map(|f| f.finished.max_rss_kib as f64)), mib),
        cell(Spread::of(retry.iter().map(|r| r.finished.max_rss_kib as f64)), mib)
    );
    let ratios = Spread::of(fresh.iter().zip(retry).map(|(f, r)| wall_ms(&f.finished) / wall_ms(&r.finished)));
    let inputs: Vec<u64> = retry.iter().map(|r| r.pass_inputs).collect();
    println!();
    println!(
        "Fresh/retry wall-time ratio, per run pair: {} (median, min–max). Embedder inputs sent by the retry's pass: {inputs:?}.",
        cell(ratios, |v| format!("{v:.1}×"))
    );
}

fn print_all(rows: &[(PathBuf, Fresh)]) {
    println!();
    println!(
        "| book | file KiB | markdown KiB | chunks | connections | extracting | saving_markdown | chunking | embedding | connection detection | total wall | peak RSS |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let opt = |v: Option<f64>| v.map_or("–".to_owned(), ms);
    for (book, f) in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            book.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            std::fs::metadata(book).map(|m| m.len() / 1024).unwrap_or(0),
            f.markdown_bytes.unwrap_or(0) / 1024,
            f.chunks.unwrap_or(0),
            f.connections.unwrap_or(0),
            opt(f.stages[0]),
            opt(f.stages[1]),
            opt(f.stages[2]),
            opt(f.stages[3]),
            opt(f.detect),
            ms(wall_ms(&f.finished)),
            mib(f.finished.max_rss_kib as f64),
        );
    }
}
