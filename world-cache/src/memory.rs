//! [`MemStorage`]: a cache's files in memory, for a process that holds many
//! clients at once and needs none of their caches after it ends (the demo's
//! load tester: a thousand players' caches on one machine, each journaling
//! every live delta, spent a tenth of its CPU looking up file paths). The
//! cache works on it exactly as on disk — checksums, journals, folds,
//! eviction — but a "sync" is a no-op and everything is gone with the
//! process. Bounded by what the cache itself keeps (its size budget).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use hoard_engine::lock::lock;

use crate::storage::{Entry, FileMeta, Storage};

enum Node {
    Dir,
    File { bytes: Vec<u8>, modified: SystemTime },
}

/// A cache's files in memory (see the module docs).
///
/// Files and directories by path in a hash map: a lookup hashes the path
/// once and compares it byte for byte (an ordered map compared paths
/// component by component at every step, which a thousand clients'
/// journal appends spent a twentieth of their time on); listing a
/// directory, rare, scans every entry.
#[derive(Default)]
pub struct MemStorage {
    nodes: Mutex<HashMap<PathBuf, Node>>,
}

impl std::fmt::Debug for MemStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStorage")
            .field("entries", &lock(&self.nodes).len())
            .finish()
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

impl MemStorage {
    /// An empty storage.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// A storage holding a copy of the directory tree at `dir` (a cache
    /// made on disk), under `root`: a client can start warm from it.
    pub fn copy_of(dir: &Path, root: &Path) -> io::Result<MemStorage> {
        let storage = MemStorage::new();
        storage.create_dir_all(root)?;
        let mut pending = vec![(dir.to_owned(), root.to_owned())];
        while let Some((from, to)) = pending.pop() {
            for entry in std::fs::read_dir(&from)? {
                let entry = entry?;
                let (source, target) = (entry.path(), to.join(entry.file_name()));
                if entry.file_type()?.is_dir() {
                    storage.create_dir_all(&target)?;
                    pending.push((source, target));
                } else {
                    storage.write(&target, &std::fs::read(&source)?)?;
                }
            }
        }
        Ok(storage)
    }

    fn parent_is_dir(nodes: &HashMap<PathBuf, Node>, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => match nodes.get(parent) {
                Some(Node::Dir) => Ok(()),
                _ => Err(not_found(parent)),
            },
            _ => Ok(()),
        }
    }
}

impl Storage for MemStorage {
    fn read(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        match lock(&self.nodes).get(path) {
            Some(Node::File { bytes, .. }) => Ok(bytes[..bytes.len().min(limit as usize)].to_vec()),
            Some(Node::Dir) => Err(io::Error::new(io::ErrorKind::IsADirectory, "is a directory")),
            None => Err(not_found(path)),
        }
    }

    fn metadata(&self, path: &Path) -> io::Result<FileMeta> {
        match lock(&self.nodes).get(path) {
            Some(Node::File { bytes, modified }) => Ok(FileMeta {
                len: bytes.len() as u64,
                is_dir: false,
                modified: *modified,
            }),
            Some(Node::Dir) => Ok(FileMeta {
                len: 0,
                is_dir: true,
                modified: SystemTime::UNIX_EPOCH,
            }),
            None => Err(not_found(path)),
        }
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut nodes = lock(&self.nodes);
        MemStorage::parent_is_dir(&nodes, path)?;
        let file = Node::File {
            bytes: bytes.to_vec(),
            modified: SystemTime::now(),
        };
        nodes.insert(path.to_owned(), file);
        Ok(())
    }

    fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<u64> {
        let mut nodes = lock(&self.nodes);
        // A file's folder exists as long as the file does (every way a file
        // comes in checks its folder; removing a folder removes what is in
        // it): only a new file needs the check. One lookup, no allocation,
        // for the journal appends a client makes on every live delta.
        match nodes.get_mut(path) {
            Some(Node::File { bytes: file, modified }) => {
                file.extend_from_slice(bytes);
                *modified = SystemTime::now();
                Ok(file.len() as u64)
            }
            Some(Node::Dir) => Err(io::Error::new(io::ErrorKind::IsADirectory, "is a directory")),
            None => {
                MemStorage::parent_is_dir(&nodes, path)?;
                let file = Node::File {
                    bytes: bytes.to_vec(),
                    modified: SystemTime::now(),
                };
                nodes.insert(path.to_owned(), file);
                Ok(bytes.len() as u64)
            }
        }
    }

