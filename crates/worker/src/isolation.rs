//! Reading a book in a child process, so that no book can take the worker down.
//!
//! Parsers of untrusted files can abort on allocation failure or overflow the stack, and neither
//! can be caught inside a process. So extraction and chunking run in a child: the worker binary
//! started again with the hidden `isolated` command. The child writes its result into the job's
//! work directory; the parent reads it back. A child that is refused by the book, crashes, or
//! exceeds a limit fails the job permanently with the reason; the worker and its other jobs
//! carry on.
//!
//! The child is confined before it runs a single instruction of its own (limits set between
//! `fork` and `exec`):
//! - it dies with the worker (`PR_SET_PDEATHSIG`), so a killed worker leaves no orphan parsing
//!   on;
//! - it gets an empty environment: no API key, no database URL, nothing a parser bug could leak;
//! - CPU time ([`Isolation::cpu_limit`]), the size of any file it writes
//!   ([`Isolation::file_size_limit`]) and core dumps (none) are capped by the kernel, and its
//!   address space by the child itself ([`Isolation::memory_limit`]);
//! - the parent stops it at [`Isolation::time_limit`] of wall-clock time. The CPU limit is the
//!   lower, so a book that needs too much work hits it first and fails at once; a child stopped
//!   by the wall clock had the CPU to spare and was most likely starved by a loaded machine, so
//!   that gets one more attempt before it is called permanent.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use crate::job::{JobContext, JobError};
use chunker::{Chunk, ChunkerConfig};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

/// Exit code of a child whose input was refused (the reason is in `error.json`).
const EXIT_REFUSED: u8 = 3;
/// Exit code of a child that could not do its work for a reason other than the input.
const EXIT_FAILED: u8 = 4;

/// How and under which limits the isolated steps run.
#[derive(Debug, Clone)]
pub struct Isolation {
    /// The program to start: the `quire` binary (it dispatches `isolated …` before anything else).
    pub program: PathBuf,
    /// Address-space limit of the child, in bytes.
    pub memory_limit: u64,
    /// Wall-clock limit of one isolated step.
    pub time_limit: Duration,
    /// CPU-time limit of one isolated step (whole seconds, at least one), below
    /// [`time_limit`](Self::time_limit) so that work, not waiting, reaches it first.
    pub cpu_limit: Duration,
    /// The largest file the child may write, in bytes.
    pub file_size_limit: u64,
}

impl Isolation {
    /// Isolation through `program` with default limits: 2 GiB of address space, 120 s of wall
    /// clock, 90 s of CPU and 2 GiB per file written (the extractor accepts at most 512 MiB of
    /// uncompressed book).
    pub fn new(program: impl Into<PathBuf>) -> Isolation {
        Isolation {
            program: program.into(),
            memory_limit: 2 << 30,
            time_limit: Duration::from_secs(120),
            cpu_limit: Duration::from_secs(90),
            file_size_limit: 2 << 30,
        }
    }
}

/// What extraction leaves in the work directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractedMetadata {
    /// Title from the package document.
    pub title: Option<String>,
    /// Author.
    pub author: Option<String>,
    /// Language.
    pub language: Option<String>,
    /// Spine items that yielded text.
    pub chapters: usize,
}

/// A refusal written by the child.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Refusal {
    code: String,
    reason: String,
}

/// File names inside a work directory.
pub mod files {
    /// The extracted markdown.
    pub const MARKDOWN: &str = "extracted.md";
    /// The extracted metadata.
    pub const METADATA: &str = "extracted.json";
    /// The chunks.
    pub const CHUNKS: &str = "chunks.json";
    /// A refusal.
    pub const ERROR: &str = "error.json";
}

impl Isolation {
    /// Extracts `epub` into `work_dir` (markdown and metadata files) in a child process.
    pub async fn extract(
        &self,
        epub: &Path,
        work_dir: &Path,
        context: &JobContext,
    ) -> Result<ExtractedMetadata, JobError> {
        let args = ["extract".as_ref(), epub.as_os_str(), work_dir.as_os_str()];
        self.run("extraction", &args, work_dir, context).await?;
        let metadata = std::fs::read(work_dir.join(files::METADATA))
            .map_err(|e| JobError::Retryable(format!("extraction left no metadata: {e}")))?;
        serde_json::from_slice(&metadata)
            .map_err(|e| JobError::Retryable(format!("extraction metadata unreadable: {e}")))
    }

