// hoard's frames and message bodies (docs/PROTOCOL.md, "Frames" and
// "Bodies"): a frame is `u32 BE length ‖ type u8 ‖ MessagePack body`, a body
// the array of a message's fields in order. Decoding is bounded: a frame's
// length is checked as soon as its four bytes arrive.

import { decode, encode } from "@msgpack/msgpack";
import { Decompress } from "fzstd";

/** Largest frame on an answer or delta stream (32 MiB). */
export const MAX_BULK_FRAME = 32 * 1024 * 1024;
/** Largest frame on the control stream. */
export const MAX_CONTROL_FRAME = 256 * 1024;
/** `Packed` codec 1: Zstandard. */
export const CODEC_ZSTD = 1;
/** Largest content of a `Packed` frame (8 MiB). */
export const MAX_PACKED_SIZE = 8 * 1024 * 1024;
/** Most a `Packed` frame's content may exceed its data. */
export const MAX_PACKED_RATIO = 64;
/** The protocol version this client speaks. */
export const PROTOCOL_VERSION = 11;

export const enum Type {
  Hello = 0x01,
  EnterZone = 0x02,
  LeaveZone = 0x03,
  Repair = 0x04,
  Intent = 0x05,
  Welcome = 0x81,
  Error = 0x82,
  ZoneDenied = 0x83,
  IntentRejected = 0x84,
  ZoneElsewhere = 0x85,
  IntentNonce = 0x86,
  AnswerBegin = 0x90,
  UpToDate = 0x91,
  Changes = 0x92,
  Manifest = 0x93,
  Snapshot = 0x94,
  AnswerEnd = 0x95,
  Parts = 0x96,
  More = 0x97,
  Fresh = 0x98,
  HeadProof = 0x99,
  Packed = 0x9a,
  Delta = 0xa0,
  Transient = 0xa1,
  Status = 0xa2,
  Processed = 0xa3,
  TransientPatch = 0xa4,
  GameMessage = 0xa5,
}

/** A decoded frame: its type, its body's fields, and its size on the wire. */
export interface Frame {
  type: number;
  fields: unknown[];
  bytes: number;
}

/** The stream's bytes are not hoard frames. */
export class ProtocolError extends Error {}

/**
 * An integer as the encoder writes it in its shortest MessagePack form, as
 * the protocol asks: up to 2^32 − 1 as a number (fixint, uint8/16/32), above
 * that as a bigint (uint64; @msgpack/msgpack writes a number above 2^32 as
 * a float64, which no u64 field accepts).
 */
export function toShortest(v: bigint): number | bigint {
  return v >= 0n && v <= 0xffffffffn ? Number(v) : v;
}

/**
 * A value with its integers in their shortest MessagePack form, as the
 * protocol asks (the encoder writes every bigint as 9 bytes, and a number
 * above 2^32 as a float64): see `toShortest`. Arrays and plain objects are
 * walked; bin (Uint8Array) and other values are kept.
 */
export function shortest(v: unknown): unknown {
  if (typeof v === "bigint") return toShortest(v);
  if (typeof v === "number" && Number.isInteger(v) && v > 0xffffffff) return BigInt(v);
  if (Array.isArray(v)) return v.map(shortest);
  if (v instanceof Uint8Array || v === null || typeof v !== "object") return v;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shortest(x)]));
}

/** Encodes one message as a frame. */
export function frame(type: Type, fields: unknown[]): Uint8Array {
  const body = encode(shortest(fields), { useBigInt64: true });
  const out = new Uint8Array(5 + body.length);
  new DataView(out.buffer).setUint32(0, 1 + body.length);
  out[4] = type;
  out.set(body, 5);
  return out;
}

/**
 * Decompresses a `Packed` frame's Zstandard `data` into exactly `size`
 * bytes (PROTOCOL.md, "Compressed frames"): the limits are checked before
 * any decompressing, and decompressing stops as soon as the output would
 * pass `size`, so a bomb costs at most `size` bytes.
 */
export function unpack(codec: number, size: number, data: Uint8Array): Uint8Array {
  if (codec !== CODEC_ZSTD) throw new ProtocolError(`a Packed frame in codec ${codec}, which this client did not list`);
  if (size > MAX_PACKED_SIZE || size > MAX_PACKED_RATIO * data.length) {
    throw new ProtocolError(`a Packed frame of ${size} bytes from ${data.length} (at most 8 MiB and ${MAX_PACKED_RATIO}×)`);
  }
  const out = new Uint8Array(size);
  let filled = 0;
  const stream = new Decompress((chunk) => {
    if (filled + chunk.length > size) throw new ProtocolError(`a Packed frame decompresses past its size ${size}`);
    out.set(chunk, filled);
    filled += chunk.length;
  });
  try {
    stream.push(data, true);
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    throw new ProtocolError(`a Packed frame does not decompress: ${(e as Error).message}`);
  }
  if (filled !== size) throw new ProtocolError(`a Packed frame decompresses to ${filled} bytes, not its size ${size}`);
  return out;
}

/**
 * Splits a stream's bytes into frames, whatever the chunking. With
 * `packed`, a `Packed` frame is unpacked and the frames inside come out in
 * its place, each charged its share of the `Packed` frame's length.
 */
export class FrameDecoder {
  private buf = new Uint8Array(0);
  private readonly unpacked: Frame[] = [];
  constructor(
    private readonly limit: number,
    private readonly packed = false,
  ) {}

  push(chunk: Uint8Array): void {
    const next = new Uint8Array(this.buf.length + chunk.length);
    next.set(this.buf);
    next.set(chunk, this.buf.length);
    this.buf = next;
  }

