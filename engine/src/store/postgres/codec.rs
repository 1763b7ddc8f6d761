//! How the store's values sit in PostgreSQL columns, and the decoding of rows
//! read back (checked: the bytes come from a database another program may
//! have written).
//!
//! PostgreSQL has no unsigned integers. Every `u64` (object and shard ids,
//! seqs, epochs) is stored as a `BIGINT` with its top bit flipped
//! (`(x ^ 2^63) as i64`), which maps `0..=u64::MAX` onto `i64::MIN..=i64::MAX`
//! in the same order, so `ORDER BY` and range conditions on the column agree
//! with the numbers' own order (ids of 2^63 and above included).

use tokio_postgres::Row;

use super::super::error::StoreFault;
use super::super::record::scope_from_key;
use super::super::{ShardHead, ShardScope, StoredObject};
use crate::digest::{DIGEST_BYTES, Digest};
use crate::ids::{Epoch, ObjectId, Seq, ShardId, ZoneId};
use crate::state::{MAX_STATE_BYTES, ObjectState};

const SIGN: u64 = 1 << 63;

/// A `u64` as an order-preserving `BIGINT`.
pub(crate) fn enc(x: u64) -> i64 {
    i64::from_ne_bytes((x ^ SIGN).to_ne_bytes())
}

/// The `u64` an [`enc`]oded `BIGINT` holds.
pub(crate) fn dec(x: i64) -> u64 {
    u64::from_ne_bytes(x.to_ne_bytes()) ^ SIGN
}

/// Reads column `idx` of `row`, naming the table in the fault.
pub(crate) fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    idx: usize,
    table: &'static str,
) -> Result<T, StoreFault> {
    row.try_get(idx)
        .map_err(|e| StoreFault::backend(format!("reading a row of {table}"), e))
}

/// A shard's record as the `hoard_shards` columns hold it:
/// `shard, zone, epoch, seq, digest, horizon, scope_key`.
pub(crate) fn head_from_row(row: &Row) -> Result<ShardHead, StoreFault> {
    const T: &str = "hoard_shards";
    let shard = ShardId(dec(col(row, 0, T)?));
    let zone: String = col(row, 1, T)?;
    let zone = ZoneId::new(zone).map_err(|e| StoreFault::Corrupt(format!("shard {shard}: zone name: {e}")))?;
    let digest: &[u8] = col(row, 4, T)?;
    let digest: &[u8; DIGEST_BYTES] = digest.try_into().map_err(|_| {
        StoreFault::Corrupt(format!(
            "shard {shard}: digest of {} bytes, not {DIGEST_BYTES}",
            digest.len()
        ))
    })?;
    let key: &str = col(row, 6, T)?;
    let scope = scope_from_key(key).ok_or_else(|| {
        StoreFault::Corrupt(format!(
            "shard {shard}: scope key {key:?} is neither \"\" nor \"@name\""
        ))
    })?;
    Ok(ShardHead {
        shard,
        zone,
        epoch: Epoch(dec(col(row, 2, T)?)),
        seq: Seq(dec(col(row, 3, T)?)),
        digest: Digest::from_bytes(digest),
        horizon: Seq(dec(col(row, 5, T)?)),
        scope,
    })
}

/// The columns of a shard head, in `hoard_shards` order after the shard.
pub(crate) fn scope_key_of(scope: &ShardScope) -> String {
    super::super::record::scope_key(scope)
}

/// An object row: `object, version, state`.
pub(crate) fn object_from_row(shard: ShardId, row: &Row) -> Result<StoredObject, StoreFault> {
    const T: &str = "hoard_objects";
    let id = ObjectId(dec(col(row, 0, T)?));
    let version = Seq(dec(col(row, 1, T)?));
    let state: Vec<u8> = col(row, 2, T)?;
    if state.len() > MAX_STATE_BYTES {
        return Err(StoreFault::Corrupt(format!(
            "shard {shard} object {id}: state of {} bytes",
            state.len()
        )));
    }
    Ok(StoredObject {
        id,
        version,
        // Validated when written; `verify` checks it again on start.
        state: ObjectState::from_trusted_bytes(state),
    })
}

/// A 32-byte state hash column.
pub(crate) fn state_hash_from(shard: ShardId, id: ObjectId, bytes: &[u8]) -> Result<[u8; 32], StoreFault> {
    bytes.try_into().map_err(|_| {
        StoreFault::Corrupt(format!(
            "shard {shard} object {id}: state hash of {} bytes, not 32",
            bytes.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bigint_encoding_round_trips_and_keeps_order() {
        let values = [0, 1, 41, SIGN - 1, SIGN, SIGN + 1, u64::MAX - 1, u64::MAX];
        for w in values.windows(2) {
            assert!(enc(w[0]) < enc(w[1]), "{} < {} must hold encoded", w[0], w[1]);
        }
        for v in values {
            assert_eq!(dec(enc(v)), v);
        }
        assert_eq!(enc(0), i64::MIN);
        assert_eq!(enc(u64::MAX), i64::MAX);
    }
}
