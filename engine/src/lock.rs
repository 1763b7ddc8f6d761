//! The one way hoard takes a `std::sync::Mutex` or `RwLock`.
//!
//! A poisoned lock (a thread panicked holding it) is taken as it is. Every
//! structure hoard guards with a mutex is left consistent by its writers at
//! each step that can panic (they check before they mutate), and the panic
//! itself is handled where it happens: a panicking game system or commit
//! ends the server (fail-stop), a panicking connection task ends that
//! connection. Refusing the lock afterwards would turn one failure into a
//! second, silent one (work dropped by whoever finds the lock poisoned).

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, taking a poisoned lock as it is (see the module docs).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads `l`, taking a poisoned lock as it is (see the module docs).
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `l`, taking a poisoned lock as it is (see the module docs).
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
