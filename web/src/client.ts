// A hoard client over WebTransport, written from docs/PROTOCOL.md: signs in
// (`Hello` → `Welcome`), enters zones in one round trip naming its cached
// copies by hwm (`held`), checks every shard it receives against the
// server's digest and every copy it keeps against the `Fresh` root, keeps
// its copies in a ShardStore (IndexedDB by default), follows live deltas and
// sends intents. A copy is used only once verified; a copy that fails is
// dropped and its shard fetched whole on a second entry.

import type { ShardCopy, ShardStore } from "./cache.js";
import { IndexedDbStore, MemoryStore } from "./cache.js";
import type { Registered } from "./digest.js";
import { digestOf, equalBytes, freshRoot, hex, registryHash, tag } from "./digest.js";
import type { Frame, WireObject } from "./wire.js";
import {
  FrameReader,
  MAX_BULK_FRAME,
  MAX_CONTROL_FRAME,
  PROTOCOL_VERSION,
  ProtocolError,
  Type,
  big,
  bin,
  encodeIdList,
  frame,
  idList,
  num,
  objectList,
  str,
} from "./wire.js";

/** How to reach a world. */
export interface ConnectOptions {
  /** The WebTransport URL, `https://host:port/hoard`. */
  url: string;
  /** SHA-256 of a development certificate (none for a real certificate). */
  certificateHashes?: Uint8Array[];
  /** The player's token (`dev:<name>` on a development server). */
  token: string;
  /** The service (default `world`). */
  service?: string;
  /** The game's registry: its components and intents. */
  registry: Registered[];
  /** Where copies are kept (default: IndexedDB, per world and player). */
  store?: ShardStore;
}

/** What one zone entry cost and found (the headless client's `zone_ready` fields). */
export interface EntryStats {
  zone: string;
  shards: number;
  fresh: number;
  delta: number;
  snapshot: number;
  repaired: number;
  objects: number;
  bytes_rx: number;
  bytes_tx: number;
  ms: number;
}

/** A refusal or failure the server reported. */
export class ServerError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** Called with a zone's shard copies whenever they change. */
export type ZoneListener = (zone: string, shards: ReadonlyMap<bigint, ShardCopy>) => void;

interface PendingEntry {
  resolve: (stats: EntryStats) => void;
  reject: (e: Error) => void;
}

export class HoardWebClient {
  /** The world's identity (hex): the cache namespace. */
  world = "";
  perspective = "";
  zones: string[] = [];
  private readonly writer: WritableStreamDefaultWriter<Uint8Array>;
  private readonly control: FrameReader;
  private store: ShardStore | undefined;
  private nextRequest = 1;
  private nextSeq = 1;
  private readonly live = new Map<string, Map<bigint, ShardCopy>>();
  private readonly entries = new Map<number, PendingEntry>();
  private listeners: ZoneListener[] = [];
  private closedReason: Error | null = null;

  private constructor(
    private readonly wt: WebTransport,
    stream: WebTransportBidirectionalStream,
    private readonly options: ConnectOptions,
  ) {
    this.writer = stream.writable.getWriter();
    this.control = new FrameReader(stream.readable, MAX_CONTROL_FRAME);
  }

