//! A simulated disk for tests of the redb store: power loss and injected I/O
//! errors.
//!
//! kill -9 loses nothing the kernel already holds; power loss loses every
//! write that was not yet fsynced, and the disk may keep any subset of those
//! writes, the last one possibly torn. [`SimDisk`] keeps two images: what a
//! reader sees now, and what survives a power cut (the image as of the last
//! `sync_data`, plus the unsynced writes a crash chooses to keep). Backends
//! made by [`SimDisk::factory`] are handed to
//! [`RedbStore::open_with_backend`](super::RedbStore::open_with_backend).
//!
//! Faults: the Nth write can fail (a full disk, `ENOSPC`) and the Nth sync
//! can fail (`EIO`), once or until cleared. After [`SimDisk::crash`] every
//! backend made before it is dead (every call fails), as the process that
//! held it would be; a new backend sees the surviving image.

use std::sync::{Arc, Mutex, MutexGuard};

use redb::StorageBackend;

use super::redb_store::BackendFactory;

/// One write not yet made durable.
#[derive(Clone, Debug)]
pub struct PendingWrite {
    /// Where it starts.
    pub offset: u64,
    /// How many bytes.
    pub len: usize,
}

/// What a crash keeps of one unsynced write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Keep {
    /// Nothing of it reached the platter.
    Drop,
    /// All of it.
    Whole,
    /// Its first bytes only (a torn write).
    Prefix(usize),
}

#[derive(Debug)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct State {
    /// What survives a power cut for sure.
    durable: Vec<u8>,
    /// What a reader sees.
    current: Vec<u8>,
    /// Operations since the last sync, in order.
    pending: Vec<Op>,
    /// Backends of older generations are dead.
    generation: u64,
    writes: u64,
    syncs: u64,
    fail_write_at: Option<u64>,
    fail_sync_at: Option<u64>,
    /// Whether an injected fault repeats on every later call.
    sticky: bool,
    /// Fail every operation (after `crash_after` operations).
    crash_after: Option<u64>,
    ops: u64,
    crashed_mid_run: bool,
}

/// A simulated disk shared by the backends made from it.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock::lock(&self.state)
    }

    /// A factory of backends on this disk, for
    /// [`RedbStore::open_with_backend`](super::RedbStore::open_with_backend).
    pub fn factory(&self) -> BackendFactory {
        let disk = self.clone();
        Arc::new(move || {
            let generation = disk.lock().generation;
            Ok(Box::new(SimBackend {
                disk: disk.clone(),
                generation,
            }) as Box<dyn StorageBackend>)
        })
    }

    /// Writes so far.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// Syncs so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Makes the `n`th write from now fail with `ENOSPC` (and every later
    /// one, if `sticky`, until [`SimDisk::clear_faults`]).
    pub fn fail_write_after(&self, n: u64, sticky: bool) {
        let mut s = self.lock();
        s.fail_write_at = Some(s.writes + n);
        s.sticky = sticky;
    }

    /// Makes the `n`th sync from now fail with `EIO` (and every later one,
    /// if `sticky`).
    pub fn fail_sync_after(&self, n: u64, sticky: bool) {
        let mut s = self.lock();
        s.fail_sync_at = Some(s.syncs + n);
        s.sticky = sticky;
    }

    /// Removes injected faults (the disk has space again).
    pub fn clear_faults(&self) {
        let mut s = self.lock();
        s.fail_write_at = None;
        s.fail_sync_at = None;
    }

    /// Cuts the power after `n` more operations (writes, syncs, resizes):
    /// that operation and every later one fail, as if the machine stopped.
    /// Call [`SimDisk::crash`] afterwards to decide what survived.
    pub fn power_cut_after(&self, n: u64) {
        let mut s = self.lock();
        s.crash_after = Some(s.ops + n);
    }

    /// Whether a power cut set by [`SimDisk::power_cut_after`] happened.
    pub fn power_was_cut(&self) -> bool {
        self.lock().crashed_mid_run
    }

    /// The unsynced writes, oldest first.
    pub fn pending(&self) -> Vec<PendingWrite> {
        self.lock()
            .pending
            .iter()
            .filter_map(|op| match op {
                Op::Write { offset, data } => Some(PendingWrite {
                    offset: *offset,
                    len: data.len(),
                }),
                Op::SetLen(_) => None,
            })
            .collect()
    }

    /// Power loss: the disk comes back holding the last synced image plus
    /// the unsynced writes `keep` chooses (asked once per write, oldest
    /// first; resizes are kept). Every backend made before is dead; faults
    /// and the power cut are cleared.
    pub fn crash(&self, mut keep: impl FnMut(&PendingWrite) -> Keep) {
        let mut s = self.lock();
        let mut image = s.durable.clone();
        for op in std::mem::take(&mut s.pending) {
            match op {
                Op::SetLen(len) => image.resize(len as usize, 0),
                Op::Write { offset, data } => {
                    let bytes = match keep(&PendingWrite {
                        offset,
                        len: data.len(),
                    }) {
                        Keep::Drop => continue,
                        Keep::Whole => &data[..],
                        Keep::Prefix(n) => &data[..n.min(data.len())],
                    };
                    write_at(&mut image, offset, bytes);
                }
            }
        }
        s.durable = image.clone();
        s.current = image;
        s.generation += 1;
        s.fail_write_at = None;
        s.fail_sync_at = None;
        s.crash_after = None;
        s.crashed_mid_run = false;
    }

    /// The bytes a reader sees now.
    pub fn image(&self) -> Vec<u8> {
        self.lock().current.clone()
    }
}

