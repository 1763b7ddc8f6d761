// The per-shard cache in the browser: IndexedDB, one record per shard copy,
// keyed by world identity, service, perspective, zone and shard (a world can
// never read another's copies). A copy is used only after its digest is
// recomputed from its objects and equals its recorded head: a torn, stale or
// damaged record costs that shard's snapshot, never a wrong world. Each
// record is one MessagePack blob (`encodeCopy`). A full
// quota evicts this world's other zones and tries once more; failing that,
// the client goes on uncached (the entry still completes).

import { decode, encode } from "@msgpack/msgpack";
import type { Head } from "./digest.js";
import { digestOf, equalBytes } from "./digest.js";
import type { WireObject } from "./wire.js";

/** A shard copy: its head and its objects, ascending by id. */
export interface ShardCopy extends Head {
  objects: WireObject[];
}

const STORE = "shards";

/**
 * A copy as IndexedDB keeps it: one MessagePack blob,
 * `[shard, epoch, seq, digest, [[id, version, state], …]]`, so a record is
 * one allocation to clone however many objects it holds.
 */
export function encodeCopy(copy: ShardCopy): Uint8Array {
  return encode([copy.shard, copy.epoch, copy.seq, copy.digest, copy.objects.map((o) => [o.id, o.version, o.state])], {
    useBigInt64: true,
  });
}

/** A record back as a copy; `null` for one that is not a copy (damaged, or an older layout). */
export function decodeCopy(record: unknown): ShardCopy | null {
  if (!(record instanceof Uint8Array)) return null;
  try {
    const [shard, epoch, seq, digest, objects] = decode(record, { useBigInt64: true, maxDepth: 8 } as never) as unknown[];
    const asBig = (v: unknown) => (typeof v === "bigint" ? v : BigInt(v as number));
    if (!(digest instanceof Uint8Array) || digest.length !== 40 || !Array.isArray(objects)) return null;
    return {
      shard: asBig(shard),
      epoch: asBig(epoch),
      seq: asBig(seq),
      digest,
      objects: objects.map((o) => {
        const [id, version, state] = o as unknown[];
        if (!(state instanceof Uint8Array)) throw new Error("a state is not bin");
        return { id: asBig(id), version: asBig(version), state };
      }),
    };
  } catch {
    return null;
  }
}

/** Where copies are kept. */
export interface ShardStore {
  /** Copies of `zone` that verify (digest recomputed), by shard. */
  load(zone: string): Promise<Map<bigint, ShardCopy>>;
  /** Keeps `copy` (replacing any older one). */
  save(zone: string, copy: ShardCopy): Promise<void>;
}

/** Copies kept for this page's life only. */
export class MemoryStore implements ShardStore {
  private readonly zones = new Map<string, Map<bigint, ShardCopy>>();
  async load(zone: string): Promise<Map<bigint, ShardCopy>> {
    return new Map(this.zones.get(zone) ?? []);
  }
  async save(zone: string, copy: ShardCopy): Promise<void> {
    if (!this.zones.has(zone)) this.zones.set(zone, new Map());
    this.zones.get(zone)!.set(copy.shard, copy);
  }
}

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

/** Copies in IndexedDB, across reloads and browser restarts. */
export class IndexedDbStore implements ShardStore {
  private constructor(
    private readonly db: IDBDatabase,
    private readonly prefix: string,
  ) {}

  /** Opens the cache of one world (`world`: its identity, hex), service and player. */
  static async open(world: string, service: string, perspective: string): Promise<IndexedDbStore> {
    const open = indexedDB.open("hoard-cache", 1);
    open.onupgradeneeded = () => open.result.createObjectStore(STORE);
    const db = await request(open);
    return new IndexedDbStore(db, `${world}/${service}/${perspective}/`);
  }

  async load(zone: string): Promise<Map<bigint, ShardCopy>> {
    const prefix = `${this.prefix}${zone}/`;
    const tx = this.db.transaction(STORE, "readonly");
    const range = IDBKeyRange.bound(prefix, prefix + "\uffff");
    const records = (await request(tx.objectStore(STORE).getAll(range))) as unknown[];
    const copies = new Map<bigint, ShardCopy>();
    for (const record of records) {
      // Shown only if it verifies: a record that does not is left to be
      // replaced by the shard's snapshot.
      const copy = decodeCopy(record);
      if (copy && equalBytes(digestOf(copy.objects), copy.digest)) copies.set(copy.shard, copy);
    }
    return copies;
  }

  async save(zone: string, copy: ShardCopy): Promise<void> {
    const key = `${this.prefix}${zone}/${copy.shard}`;
    try {
      await this.put(key, copy);
    } catch (e) {
      if ((e as DOMException)?.name !== "QuotaExceededError") throw e;
      // Full: drop this world's other zones, then try once more.
      await this.evictOtherZones(zone);
      await this.put(key, copy);
    }
  }

  private async put(key: string, copy: ShardCopy): Promise<void> {
    const tx = this.db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).put(encodeCopy(copy), key);
    await new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }

  private async evictOtherZones(keep: string): Promise<void> {
    const tx = this.db.transaction(STORE, "readwrite");
    const store = tx.objectStore(STORE);
    const keys = (await request(store.getAllKeys())) as string[];
    for (const key of keys) {
      if (key.startsWith(this.prefix) && !key.startsWith(`${this.prefix}${keep}/`)) store.delete(key);
    }
    await new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }
}
