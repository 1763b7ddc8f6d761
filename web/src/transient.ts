// A zone's transient state (docs/PROTOCOL.md, "Transient state"): the last
// payload of each zone the client is in, replaced by `Transient` and
// changed by `TransientPatch`. A patch on a payload the client does not
// hold (or not the one named by `base`) is dropped, and that zone's
// payload forgotten until the next whole `Transient` (at most 20 sends away).

import { blake3 } from "@noble/hashes/blake3.js";
import { concat, equalBytes } from "./digest.js";
import { ProtocolError, bin, num } from "./wire.js";

/** Largest transient payload. */
export const MAX_TRANSIENT = 64 * 1024;
/** Most ops in one patch. */
export const MAX_PATCH_OPS = 4096;

/**
 * The payload `ops` make of `base`: for each `[offset, len, bytes]`, the
 * base's bytes `offset .. offset + len`, then `bytes`.
 */
export function applyPatch(base: Uint8Array, ops: unknown): Uint8Array {
  if (!Array.isArray(ops)) throw new ProtocolError("a patch's ops are not an array");
  if (ops.length > MAX_PATCH_OPS) throw new ProtocolError(`a patch of ${ops.length} ops (at most ${MAX_PATCH_OPS})`);
  const parts: Uint8Array[] = [];
  let size = 0;
  for (const op of ops) {
    if (!Array.isArray(op) || op.length !== 3) throw new ProtocolError("a patch op is not [offset, len, bytes]");
    const offset = num(op[0]);
    const len = num(op[1]);
    const bytes = bin(op[2]);
    if (offset + len > base.length) throw new ProtocolError("a patch op copies past the end of its base");
    parts.push(base.subarray(offset, offset + len), bytes);
    size += len + bytes.length;
    if (size > MAX_TRANSIENT) throw new ProtocolError("a patched transient payload over 64 KiB");
  }
  return concat(parts);
}

/** The last payload of each zone, and what patches do to it. */
export class TransientState {
  private readonly payloads = new Map<string, Uint8Array>();

  /** A whole `Transient`: the zone's payload from now on. */
  replace(zone: string, payload: Uint8Array): void {
    if (payload.length > MAX_TRANSIENT) throw new ProtocolError("a transient payload over 64 KiB");
    this.payloads.set(zone, payload);
  }

  /**
   * A `TransientPatch`: the zone's new payload, or `undefined` when the
   * patch does not follow the payload held (dropped; the zone's payload is
   * forgotten until the next whole one).
   */
  patch(zone: string, base: unknown, ops: unknown): Uint8Array | undefined {
    const named = bin(base, 8);
    const held = this.payloads.get(zone);
    if (!held) return undefined;
    if (!equalBytes(blake3(held).subarray(0, 8), named)) {
      this.payloads.delete(zone);
      return undefined;
    }
    const next = applyPatch(held, ops);
    this.payloads.set(zone, next);
    return next;
  }

  get(zone: string): Uint8Array | undefined {
    return this.payloads.get(zone);
  }

  forget(zone: string): void {
    this.payloads.delete(zone);
  }
}
