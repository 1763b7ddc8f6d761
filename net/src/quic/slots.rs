//! The server's shared answer slots, and how they are shared fairly.
//!
//! A zone answer holds memory while it is built and sent (its batch, and
//! what the client's windows have not taken yet), so answers in flight are
//! bounded over the whole server, not only per connection. Two things must
//! not follow from that bound: one address's connections holding every slot
//! (a few hostile clients that request zones and stop reading would stall
//! every other player's entry until they are disconnected as slow
//! consumers), and a small answer waiting behind large ones.
//!
//! So there are two pools, each of which one address may hold at most a
//! share of ([`ServerOptions::answers_in_flight_per_ip`]):
//! - **light** slots, taken before a request is handled: every request's
//!   first part (its repair, or the first [`LIGHT_ANSWER_BYTES`] of an
//!   entry's answer) is built and sent under one. A warm entry's answer —
//!   `Fresh`, a few changes — is usually whole by then, and never waits
//!   for a bulk slot;
//! - **bulk** slots, taken by an answer that goes on past that: cold
//!   entries, snapshots, large changes.
//!
//! While fewer than `total / per_ip` addresses hold slots, no address ever
//! waits for another's: an honest player's entry is delayed only by the CPU
//! and the blocking threads the others' answers use.
//!
//! [`ServerOptions::answers_in_flight_per_ip`]: super::server::ServerOptions::answers_in_flight_per_ip

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The bytes of an entry's answer built and sent under its light slot; an
/// answer that goes on past them continues under a bulk slot.
pub(crate) const LIGHT_ANSWER_BYTES: usize = 64 * 1024;

/// Slots of one kind, at most `per_ip` of them held by one address.
#[derive(Debug)]
pub(crate) struct FairPool {
    total: usize,
    per_ip: usize,
    held: Mutex<Held>,
    freed: Notify,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// One slot of a [`FairPool`], given back on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    pool: Arc<FairPool>,
    ip: IpAddr,
}

impl FairPool {
    /// A pool of `total` slots, at most `per_ip` of them for one address.
    pub(crate) fn new(total: usize, per_ip: usize) -> Arc<FairPool> {
        Arc::new(FairPool {
            total: total.max(1),
            per_ip: per_ip.clamp(1, total.max(1)),
            held: Mutex::new(Held::default()),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        hoard_engine::lock::lock(&self.held)
    }

    /// A slot for `ip` if one is free now within its share.
    pub(crate) fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut held = self.lock();
        let mine = held.by_ip.get(&ip).copied().unwrap_or(0);
        if held.total >= self.total || mine >= self.per_ip {
            return None;
        }
        held.total += 1;
        held.by_ip.insert(ip, mine + 1);
        Some(Slot { pool: self.clone(), ip })
    }

    /// Waits for a slot for `ip` (callers bound the wait).
    pub(crate) async fn take(self: &Arc<Self>, ip: IpAddr) -> Slot {
        loop {
            // Registered before looking, so a slot freed in between wakes it.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_take(ip) {
                return slot;
            }
            freed.await;
        }
    }

    /// Slots held now: in all, and by `ip`.
    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> (usize, usize) {
        let held = self.lock();
        (held.total, held.by_ip.get(&ip).copied().unwrap_or(0))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut held = self.pool.lock();
            held.total -= 1;
            if let Some(n) = held.by_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    held.by_ip.remove(&self.ip);
                }
            }
        }
        self.pool.freed.notify_waiters();
    }
}

/// The server's two pools (see the module documentation).
#[derive(Clone, Debug)]
pub(crate) struct AnswerSlots {
    /// Taken before a request is handled.
    pub(crate) light: Arc<FairPool>,
    /// Taken by an answer going on past [`LIGHT_ANSWER_BYTES`].
    pub(crate) bulk: Arc<FairPool>,
}

impl AnswerSlots {
    /// Pools of `total` slots each, `per_ip` of them at most for one address.
    pub(crate) fn new(total: usize, per_ip: usize) -> AnswerSlots {
        AnswerSlots {
            light: FairPool::new(total, per_ip),
            bulk: FairPool::new(total, per_ip),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn one_address_holds_at_most_its_share_and_the_rest_stays_for_others() {
        let pool = FairPool::new(8, 3);
        let hostile: Vec<Slot> = (0..10).filter_map(|_| pool.try_take(ip(2))).collect();
        assert_eq!(hostile.len(), 3, "an address gets its share, no more");
        let others: Vec<Slot> = (0..10).filter_map(|_| pool.try_take(ip(3))).collect();
        assert_eq!(others.len(), 3);
        let last: Vec<Slot> = (0..10).filter_map(|_| pool.try_take(ip(4))).collect();
        assert_eq!(last.len(), 2, "the total bounds every address together");
        assert_eq!(pool.held(ip(2)), (8, 3));
        drop(hostile);
        assert_eq!(pool.held(ip(2)), (5, 0), "dropped slots are given back");
        assert!(pool.try_take(ip(4)).is_some());
    }

    #[tokio::test]
    async fn a_waiter_gets_the_slot_its_address_frees() {
        let pool = FairPool::new(4, 1);
        let held = pool.try_take(ip(2)).expect("a slot");
        assert!(pool.try_take(ip(2)).is_none(), "its share is held");
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.take(ip(2)).await }
        });
        // Others are not held up meanwhile.
        assert!(pool.try_take(ip(3)).is_some());
        drop(held);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(pool.held(ip(2)), (1, 1));
        drop(got);
    }
}
