//! The commit thread: runs the tick core's [`CommitJob`]s against the store
//! so the world thread never waits for an fsync.
//!
//! One job at a time (the core never makes a second before the first is
//! reported), so the channel to the thread holds at most one job and the
//! one back at most one result: nothing here grows. A store that panics
//! ends the thread; the world thread sees the result channel close and
//! stops the server with that reason (fail-stop, never a lost commit
//! reported as done).

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use hoard_engine::store::{CommitError, CommitReceipt, WorldStore, run_commit};
use hoard_proto::sync::tick::CommitJob;

/// What a commit job came to.
pub type Done = (u64, Result<CommitReceipt, CommitError>);

/// Why the commit thread can take or give nothing more.
#[derive(Debug, thiserror::Error)]
pub enum CommitterGone {
    /// The thread ended (a panic in the store's commit).
    #[error("the commit thread stopped (a panic in the world store's commit)")]
    Stopped,
    /// A job was handed over while one was in flight.
    #[error("a second commit job while one is in flight")]
    Busy,
}

/// The handle the world's driver keeps on its commit thread.
pub struct Committer {
    jobs: Option<SyncSender<CommitJob>>,
    done: Receiver<Done>,
    /// Closes when the thread ends (its sender is dropped then, even by a
    /// panic), so a drop can wait for it with a timeout.
    exited: Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long dropping the committer waits for its thread to end (its store
/// handle released, so the store can be reopened at once).
const EXIT_WAIT: Duration = Duration::from_secs(30);

impl Committer {
    /// Starts the thread committing to `store`.
    pub fn start(store: Arc<dyn WorldStore>) -> std::io::Result<Committer> {
        let (jobs, job_rx) = mpsc::sync_channel::<CommitJob>(1);
        let (done_tx, done) = mpsc::sync_channel::<Done>(1);
        let (exit_tx, exited) = mpsc::sync_channel::<()>(0);
        let thread = std::thread::Builder::new().name("hoard-commit".into()).spawn(move || {
            let _exit = exit_tx;
            for job in job_rx {
                let span = tracing::debug_span!("commit_job", job = job.id, objects = job.changes.len());
                let result = span.in_scope(|| run_commit(&*store, &job.changes, job.recover_first));
                if done_tx.send((job.id, result)).is_err() {
                    return;
                }
            }
        })?;
        Ok(Committer {
            jobs: Some(jobs),
            done,
            exited,
            thread: Some(thread),
        })
    }

    /// Hands the thread a job (never blocks: at most one is in flight).
    pub fn submit(&self, job: CommitJob) -> Result<(), CommitterGone> {
        let jobs = self.jobs.as_ref().ok_or(CommitterGone::Stopped)?;
        match jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(CommitterGone::Busy),
            Err(TrySendError::Disconnected(_)) => Err(CommitterGone::Stopped),
        }
    }

    /// A result, if one is ready.
    pub fn try_done(&self) -> Result<Option<Done>, CommitterGone> {
        match self.done.try_recv() {
            Ok(done) => Ok(Some(done)),
            Err(mpsc::TryRecvError::Empty) => Ok(None),
            Err(mpsc::TryRecvError::Disconnected) => Err(CommitterGone::Stopped),
        }
    }

    /// Waits up to `timeout` for a result.
    pub fn wait_done(&self, timeout: Duration) -> Result<Option<Done>, CommitterGone> {
        match self.done.recv_timeout(timeout) {
            Ok(done) => Ok(Some(done)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(CommitterGone::Stopped),
        }
    }
}

impl Drop for Committer {
    /// Ends the thread after its current job and waits for it, a bounded
    /// time: a store that hangs must not hang the shutdown too.
    fn drop(&mut self) {
        drop(self.jobs.take());
        match self.exited.recv_timeout(EXIT_WAIT) {
            Err(RecvTimeoutError::Disconnected) | Ok(()) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
            }
            Err(RecvTimeoutError::Timeout) => tracing::error!(
                waited_s = EXIT_WAIT.as_secs(),
                "the commit thread did not end; leaving it behind"
            ),
        }
    }
}