    fn sync(&self, path: &Path) -> io::Result<()> {
        self.metadata(path).map(|_| ())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut nodes = lock(&self.nodes);
        MemStorage::parent_is_dir(&nodes, to)?;
        let node = nodes.remove(from).ok_or_else(|| not_found(from))?;
        nodes.insert(to.to_owned(), node);
        Ok(())
    }

    fn sync_dir(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut nodes = lock(&self.nodes);
        match nodes.get(path) {
            Some(Node::File { .. }) => {
                nodes.remove(path);
                Ok(())
            }
            Some(Node::Dir) => Err(io::Error::new(io::ErrorKind::IsADirectory, "is a directory")),
            None => Err(not_found(path)),
        }
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut nodes = lock(&self.nodes);
        if !matches!(nodes.get(path), Some(Node::Dir)) {
            return Err(not_found(path));
        }
        nodes.retain(|p, _| !p.starts_with(path));
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut nodes = lock(&self.nodes);
        for dir in path.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            match nodes.get(dir) {
                Some(Node::Dir) => break,
                Some(Node::File { .. }) => {
                    return Err(io::Error::new(io::ErrorKind::AlreadyExists, "a file is in the way"));
                }
                None => {
                    nodes.insert(dir.to_owned(), Node::Dir);
                }
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<Entry>> {
        let nodes = lock(&self.nodes);
        if !matches!(nodes.get(dir), Some(Node::Dir)) {
            return Err(not_found(dir));
        }
        let children = nodes
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .filter_map(|(p, node)| {
                Some(Entry {
                    name: p.file_name()?.to_string_lossy().into_owned(),
                    is_dir: matches!(node, Node::Dir),
                })
            });
        let mut out: Vec<Entry> = children.collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn touch(&self, path: &Path) -> io::Result<()> {
        match lock(&self.nodes).get_mut(path) {
            Some(Node::File { modified, .. }) => {
                *modified = SystemTime::now();
                Ok(())
            }
            Some(Node::Dir) => Ok(()),
            None => Err(not_found(path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_directories_behave_as_on_disk() {
        let s = MemStorage::new();
        let root = Path::new("/c");
        assert_eq!(
            s.write(&root.join("a/x"), b"1").map_err(|e| e.kind()),
            Err(io::ErrorKind::NotFound)
        );
        s.create_dir_all(&root.join("a/b")).expect("dirs");
        s.write(&root.join("a/x"), b"12345").expect("write");
        assert_eq!(s.append(&root.join("a/j"), b"ab").expect("append"), 2);
        assert_eq!(s.append(&root.join("a/j"), b"cd").expect("append"), 4);
        assert_eq!(s.read(&root.join("a/x"), 3).expect("read"), b"123");
        assert_eq!(s.metadata(&root.join("a/j")).expect("meta").len, 4);
        let names: Vec<_> = s
            .list(&root.join("a"))
            .expect("list")
            .into_iter()
            .map(|e| (e.name, e.is_dir))
            .collect();
        assert_eq!(
            names,
            vec![("b".into(), true), ("j".into(), false), ("x".into(), false)]
        );
        s.rename(&root.join("a/x"), &root.join("a/b/y")).expect("rename");
        assert!(s.metadata(&root.join("a/x")).is_err());
        assert_eq!(s.read(&root.join("a/b/y"), 100).expect("read"), b"12345");
        s.remove_dir_all(&root.join("a/b")).expect("remove");
        assert!(s.metadata(&root.join("a/b/y")).is_err());
        s.remove_file(&root.join("a/j")).expect("remove file");
        assert!(s.list(&root.join("a")).expect("list").is_empty());
    }
}
