// A shard copy changed by a message (docs/PROTOCOL.md "What the client does
// per answer", "Live deltas"): `Changes` and `Delta` remove their tombstones
// and write their upserts; a `Manifest` keeps only its live ids, each from
// its upserts or the copy. One routine for an entry's answers, live deltas
// and repairs; each result is used only if its digest is the server's.

import type { ShardCopy } from "./cache.js";
import { digestOf, equalBytes } from "./digest.js";
import type { Frame, WireObject } from "./wire.js";
import { Type, big, bin, idList, objectList } from "./wire.js";

/**
 * The objects of `base` after a message: with `manifest`, only the `ids`
 * listed (live) are kept, else the `ids` (tombstones) are removed; then
 * `upserts` are written. Ascending by id.
 */
export function objectsAfter(base: readonly WireObject[], manifest: boolean, ids: bigint[], upserts: WireObject[]): WireObject[] {
  const byId = new Map<bigint, WireObject>(base.map((o) => [o.id, o]));
  if (manifest) {
    const keep = new Set(ids);
    for (const id of [...byId.keys()]) if (!keep.has(id)) byId.delete(id);
  } else {
    for (const id of ids) byId.delete(id);
  }
  for (const o of upserts) byId.set(o.id, o);
  return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * Applies `Changes` / `Manifest` / a `Delta` (its fields from `shard` on)
 * to `base`; `null` if the result's digest is not the server's.
 */
export function applyMessage(base: ShardCopy, f: Frame): ShardCopy | null {
  const x = f.fields;
  const objects = objectsAfter(base.objects, f.type === Type.Manifest, idList(x[5]), objectList(x[6]));
  const digest = bin(x[4], 40);
  if (!equalBytes(digestOf(objects), digest)) return null;
  return { shard: base.shard, epoch: base.epoch, seq: big(x[3]), digest, objects };
}
