// The hashes of docs/PROTOCOL.md "Hashes and digests, to the byte": the
// registry hash, the shard digest (a sum of BLAKE3 leaves mod 2^256 and a
// count), the fresh root and its tags. BLAKE3 from @noble/hashes.

import { blake3 } from "@noble/hashes/blake3.js";
import type { WireObject } from "./wire.js";

const text = new TextEncoder();

function u32le(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

export function u64le(n: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, n, true);
  return b;
}

/** The bytes of `parts`, one after another. */
export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A component or intent the game registers, by its stable name. */
export interface Registered {
  name: string;
  version: number;
  intent?: boolean;
}

/** `Hello.registry`: the hash of the game's components and intents. */
export function registryHash(registry: Registered[]): Uint8Array {
  const byName = (a: Registered, b: Registered) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const parts: Uint8Array[] = [text.encode("hoard-registry-v1")];
  for (const c of registry.filter((r) => !r.intent).sort(byName)) {
    const name = text.encode(c.name);
    parts.push(u32le(name.length), name, u32le(c.version));
  }
  for (const i of registry.filter((r) => r.intent).sort(byName)) {
    const name = text.encode("intent:" + i.name);
    parts.push(u32le(name.length), name, u32le(i.version));
  }
  return blake3(concat(parts));
}

const MOD = 1n << 256n;

function leInt(bytes: Uint8Array): bigint {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]);
  return n;
}

/** An object's leaf: BLAKE3(u64le(id) ‖ u64le(version) ‖ BLAKE3(state)). */
export function leaf(o: WireObject): bigint {
  return leInt(blake3(concat([u64le(o.id), u64le(o.version), blake3(o.state)])));
}

/** A shard's digest as it goes on the wire: the sum (32 bytes LE) ‖ u64le(count). */
export function digestOf(objects: Iterable<WireObject>): Uint8Array {
  let sum = 0n;
  let count = 0n;
  for (const o of objects) {
    sum = (sum + leaf(o)) % MOD;
    count += 1n;
  }
  const out = new Uint8Array(40);
  for (let i = 0; i < 32; i++) out[i] = Number((sum >> BigInt(8 * i)) & 0xffn);
  out.set(u64le(count), 32);
  return out;
}

/** A shard's head as the fresh root and tags hash it. */
export interface Head {
  shard: bigint;
  epoch: bigint;
  seq: bigint;
  digest: Uint8Array;
}

function headBytes(h: Head): Uint8Array {
  return concat([u64le(h.shard), u64le(h.epoch), u64le(h.seq), h.digest]);
}

/** `Fresh.root` over the selected heads, ascending by shard. */
export function freshRoot(heads: Head[]): Uint8Array {
  return blake3(concat([text.encode("hoard-fresh-root-v1"), ...heads.map(headBytes)]));
}

/** A head's one-byte tag in `Fresh.tags`. */
export function tag(h: Head): number {
  return blake3(headBytes(h))[0];
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