  /** Connects and signs in. */
  static async connect(options: ConnectOptions): Promise<HoardWebClient> {
    const wt = new WebTransport(options.url, {
      serverCertificateHashes: (options.certificateHashes ?? []).map((value) => ({ algorithm: "sha-256", value })),
    } as WebTransportOptions);
    await wt.ready;
    const client = new HoardWebClient(wt, await wt.createBidirectionalStream(), options);
    await client.send(
      frame(Type.Hello, [
        PROTOCOL_VERSION,
        registryHash(options.registry),
        options.service ?? "world",
        options.token,
        [],
      ]),
    );
    const welcome = await client.control.next();
    if (!welcome) throw new ProtocolError("the server closed the control stream before Welcome");
    if (welcome.type === Type.Error) throw new ServerError(num(welcome.fields[0]), str(welcome.fields[1]));
    if (welcome.type !== Type.Welcome) throw new ProtocolError(`expected Welcome, got type ${welcome.type}`);
    client.world = hex(bin(welcome.fields[1], 32));
    client.perspective = str(welcome.fields[2]);
    client.zones = (welcome.fields[3] as unknown[]).map(str);
    client.store =
      options.store ?? (await IndexedDbStore.open(client.world, options.service ?? "world", client.perspective));
    client.readControl();
    client.acceptStreams();
    wt.closed.then(
      (info) => client.fail(new ServerError(info.closeCode ?? 0, info.reason || "connection closed")),
      (e) => client.fail(e instanceof Error ? e : new Error(String(e))),
    );
    return client;
  }

  /** Calls `listener` with a zone's copies on entry and after each change. */
  onZone(listener: ZoneListener): void {
    this.listeners.push(listener);
  }

  /** The copies of an entered zone. */
  shards(zone: string): ReadonlyMap<bigint, ShardCopy> | undefined {
    return this.live.get(zone);
  }

  /**
   * Enters `zone` in one round trip: cached copies named by hwm, each answer
   * checked; copies that fail are fetched whole by a second entry.
   */
  async enterZone(zone: string): Promise<EntryStats> {
    const started = performance.now();
    const first = await this.enterOnce(zone, await this.store!.load(zone));
    if (first.failed.length === 0) return this.ready(zone, first.stats, started);
    // A copy that did not verify: enter again without it (its shard comes
    // whole; the others are confirmed fresh again).
    const copies = first.copies;
    for (const shard of first.failed) copies.delete(shard);
    const second = await this.enterOnce(zone, copies);
    if (second.failed.length > 0) throw new ProtocolError(`shards ${second.failed.join(", ")} failed twice`);
    const stats = second.stats;
    stats.repaired = first.failed.length;
    stats.bytes_rx += first.stats.bytes_rx;
    stats.bytes_tx += first.stats.bytes_tx;
    return this.ready(zone, stats, started);
  }

  /** Sends an intent (its payload already MessagePack); returns its seq. */
  async sendIntent(kind: string, payload: Uint8Array): Promise<number> {
    const seq = this.nextSeq++;
    await this.send(frame(Type.Intent, [seq, kind, payload]));
    return seq;
  }

  close(): void {
    this.wt.close();
  }

  private ready(zone: string, stats: EntryStats, started: number): EntryStats {
    stats.ms = Math.round(performance.now() - started);
    const shards = this.live.get(zone)!;
    stats.objects = [...shards.values()].reduce((n, c) => n + c.objects.length, 0);
    this.listeners.forEach((l) => l(zone, shards));
    return stats;
  }

  private async enterOnce(
    zone: string,
    copies: Map<bigint, ShardCopy>,
  ): Promise<{ stats: EntryStats; failed: bigint[]; copies: Map<bigint, ShardCopy> }> {
    const request = this.nextRequest++;
    const held = [...copies.values()].sort((a, b) => (a.shard < b.shard ? -1 : 1));
    const top = held.reduce((m, c) => (c.seq > m ? c.seq : m), 0n);
    const message = frame(Type.EnterZone, [
      request,
      zone,
      true,
      [],
      [encodeIdList(held.map((c) => c.shard)), [top, ...held.map((c) => top - c.seq)]],
      false,
    ]);
    const answered = new Promise<EntryStats>((resolve, reject) => this.entries.set(request, { resolve, reject }));
    const entry = { zone, copies, held, failed: [] as bigint[] };
    this.entering.set(request, entry);
    await this.send(message);
    const stats = await answered;
    stats.bytes_tx = message.length;
    return { stats, failed: entry.failed, copies };
  }

  private readonly entering = new Map<
    number,
    { zone: string; copies: Map<bigint, ShardCopy>; held: ShardCopy[]; failed: bigint[] }
  >();

