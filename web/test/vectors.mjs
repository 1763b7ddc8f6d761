// The browser client's hashes and decoder against PROTOCOL.md's worked
// examples and the protocol's golden files (Node, no browser needed).
import { readFileSync } from "node:fs";
import { generateKeyPairSync, sign } from "node:crypto";
import assert from "node:assert/strict";
import { blake3 } from "@noble/hashes/blake3.js";
import {
  importPlayerKey, intentStatement, signStatement, worldTokenClaims, base64url,
  ProofChecker, ProofError, rebuild, repairList, setRoot, signedStatement, FrameDecoder, TransientState, unpack, applyPatch, components, decodeValue, digestOf, encodeValue, frame as encodeFrame, freshRoot, hex, registryHash,
} from "../dist/hoard.js";

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
for (const name of ["01-hello.bin", "02-enter-zone.bin", "03-leave-zone.bin", "04-repair.bin", "05-intent.bin"]) {
  const bytes = golden(name);
  const d = new FrameDecoder(256 * 1024);
  d.push(bytes);
  const f = d.next();
  assert.equal(hex(encodeFrame(f.type, f.fields)), hex(bytes), name);
}

// Integers above 2^32 go as uint64 (cf), never as a float: a player's
// inventory shard (2^40 | …) named in an EnterZone's held list.
assert.equal(
  hex(encodeFrame(2, [5, "inventory", true, [], [[1709789706291n], [0n, 0n]], false])),
  "0000001e029605a9696e76656e746f7279c39092" + "91cf0000018e17687833" + "920000c2",
);
assert.equal(hex(encodeValue({ PickUp: [1709789706291] })), "81a65069636b5570" + "91cf0000018e17687833");

// Packed (PROTOCOL.md, "Compressed frames"): the golden holds UpToDate { 3, 9 }
// and AnswerEnd { 1 } in one raw Zstandard block; each frame is charged its
// share of the 34 bytes.
{
  const packed = golden("9a-packed.bin");
  const d = new FrameDecoder(32 * 1024 * 1024, true);
  d.push(packed);
  const a = d.next();
  const b = d.next();
  assert.deepEqual([a.type, a.fields, b.type, b.fields], [0x91, [3, 9], 0x95, [1]]);
  assert.equal(a.bytes + b.bytes, packed.length);
  assert.equal(d.next(), null);
  const plain = new FrameDecoder(32 * 1024 * 1024);
  plain.push(packed);
  assert.throws(() => plain.next(), /Packed frame where none may come/);
  const data = packed.subarray(packed.length - 24);
  assert.equal(hex(unpack(1, 15, data)), "000000049192030900000003959101");
  assert.throws(() => unpack(2, 15, data), /codec 2/);
  assert.throws(() => unpack(1, 14, data), /past its size/);
  assert.throws(() => unpack(1, 16, data), /not its size/);
  assert.throws(() => unpack(1, 24 * 64 + 1, data), /64×/);
  assert.throws(() => unpack(1, 8 * 1024 * 1024 + 1, new Uint8Array(1024 * 1024)), /8 MiB/);
  assert.throws(() => unpack(1, 15, Uint8Array.of(1, 2, 3, 4, 5)), /does not decompress/);
}

// Limits: a zero length and an oversized one are refused before buffering.
assert.throws(() => { const d = new FrameDecoder(1024); d.push(Uint8Array.of(0, 0, 0, 0)); d.next(); });
assert.throws(() => { const d = new FrameDecoder(1024); d.push(Uint8Array.of(0, 0, 4, 1)); d.next(); });

// Transient state (PROTOCOL.md, "Transient state"): the TransientPatch golden
// turns ["ann", 7] into ["ann", 8] on the base its hash names.
{
  const d = new FrameDecoder(1024);
  d.push(golden("a1-transient.bin"));
  const whole = d.next();
  d.push(golden("a4-transient-patch.bin"));
  const patch = d.next();
  const state = new TransientState();
  assert.equal(state.patch("meadow", patch.fields[1], patch.fields[2]), undefined, "no payload held: dropped");
  state.replace(whole.fields[0], whole.fields[1]);
  assert.equal(hex(whole.fields[1]), "92a3616e6e07");
  assert.equal(hex(patch.fields[1]), "c105738ee6c089bc");
  assert.equal(hex(state.patch("meadow", patch.fields[1], patch.fields[2])), "92a3616e6e08");
  assert.equal(state.patch("meadow", patch.fields[1], patch.fields[2]), undefined, "a base no longer held: dropped");
  assert.equal(state.get("meadow"), undefined, "and the zone's payload forgotten until the next whole one");
  assert.throws(() => applyPatch(Uint8Array.of(1, 2), [[1, 2, new Uint8Array()]]), /past the end/);
  assert.throws(() => applyPatch(new Uint8Array(), Array.from({ length: 4097 }, () => [0, 0, new Uint8Array()])), /4097 ops/);
  assert.throws(() => applyPatch(new Uint8Array(), [[0, 0, new Uint8Array(65 * 1024)]]), /64 KiB/);
  assert.throws(() => state.patch("meadow", Uint8Array.of(1), []), /bin8/);
}

