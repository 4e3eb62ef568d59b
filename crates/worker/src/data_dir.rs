//! The data directory: uploads and markdown, addressed by content hash.
//!
//! ```text
//! <data-dir>/quire.db                 the SQLite database (default backend)
//! <data-dir>/uploads/<sha256>.epub    every upload, by content hash
//! <data-dir>/markdown/<sha256>.md     extracted markdown, by content hash
//! <data-dir>/work/<job-id>/           scratch space of one job's isolated steps
//! ```
//!
//! Files are written to a temporary name (`.tmp-…`) beside their final one, synced, renamed into
//! place and their directory synced: a crash never leaves a half-written file under a final name,
//! a file that was reported stored survives a power loss, and a failed write (a full disk
//! included) leaves no temporary file behind.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

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
    /// keeps one file. Blocking: hashing and syncing take time, so async code runs this (and
    /// [`UploadWriter`]) on a blocking thread.
    pub fn store_upload(&self, bytes: &[u8]) -> io::Result<String> {
        let mut writer = self.upload_writer()?;
        writer.write(bytes)?;
        Ok(writer.finish()?.content_hash)
    }

    /// Starts writing an upload whose bytes arrive in pieces (an HTTP body): see [`UploadWriter`].
    pub fn upload_writer(&self) -> io::Result<UploadWriter> {
        let dir = self.root.join("uploads");
        let file = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&dir)
            .map_err(|error| with_context(error, "cannot create a temporary file in", &dir))?;
        Ok(UploadWriter { data_dir: self.clone(), file, hasher: Sha256::new(), byte_size: 0 })
    }
}

/// How temporary files in the data directory begin: nothing else there begins with it.
const TEMP_PREFIX: &str = ".tmp-";

/// An upload stored under its content hash, on disk for good: the file and its directory entry
/// were synced before this was returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUpload {
    /// SHA-256 of its bytes, in hex: its name in `uploads/`.
    pub content_hash: String,
    /// Its length in bytes.
    pub byte_size: u64,
}

/// An upload being written: its bytes go to a temporary file in `uploads/` and through SHA-256
/// as they arrive, so a large upload is never held in memory and never read twice.
///
/// [`finish`](UploadWriter::finish) syncs the file, renames it to its hash and syncs the
/// directory. Dropped before that (an error, a client gone, a full disk), it removes its
/// temporary file. Every method blocks: async code calls them on a blocking thread.
#[derive(Debug)]
pub struct UploadWriter {
    /// Where the finished file goes.
    data_dir: DataDir,
    /// The temporary file; deleted when dropped unless persisted.
    file: NamedTempFile,
    /// The hash of what was written so far.
    hasher: Sha256,
    /// Bytes written so far.
    byte_size: u64,
}

impl UploadWriter {
    /// Appends `bytes`. On error (a full disk, a file-size limit) the upload is lost: drop the
    /// writer, which removes what was written.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        // The file itself, not the `NamedTempFile`, whose errors repeat the path.
        self.file
            .as_file_mut()
            .write_all(bytes)
            .map_err(|error| with_context(error, "cannot write the upload to", self.file.path()))?;
        self.hasher.update(bytes);
        self.byte_size += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn byte_size(&self) -> u64 {
        self.byte_size
    }

    /// Syncs the file, renames it to its content hash and syncs the directory: once this
    /// returns, the upload survives a power loss. The same bytes stored before are replaced by
    /// the identical file.
    pub fn finish(self) -> io::Result<StoredUpload> {
        let UploadWriter { data_dir, file, hasher, byte_size } = self;
        let content_hash = hex::encode(hasher.finalize());
        persist_synced(file, &data_dir.upload_path(&content_hash))?;
        Ok(StoredUpload { content_hash, byte_size })
    }
}

impl Write for UploadWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        UploadWriter::write(self, bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes `bytes` to `path` through a temporary file beside it, synced, renamed into place, and
/// the directory synced: a crash or power loss leaves the old file or the new one, never a part,
/// and an error (a full disk included) leaves no temporary file behind.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let parent = parent_of(path);
    let mut file = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(parent)
        .map_err(|error| with_context(error, "cannot create a temporary file in", parent))?;
    file.as_file_mut().write_all(bytes).map_err(|error| with_context(error, "cannot write", path))?;
    persist_synced(file, path)
}

/// Syncs `file`, renames it to `path` and syncs the directory. On error the temporary file is
/// removed (dropping a `NamedTempFile`, or the one a failed `persist` hands back, deletes it).
fn persist_synced(file: NamedTempFile, path: &Path) -> io::Result<()> {
    file.as_file().sync_all().map_err(|error| with_context(error, "cannot sync", path))?;
    file.persist(path).map_err(|error| with_context(error.error, "cannot rename into", path))?;
    // The rename is in the directory: without syncing it, a power loss can forget the name.
    let parent = parent_of(path);
    std::fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| with_context(error, "cannot sync the directory", parent))
}

fn parent_of(path: &Path) -> &Path {
    path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// `error` with what was being done and where, keeping its kind (a full disk stays
/// [`io::ErrorKind::StorageFull`], so callers can still tell).
fn with_context(error: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{doing} {}: {error}", path.display()))
}
