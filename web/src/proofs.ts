// Signed shard heads (docs/PROTOCOL.md "Signed shard heads and relays"):
// the set root that binds a shard's exact objects, the statement the world
// signs, and the checks a client makes before it writes or shows a copy that
// came through someone it does not trust (a relay, or any endpoint whose
// certificate is not the world's): the signature with the world's key
// (`Welcome.world_key`, whose BLAKE3 must be the world's identity), no head
// older than one already held (a replay), and a copy whose head and set root
// are exactly the signed ones. Signatures are verified by the platform's
// WebCrypto (ECDSA P-256/P-384, Ed25519); nothing here is cryptography of
// its own beyond reading an ECDSA signature's DER into the form WebCrypto
// takes.

import { blake3 } from "@noble/hashes/blake3.js";
import type { ShardCopy } from "./cache.js";
import type { Head } from "./digest.js";
import { concat, equalBytes, hex, u64le } from "./digest.js";
import type { Frame, WireObject } from "./wire.js";
import { ProtocolError, big, bin, num } from "./wire.js";

/** Longest signature a `HeadProof` may carry. */
export const MAX_SIGNATURE_BYTES = 512;
/** Most signed heads awaiting their shard's message at once (per answer, and on the delta stream). */
export const MAX_PENDING_PROOFS = 4096;
/** Longest world key a `Welcome` may carry. */
export const MAX_WORLD_KEY_BYTES = 1024;

/** Most shards whose newest signed head is remembered (the oldest is forgotten first). */
export const MAX_REMEMBERED_HEADS = 65536;

/** TLS 1.3 SignatureScheme codes a head may be signed with. */
export const SCHEME_ECDSA_P256_SHA256 = 0x0403;
export const SCHEME_ECDSA_P384_SHA384 = 0x0503;
export const SCHEME_ED25519 = 0x0807;

/** A `HeadProof`: the world's signature over a shard's head. */
export interface HeadProof extends Head {
  root: Uint8Array;
  scheme: number;
  signature: Uint8Array;
}

/** A copy came through someone who altered, replayed or withheld a signature: not written, not shown. */
export class ProofError extends ProtocolError {}

const text = new TextEncoder();

/** A `HeadProof` frame's fields. */
export function headProof(f: Frame): HeadProof {
  const x = f.fields;
  const signature = bin(x[6]);
  if (signature.length > MAX_SIGNATURE_BYTES) throw new ProtocolError(`a head's signature of ${signature.length} bytes`);
  return {
    shard: big(x[0]),
    epoch: big(x[1]),
    seq: big(x[2]),
    digest: bin(x[3], 40),
    root: bin(x[4], 32),
    scheme: num(x[5]),
    signature,
  };
}

/**
 * The set root: BLAKE3("hoard-set-root-v1" ‖ for each object, ascending by
 * id: u64le(id) ‖ u64le(version) ‖ BLAKE3(state)).
 */
export function setRoot(objects: readonly WireObject[]): Uint8Array {
  const h = blake3.create();
  h.update(text.encode("hoard-set-root-v1"));
  for (const o of objects) {
    h.update(u64le(o.id));
    h.update(u64le(o.version));
    h.update(blake3(o.state));
  }
  return h.digest();
}

/** The statement a head's signature covers. */
export function signedStatement(world: Uint8Array, service: string, p: HeadProof): Uint8Array {
  const name = text.encode(service);
  if (name.length > 255) throw new ProtocolError("a service name over 255 bytes");
  return concat([
    text.encode("hoard-signed-head-v1"),
    world,
    Uint8Array.of(name.length),
    name,
    u64le(p.shard),
    u64le(p.epoch),
    u64le(p.seq),
    p.digest,
    p.root,
  ]);
}

/**
 * An ECDSA signature as DER (`SEQUENCE { INTEGER r, INTEGER s }`) in the
 * fixed-width `r ‖ s` form WebCrypto verifies; `null` if it is not one.
 */
export function ecdsaRaw(der: Uint8Array, width: number): Uint8Array | null {
  let at = 0;
  const length = (): number | null => {
    const first = der[at++];
    if (first === undefined) return null;
    if (first < 0x80) return first;
    if (first !== 0x81) return null; // signatures here are under 256 bytes
    const n = der[at++];
    return n === undefined || n < 0x80 ? null : n;
  };
  if (der[at++] !== 0x30) return null;
  const total = length();
  if (total === null || at + total !== der.length) return null;
  const out = new Uint8Array(2 * width);
  for (let i = 0; i < 2; i++) {
    if (der[at++] !== 0x02) return null;
    const n = length();
    if (n === null || n === 0 || at + n > der.length) return null;
    let value = der.subarray(at, at + n);
    at += n;
    if (value[0] & 0x80) return null; // negative
    while (value.length > 1 && value[0] === 0) value = value.subarray(1);
    if (value.length > width) return null;
    out.set(value, (i + 1) * width - value.length);
  }
  return at === der.length ? out : null;
}

interface Scheme {
  import: EcKeyImportParams | Algorithm;
  verify: EcdsaParams | Algorithm;
  /** ECDSA's r and s width; 0 for Ed25519 (its signature is used as is). */
  width: number;
}