// The demo game's values (PROTOCOL.md, "The demo game"), as a page encodes them.
assert.equal(hex(encodeValue({ Move: [2, 50, 50] })), "81a44d6f766593023232");
assert.equal(hex(encodeValue({ Drop: [2174n] })), "81a444726f7091cd087e");
assert.deepEqual(decodeValue(Uint8Array.from([0x94, 0xa4, 0x77, 0x6f, 0x6f, 0x64, 3, 10, 12])), ["wood", 3, 10, 12]);
const itemState = Uint8Array.from([0x81, 0xa4, 0x69, 0x74, 0x65, 0x6d, 0xc4, 0x09, 0x94, 0xa4, 0x77, 0x6f, 0x6f, 0x64, 3, 10, 12]);
assert.deepEqual([...components(itemState)], [["item", ["wood", 3, 10, 12]]]);
assert.throws(() => components(Uint8Array.of(0x93, 1, 2, 3)), /not a map/);

// Repairs: a copy's list is (id, version, first 8 bytes of BLAKE3(state));
// the Manifest golden (live 42 and 43, 42 sent) rebuilds the two-object
// shard from a copy holding 43 and a stale 41, and nothing else will do.
{
  const d = new FrameDecoder(1 << 20);
  d.push(golden("93-manifest.bin"));
  const manifest = d.next();
  const o41 = { id: 41n, version: 1n, state: Uint8Array.of(0x80) };
  const copy = { shard: 3n, epoch: 5n, seq: 2n, digest: new Uint8Array(40), objects: [o41, o43] };
  assert.deepEqual(
    repairList(copy).map(([id, v, h]) => [id, v, hex(h)]),
    [[41n, 1n, hex(blake3(o41.state)).slice(0, 16)], [43n, 9n, hex(blake3(o43.state)).slice(0, 16)]],
  );
  assert.equal(repairList(undefined).length, 0);
  const repaired = rebuild(copy, manifest);
  assert.deepEqual([repaired.shard, repaired.epoch, repaired.seq, hex(repaired.digest)], [3n, 5n, 11n, two]);
  assert.deepEqual(repaired.objects.map((o) => o.id), [42n, 43n]);
  assert.throws(() => rebuild({ ...copy, objects: [o41] }, manifest), /object 43 live but sends it nowhere/);
  const wrong43 = { ...o43, state: Uint8Array.of(0x80) };
  assert.throws(() => rebuild({ ...copy, objects: [wrong43] }, manifest), /digest is not the server's/);
}

// Signed heads (PROTOCOL.md, "Signed shard heads and relays"): the worked
// example's set root, statement and Ed25519 signature, from the goldens.
{
  const one = (name) => {
    const d = new FrameDecoder(256 * 1024);
    d.push(golden(name));
    return d.next();
  };
  const welcome = one("81-welcome.bin");
  const key = welcome.fields[5];
  const world = welcome.fields[1];
  assert.equal(hex(key), "302a300506032b65700321008a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c");
  assert.equal(hex(world), "f4298f90fd6f9627a3f0f2678dcfca9c3019eacc227433144b6b41d1ac6f144c");
  const f = one("99-head-proof.bin");
  const proof = {
    shard: BigInt(f.fields[0]), epoch: BigInt(f.fields[1]), seq: BigInt(f.fields[2]),
    digest: f.fields[3], root: f.fields[4], scheme: f.fields[5], signature: f.fields[6],
  };
  assert.equal(hex(setRoot([o42, o43])), "bafe1864b8beaa3731b62dc495ea3a7de1726013576847911506829bbe930957");
  assert.equal(hex(setRoot([])), hex(blake3(new TextEncoder().encode("hoard-set-root-v1"))));
  assert.equal(
    hex(signedStatement(world, "world", proof)),
    "686f6172642d7369676e65642d686561642d7631" + hex(world) + "05776f726c64" +
      "0300000000000000" + "0500000000000000" + "0b00000000000000" + two + "bafe1864b8beaa3731b62dc495ea3a7de1726013576847911506829bbe930957",
  );
  const checker = ProofChecker.of(world, "world", key);
  await checker.check(proof);
  const copy = { shard: 3n, epoch: 5n, seq: 11n, digest, objects: [o42, o43] };
  checker.checkCopy(proof, copy);
  // Each lie is caught: another set with the same head, another head, a
  // flipped signature bit, an older head than one verified, another world's key.
  assert.throws(() => checker.checkCopy(proof, { ...copy, objects: [o43, o42] }), /set root differs/);
  assert.throws(() => checker.checkCopy(proof, { ...copy, seq: 12n }), /signed head says/);
  const flipped = Uint8Array.from(proof.signature);
  flipped[0] ^= 1;
  await assert.rejects(checker.check({ ...proof, signature: flipped }), ProofError);
  await assert.rejects(checker.check({ ...proof, seq: 10n }), /signature does not verify/);
  await assert.rejects(ProofChecker.of(world, "world", key).check(proof, { epoch: 5n, seq: 12n }), /replayed/);
  await assert.rejects(checker.check({ ...proof, scheme: 0x0401 }), /scheme 0x401/);
  assert.throws(() => ProofChecker.of(new Uint8Array(32), "world", key), /BLAKE3 differs/);
  assert.throws(() => ProofChecker.of(world, "world", new Uint8Array()), /sent no key/);
  // ECDSA P-256, the scheme hoard's own keys sign with: DER signatures.
  const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const spki = new Uint8Array(publicKey.export({ type: "spki", format: "der" }));
  const p256World = blake3(spki);
  const p256 = { ...proof, scheme: 0x0403, signature: new Uint8Array() };
  p256.signature = new Uint8Array(sign("sha256", signedStatement(p256World, "world", p256), { key: privateKey, dsaEncoding: "der" }));
  await ProofChecker.of(p256World, "world", spki).check(p256);
  await assert.rejects(ProofChecker.of(p256World, "world", spki).check({ ...p256, scheme: 0x0807 }), /does not verify/);
  await assert.rejects(ProofChecker.of(p256World, "world", spki).check({ ...p256, signature: p256.signature.subarray(1) }), /does not verify/);
}

// Signed intents (PROTOCOL.md § Signed intents): ann's key (seed [3; 32])
// signs the `05-intent-signed` golden's intent under nonce 00…0f of the
// golden world, byte for byte as the Rust client does; her world token
// (token-v4.txt) names her and binds that key.
{
  const token = readFileSync(new URL("../../proto/tests/golden/token-v4.txt", import.meta.url), "utf8").trim();
  const claims = worldTokenClaims(token);
  assert.equal(claims.sub, "ann");
  assert.equal(claims.key, "k4.public.7UkoxijRwsbq6QM4kFmVYSlZJzpcY_k2NsFGFKyHN9E");
  assert.equal(worldTokenClaims("v1.ann.1.00"), null);
  assert.equal(worldTokenClaims("v4.public.@@@"), null);
  // Node's crypto makes the PASERK k4.secret of seed [3; 32].
  const { createPrivateKey, createPublicKey } = await import("node:crypto");
  const seed = new Uint8Array(32).fill(3);
  const pkcs8 = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), Buffer.from(seed)]);
  const pub = createPublicKey(createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" })).export({ format: "der", type: "spki" }).subarray(12);
  const paserk = `k4.secret.${base64url(new Uint8Array([...seed, ...pub]))}`;
  const ann = await importPlayerKey(paserk);
  assert.equal(ann.public, claims.key);
  const welcome = new FrameDecoder(1 << 20);
  welcome.push(golden("81-welcome.bin"));
  const world = welcome.next().fields[1];
  const signedGolden = golden("05-intent-signed.bin");
  const decoder = new FrameDecoder(1 << 20);
  decoder.push(signedGolden);
  const intent = decoder.next();
  const nonce = Uint8Array.from({ length: 16 }, (_, i) => i);
  const statement = intentStatement(world, nonce, "ann", intent.fields[0], intent.fields[1], intent.fields[2]);
  const signature = await signStatement(ann.key, statement);
  assert.equal(hex(signature), hex(intent.fields[3]));
  assert.deepEqual(encodeFrame(0x05, [1, "pick_up", Uint8Array.from([0x91, 0x2a]), signature]), signedGolden);
  await assert.rejects(importPlayerKey("k4.public.abc"), /k4.secret/);
}

console.log("vectors: registry hashes, digests, the Snapshot golden, the fresh root, frame limits, Packed frames, transient patches, repairs, signed heads, signed intents and the demo's values agree with PROTOCOL.md");
