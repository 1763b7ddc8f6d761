// The browser client's hashes and decoder against PROTOCOL.md's worked
// examples and the protocol's golden files (Node, no browser needed).
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";
import { FrameDecoder, digestOf, frame as encodeFrame, freshRoot, hex, registryHash } from "../dist/hoard.js";

const golden = (name) => new Uint8Array(readFileSync(new URL(`../../proto/tests/golden/${name}`, import.meta.url)));

// Registry hashes (PROTOCOL.md, "The registry hash").
assert.equal(hex(registryHash([])), "f3168bd738b30778c2bd09777e9083849e28b12f6be00fce7a7c2d559137d3fb");
assert.equal(
  hex(registryHash([{ name: "item", version: 2 }, { name: "house", version: 1 }])),
  "3d209bb8aee0fd6658ea562a2748d5201f35b92990631457f5f050da676a2c36",
);
assert.equal(
  hex(registryHash([{ name: "house", version: 1 }, { name: "item", version: 2 }, { name: "light", version: 1, intent: true }])),
  "2729be52ef3a67edd0f77f1bfa86c59e7a87e738eaa40b73fb491dfcfeac8372",
);

// The shard digest's worked example, and the Snapshot golden carrying it.
const o42 = { id: 42n, version: 7n, state: Uint8Array.from([0x81, 0xa1, 0x6e, 0xc4, 0x01, 0x05]) };
const o43 = { id: 43n, version: 9n, state: Uint8Array.from([0x81, 0xa1, 0x6e, 0xc4, 0x01, 0x06]) };
assert.equal(hex(digestOf([o42])), "b9dd2370a31d986fa7fda5ae22355ed20974a2d4ec656206980d070b037e5979" + "0100000000000000");
const two = "a22388281831f7aee87e004812d966b623a174a0ccf5c7a0ae3051dd0eb9784d" + "0200000000000000";
assert.equal(hex(digestOf([o42, o43])), two);
assert.equal(hex(digestOf([])), "00".repeat(40));

const decoder = new FrameDecoder(32 * 1024 * 1024);
const snapshot = golden("94-snapshot.bin");
// Whatever the chunking: one byte at a time.
for (const b of snapshot) decoder.push(Uint8Array.of(b));
const frame = decoder.next();
assert.equal(frame.type, 0x94);
assert.equal(frame.bytes, snapshot.length);
assert.equal(hex(frame.fields[3]), two, "the golden snapshot's digest");

// The fresh root's worked example: shards 4 and 5 at epoch 0x1122334455667788, seq 11.
const digest = Uint8Array.from(two.match(/../g).map((b) => parseInt(b, 16)));
const head = (shard) => ({ shard, epoch: 0x1122334455667788n, seq: 11n, digest });
assert.equal(hex(freshRoot([head(4n), head(5n)])).slice(0, 8), "b6091ea3");

// What the client sends is byte for byte the golden frames (shortest forms).
for (const name of ["01-hello.bin", "02-enter-zone.bin", "03-leave-zone.bin", "05-intent.bin"]) {
  const bytes = golden(name);
  const d = new FrameDecoder(256 * 1024);
  d.push(bytes);
  const f = d.next();
  assert.equal(hex(encodeFrame(f.type, f.fields)), hex(bytes), name);
}

// Limits: a zero length and an oversized one are refused before buffering.
assert.throws(() => { const d = new FrameDecoder(1024); d.push(Uint8Array.of(0, 0, 0, 0)); d.next(); });
assert.throws(() => { const d = new FrameDecoder(1024); d.push(Uint8Array.of(0, 0, 4, 1)); d.next(); });
console.log("vectors: registry hashes, digests, the Snapshot golden, the fresh root and frame limits agree with PROTOCOL.md");