  private async send(bytes: Uint8Array): Promise<void> {
    if (this.closedReason) throw this.closedReason;
    await this.writer.write(bytes);
  }

  private fail(e: Error): void {
    if (this.closedReason) return;
    this.closedReason = e;
    for (const entry of this.entries.values()) entry.reject(e);
    this.entries.clear();
  }

  private async readControl(): Promise<void> {
    try {
      for (let f = await this.control.next(); f; f = await this.control.next()) {
        if (f.type === Type.Error) this.fail(new ServerError(num(f.fields[0]), str(f.fields[1])));
        if (f.type === Type.ZoneDenied) {
          const request = num(f.fields[0]);
          this.entries.get(request)?.reject(new ServerError(num(f.fields[2]), str(f.fields[3])));
          this.entries.delete(request);
        }
      }
    } catch (e) {
      this.fail(e as Error);
    }
  }

  private async acceptStreams(): Promise<void> {
    const streams = this.wt.incomingUnidirectionalStreams.getReader();
    for (;;) {
      const { value, done } = await streams.read().catch(() => ({ value: undefined, done: true }));
      if (done || !value) return;
      this.readStream(new FrameReader(value as ReadableStream<Uint8Array>, MAX_BULK_FRAME)).catch((e) =>
        this.fail(e as Error),
      );
    }
  }

  /** Reads a frame, joining `Parts` + message + `More`s into one message. */
  private static async whole(reader: FrameReader): Promise<Frame | null> {
    const f = await reader.next();
    if (!f || f.type !== Type.Parts) return f;
    const count = num(f.fields[0]);
    const message = await reader.next();
    if (!message) throw new ProtocolError("the stream ended after Parts");
    const list = message.type === Type.Snapshot ? 5 : message.type === Type.Delta ? 7 : 6;
    const objects = objectList(message.fields[list]);
    let bytes = f.bytes + message.bytes;
    for (let i = 0; i < count; i++) {
      const more = await reader.next();
      if (!more || more.type !== Type.More) throw new ProtocolError("Parts not followed by its More frames");
      objects.push(...objectList(more.fields[0]));
      bytes += more.bytes;
    }
    message.fields[list] = objects;
    message.bytes = bytes;
    return message;
  }

  private async readStream(reader: FrameReader): Promise<void> {
    const first = await HoardWebClient.whole(reader);
    if (!first) return;
    if (first.type === Type.AnswerBegin) return this.readAnswer(reader, first);
    for (let f: Frame | null = first; f; f = await HoardWebClient.whole(reader)) await this.onPushed(f);
  }

