//! A read-only view of a store file whose disk refuses writes (full, or
//! failing its fsyncs), so a server keeps answering zone entries from what
//! is durable while it cannot save.
//!
//! redb fails every operation, reads included, after one failed write, until
//! the file is reopened; and reopening a file that was not closed cleanly
//! repairs it, which writes. On a full disk that reopen fails too. A
//! [`ReadView`] lets the repair run anyway: it reads the file (or the
//! backend) as it is and keeps whatever redb writes in memory, never on the
//! disk. The store opened on it refuses every write of its own (see
//! `RedbStore::recover`), so the memory holds only the repair's own pages,
//! and is capped at [`MAX_VIEW_BYTES`] all the same.
//!
//! What the view shows is exactly the last durable commit: redb's repair
//! rolls back whatever the failed commit left half-written.

use std::collections::BTreeMap;
use std::sync::Mutex;

use redb::StorageBackend;

/// Pages of the file the view changed in memory, at most (64 MiB of 4 KiB
/// pages). A repair writes its allocator state and headers, a few pages per
/// region; past this the view refuses the write and the store stays closed.
pub(crate) const MAX_VIEW_BYTES: usize = 64 * 1024 * 1024;

const PAGE: u64 = 4096;

/// The file (or backend) underneath, read as it is, with redb's writes kept
/// in memory page by page.
#[derive(Debug)]
pub(crate) struct ReadView {
    base: Box<dyn StorageBackend>,
    changed: Mutex<Changed>,
}

#[derive(Debug)]
struct Changed {
    /// Page offset → the page as redb last wrote it.
    pages: BTreeMap<u64, Vec<u8>>,
    /// The length redb set (the base's until it sets one).
    len: u64,
    /// The base's length: bytes past it read as zeros.
    base_len: u64,
}

impl ReadView {
    /// A view over `base`.
    pub(crate) fn new(base: Box<dyn StorageBackend>) -> std::io::Result<ReadView> {
        let len = base.len()?;
        Ok(ReadView {
            base,
            changed: Mutex::new(Changed {
                pages: BTreeMap::new(),
                len,
                base_len: len,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Changed> {
        crate::lock::lock(&self.changed)
    }

    /// The page at `start` as the base holds it (zeros past its end).
    fn base_page(&self, start: u64, base_len: u64) -> std::io::Result<Vec<u8>> {
        let mut page = vec![0u8; PAGE as usize];
        if start < base_len {
            let n = (base_len - start).min(PAGE) as usize;
            self.base.read(start, &mut page[..n])?;
        }
        Ok(page)
    }
}

impl StorageBackend for ReadView {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.lock().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let changed = self.lock();
        let end = offset + out.len() as u64;
        // The base's bytes first, zeros past its end ...
        let from_base = end.min(changed.base_len).saturating_sub(offset) as usize;
        if from_base > 0 {
            self.base.read(offset, &mut out[..from_base])?;
        }
        out[from_base..].fill(0);
        // ... then the pages redb changed, over them.
        let first = offset - offset % PAGE;
        for (&start, page) in changed.pages.range(first..end) {
            let lo = start.max(offset);
            let hi = (start + PAGE).min(end);
            out[(lo - offset) as usize..(hi - offset) as usize]
                .copy_from_slice(&page[(lo - start) as usize..(hi - start) as usize]);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut changed = self.lock();
        // Shrinking forgets what lies past the new end; growing again reads
        // zeros there, as a file does.
        let cut = len.div_ceil(PAGE) * PAGE;
        changed.pages.retain(|&start, _| start < cut);
        if let Some(last) = changed
            .pages
            .range_mut(..cut)
            .next_back()
            .filter(|(s, _)| **s + PAGE > len)
        {
            let keep = (len - *last.0) as usize;
            last.1[keep..].fill(0);
        }
        changed.base_len = changed.base_len.min(len);
        changed.len = len;
        Ok(())
    }

    /// Nothing of a view is ever durable, and the store never says it is:
    /// it refuses every write of its own while on a view.
    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut changed = self.lock();
        let end = offset + data.len() as u64;
        let mut start = offset - offset % PAGE;
        while start < end {
            if !changed.pages.contains_key(&start) {
                if (changed.pages.len() + 1) * PAGE as usize > MAX_VIEW_BYTES {
                    return Err(std::io::Error::other(format!(
                        "the read-only view of the store would keep more than {MAX_VIEW_BYTES} bytes in memory"
                    )));
                }
                let page = self.base_page(start, changed.base_len)?;
                changed.pages.insert(start, page);
            }
            let page = changed.pages.get_mut(&start).expect("inserted above");
            let lo = start.max(offset);
            let hi = (start + PAGE).min(end);
            page[(lo - start) as usize..(hi - start) as usize]
                .copy_from_slice(&data[(lo - offset) as usize..(hi - offset) as usize]);
            start += PAGE;
        }
        changed.len = changed.len.max(end);
        Ok(())
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.base.close()
    }
}

/// The store file itself, opened for reading only and locked against other
/// processes as redb's own file backend locks it.
#[derive(Debug)]
pub(crate) struct ReadOnlyFile {
    file: Mutex<std::fs::File>,
}

impl ReadOnlyFile {
    pub(crate) fn open(path: &std::path::Path) -> std::io::Result<ReadOnlyFile> {
        let file = std::fs::File::open(path)?;
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "the store file is locked by another process",
            ),
            std::fs::TryLockError::Error(e) => e,
        })?;
        Ok(ReadOnlyFile { file: Mutex::new(file) })
    }

    fn file(&self) -> std::sync::MutexGuard<'_, std::fs::File> {
        crate::lock::lock(&self.file)
    }
}