  /** The next whole frame, or `null` until more bytes arrive. */
  next(): Frame | null {
    for (;;) {
      const queued = this.unpacked.shift();
      if (queued) return queued;
      if (this.buf.length < 4) return null;
      const length = new DataView(this.buf.buffer, this.buf.byteOffset).getUint32(0);
      if (length === 0 || length > this.limit) {
        throw new ProtocolError(`frame length ${length} outside 1..${this.limit}`);
      }
      if (this.buf.length < 4 + length) return null;
      const type = this.buf[4];
      const body = this.buf.subarray(5, 4 + length);
      this.buf = this.buf.slice(4 + length);
      const fields = decodeBody(type, body);
      if (type !== Type.Packed) return { type, fields, bytes: 4 + length };
      if (!this.packed) throw new ProtocolError("a Packed frame where none may come (no codecs listed, or the control stream)");
      this.unpack(fields, 4 + length);
    }
  }

  /** Queues the frames inside a `Packed` frame of `bytes` on the stream. */
  private unpack(fields: unknown[], bytes: number): void {
    const content = unpack(num(fields[0]), num(fields[1]), bin(fields[2]));
    const inner = new FrameDecoder(this.limit);
    inner.push(content);
    const frames: Frame[] = [];
    for (let f = inner.next(); f; f = inner.next()) frames.push(f);
    if (inner.partial()) throw new ProtocolError("a Packed frame ends inside a frame");
    // Each frame's share of the Packed frame, in proportion to its length;
    // the shares add up to the Packed frame's length.
    let charged = 0;
    frames.forEach((f, i) => {
      const share = i === frames.length - 1 ? bytes - charged : Math.floor((bytes * f.bytes) / content.length);
      charged += share;
      f.bytes = share;
    });
    this.unpacked.push(...frames);
  }

  /** Whether a frame was cut off by the end of the stream. */
  partial(): boolean {
    return this.buf.length > 0;
  }
}

function decodeBody(type: number, body: Uint8Array): unknown[] {
  const fields = decode(body, { useBigInt64: true, maxDepth: 1024 } as never);
  if (!Array.isArray(fields)) throw new ProtocolError(`body of type ${type} is not an array`);
  return fields;
}

/** Reads frames off a WebTransport stream. */
export class FrameReader {
  private readonly decoder: FrameDecoder;
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  constructor(stream: ReadableStream<Uint8Array>, limit: number, packed = false) {
    this.decoder = new FrameDecoder(limit, packed);
    this.reader = stream.getReader();
  }

  /** The next frame; `null` at the stream's end. */
  async next(): Promise<Frame | null> {
    for (;;) {
      const frame = this.decoder.next();
      if (frame) return frame;
      const { value, done } = await this.reader.read();
      if (done) {
        if (this.decoder.partial()) throw new ProtocolError("the stream ended inside a frame");
        return null;
      }
      this.decoder.push(value);
    }
  }

  cancel(): void {
    this.reader.cancel().catch(() => {});
  }
}

/** A MessagePack integer as a bigint (u64 fields come as either). */
/** Reads a frame, joining `Parts` + message + `More`s into one message (PROTOCOL.md "Messages larger than a frame"). */
export async function readWhole(reader: FrameReader): Promise<Frame | null> {
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

export function big(v: unknown): bigint {
  if (typeof v === "bigint") return v;
  if (typeof v === "number" && Number.isInteger(v) && v >= 0) return BigInt(v);
  throw new ProtocolError(`expected an unsigned integer, got ${String(v)}`);
}

/** A MessagePack integer as a number (u32 fields, small u64s). */
export function num(v: unknown): number {
  const n = Number(big(v));
  if (!Number.isSafeInteger(n)) throw new ProtocolError(`integer ${String(v)} too large`);
  return n;
}

export function bin(v: unknown, len?: number): Uint8Array {
  if (!(v instanceof Uint8Array)) throw new ProtocolError("expected bin");
  if (len !== undefined && v.length !== len) throw new ProtocolError(`expected bin${len}, got ${v.length} bytes`);
  return v;
}

export function str(v: unknown): string {
  if (typeof v !== "string") throw new ProtocolError("expected str");
  return v;
}

function arr(v: unknown): unknown[] {
  if (!Array.isArray(v)) throw new ProtocolError("expected an array");
  return v;
}

/** An IdList: first id, then gaps ≥ 1. */
export function idList(v: unknown): bigint[] {
  const out: bigint[] = [];
  let prev = 0n;
  arr(v).forEach((x, i) => {
    const gap = big(x);
    if (i > 0 && gap === 0n) throw new ProtocolError("a zero gap in an id list");
    prev = i === 0 ? gap : prev + gap;
    if (prev >= 1n << 64n) throw new ProtocolError("an id list overflows");
    out.push(prev);
  });
  return out;
}

/** Encodes ascending ids as an IdList. */
export function encodeIdList(ids: bigint[]): bigint[] {
  return ids.map((id, i) => (i === 0 ? id : id - ids[i - 1]));
}

/** One object: id, version, canonical state bytes. */
export interface WireObject {
  id: bigint;
  version: bigint;
  state: Uint8Array;
}

/** An ObjectList: `[ids, versions, states]`, versions as `V` then distances. */
export function objectList(v: unknown): WireObject[] {
  const [idsRaw, versionsRaw, statesRaw] = arr(v);
  const ids = idList(idsRaw);
  const versions = arr(versionsRaw);
  const states = arr(statesRaw);
  if (versions.length !== ids.length + 1 || states.length !== ids.length) {
    throw new ProtocolError("an object list's columns differ in length");
  }
  const top = big(versions[0]);
  return ids.map((id, i) => {
    const distance = big(versions[i + 1]);
    if (distance > top) throw new ProtocolError("a version distance above the highest version");
    return { id, version: top - distance, state: bin(states[i]) };
  });
}
