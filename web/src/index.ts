// @hoard/web: hoard's browser client. See client.ts.
export { HoardWebClient, MAX_HELD_DELTAS, MAX_PENDING_INTENTS, ServerError, ZoneElsewhere } from "./client.js";
export type { ConnectOptions, EntryStats, MessageListener, TransientListener, ZoneListener } from "./client.js";
export { MAX_PENDING_PROOFS, MAX_SIGNATURE_BYTES, ProofChecker, ProofError, setRoot, signedStatement } from "./proofs.js";
export type { HeadProof } from "./proofs.js";
export { IndexedDbStore, MemoryStore, decodeCopy, encodeCopy } from "./cache.js";
export { MAX_REPAIR_OBJECTS, rebuild, repairList } from "./repair.js";
export type { ShardCopy, ShardStore } from "./cache.js";
export { digestOf, freshRoot, registryHash, hex } from "./digest.js";
export type { Registered } from "./digest.js";
export { MAX_PATCH_OPS, MAX_TRANSIENT, TransientState, applyPatch } from "./transient.js";
export { components, decodeValue, encodeValue } from "./values.js";
export { base64url, fromBase64url, importPlayerKey, intentStatement, signStatement, worldTokenClaims } from "./signing.js";
export { CODEC_ZSTD, FrameDecoder, MAX_PACKED_RATIO, MAX_PACKED_SIZE, ProtocolError, frame, unpack, Type } from "./wire.js";
export type { WireObject } from "./wire.js";