impl StorageBackend for ReadOnlyFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.file().metadata()?.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        use std::io::{Read, Seek};
        let mut file = self.file();
        file.seek(std::io::SeekFrom::Start(offset))?;
        file.read_exact(out)
    }

    fn set_len(&self, _len: u64) -> Result<(), std::io::Error> {
        Err(std::io::Error::other("the store file is open for reading only"))
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn write(&self, _offset: u64, _data: &[u8]) -> Result<(), std::io::Error> {
        Err(std::io::Error::other("the store file is open for reading only"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A base backend over bytes in memory.
    #[derive(Debug)]
    struct Bytes(Mutex<Vec<u8>>);

    impl StorageBackend for Bytes {
        fn len(&self) -> Result<u64, std::io::Error> {
            Ok(self.0.lock().expect("lock").len() as u64)
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            let b = self.0.lock().expect("lock");
            out.copy_from_slice(&b[offset as usize..offset as usize + out.len()]);
            Ok(())
        }
        fn set_len(&self, _: u64) -> Result<(), std::io::Error> {
            panic!("a view never resizes its base")
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            Ok(())
        }
        fn write(&self, _: u64, _: &[u8]) -> Result<(), std::io::Error> {
            panic!("a view never writes its base")
        }
    }

    /// The view against a plain byte image written the same way.
    #[test]
    fn a_view_reads_as_a_file_written_the_same_way_and_never_touches_its_base() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..50 {
            let base: Vec<u8> = (0..rng.usize(0..20_000)).map(|_| rng.u8(..)).collect();
            let view = ReadView::new(Box::new(Bytes(Mutex::new(base.clone())))).expect("view");
            let mut model = base.clone();
            for _ in 0..40 {
                match rng.u8(0..4) {
                    0 | 1 => {
                        let offset = rng.u64(0..30_000);
                        let data: Vec<u8> = (0..rng.usize(1..9_000)).map(|_| rng.u8(..)).collect();
                        view.write(offset, &data).expect("write");
                        let end = offset as usize + data.len();
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[offset as usize..end].copy_from_slice(&data);
                    }
                    2 => {
                        let len = rng.u64(0..30_000);
                        view.set_len(len).expect("set_len");
                        model.resize(len as usize, 0);
                    }
                    _ => {}
                }
                assert_eq!(view.len().expect("len"), model.len() as u64);
                if !model.is_empty() {
                    let offset = rng.usize(0..model.len());
                    let n = rng.usize(0..=model.len() - offset);
                    let mut out = vec![0xAA; n];
                    view.read(offset as u64, &mut out).expect("read");
                    assert_eq!(out, model[offset..offset + n]);
                }
            }
        }
    }

    #[test]
    fn a_view_refuses_to_keep_more_than_its_cap() {
        let view = ReadView::new(Box::new(Bytes(Mutex::new(Vec::new())))).expect("view");
        let chunk = vec![1u8; 1024 * 1024];
        let mut at = 0;
        let refused = loop {
            match view.write(at, &chunk) {
                Ok(()) => at += chunk.len() as u64,
                Err(e) => break e,
            }
        };
        assert!(refused.to_string().contains("in memory"), "{refused}");
        assert_eq!(at as usize, MAX_VIEW_BYTES);
    }
}
