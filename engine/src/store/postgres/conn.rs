//! The PostgreSQL store's connections: a pool (deadpool-postgres) on a small
//! tokio runtime the store owns, the bridge from the store's blocking
//! interface to it, and a connection guard that throws away any connection
//! whose transaction did not end cleanly. TLS, when the connection string
//! asks for it, is `tls.rs`'s verifying rustls connector.
//!
//! The [`WorldStore`](super::super::WorldStore) interface is blocking, and
//! its callers run anywhere: a plain thread (the committer), a tokio worker
//! inside `block_in_place`, a `spawn_blocking` thread. So every operation is
//! spawned onto the store's own runtime and its caller waits on a std
//! channel, which is safe from all of those places (entering a runtime with
//! `block_on` is not). Every operation is bounded by a timeout, so a database
//! that stops answering fails the call instead of hanging it.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::super::error::StoreFault;

/// The runtime and pool of one store.
pub(crate) struct Connections {
    /// `None` only while dropping (the runtime is shut down in the background,
    /// which is allowed from inside another runtime).
    runtime: Option<tokio::runtime::Runtime>,
    pub(crate) pool: Pool,
    /// The longest one operation (all its statements and retries) may take.
    op_timeout: Duration,
}

impl Connections {
    /// Connections to `config`, over TLS with `tls` (plain TCP without).
    pub(crate) fn new(
        config: tokio_postgres::Config,
        tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
        pool_size: usize,
        op_timeout: Duration,
    ) -> std::io::Result<Connections> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hoard-postgres")
            .enable_all()
            .build()?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls {
            Some(tls) => Manager::from_config(config, tls, manager_config),
            None => Manager::from_config(config, NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(op_timeout))
            .create_timeout(Some(op_timeout))
            .recycle_timeout(Some(op_timeout))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Connections {
            runtime: Some(runtime),
            pool,
            op_timeout,
        })
    }

    /// Runs `op` on the store's runtime and waits for it, at most the
    /// operation timeout.
    pub(crate) fn run<R, E, F>(&self, what: &'static str, op: impl FnOnce(Pool) -> F) -> Result<R, E>
    where
        F: Future<Output = Result<R, E>> + Send + 'static,
        R: Send + 'static,
        E: From<StoreFault> + Send + 'static,
    {
        let Some(runtime) = self.runtime.as_ref() else {
            return Err(StoreFault::Corrupt("the PostgreSQL store is closed".into()).into());
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.op_timeout;
        let fut = op(self.pool.clone());
        runtime.spawn(async move {
            let result = match tokio::time::timeout(timeout, fut).await {
                Ok(result) => result,
                Err(_) => Err(StoreFault::Backend {
                    context: what.into(),
                    source: format!("no answer from PostgreSQL within {timeout:?}").into(),
                }
                .into()),
            };
            let _ = tx.send(result);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(StoreFault::Corrupt(format!("the PostgreSQL store's task for {what} panicked")).into())
        })
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A pooled connection that goes back to the pool only if [`Conn::clean`]
/// was called: one dropped mid-transaction (an error, a timeout) is closed
/// instead, so no later operation runs inside a stale transaction.
pub(crate) struct Conn {
    object: Option<Object>,
    clean: bool,
}

impl Conn {
    pub(crate) async fn get(pool: &Pool, what: &'static str) -> Result<Conn, StoreFault> {
        let object = pool.get().await.map_err(|e| StoreFault::backend(what, e))?;
        Ok(Conn {
            object: Some(object),
            clean: false,
        })
    }

    /// The connection is idle (no open transaction): it may be reused.
    pub(crate) fn clean(mut self) {
        self.clean = true;
    }
}

impl std::ops::Deref for Conn {
    type Target = deadpool_postgres::ClientWrapper;
    fn deref(&self) -> &Self::Target {
        // Present until drop.
        self.object
            .as_deref()
            .unwrap_or_else(|| unreachable!("a Conn holds its connection until dropped"))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.clean
            && let Some(object) = self.object.take()
        {
            drop(Object::take(object));
        }
    }
}

/// Whether `e` is a transient conflict worth retrying the transaction for
/// (a serialization failure or a deadlock, both of which roll it back).
pub(crate) fn is_conflict(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// Whether `e` is a unique-key violation (two writers created the same row).
pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}