    /// Chunks the markdown at `markdown` into `work_dir/chunks.json` in a child process.
    pub async fn chunk(
        &self,
        document_id: &str,
        markdown: &Path,
        config: &ChunkerConfig,
        work_dir: &Path,
        context: &JobContext,
    ) -> Result<Vec<Chunk>, JobError> {
        let target = config.target_chars.to_string();
        let max = config.max_chars.to_string();
        let args = [
            "chunk".as_ref(),
            document_id.as_ref(),
            markdown.as_os_str(),
            work_dir.as_os_str(),
            target.as_ref(),
            max.as_ref(),
        ];
        self.run("chunking", &args, work_dir, context).await?;
        let chunks = std::fs::read(work_dir.join(files::CHUNKS))
            .map_err(|e| JobError::Retryable(format!("chunking left no chunks: {e}")))?;
        let chunks: Vec<ChunkFile> =
            serde_json::from_slice(&chunks).map_err(|e| JobError::Retryable(format!("chunks unreadable: {e}")))?;
        Ok(chunks.into_iter().map(Chunk::from).collect())
    }

    async fn run(
        &self,
        step: &str,
        args: &[&std::ffi::OsStr],
        work_dir: &Path,
        context: &JobContext,
    ) -> Result<(), JobError> {
        let _ = std::fs::remove_file(work_dir.join(files::ERROR));
        let mut command = tokio::process::Command::new(&self.program);
        command
            .arg("isolated")
            .arg("--memory-limit")
            .arg(self.memory_limit.to_string())
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let confinement = Confinement::of(self);
        confine_before_exec(&mut command, confinement);
        let mut child = command.spawn().map_err(|e| {
            JobError::Retryable(format!("cannot start the {step} process {}: {e}", self.program.display()))
        })?;
        let mut stderr = child.stderr.take();
        let read_stderr = async move {
            let mut text = Vec::new();
            if let Some(stderr) = stderr.as_mut() {
                // Bounded: a child cannot make the worker hold more than 64 KiB of its output.
                // The rest is drained, so a chatty child never blocks on a full pipe.
                let _ = (&mut *stderr).take(64 << 10).read_to_end(&mut text).await;
                let _ = tokio::io::copy(stderr, &mut tokio::io::sink()).await;
            }
            String::from_utf8_lossy(&text).into_owned()
        };
        let waited = tokio::select! {
            status = async { tokio::join!(child.wait(), read_stderr) } => status,
            () = tokio::time::sleep(self.time_limit) => {
                let _ = child.kill().await;
                let stopped = format!("{step} exceeded its time limit of {}s and was stopped", self.time_limit.as_secs());
                // It had CPU time to spare (or the kernel would have stopped it first): most
                // likely the machine was too busy to give it any. Once is bad luck; twice is
                // the book.
                return Err(if context.attempt <= 1 {
                    JobError::Retryable(format!("{stopped} before using its CPU allowance; trying once more"))
                } else {
                    JobError::Permanent(stopped)
                });
            }
            // Stopping midway costs only this step, which the next attempt redoes.
            () = context.lease_lost.cancelled() => {
                let _ = child.kill().await;
                return Err(JobError::LeaseLost);
            }
            () = context.shutdown.cancelled() => {
                let _ = child.kill().await;
                return Err(JobError::Interrupted);
            }
        };
        let (status, stderr) = waited;
        let status = status.map_err(|e| JobError::Retryable(format!("{step} process lost: {e}")))?;
        if status.success() {
            return Ok(());
        }
        match status.code() {
            Some(code) if code == i32::from(EXIT_REFUSED) => {
                let refusal: Refusal = std::fs::read(work_dir.join(files::ERROR))
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                    .unwrap_or(Refusal { code: "unknown".into(), reason: last_line(&stderr) });
                Err(JobError::Permanent(refusal.reason))
            }
            Some(code) if code == i32::from(EXIT_FAILED) => {
                Err(JobError::Retryable(format!("{step} failed: {}", last_line(&stderr))))
            }
            _ => Err(JobError::Permanent(crash_reason(step, &status, &stderr, self))),
        }
    }
}

