// @hoard/web: hoard's browser client. See client.ts.
export { HoardWebClient, ServerError } from "./client.js";
export type { ConnectOptions, EntryStats, ZoneListener } from "./client.js";
export { IndexedDbStore, MemoryStore } from "./cache.js";
export type { ShardCopy, ShardStore } from "./cache.js";
export { digestOf, freshRoot, registryHash, hex } from "./digest.js";
export type { Registered } from "./digest.js";
export { FrameDecoder, ProtocolError, frame, Type } from "./wire.js";