const SCHEMES = new Map<number, Scheme>([
  [SCHEME_ECDSA_P256_SHA256, { import: { name: "ECDSA", namedCurve: "P-256" }, verify: { name: "ECDSA", hash: "SHA-256" }, width: 32 }],
  [SCHEME_ECDSA_P384_SHA384, { import: { name: "ECDSA", namedCurve: "P-384" }, verify: { name: "ECDSA", hash: "SHA-384" }, width: 48 }],
  [SCHEME_ED25519, { import: { name: "Ed25519" }, verify: { name: "Ed25519" }, width: 0 }],
]);

/** Checks signed heads of one world and service, and orders them per shard. */
export class ProofChecker {
  private readonly keys = new Map<number, Promise<CryptoKey | null>>();
  /** The newest head verified per shard: an older one in the same epoch is a replay. */
  private readonly newest = new Map<bigint, { epoch: bigint; seq: bigint }>();

  private constructor(
    private readonly world: Uint8Array,
    private readonly service: string,
    private readonly worldKey: Uint8Array,
  ) {}

  /**
   * The checker for `world` (its identity) with the key a `Welcome` gave:
   * refused unless the key's BLAKE3 is the world's identity.
   */
  static of(world: Uint8Array, service: string, worldKey: Uint8Array): ProofChecker {
    if (worldKey.length === 0) throw new ProofError(`world ${hex(world)} sent no key: it cannot prove its shards`);
    if (worldKey.length > MAX_WORLD_KEY_BYTES) throw new ProtocolError(`a world key of ${worldKey.length} bytes`);
    if (!equalBytes(blake3(worldKey), world)) {
      throw new ProofError(`the world key sent is not world ${hex(world)}'s (its BLAKE3 differs)`);
    }
    return new ProofChecker(world, service, worldKey);
  }

  /** Checks `p`'s signature and that it is not older than a head held for its shard (`held`: the copy named). */
  async check(p: HeadProof, held?: Head): Promise<void> {
    const scheme = SCHEMES.get(p.scheme);
    if (!scheme) throw new ProofError(`shard ${p.shard}: signature scheme 0x${p.scheme.toString(16)} is not one hoard takes`);
    if (!this.keys.has(p.scheme)) {
      const imported = crypto.subtle.importKey("spki", this.worldKey as BufferSource, scheme.import, false, ["verify"]).catch(() => null);
      this.keys.set(p.scheme, imported);
    }
    const key = await this.keys.get(p.scheme)!;
    const signature = scheme.width ? ecdsaRaw(p.signature, scheme.width) : p.signature;
    const statement = signedStatement(this.world, this.service, p);
    const good =
      key !== null &&
      signature !== null &&
      (await crypto.subtle.verify(scheme.verify, key, signature as BufferSource, statement as BufferSource).catch(() => false));
    if (!good) throw new ProofError(`shard ${p.shard}: the head's signature does not verify with the world's key`);
    for (const h of [this.newest.get(p.shard), held]) {
      if (h && h.epoch === p.epoch && p.seq < h.seq) {
        throw new ProofError(`shard ${p.shard}: a signed head at seq ${p.seq} after one at ${h.seq} (an old head replayed)`);
      }
    }
  }

  /** Checks that `copy` is exactly the shard `p` (checked) signs, and records its head as the newest. */
  checkCopy(p: HeadProof, copy: ShardCopy): void {
    if (copy.shard !== p.shard || copy.epoch !== p.epoch || copy.seq !== p.seq || !equalBytes(copy.digest, p.digest)) {
      throw new ProofError(
        `shard ${p.shard}: the copy is at epoch ${copy.epoch} seq ${copy.seq}, the signed head says epoch ${p.epoch} seq ${p.seq}` +
          (equalBytes(copy.digest, p.digest) ? "" : " with another digest"),
      );
    }
    if (!equalBytes(setRoot(copy.objects), p.root)) {
      throw new ProofError(`shard ${p.shard}: the objects are not the set the world signed (set root differs)`);
    }
    this.newest.delete(p.shard);
    this.newest.set(p.shard, { epoch: p.epoch, seq: p.seq });
    if (this.newest.size > MAX_REMEMBERED_HEADS) this.newest.delete(this.newest.keys().next().value!);
  }
}

/** Signed heads checked and awaiting their shard's message (bounded). */
export class PendingProofs {
  private readonly byShard = new Map<bigint, HeadProof>();

  /** `awaiting`: what they wait for, for the error past the bound. */
  constructor(private readonly awaiting: string) {}

  /** Checks the `HeadProof` frame `f` (against `held`, the copy named, if any) and keeps it for its shard. */
  async hold(checker: ProofChecker, f: Frame, held?: Head): Promise<void> {
    const proof = headProof(f);
    if (this.byShard.size >= MAX_PENDING_PROOFS && !this.byShard.has(proof.shard)) {
      throw new ProtocolError(`more than ${MAX_PENDING_PROOFS} signed heads without their ${this.awaiting}`);
    }
    await checker.check(proof, held);
    this.byShard.set(proof.shard, proof);
  }

  /** The head kept for `shard`, taken. */
  take(shard: bigint): HeadProof | undefined {
    const proof = this.byShard.get(shard);
    this.byShard.delete(shard);
    return proof;
  }
}