/// The limits a child is started under, as plain numbers: what runs between `fork` and `exec`
/// may not allocate.
#[derive(Debug, Clone, Copy)]
struct Confinement {
    parent: rustix::process::Pid,
    cpu_seconds: u64,
    file_bytes: u64,
}

impl Confinement {
    fn of(isolation: &Isolation) -> Confinement {
        Confinement {
            parent: rustix::process::getpid(),
            cpu_seconds: isolation.cpu_limit.as_secs().max(1),
            file_bytes: isolation.file_size_limit,
        }
    }

    /// Runs in the forked child before `exec`: only system calls, no allocation, no lock.
    fn confine(self) -> std::io::Result<()> {
        use rustix::process::{Resource, Rlimit, Signal, getppid, set_parent_process_death_signal, setrlimit};
        // The signal follows the death of the thread that forked, and tokio's worker threads
        // live as long as the runtime: the child dies with the worker, not with a thread.
        set_parent_process_death_signal(Some(Signal::KILL))?;
        // The worker may have died before the line above: then nobody will ever signal us.
        if getppid() != Some(self.parent) {
            return Err(std::io::Error::other("the worker exited before its child started"));
        }
        // SIGXCPU at the soft limit; SIGKILL a second later if it is ignored.
        let cpu = Rlimit { current: Some(self.cpu_seconds), maximum: Some(self.cpu_seconds + 1) };
        setrlimit(Resource::Cpu, cpu)?;
        setrlimit(Resource::Fsize, Rlimit { current: Some(self.file_bytes), maximum: Some(self.file_bytes) })?;
        setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) })?;
        Ok(())
    }
}

/// Has `command`'s child confine itself before it executes the program.
// The one exception to the workspace's `unsafe_code = "deny"`: std offers no safe way to run code
// between fork and exec, and limits set any later would leave the program's start unconfined.
#[allow(unsafe_code)]
fn confine_before_exec(command: &mut tokio::process::Command, confinement: Confinement) {
    // SAFETY: `confine` only makes system calls through rustix (prctl, getppid, setrlimit),
    // which are async-signal-safe, and neither allocates nor takes a lock, as code running in a
    // forked child of a multi-threaded process must not.
    unsafe {
        command.pre_exec(move || confinement.confine());
    }
}

fn last_line(text: &str) -> String {
    text.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("no output").trim().to_owned()
}

fn crash_reason(step: &str, status: &std::process::ExitStatus, stderr: &str, isolation: &Isolation) -> String {
    use std::os::unix::process::ExitStatusExt;
    let limit = format!("{} MiB", isolation.memory_limit >> 20);
    let detail = if stderr.contains("memory allocation") || stderr.contains("allocation failed") {
        format!("it ran out of memory (limit {limit})")
    } else if stderr.contains("stack overflow") || stderr.contains("has overflowed its stack") {
        "it overflowed its stack (the book nests too deeply)".to_owned()
    } else {
        match status.signal() {
            Some(6) => format!("it aborted, most likely on reaching the memory limit of {limit}"),
            Some(9) => format!("it was killed, most likely on reaching the memory limit of {limit}"),
            Some(11) => "it crashed (segmentation fault, most likely a stack overflow)".to_owned(),
            Some(signal) if signal == rustix::process::Signal::XCPU.as_raw() => {
                format!("it used more than its {} s of CPU time", isolation.cpu_limit.as_secs().max(1))
            }
            Some(signal) if signal == rustix::process::Signal::XFSZ.as_raw() => {
                format!("it wrote a file larger than its limit of {} MiB", isolation.file_size_limit >> 20)
            }
            Some(signal) => format!("it was stopped by signal {signal}"),
            None => format!("it exited with status {}", status.code().unwrap_or(-1)),
        }
    };
    format!("{step} of this book crashed: {detail}; last output: {}", last_line(stderr))
}