  private async readAnswer(reader: FrameReader, begin: Frame): Promise<void> {
    const request = num(begin.fields[0]);
    const entry = this.entering.get(request);
    const stats: EntryStats = {
      zone: str(begin.fields[1]),
      shards: num(begin.fields[2]),
      fresh: 0,
      delta: 0,
      snapshot: 0,
      repaired: 0,
      objects: 0,
      bytes_rx: begin.bytes,
      bytes_tx: 0,
      ms: 0,
    };
    if (!entry) return reader.cancel(); // an abandoned entry's answer
    const next = new Map<bigint, ShardCopy>();
    for (let f = await HoardWebClient.whole(reader); f; f = await HoardWebClient.whole(reader)) {
      stats.bytes_rx += f.bytes;
      const x = f.fields;
      if (f.type === Type.AnswerEnd) {
        this.entering.delete(request);
        const live = this.live.get(entry.zone) ?? new Map<bigint, ShardCopy>();
        next.forEach((copy, shard) => live.set(shard, copy));
        this.live.set(entry.zone, live);
        await Promise.all([...next.values()].map((c) => this.save(entry.zone, c)));
        this.entries.get(request)?.resolve(stats);
        this.entries.delete(request);
        return;
      }
      if (f.type === Type.Snapshot) {
        const copy = { shard: big(x[0]), epoch: big(x[1]), seq: big(x[2]), digest: bin(x[3], 40), objects: objectList(x[5]) };
        if (!equalBytes(digestOf(copy.objects), copy.digest)) throw new ProtocolError(`shard ${copy.shard}: snapshot digest mismatch`);
        next.set(copy.shard, copy);
        stats.snapshot++;
      } else if (f.type === Type.Changes || f.type === Type.Manifest) {
        const shard = big(x[0]);
        const base = entry.copies.get(shard);
        const applied = base && base.epoch === big(x[1]) && base.seq === big(x[2]) ? apply(base, f) : null;
        if (applied) {
          next.set(shard, applied);
          stats.delta++;
        } else {
          entry.failed.push(shard);
        }
      } else if (f.type === Type.Fresh) {
        const mask = bin(x[0]);
        const selected = entry.held.filter((_, i) => (mask[i >> 3] >> (i & 7)) & 1);
        const root = freshRoot(selected);
        if (equalBytes(root, bin(x[2], 32))) {
          selected.forEach((c) => next.set(c.shard, c));
          stats.fresh += selected.length;
        } else {
          // Blame the copies whose tag differs; if none does, all of them.
          const tags = bin(x[1]);
          const wrong = selected.filter((c, i) => tag(c) !== tags[i]);
          // None is kept on this answer: the next entry, without the blamed
          // copies, confirms the others by a root of their own.
          (wrong.length ? wrong : selected).forEach((c) => entry.failed.push(c.shard));
        }
      } else if (f.type !== Type.HeadProof && f.type !== Type.UpToDate) {
        throw new ProtocolError(`unexpected message type ${f.type} in an answer`);
      }
    }
    throw new ProtocolError("an answer stream ended before AnswerEnd");
  }

  /** A message on the delta stream. */
  private async onPushed(f: Frame): Promise<void> {
    if (f.type !== Type.Delta) return;
    const zone = str(f.fields[0]);
    const shard = big(f.fields[1]);
    const copy = this.live.get(zone)?.get(shard);
    if (!copy || big(f.fields[4]) <= copy.seq) return; // not entered yet, or already included
    const applied =
      copy.epoch === big(f.fields[2]) && copy.seq === big(f.fields[3]) ? apply(copy, { ...f, fields: f.fields.slice(1) }) : null;
    if (!applied) throw new ProtocolError(`zone ${zone} shard ${shard}: a delta that does not follow the copy`);
    this.live.get(zone)!.set(shard, applied);
    await this.save(zone, applied);
    this.listeners.forEach((l) => l(zone, this.live.get(zone)!));
  }

  private async save(zone: string, copy: ShardCopy): Promise<void> {
    try {
      await this.store!.save(zone, copy);
    } catch (e) {
      // Uncached from here on: the world is still right, only not kept.
      console.warn("hoard: could not cache a shard; going on uncached", e);
      this.store = new MemoryStore();
    }
  }
}

/**
 * Applies `Changes` / `Manifest` / a `Delta` (fields from `shard` on) to
 * `base`; `null` if the result's digest is not the server's.
 */
function apply(base: ShardCopy, f: Frame): ShardCopy | null {
  const x = f.fields;
  const byId = new Map<bigint, WireObject>(base.objects.map((o) => [o.id, o]));
  if (f.type === Type.Manifest) {
    const keep = new Set(idList(x[5]));
    for (const id of [...byId.keys()]) if (!keep.has(id)) byId.delete(id);
  } else {
    for (const id of idList(x[5])) byId.delete(id);
  }
  for (const o of objectList(x[6])) byId.set(o.id, o);
  const objects = [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const digest = bin(x[4], 40);
  if (!equalBytes(digestOf(objects), digest)) return null;
  return { shard: base.shard, epoch: base.epoch, seq: big(x[3]), digest, objects };
}
