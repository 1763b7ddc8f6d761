// A hoard client over WebTransport, written from docs/PROTOCOL.md: signs in
// (`Hello` → `Welcome`), enters zones in one round trip naming its cached
// copies by hwm (`held`), checks every shard it receives against the
// server's digest and every copy it keeps against the `Fresh` root, keeps
// its copies in a ShardStore (IndexedDB by default), follows live deltas,
// each zone's transient state and the game's messages, prefetches zones, and
// sends intents whose outcome (`Processed` or `IntentRejected`) it reports.
// A copy is used only once verified; a copy that fails is repaired in one
// more round trip (`Repair`, repair.ts), as is a copy a live delta does not
// follow. Given the world's identity (`ConnectOptions.world`), it
// asks for the world's signed heads and checks each (proofs.ts): the way to
// play through a relay, which cannot forge them.

import type { ShardCopy, ShardStore } from "./cache.js";
import { IndexedDbStore, MemoryStore } from "./cache.js";
import type { Registered } from "./digest.js";
import { digestOf, equalBytes, freshRoot, hex, registryHash, tag } from "./digest.js";
import type { HeadProof } from "./proofs.js";
import { PendingProofs, ProofChecker, ProofError, headProof } from "./proofs.js";
import { rebuild, repairList } from "./repair.js";
import { applyMessage } from "./shard.js";
import { importPlayerKey, intentStatement, signStatement, worldTokenClaims } from "./signing.js";
import { TransientState } from "./transient.js";
import { encodeValue } from "./values.js";
import type { Frame } from "./wire.js";
import {
  CODEC_ZSTD,
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
  num,
  objectList,
  readWhole,
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
  /** A zone to enter in the same flight as `Hello` (see `firstEntry`). */
  enter?: string;
  /**
   * Whether answers and deltas may come compressed (`Packed`, Zstandard);
   * default true. A cold entry of the demo's meadow is 22 KB instead of 131.
   */
  compression?: boolean;
  /**
   * The world's identity (64 hex digits) to require, for an endpoint whose
   * certificate is not the world's: a relay (which serves the world's
   * identity and key, not its own). With it the client refuses a `Welcome`
   * naming another world, asks for the world's signed heads
   * (`EnterZone.proofs`) and writes or shows no copy whose head and objects
   * the world's key did not sign; a relay that alters, replays or withholds
   * a signature ends the session with a `ProofError`. Copies are then named
   * by full head, so a warm entry costs a signed head per shard (about 150
   * bytes each) instead of one `Fresh`.
   */
  world?: string;
  /**
   * The player's intent key (a PASERK `k4.secret.…`), when the token binds
   * it (its `key` claim): every intent is then signed with it, under the
   * nonce the server gives the session, so the player can act through any
   * relay (docs/PROTOCOL.md § Signed intents). Required with such a token.
   */
  playerKey?: string;
}

