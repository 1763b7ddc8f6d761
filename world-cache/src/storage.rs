//! The file operations the cache performs, behind a trait so tests can fail
//! the Nth write, fsync or rename and check that the cache stays sound.
//!
//! [`FsStorage`] is the real file system. Paths are absolute (the cache joins
//! them onto its root).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::time::SystemTime;

/// What the cache needs to know of a directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry's file name.
    pub name: String,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// What the cache needs to know of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    /// Length in bytes.
    pub len: u64,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Last modification (the cache sets it on use, for LRU eviction).
    pub modified: SystemTime,
}

/// File operations used by the cache.
pub trait Storage: Send + Sync {
    /// Reads at most `limit` bytes from the start of a file.
    fn read(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>>;
    /// Reads a file whole if it is at most `whole_up_to` bytes long, else
    /// at most `limit` bytes from its start, with the file's metadata (of a
    /// directory, nothing is read). The choice is made from the file's
    /// length before anything is read, so a large file's head read never
    /// reads more than `limit`. One lookup of the path where a real file
    /// system can; by default, `metadata` then `read`.
    fn read_with_meta(&self, path: &Path, limit: u64, whole_up_to: u64) -> io::Result<(Vec<u8>, FileMeta)> {
        let meta = self.metadata(path)?;
        if meta.is_dir {
            return Ok((Vec::new(), meta));
        }
        Ok((self.read(path, read_span(&meta, limit, whole_up_to))?, meta))
    }
    /// Metadata of a path.
    fn metadata(&self, path: &Path) -> io::Result<FileMeta>;
    /// Creates or truncates a file and writes `bytes` (not synced).
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Appends `bytes` to a file, creating it if needed (not synced);
    /// returns the file's length after the append.
    fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<u64>;
    /// Flushes a file's contents to stable storage.
    fn sync(&self, path: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Flushes a directory's entries (after a rename in it) to stable storage.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Lists a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<Entry>>;
    /// Marks a file as just used (sets its modification time to now).
    fn touch(&self, path: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsStorage;

/// How many bytes [`Storage::read_with_meta`] reads of a file of `meta`.
pub fn read_span(meta: &FileMeta, limit: u64, whole_up_to: u64) -> u64 {
    if meta.len <= whole_up_to {
        meta.len
    } else {
        meta.len.min(limit)
    }
}

fn file_meta(m: &fs::Metadata) -> io::Result<FileMeta> {
    Ok(FileMeta {
        len: m.len(),
        is_dir: m.is_dir(),
        modified: m.modified()?,
    })
}

impl Storage for FsStorage {
    fn read(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        let file = File::open(path)?;
        let len = file.metadata()?.len().min(limit);
        // The allocation is bounded by the file's real size and the limit.
        let mut out = Vec::with_capacity(len as usize);
        file.take(limit).read_to_end(&mut out)?;
        Ok(out)
    }

    fn read_with_meta(&self, path: &Path, limit: u64, whole_up_to: u64) -> io::Result<(Vec<u8>, FileMeta)> {
        // Opening a directory for reading succeeds on Unix; the open
        // file's metadata tells it apart without reading.
        let file = File::open(path)?;
        let meta = file_meta(&file.metadata()?)?;
        if meta.is_dir {
            return Ok((Vec::new(), meta));
        }
        let len = read_span(&meta, limit, whole_up_to);
        let mut out = Vec::with_capacity(len as usize);
        file.take(len).read_to_end(&mut out)?;
        Ok((out, meta))
    }

    fn metadata(&self, path: &Path) -> io::Result<FileMeta> {
        file_meta(&fs::metadata(path)?)
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut f = File::create(path)?;
        f.write_all(bytes)
    }

    fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<u64> {
        let mut f = OpenOptions::new().create(true).append(true).open(path)?;
        f.write_all(bytes)?;
        // The open file's length, from its end: no lookup of the path, nor
        // of the file's metadata.
        f.seek(io::SeekFrom::End(0))
    }

    fn sync(&self, path: &Path) -> io::Result<()> {
        OpenOptions::new().write(true).open(path)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            out.push(Entry {
                name: entry.file_name().to_string_lossy().into_owned(),
                is_dir: entry.file_type()?.is_dir(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn touch(&self, path: &Path) -> io::Result<()> {
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_modified(SystemTime::now())
    }
}
