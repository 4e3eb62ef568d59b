//! The data directory: uploads and markdown, addressed by content hash.
//!
//! ```text
//! <data-dir>/quire.db                 the SQLite database (default backend)
//! <data-dir>/uploads/<sha256>.epub    every upload, by content hash
//! <data-dir>/markdown/<sha256>.md     extracted markdown, by content hash
//! <data-dir>/work/<job-id>/           scratch space of one job's isolated steps
//! ```
//!
//! Files are written to a temporary name and renamed into place, so a crash never leaves a
//! half-written file under a final name.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The root of quire's files.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl DataDir {
    /// A data directory at `root`, created if missing.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<DataDir> {
        let root = root.into();
        for sub in ["uploads", "markdown", "work"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        Ok(DataDir { root })
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the in-process vector indexes keep their snapshots: caches, safe to delete.
    pub fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }

    /// The default SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.root.join("quire.db")
    }

    /// Where an upload with this hash is kept.
    pub fn upload_path(&self, content_hash: &str) -> PathBuf {
        self.root.join("uploads").join(format!("{content_hash}.epub"))
    }

    /// Where markdown with this hash is kept.
    pub fn markdown_path(&self, markdown_hash: &str) -> PathBuf {
        self.root.join("markdown").join(format!("{markdown_hash}.md"))
    }

    /// Scratch space for one job, created if missing.
    pub fn work_dir(&self, job_id: i64) -> io::Result<PathBuf> {
        let dir = self.root.join("work").join(job_id.to_string());
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Stores an upload under its content hash; returns the hash. Storing the same bytes twice
    /// writes once.
    pub fn store_upload(&self, bytes: &[u8]) -> io::Result<String> {
        let hash = sha256_hex(bytes);
        let path = self.upload_path(&hash);
        if !path.exists() {
            write_atomically(&path, bytes)?;
        }
        Ok(hash)
    }
}

/// Writes `bytes` to `path` through a temporary file, synced, then renamed into place.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile_in(parent)?;
    temp.1.write_all(bytes)?;
    temp.1.sync_all()?;
    std::fs::rename(&temp.0, path)?;
    Ok(())
}

fn tempfile_in(dir: &Path) -> io::Result<(PathBuf, std::fs::File)> {
    for attempt in 0..100u32 {
        let name = format!(".tmp-{}-{}-{attempt}", std::process::id(), unique());
        let path = dir.join(name);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::other("could not create a temporary file"))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}