fn write_at(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset as usize..end].copy_from_slice(data);
}

fn io(kind: std::io::ErrorKind, what: &str) -> std::io::Error {
    std::io::Error::new(kind, what.to_owned())
}

#[derive(Debug)]
struct SimBackend {
    disk: SimDisk,
    generation: u64,
}

impl SimBackend {
    /// The disk's state, if this backend is still alive; counts an operation
    /// toward a pending power cut.
    fn live(&self, counts: bool) -> Result<MutexGuard<'_, State>, std::io::Error> {
        let mut s = self.disk.lock();
        if s.generation != self.generation {
            return Err(io(
                std::io::ErrorKind::BrokenPipe,
                "simulated disk: the machine lost power",
            ));
        }
        if counts {
            s.ops += 1;
            if s.crash_after.is_some_and(|at| s.ops >= at) {
                s.crashed_mid_run = true;
                s.generation += 1;
                return Err(io(std::io::ErrorKind::BrokenPipe, "simulated disk: power cut"));
            }
        }
        Ok(s)
    }
}

impl StorageBackend for SimBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.live(false)?.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let s = self.live(false)?;
        let end = offset as usize + out.len();
        if end > s.current.len() {
            return Err(io(
                std::io::ErrorKind::UnexpectedEof,
                "simulated disk: read past the end",
            ));
        }
        out.copy_from_slice(&s.current[offset as usize..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut s = self.live(true)?;
        s.current.resize(len as usize, 0);
        s.pending.push(Op::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut s = self.live(true)?;
        s.syncs += 1;
        if let Some(at) = s.fail_sync_at
            && (s.syncs == at || (s.sticky && s.syncs > at))
        {
            // A failed fsync makes no promise about what reached the disk.
            return Err(io(std::io::ErrorKind::Other, "simulated disk: EIO on fsync"));
        }
        s.durable = s.current.clone();
        s.pending.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut s = self.live(true)?;
        s.writes += 1;
        if let Some(at) = s.fail_write_at
            && (s.writes == at || (s.sticky && s.writes > at))
        {
            return Err(io(std::io::ErrorKind::StorageFull, "simulated disk: no space left"));
        }
        write_at(&mut s.current, offset, data);
        s.pending.push(Op::Write {
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }
}
