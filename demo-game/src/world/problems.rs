//! Problems found in world data, each with where it is: a file, line and
//! column for world files and mods, or a shard for data read from a store.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use hoard_engine::ShardId;

/// Where an object or a problem is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A place in a world or mod file (1-based line and column).
    File {
        /// The file.
        file: Arc<Path>,
        /// Its line.
        line: usize,
        /// Its column, in characters.
        col: usize,
    },
    /// A shard of a server's store.
    Store(ShardId),
    /// Made by a program (the generator), not read from anywhere.
    Made,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File { file, line, col } => write!(f, "{}:{line}:{col}", file.display()),
            Source::Store(shard) => write!(f, "store shard {}", shard.0),
            Source::Made => f.write_str("generated"),
        }
    }
}

/// One problem: where, and a plain sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Where.
    pub(crate) at: Source,
    /// What is wrong, as a sentence.
    pub(crate) message: String,
}

impl Problem {
    /// A problem at `at`.
    pub(crate) fn at(at: &Source, message: impl Into<String>) -> Problem {
        Problem {
            at: at.clone(),
            message: message.into(),
        }
    }

    /// A problem with a whole file.
    pub(crate) fn in_file(file: &Path, message: impl Into<String>) -> Problem {
        Problem {
            at: Source::File {
                file: Arc::from(file),
                line: 1,
                col: 1,
            },
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// The problems found so far.
#[derive(Default, Debug)]
pub(crate) struct Problems(Vec<Problem>);

impl Problems {
    /// Records one.
    pub(crate) fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }

    /// Adds every problem of `other`, in order.
    pub(crate) fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    /// Whether none was found.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Each, in the order found.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// An error listing every problem, or `Ok` when there is none.
    pub(crate) fn into_result(self, what: &str) -> anyhow::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut text = format!("{} problem(s) in {what}:", self.0.len());
        for problem in &self.0 {
            text.push_str("\n  ");
            text.push_str(&problem.to_string());
        }
        Err(anyhow::anyhow!(text))
    }
}
