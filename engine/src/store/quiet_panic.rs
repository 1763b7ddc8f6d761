//! Panics of the storage engine that the store catches, kept quiet.
//!
//! redb panics on some kinds of damage it meets in a file ("invalid page
//! type byte"); the store catches those panics and reports them as an error
//! naming the file ([`super::StoreFault::Corrupt`]), logged once. Rust's
//! panic hook would still print each one, with a backtrace, before it is
//! caught: to an operator reading a refused start-up, a crash. [`catch`]
//! runs its closure with a flag set on the thread, and the hook installed
//! once beside the program's own skips the report while the flag is set;
//! every other panic is reported by the hook that was there before.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::Once;

thread_local! {
    /// How many [`catch`] calls are running on this thread.
    static CATCHING: Cell<u32> = const { Cell::new(0) };
}

static QUIET_HOOK: Once = Once::new();

/// Runs `f`, catching a panic (the caller turns it into an error) without
/// the panic hook printing it.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
    CATCHING.with(|c| c.set(c.get() + 1));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_becomes_a_value_and_later_code_runs_normally() {
        let caught = catch(|| -> u32 { panic!("damaged page") });
        let message = caught
            .expect_err("caught")
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned());
        assert_eq!(message.as_deref(), Some("damaged page"));
        assert_eq!(catch(|| 7).ok(), Some(7));
        assert_eq!(CATCHING.with(Cell::get), 0, "the flag is cleared after each call");
    }
}
