// A game's own values as hoard carries them (docs/PROTOCOL.md, "Bodies" and
// "The demo game"): an object's state is a MessagePack map from component
// name to the component's own MessagePack bytes; an intent's payload is the
// intent's MessagePack. Encoded as rmp-serde's compact form reads it: a
// struct is an array of its fields in order, an enum a one-entry map from
// the variant's name to its fields; integers in their shortest form.

import { decode, encode } from "@msgpack/msgpack";
import { ProtocolError, shortest } from "./wire.js";

/**
 * Encodes a value of the game (an intent, a component) as MessagePack,
 * e.g. the demo's `Move { zone: 2, x: 50, y: 50 }` as `{ Move: [2, 50, 50] }`.
 */
export function encodeValue(value: unknown): Uint8Array {
  return encode(shortest(value), { useBigInt64: true });
}

/** Decodes a value of the game; integers past 2^53 come as bigints. */
export function decodeValue(bytes: Uint8Array): unknown {
  return decode(bytes, { useBigInt64: true, maxDepth: 64 } as never);
}

/**
 * An object's components, by name, each decoded: a state that is not a map
 * of component bytes is a protocol error (its shard's digest verified the
 * bytes, so this is the server's or the game's mistake, not the network's).
 */
export function components(state: Uint8Array): Map<string, unknown> {
  const map = decode(state, { useBigInt64: true, maxDepth: 8 } as never);
  if (map === null || typeof map !== "object" || Array.isArray(map) || map instanceof Uint8Array) {
    throw new ProtocolError("an object's state is not a map of components");
  }
  const out = new Map<string, unknown>();
  for (const [name, bytes] of Object.entries(map)) {
    if (!(bytes instanceof Uint8Array)) throw new ProtocolError(`component ${name} is not bin`);
    out.set(name, decodeValue(bytes));
  }
  return out;
}