/** The perspective a token names (`dev:<name>`, `v1.<player>.…`, a world token's `sub`), if it can be read. */
export function perspectiveOf(token: string): string | null {
  const name = token.startsWith("dev:")
    ? token.slice(4)
    : token.startsWith("v1.")
      ? token.split(".")[1]
      : (worldTokenClaims(token)?.sub ?? null);
  return name && /^[a-z0-9_-]{1,64}$/.test(name) ? name : null;
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

/** A refusal or failure the server reported, with its code. */
export class ServerError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The zone is served by another server of the world (`ZoneElsewhere`):
 * `address` is its raw QUIC endpoint; a browser reaches it only where that
 * server also has a WebTransport endpoint.
 */
export class ZoneElsewhere extends Error {
  constructor(
    readonly zone: string,
    readonly address: string,
  ) {
    super(`zone ${zone} is served by ${address}`);
  }
}

/** Called with a zone's shard copies whenever they change. */
export type ZoneListener = (zone: string, shards: ReadonlyMap<bigint, ShardCopy>) => void;
/** Called with a zone's transient state (the game's own encoding) when it changes. */
export type TransientListener = (zone: string, payload: Uint8Array) => void;
/** Called with each message of the game (`GameMessage`). */
export type MessageListener = (kind: string, zone: string | null, payload: Uint8Array) => void;

/** Most intents awaiting their outcome at once. */
export const MAX_PENDING_INTENTS = 256;
/** Most deltas held for a zone while it is being entered; past it, the zone is entered again once ready. */
export const MAX_HELD_DELTAS = 4096;

/** A `Delta` and the signed head that came before it (when the client asks for them). */
interface Pushed {
  frame: Frame;
  proof?: HeadProof;
}

interface PendingEntry {
  resolve: (stats: EntryStats) => void;
  reject: (e: Error) => void;
}

interface Entering {
  zone: string;
  subscribe: boolean;
  copies: Map<bigint, ShardCopy>;
  held: ShardCopy[];
  /** Shards whose answer did not verify: each is repaired. */
  failed: bigint[];
  /** Copies a `Fresh` selected whose root differed: confirmed once the blamed ones are repaired, or repaired too. */
  unconfirmed: { selected: ShardCopy[]; root: Uint8Array }[];
}

interface PendingRepair {
  zone: string;
  copy: ShardCopy | undefined;
  resolve: (repaired: { copy: ShardCopy; bytes: number }) => void;
  reject: (e: Error) => void;
}

export class HoardWebClient {
  /** The world's identity (hex): the cache namespace. */
  world = "";
  perspective = "";
  zones: string[] = [];
  /** Server ticks per second. */
  tickHz = 0;
  /** The last `Status`: whether the world takes actions now, and why not. */
  status = { writable: true, message: "" };
  private readonly writer: WritableStreamDefaultWriter<Uint8Array>;
  private readonly control: FrameReader;
  private store: ShardStore | undefined;
  private nextRequest = 1;
  private nextSeq = 1;
  /** The player's key, when the token binds one (its intents are signed). */
  private signer: { key: CryptoKey; public: string } | null = null;
  /** The nonce intents are signed under, once `IntentNonce` came. */
  private nonce: Uint8Array | null = null;
  private nonceWaiters: ((nonce: Uint8Array) => void)[] = [];
  /** The last signed intent's sending (the next waits for it). */
  private signedSends: Promise<void> = Promise.resolve();
  /** The world's identity, as bytes (signed intents name it). */
  private worldBytes: Uint8Array = new Uint8Array(32);
  /** Entered zones' copies. */
  private readonly live = new Map<string, Map<bigint, ShardCopy>>();
  /** Zones being entered (subscribed), with the deltas that came meanwhile. */
  private readonly heldDeltas = new Map<string, Pushed[]>();
  /** Zones to enter again once their entry under way is done. */
  private readonly again = new Set<string>();
  private readonly transient = new TransientState();
  private readonly entries = new Map<number, PendingEntry>();
  private readonly entering = new Map<number, Entering>();
  /** Followed entries under way, by zone. */
  private readonly inFlight = new Map<string, Promise<EntryStats>>();
  private readonly intents = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private readonly repairs = new Map<number, PendingRepair>();
  /** Live shards being repaired (`zone shard`), with the deltas that came meanwhile. */
  private readonly mending = new Map<string, Pushed[]>();
  /** Live shards that need another repair once the one under way is done. */
  private readonly mendAgain = new Set<string>();
  private zoneListeners: ZoneListener[] = [];
  private transientListeners: TransientListener[] = [];
  private messageListeners: MessageListener[] = [];
  private closedReason: Error | null = null;
  /** With `ConnectOptions.world`: the checker of the world's signed heads, once `Welcome` gave its key. */
  private checker: Promise<ProofChecker> | null = null;
  private checkerRefused: ((e: Error) => void) | null = null;
  /** Signed heads read on the delta stream, awaiting their `Delta`. */
  private readonly deltaProofs = new PendingProofs("deltas");

  private constructor(
    private readonly wt: WebTransport,
    stream: WebTransportBidirectionalStream,
    private readonly options: ConnectOptions,
  ) {
    this.writer = stream.writable.getWriter();
    this.control = new FrameReader(stream.readable, MAX_CONTROL_FRAME);
  }

  /**
   * Connects and signs in. With `enter`, the zone's entry goes right
   * behind `Hello` in the same flight (as PROTOCOL.md's pipelining allows),
   * naming the copies kept for the world this URL served last time: a
   * returning player's zone costs one round trip once the session is up.
   * Its outcome is `firstEntry`.
   */
  static async connect(options: ConnectOptions): Promise<HoardWebClient> {
    const wt = new WebTransport(options.url, {
      serverCertificateHashes: (options.certificateHashes ?? []).map((value) => ({ algorithm: "sha-256", value })),
    } as WebTransportOptions);
    await wt.ready;
    // A token that binds the player's key needs that key: its intents are signed.
    const bound = worldTokenClaims(options.token)?.key ?? null;
    const signer = options.playerKey ? await importPlayerKey(options.playerKey) : null;
    if (bound && !signer) throw new Error("the token binds a player key: give it as playerKey (intents are signed with it)");
    if (signer && signer.public !== bound) throw new Error("playerKey is not the key the token binds");
    const client = new HoardWebClient(wt, await wt.createBidirectionalStream(), options);
    client.signer = signer;
    const service = options.service ?? "world";
    // Where this URL's world was last time: its copies are named before
    // `Welcome` says which world it is (every copy is checked all the same).
    const rememberedAt = `hoard-world ${options.url} ${service}`;
    const remembered = options.enter ? HoardWebClient.recall(rememberedAt) : null;
    const perspective = perspectiveOf(options.token);
    if (options.enter && !options.store && remembered && perspective) {
      client.store = await IndexedDbStore.open(remembered, service, perspective);
    } else if (options.enter) {
      client.store = options.store;
    }
    if (options.world) {
      client.checker = new Promise<ProofChecker>((resolve, reject) => {
        client.checkerRefused = reject;
        client.checkerGiven = resolve;
      });
      client.checker.catch(() => {});
    }
    client.acceptStreams();
    const codecs = options.compression === false ? [] : [CODEC_ZSTD];
    await client.send(frame(Type.Hello, [PROTOCOL_VERSION, registryHash(options.registry), service, options.token, codecs]));
    const pipelined = options.enter && client.store ? client.enter(options.enter, true) : null;
    pipelined?.catch(() => {});
    const welcome = await client.control.next().catch((e: Error) => e);
    const refused =
      welcome instanceof Error
        ? welcome
        : !welcome
          ? new ProtocolError("the server closed the control stream before Welcome")
          : welcome.type === Type.Error
            ? new ServerError(num(welcome.fields[0]), str(welcome.fields[1]))
            : welcome.type !== Type.Welcome
              ? new ProtocolError(`expected Welcome, got type ${welcome.type}`)
              : null;
    if (refused || !welcome || welcome instanceof Error) {
      // Not signed in. A server that refused closes the session with its
      // code and reason, which may reach the page before (or instead of)
      // its `Error` frame: that reason is the one to give.
      const why = refused instanceof ServerError ? refused : ((await HoardWebClient.closeReason(wt)) ?? refused ?? new ProtocolError("no Welcome"));
      client.fail(why);
      client.close();
      throw why;
    }
    client.worldBytes = bin(welcome.fields[1], 32);
    client.world = hex(client.worldBytes);
    client.perspective = str(welcome.fields[2]);
    client.zones = (welcome.fields[3] as unknown[]).map(str);
    client.tickHz = welcome.fields.length > 4 ? num(welcome.fields[4]) : 0;
    if (options.world) {
      try {
        if (client.world !== options.world.toLowerCase()) {
          throw new ProofError(`the server speaks for world ${client.world}, not ${options.world}`);
        }
        const key = welcome.fields.length > 5 ? bin(welcome.fields[5]) : new Uint8Array();
        client.checkerGiven?.(ProofChecker.of(bin(welcome.fields[1], 32), service, key));
      } catch (e) {
        client.fail(e as Error);
        client.close();
        throw e;
      }
    }
    HoardWebClient.remember(rememberedAt, client.world);
    const guessed = client.store !== undefined && (options.store !== undefined || (client.world === remembered && client.perspective === perspective));
    if (!guessed) client.store = options.store ?? (await IndexedDbStore.open(client.world, service, client.perspective));
    client.readControl();
    wt.closed.then(
      (info) => client.fail(new ServerError(info.closeCode ?? 0, info.reason || "connection closed")),
      (e) => client.fail(e instanceof Error ? e : new Error(String(e))),
    );
    if (options.enter) {
      client.firstEntry =
        pipelined && guessed
          ? pipelined
          : // Another world (or player) than the copies named: enter again,
            // this time from the right cache (after the first answer, which
            // went to the copies of the world remembered).
            (pipelined ?? Promise.resolve(null)).catch(() => null).then(() => {
              client.live.delete(options.enter!);
              client.inFlight.delete(options.enter!);
              return client.enter(options.enter!, true);
            });
      // `enterZone` of that zone meanwhile waits for this entry.
      client.inFlight.set(options.enter, client.firstEntry);
    }
    return client;
  }

  /** The code and reason the server closed `wt` with, if it closes within 5 s. */
  private static async closeReason(wt: WebTransport): Promise<ServerError | null> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), 5000)));
    const closed = wt.closed.then(
      (info) => (info.reason ? new ServerError(info.closeCode ?? 0, info.reason) : null),
      () => null,
    );
    const reason = await Promise.race([closed, late]);
    clearTimeout(timer);
    return reason;
  }

  /** The entry `ConnectOptions.enter` asked for. */
  firstEntry: Promise<EntryStats> | null = null;
  private checkerGiven: ((checker: ProofChecker) => void) | null = null;

  private static recall(key: string): string | null {
    try {
      return globalThis.localStorage?.getItem(key) ?? null;
    } catch {
      return null; // storage off: no pipelining, nothing else lost
    }
  }

  private static remember(key: string, world: string): void {
    try {
      globalThis.localStorage?.setItem(key, world);
    } catch {
      // storage off or full: the next visit waits for Welcome first
    }
  }

  /** Calls `listener` with a zone's copies on entry and after each change. */
  onZone(listener: ZoneListener): void {
    this.zoneListeners.push(listener);
  }

  /** Calls `listener` with a zone's transient state whenever it changes. */
  onTransient(listener: TransientListener): void {
    this.transientListeners.push(listener);
  }

  /** Calls `listener` with each of the game's messages. */
  onMessage(listener: MessageListener): void {
    this.messageListeners.push(listener);
  }

  /** The copies of an entered zone. */
  shards(zone: string): ReadonlyMap<bigint, ShardCopy> | undefined {
    return this.live.get(zone);
  }

  /** A zone's last transient state, if the client is in it and has one. */
  transientOf(zone: string): Uint8Array | undefined {
    return this.transient.get(zone);
  }

  /**
   * False once the store refused a copy (the browser's quota full even
   * after evicting the world's other zones): from then on the client keeps
   * copies in memory only, and a later visit fetches what was not kept.
   */
  persistent = true;
  /** Live copies repaired since connecting (a delta that did not follow its copy). */
  liveRepairs = 0;

  /** Whether the session has ended (and why). */
  get closed(): Error | null {
    return this.closedReason;
  }

  /**
   * Enters `zone` in one round trip and follows it: cached copies named by
   * hwm, each answer checked; copies that fail are fetched whole by a
   * second entry. Entering a zone already entered costs no message.
   */
  async enterZone(zone: string): Promise<EntryStats> {
    const flying = this.inFlight.get(zone);
    if (flying) return flying;
    const live = this.live.get(zone);
    if (live) return this.summary(zone, live);
    return this.enter(zone, true);
  }

  /**
   * Fetches `zone` into the cache without following it (the zone a player
   * walks towards): entering it later is all `Fresh`, or a few changes.
   */
  async prefetch(zone: string): Promise<EntryStats> {
    return this.enter(zone, false);
  }

  /** Stops following `zone` and forgets its transient state; its copies stay cached. */
  async leaveZone(zone: string): Promise<void> {
    this.live.delete(zone);
    this.heldDeltas.delete(zone);
    this.again.delete(zone);
    this.transient.forget(zone);
    await this.send(frame(Type.LeaveZone, [zone]));
  }

  /** Sends an intent (its payload already MessagePack); returns its seq. */
  async sendIntent(kind: string, payload: Uint8Array): Promise<number> {
    return (await this.submit(kind, payload)).seq;
  }

  /**
   * Sends a typed intent (`value` encoded as rmp-serde reads it, see
   * `encodeValue`) and resolves once the server has processed it durably
   * (`Processed`); rejects with a `ServerError` carrying the game's code
   * when refused, or when the session ends first.
   */
  async act(kind: string, value: unknown): Promise<void> {
    return (await this.submit(kind, encodeValue(value))).outcome;
  }

  /** Ends the session (idempotent). */
  close(): void {
    try {
      this.wt.close();
    } catch {
      // already closed
    }
  }

  private async submit(kind: string, payload: Uint8Array): Promise<{ seq: number; outcome: Promise<void> }> {
    if (this.intents.size >= MAX_PENDING_INTENTS) {
      throw new Error(`${MAX_PENDING_INTENTS} intents await their outcome already; wait for some`);
    }
    const seq = this.nextSeq++;
    const outcome = new Promise<void>((resolve, reject) => this.intents.set(seq, { resolve, reject }));
    // An outcome nobody awaits is not an unhandled rejection.
    outcome.catch(() => {});
    if (!this.signer) {
      await this.send(frame(Type.Intent, [seq, kind, payload]));
      return { seq, outcome };
    }
    // Signed intents go out in seq order (the server takes only the next
    // one), so each waits for the one before it.
    const signer = this.signer;
    const sent = this.signedSends.then(async () => {
      const nonce = await this.intentNonce();
      const statement = intentStatement(this.worldBytes, nonce, this.perspective, seq, kind, payload);
      const signature = await signStatement(signer.key, statement);
      await this.send(frame(Type.Intent, [seq, kind, payload, signature]));
    });
    this.signedSends = sent.catch(() => {});
    await sent;
    return { seq, outcome };
  }

  /** The nonce this session's intents are signed under, once the server gave it (10 s at most). */
  private intentNonce(): Promise<Uint8Array> {
    if (this.nonce) return Promise.resolve(this.nonce);
    return new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error("the server gave no nonce to sign intents under (does it take world tokens binding a key?)")),
        10_000,
      );
      this.nonceWaiters.push((nonce) => {
        clearTimeout(timer);
        resolve(nonce);
      });
    });
  }

  /** The server's `IntentNonce`: intents are signed under it from now on. */
  private takeNonce(nonce: Uint8Array): void {
    if (nonce.length !== 16) throw new ProtocolError("an IntentNonce is 16 bytes");
    this.nonce = nonce;
    for (const waiter of this.nonceWaiters.splice(0)) waiter(nonce);
  }

  /** Enters `zone` (following it with `subscribe`); one entry of a zone at a time is followed. */
  private enter(zone: string, subscribe: boolean): Promise<EntryStats> {
    if (!subscribe) return this.enterNow(zone, false);
    const entry = this.enterNow(zone, true).finally(() => {
      if (this.inFlight.get(zone) === entry) this.inFlight.delete(zone);
    });
    this.inFlight.set(zone, entry);
    return entry;
  }

  private async enterNow(zone: string, subscribe: boolean): Promise<EntryStats> {
    const started = performance.now();
    if (subscribe) this.heldDeltas.set(zone, this.heldDeltas.get(zone) ?? []);
    try {
      const first = await this.enterOnce(zone, subscribe, await this.copiesOf(zone));
      const stats = first.stats;
      if (first.failed.length > 0 || first.unconfirmed.length > 0) await this.repairEntry(zone, subscribe, first, stats);
      stats.ms = Math.round(performance.now() - started);
      if (!subscribe) {
        stats.objects = [...first.copies.values()].reduce((n, c) => n + c.objects.length, 0);
        return stats;
      }
      await this.replayHeld(zone);
      const live = this.live.get(zone)!;
      stats.objects = [...live.values()].reduce((n, c) => n + c.objects.length, 0);
      this.zoneListeners.forEach((l) => l(zone, live));
      return stats;
    } finally {
      if (subscribe) this.heldDeltas.delete(zone);
      if (subscribe && this.again.delete(zone) && !this.closedReason) {
        this.enter(zone, true).catch((e) => this.fail(e as Error));
      }
    }
  }

  /**
   * Repairs what an entry's answer did not verify (one more round trip):
   * each failed copy; then the copies a mismatched `Fresh` selected are
   * confirmed by its root over the repaired heads and theirs, or repaired
   * too. A repair that does not verify either is fatal.
   */
  private async repairEntry(
    zone: string,
    subscribe: boolean,
    first: { copies: Map<bigint, ShardCopy>; failed: bigint[]; unconfirmed: Entering["unconfirmed"] },
    stats: EntryStats,
  ): Promise<void> {
    const fixed = new Map<bigint, ShardCopy>();
    const mend = async (shard: bigint) => {
      const { copy, bytes, sent } = await this.repair(zone, shard, first.copies.get(shard));
      fixed.set(shard, copy);
      stats.repaired++;
      stats.bytes_rx += bytes;
      stats.bytes_tx += sent;
    };
    await Promise.all([...new Set(first.failed)].map(mend));
    const confirmed: ShardCopy[] = [];
    for (const { selected, root } of first.unconfirmed) {
      const others = selected.filter((c) => !fixed.has(c.shard));
      if (equalBytes(freshRoot(selected.map((c) => fixed.get(c.shard) ?? c)), root)) confirmed.push(...others);
      else await Promise.all(others.map((c) => mend(c.shard)));
    }
    stats.fresh += confirmed.length;
    const into = subscribe ? this.live.get(zone)! : first.copies;
    for (const c of confirmed) into.set(c.shard, c);
    fixed.forEach((copy, shard) => into.set(shard, copy));
    await Promise.all([...fixed.values()].map((c) => this.save(zone, c)));
  }

  /** Sends a `Repair` of `shard` listing `copy`'s objects; resolves with the rebuilt, verified copy. */
  private async repair(zone: string, shard: bigint, copy: ShardCopy | undefined): Promise<{ copy: ShardCopy; bytes: number; sent: number }> {
    const request = this.nextRequest++;
    const message = frame(Type.Repair, [request, zone, shard, copy?.seq ?? 0n, repairList(copy)]);
    const done = new Promise<{ copy: ShardCopy; bytes: number }>((resolve, reject) =>
      this.repairs.set(request, { zone, copy, resolve, reject }),
    );
    await this.send(message);
    return { ...(await done), sent: message.length };
  }

  /** The copies to name for `zone`: those kept live, else the store's that verify. */
  private async copiesOf(zone: string): Promise<Map<bigint, ShardCopy>> {
    const live = this.live.get(zone);
    return live ? new Map(live) : await this.store!.load(zone);
  }

  private summary(zone: string, live: ReadonlyMap<bigint, ShardCopy>): EntryStats {
    const objects = [...live.values()].reduce((n, c) => n + c.objects.length, 0);
    return { zone, shards: live.size, fresh: live.size, delta: 0, snapshot: 0, repaired: 0, objects, bytes_rx: 0, bytes_tx: 0, ms: 0 };
  }

  private async enterOnce(
    zone: string,
    subscribe: boolean,
    copies: Map<bigint, ShardCopy>,
  ): Promise<{ stats: EntryStats; failed: bigint[]; unconfirmed: Entering["unconfirmed"]; copies: Map<bigint, ShardCopy> }> {
    const request = this.nextRequest++;
    const held = [...copies.values()].sort((a, b) => (a.shard < b.shard ? -1 : 1));
    const top = held.reduce((m, c) => (c.seq > m ? c.seq : m), 0n);
    // Signed heads are asked with copies named by full head (`Fresh`, the
    // answer to `held`, carries no signature).
    const proofs = this.checker !== null;
    const message = frame(Type.EnterZone, [
      request,
      zone,
      subscribe,
      proofs ? held.map((c) => [c.shard, c.epoch, c.seq, c.digest]) : [],
      proofs ? [[], [0]] : [encodeIdList(held.map((c) => c.shard)), [top, ...held.map((c) => top - c.seq)]],
      proofs,
    ]);
    const answered = new Promise<EntryStats>((resolve, reject) => this.entries.set(request, { resolve, reject }));
    const entry: Entering = { zone, subscribe, copies, held, failed: [], unconfirmed: [] };
    this.entering.set(request, entry);
    await this.send(message);
    const stats = await answered;
    stats.bytes_tx = message.length;
    return { stats, failed: entry.failed, unconfirmed: entry.unconfirmed, copies };
  }

  private async send(bytes: Uint8Array): Promise<void> {
    if (this.closedReason) throw this.closedReason;
    await this.writer.write(bytes);
  }

  private fail(e: Error): void {
    if (this.closedReason) return;
    this.closedReason = e;
    for (const entry of this.entries.values()) entry.reject(e);
    this.entries.clear();
    for (const intent of this.intents.values()) intent.reject(e);
    this.intents.clear();
    for (const repair of this.repairs.values()) repair.reject(e);
    this.repairs.clear();
    this.checkerRefused?.(e);
  }

  private async readControl(): Promise<void> {
    try {
      for (let f = await this.control.next(); f; f = await this.control.next()) {
        const x = f.fields;
        if (f.type === Type.Error) {
          // Fatal: the server closes the session after it. Closing it
          // from here first keeps the page alive (Chromium's renderer
          // crashes when a server closes a session whose control stream it
          // has already finished).
          this.fail(new ServerError(num(x[0]), str(x[1])));
          this.close();
          return;
        }
        if (f.type === Type.ZoneDenied || f.type === Type.ZoneElsewhere) {
          const request = num(x[0]);
          const error =
            f.type === Type.ZoneDenied ? new ServerError(num(x[2]), str(x[3])) : new ZoneElsewhere(str(x[1]), str(x[2]));
          this.entering.delete(request);
          this.entries.get(request)?.reject(error);
          this.entries.delete(request);
        }
        if (f.type === Type.IntentRejected) {
          const seq = num(x[0]);
          this.intents.get(seq)?.reject(new ServerError(num(x[1]), str(x[2])));
          this.intents.delete(seq);
        }
        if (f.type === Type.IntentNonce) this.takeNonce(bin(x[0], 16));
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
      const packed = this.options.compression !== false;
      this.readStream(new FrameReader(value as ReadableStream<Uint8Array>, MAX_BULK_FRAME, packed)).catch((e) => {
        // A stream that breaks the protocol, or a copy the world did not
        // sign: the session is over (take another route to the world).
        this.fail(e as Error);
        this.close();
      });
    }
  }

  private async readStream(reader: FrameReader): Promise<void> {
    const first = await readWhole(reader);
    if (!first) return;
    if (first.type === Type.AnswerBegin && this.repairs.has(num(first.fields[0]))) return this.readRepair(reader, first);
    if (first.type === Type.AnswerBegin) return this.readAnswer(reader, first);
    for (let f: Frame | null = first; f; f = await readWhole(reader)) await this.onPushed(f);
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
    const checker = this.checker ? await this.checker : null;
    /** Signed heads read, awaiting their shard's message. */
    const proven = new PendingProofs("shards");
    /** Keeps `copy` for this answer, once it is exactly the head the world signed (when asked). */
    const keep = (copy: ShardCopy) => {
      if (checker) {
        const proof = proven.take(copy.shard);
        if (!proof) throw new ProofError(`shard ${copy.shard} came without the world's signed head`);
        checker.checkCopy(proof, copy);
      }
      next.set(copy.shard, copy);
    };
    for (let f = await readWhole(reader); f; f = await readWhole(reader)) {
      stats.bytes_rx += f.bytes;
      const x = f.fields;
      if (f.type === Type.HeadProof) {
        if (checker) await proven.hold(checker, f, entry.copies.get(big(f.fields[0])));
        // (not asked for, it is ignored: a relay sends them all the same)
        continue;
      }
      if (f.type === Type.AnswerEnd) {
        this.entering.delete(request);
        // Only what the answer changed is written: a copy confirmed by
        // `Fresh` is the very record the store holds already.
        const changed = [...next.values()].filter((c) => entry.copies.get(c.shard) !== c);
        if (entry.subscribe) {
          const live = this.live.get(entry.zone) ?? new Map<bigint, ShardCopy>();
          next.forEach((copy, shard) => live.set(shard, copy));
          this.live.set(entry.zone, live);
        } else {
          next.forEach((copy, shard) => entry.copies.set(shard, copy));
        }
        await Promise.all(changed.map((c) => this.save(entry.zone, c)));
        this.entries.get(request)?.resolve(stats);
        this.entries.delete(request);
        return;
      }
      if (f.type === Type.Snapshot) {
        const copy = { shard: big(x[0]), epoch: big(x[1]), seq: big(x[2]), digest: bin(x[3], 40), objects: objectList(x[5]) };
        if (!equalBytes(digestOf(copy.objects), copy.digest)) throw new ProtocolError(`shard ${copy.shard}: snapshot digest mismatch`);
        keep(copy);
        stats.snapshot++;
      } else if (f.type === Type.Changes || f.type === Type.Manifest) {
        const shard = big(x[0]);
        const base = entry.copies.get(shard);
        const applied = base && base.epoch === big(x[1]) && base.seq === big(x[2]) ? applyMessage(base, f) : null;
        if (applied) {
          keep(applied);
          stats.delta++;
        } else {
          proven.take(shard);
          entry.failed.push(shard);
        }
      } else if (f.type === Type.UpToDate) {
        // A copy named by full head is at the server's head.
        const shard = big(x[0]);
        const copy = entry.copies.get(shard);
        if (!copy || copy.seq !== big(x[1])) throw new ProtocolError(`shard ${shard}: UpToDate for a copy not named at that seq`);
        keep(copy);
        stats.fresh++;
      } else if (f.type === Type.Fresh) {
        if (checker) throw new ProofError("Fresh came for an entry that asked for signed heads (a Fresh carries none)");
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
          // The blamed copies are repaired; the others are confirmed by the
          // root over the repaired heads and theirs (or repaired too).
          (wrong.length ? wrong : selected).forEach((c) => entry.failed.push(c.shard));
          entry.unconfirmed.push({ selected, root: bin(x[2], 32) });
        }
      } else {
        throw new ProtocolError(`unexpected message type ${f.type} in an answer`);
      }
    }
    throw new ProtocolError("an answer stream ended before AnswerEnd");
  }

  /** A repair's answer: (a signed head,) the shard's `Manifest`, `AnswerEnd`. */
  private async readRepair(reader: FrameReader, begin: Frame): Promise<void> {
    const request = num(begin.fields[0]);
    const pending = this.repairs.get(request)!;
    const checker = this.checker ? await this.checker : null;
    let proof: HeadProof | undefined;
    let repaired: ShardCopy | undefined;
    let bytes = begin.bytes;
    for (let f = await readWhole(reader); f; f = await readWhole(reader)) {
      bytes += f.bytes;
      if (f.type === Type.HeadProof) {
        if (!checker) continue;
        proof = headProof(f);
        await checker.check(proof, pending.copy);
      } else if (f.type === Type.AnswerEnd) {
        if (!repaired) throw new ProtocolError(`repair ${request} ended without its shard`);
        this.repairs.delete(request);
        return pending.resolve({ copy: repaired, bytes });
      } else {
        // A repair that does not verify is fatal (PROTOCOL.md): `rebuild` throws.
        repaired = rebuild(pending.copy, f);
        if (checker) {
          if (!proof || proof.shard !== repaired.shard) throw new ProofError(`shard ${repaired.shard}'s repair came without the world's signed head`);
          checker.checkCopy(proof, repaired);
        }
      }
    }
    throw new ProtocolError("a repair's answer stream ended before AnswerEnd");
  }

  /** A message on the delta stream. */
  private async onPushed(f: Frame): Promise<void> {
    const x = f.fields;
    switch (f.type) {
      case Type.HeadProof: {
        if (this.checker) await this.deltaProofs.hold(await this.checker, f);
        // (not asked for, it is ignored: a relay sends them all the same)
        return;
      }
      case Type.Delta: {
        const zone = str(x[0]);
        const shard = big(x[1]);
        const pushed: Pushed = { frame: f, proof: this.deltaProofs.take(shard) };
        const held = this.heldDeltas.get(zone);
        if (held) {
          if (held.length < MAX_HELD_DELTAS) held.push(pushed);
          else this.again.add(zone);
          return;
        }
        const mending = this.mending.get(`${zone} ${shard}`);
        if (mending) {
          if (mending.length < MAX_HELD_DELTAS) mending.push(pushed);
          return;
        }
        if (this.live.has(zone) && (await this.applyDelta(zone, pushed))) {
          this.zoneListeners.forEach((l) => l(zone, this.live.get(zone)!));
        }
        return;
      }
      case Type.Transient:
      case Type.TransientPatch: {
        const zone = str(x[0]);
        if (!this.live.has(zone) && !this.heldDeltas.has(zone)) return; // not in that zone
        let payload: Uint8Array | undefined;
        if (f.type === Type.Transient) {
          payload = bin(x[1]);
          this.transient.replace(zone, payload);
        } else {
          payload = this.transient.patch(zone, x[1], x[2]);
        }
        if (payload) this.transientListeners.forEach((l) => l(zone, payload));
        return;
      }
      case Type.IntentRejected: {
        // A refusal a tick decided (the game's own code, or Unavailable).
        const seq = num(x[0]);
        this.intents.get(seq)?.reject(new ServerError(num(x[1]), str(x[2])));
        this.intents.delete(seq);
        return;
      }
      case Type.Processed:
        for (const seq of x[0] as unknown[]) {
          this.intents.get(num(seq))?.resolve();
          this.intents.delete(num(seq));
        }
        return;
      case Type.Status:
        this.status = { writable: x[0] === true, message: str(x[1]) };
        return;
      case Type.IntentNonce:
        // Through a relay, the world's server's nonce comes down here.
        this.takeNonce(bin(x[0], 16));
        return;
      case Type.GameMessage: {
        const zone = x[1] === null || x[1] === undefined ? null : str(x[1]);
        const payload = bin(x[2]);
        this.messageListeners.forEach((l) => l(str(x[0]), zone, payload));
        return;
      }
      default:
        throw new ProtocolError(`unexpected message type ${f.type} on the delta stream`);
    }
  }

  /** The deltas held while `zone` was being entered, in order, on the copies the entry left. */
  private async replayHeld(zone: string): Promise<void> {
    for (const pushed of this.heldDeltas.get(zone) ?? []) await this.applyDelta(zone, pushed);
    this.heldDeltas.set(zone, []);
  }

  /**
   * Applies a `Delta` to the zone's live copy; `false` when already
   * included. One that does not follow the copy, or whose digest differs,
   * or that came without the signed head the client asked for (the origin
   * had moved on when it signed), drops that copy and enters the zone again
   * (the shard comes whole, signed). A result that is not the signed head
   * is a `ProofError`.
   */
  private async applyDelta(zone: string, { frame: f, proof }: Pushed): Promise<boolean> {
    const shards = this.live.get(zone)!;
    const shard = big(f.fields[1]);
    const copy = shards.get(shard);
    if (!copy) return false; // a shard being fetched again
    if (big(f.fields[4]) <= copy.seq) return false; // already included
    const follows = copy.epoch === big(f.fields[2]) && copy.seq === big(f.fields[3]);
    const unsigned = this.checker !== null && proof === undefined;
    const applied = follows && !unsigned ? applyMessage(copy, { ...f, fields: f.fields.slice(1) }) : null;
    if (!applied) {
      const why = unsigned ? "a delta without its signed head" : "a delta that does not follow the copy";
      console.warn(`hoard: zone ${zone} shard ${shard}: ${why}; repairing it`);
      this.mendLive(zone, copy);
      return false;
    }
    if (proof) (await this.checker!).checkCopy(proof, applied);
    shards.set(shard, applied);
    await this.save(zone, applied);
    return true;
  }

  /**
   * Repairs a live copy a delta did not follow; the deltas that come
   * meanwhile are held (bounded; past it, the next one that does not
   * follow repairs again) and applied after.
   */
  private mendLive(zone: string, copy: ShardCopy): void {
    const key = `${zone} ${copy.shard}`;
    if (this.mending.has(key)) {
      this.mendAgain.add(key);
      return;
    }
    this.mending.set(key, []);
    this.repair(zone, copy.shard, copy)
      .then(async ({ copy: repaired }) => {
        const shards = this.live.get(zone);
        if (!shards) return; // left meanwhile
        shards.set(copy.shard, repaired);
        this.liveRepairs++;
        await this.save(zone, repaired);
        for (const pushed of this.mending.get(key) ?? []) await this.applyDelta(zone, pushed);
        this.zoneListeners.forEach((l) => l(zone, shards));
      })
      .catch((e) => this.fail(e as Error))
      .finally(() => {
        this.mending.delete(key);
        const now = this.live.get(zone)?.get(copy.shard);
        if (this.mendAgain.delete(key) && now && !this.closedReason) this.mendLive(zone, now);
      });
  }

  private async save(zone: string, copy: ShardCopy): Promise<void> {
    try {
      await this.store!.save(zone, copy);
    } catch (e) {
      // Uncached from here on: the world is still right, only not kept.
      console.warn("hoard: could not cache a shard; going on uncached", e);
      this.store = new MemoryStore();
      this.persistent = false;
    }
  }
}