/// A chunk as the child writes it.
#[derive(Debug, Serialize, Deserialize)]
struct ChunkFile {
    id: String,
    index: u32,
    heading_path: Vec<String>,
    text: String,
    start: usize,
    end: usize,
    content_hash: String,
}

impl From<ChunkFile> for Chunk {
    fn from(file: ChunkFile) -> Chunk {
        Chunk {
            id: file.id,
            index: file.index,
            heading_path: file.heading_path,
            text: file.text,
            start: file.start,
            end: file.end,
            content_hash: file.content_hash,
        }
    }
}

impl From<&Chunk> for ChunkFile {
    fn from(chunk: &Chunk) -> ChunkFile {
        ChunkFile {
            id: chunk.id.clone(),
            index: chunk.index,
            heading_path: chunk.heading_path.clone(),
            text: chunk.text.clone(),
            start: chunk.start,
            end: chunk.end,
            content_hash: chunk.content_hash.clone(),
        }
    }
}

/// The child's side: runs one isolated step from the command line `isolated --memory-limit N
/// extract EPUB WORK_DIR` or `isolated --memory-limit N chunk DOC_ID MARKDOWN WORK_DIR TARGET MAX`.
/// Called by the binary before it starts any runtime.
pub fn run_child(args: &[String]) -> ExitCode {
    match child_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ChildError::Refused { work_dir, code, reason }) => {
            let refusal = Refusal { code, reason: reason.clone() };
            let _ = std::fs::write(work_dir.join(files::ERROR), serde_json::to_vec(&refusal).unwrap_or_default());
            eprintln!("refused: {reason}");
            ExitCode::from(EXIT_REFUSED)
        }
        Err(ChildError::Failed(reason)) => {
            eprintln!("failed: {reason}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

enum ChildError {
    Refused { work_dir: PathBuf, code: String, reason: String },
    Failed(String),
}

fn child_main(args: &[String]) -> Result<(), ChildError> {
    let usage = || ChildError::Failed(format!("usage: isolated --memory-limit BYTES (extract|chunk) …; got {args:?}"));
    let [flag, limit, step, rest @ ..] = args else { return Err(usage()) };
    if flag != "--memory-limit" {
        return Err(usage());
    }
    let limit: u64 = limit.parse().map_err(|_| usage())?;
    rlimit::setrlimit(rlimit::Resource::AS, limit, limit)
        .map_err(|e| ChildError::Failed(format!("cannot set the memory limit: {e}")))?;
    match (step.as_str(), rest) {
        ("extract", [epub, work_dir]) => {
            let work_dir = PathBuf::from(work_dir);
            let book =
                epub_extract::extract_file(Path::new(epub), &epub_extract::Limits::default()).map_err(|error| {
                    ChildError::Refused {
                        work_dir: work_dir.clone(),
                        code: error.code().to_owned(),
                        reason: error.to_string(),
                    }
                })?;
            let metadata = ExtractedMetadata {
                title: book.title,
                author: book.author,
                language: book.language,
                chapters: book.chapters,
            };
            write(&work_dir.join(files::MARKDOWN), book.markdown.as_bytes())?;
            write(&work_dir.join(files::METADATA), &serde_json::to_vec(&metadata).unwrap_or_default())
        }
        ("chunk", [document_id, markdown, work_dir, target, max]) => {
            let work_dir = PathBuf::from(work_dir);
            let target = target.parse().map_err(|_| usage())?;
            let max = max.parse().map_err(|_| usage())?;
            let config = ChunkerConfig::new(target, max).map_err(|e| ChildError::Failed(e.to_string()))?;
            let markdown =
                std::fs::read_to_string(markdown).map_err(|e| ChildError::Failed(format!("{markdown}: {e}")))?;
            let chunks: Vec<ChunkFile> =
                chunker::chunk_markdown(document_id, &markdown, &config).iter().map(ChunkFile::from).collect();
            write(&work_dir.join(files::CHUNKS), &serde_json::to_vec(&chunks).unwrap_or_default())
        }
        _ => Err(usage()),
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ChildError> {
    crate::data_dir::write_atomically(path, bytes).map_err(|e| ChildError::Failed(format!("{}: {e}", path.display())))
}
