// Repairs (docs/PROTOCOL.md "What the client does per answer"): a copy
// whose answer did not verify is mended in one more round trip instead of
// being fetched whole. The client lists its copy's objects as
// `(id, version, hash8)` (the first 8,192 by id: one control frame's worth);
// the server answers with a `Manifest` holding every live id and every live
// object the list does not have at the same version and hash; the client
// rebuilds the shard from the two (shard.ts) and checks the digest again.

import { blake3 } from "@noble/hashes/blake3.js";
import type { ShardCopy } from "./cache.js";
import { digestOf, equalBytes } from "./digest.js";
import { objectsAfter } from "./shard.js";
import type { Frame } from "./wire.js";
import { ProtocolError, Type, big, bin, idList, objectList } from "./wire.js";

/** Most objects one `Repair` lists (the rest come as upserts). */
export const MAX_REPAIR_OBJECTS = 8192;

/** The `have` list of a `Repair` of `copy`: `[id, version, first 8 bytes of BLAKE3(state)]`. */
export function repairList(copy: ShardCopy | undefined): [bigint, bigint, Uint8Array][] {
  return (copy?.objects ?? []).slice(0, MAX_REPAIR_OBJECTS).map((o) => [o.id, o.version, blake3(o.state).subarray(0, 8)]);
}

/**
 * The shard a repair's `Manifest` gives: its `live` ids, each from the
 * upserts or else from `copy`; refused unless the digest is the server's.
 */
export function rebuild(copy: ShardCopy | undefined, manifest: Frame): ShardCopy {
  if (manifest.type !== Type.Manifest) throw new ProtocolError(`a repair answered with message type ${manifest.type}`);
  const x = manifest.fields;
  const shard = big(x[0]);
  const live = idList(x[5]);
  const objects = objectsAfter(copy?.objects ?? [], true, live, objectList(x[6]));
  const sent = new Set(objects.map((o) => o.id));
  const missing = live.find((id) => !sent.has(id));
  if (missing !== undefined) throw new ProtocolError(`shard ${shard}: the repair names object ${missing} live but sends it nowhere`);
  const digest = bin(x[4], 40);
  if (!equalBytes(digestOf(objects), digest)) throw new ProtocolError(`shard ${shard}: the repaired copy's digest is not the server's`);
  return { shard, epoch: big(x[1]), seq: big(x[3]), digest, objects };
}
