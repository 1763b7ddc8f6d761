/**
 * Signed intents (docs/PROTOCOL.md § Signed intents): a player whose world
 * token binds their key (its `key` claim) signs every intent with that key
 * — Ed25519 through WebCrypto — under the nonce the server gives the
 * session (`IntentNonce`), numbering intents 1, 2, 3, … So any relay, one
 * the page cannot trust included, can carry the player's actions to the
 * world's server, which checks each signature and the order.
 */

const encoder = new TextEncoder();

/** base64url without padding (RFC 4648 § 5), as PASETO and PASERK spell it. */
export function base64url(bytes: Uint8Array): string {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Reads base64url (padding optional); throws on anything else. */
export function fromBase64url(text: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new Error("not base64url");
  const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

/**
 * The claims of a world token (`v4.public.…`), read without checking its
 * signature (the server checks it): the player (`sub`) and the bound key
 * (`key`, a PASERK `k4.public.…`), if any. `null` for any other token.
 */
export function worldTokenClaims(token: string): { sub: string; key: string | null } | null {
  if (!token.startsWith("v4.public.") || token.length > 1024) return null;
  try {
    const message = fromBase64url(token.slice("v4.public.".length).split(".")[0]);
    if (message.length <= 64) return null;
    const claims = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(message.subarray(0, message.length - 64)));
    if (typeof claims?.sub !== "string") return null;
    return { sub: claims.sub, key: typeof claims.key === "string" ? claims.key : null };
  } catch {
    return null;
  }
}

/** Imports a player key, a PASERK `k4.secret.…` (seed ‖ public key), for signing. */
export async function importPlayerKey(paserk: string): Promise<{ key: CryptoKey; public: string }> {
  if (!paserk.startsWith("k4.secret.")) throw new Error("a player key is a PASERK k4.secret.…");
  const bytes = fromBase64url(paserk.slice("k4.secret.".length).trim());
  if (bytes.length !== 64) throw new Error("a player key is 64 bytes (seed and public key)");
  const jwk = { kty: "OKP", crv: "Ed25519", d: base64url(bytes.subarray(0, 32)), x: base64url(bytes.subarray(32)) };
  const key = await crypto.subtle.importKey("jwk", jwk, { name: "Ed25519" }, false, ["sign"]);
  return { key, public: `k4.public.${base64url(bytes.subarray(32))}` };
}

/**
 * The bytes a player signs for one intent:
 * `"hoard-intent-v1" ‖ world (32) ‖ nonce (16) ‖ u8(len(player)) ‖ player ‖
 * u32le(seq) ‖ u8(len(kind)) ‖ kind ‖ u32le(len(payload)) ‖ payload`.
 */
export function intentStatement(
  world: Uint8Array,
  nonce: Uint8Array,
  player: string,
  seq: number,
  kind: string,
  payload: Uint8Array,
): Uint8Array {
  const name = encoder.encode(player).subarray(0, 255);
  const kindBytes = encoder.encode(kind).subarray(0, 255);
  const context = encoder.encode("hoard-intent-v1");
  const out = new Uint8Array(context.length + 32 + 16 + 1 + name.length + 4 + 1 + kindBytes.length + 4 + payload.length);
  const view = new DataView(out.buffer);
  let at = 0;
  const put = (bytes: Uint8Array) => {
    out.set(bytes, at);
    at += bytes.length;
  };
  put(context);
  put(world);
  put(nonce);
  out[at++] = name.length;
  put(name);
  view.setUint32(at, seq >>> 0, true);
  at += 4;
  out[at++] = kindBytes.length;
  put(kindBytes);
  view.setUint32(at, payload.length, true);
  at += 4;
  put(payload);
  return out;
}

/** Signs a statement with the player's key: 64 bytes of Ed25519. */
export async function signStatement(key: CryptoKey, statement: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key, statement as BufferSource));
}
