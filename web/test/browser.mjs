// The browser check: the demo server with --web, Debian's Chromium driven
// headless by playwright-core (nothing downloaded). In one run:
//
// 1. ann's first visit enters the meadow cold (every shard a snapshot, every
//    digest checked), beside a native headless client's cold entry of the
//    same zone (its own empty cache), for the figures;
// 2. ann walks two steps and plants or digs her tile, builds a house there
//    and demolishes it: each action is processed and the page draws what it
//    changed (live deltas);
// 3. bob, a native headless client, walks in: the page draws him where he
//    stands, and bob sees ann where the page says she is;
// 4. a reload enters warm from IndexedDB (every shard fresh, the changed one
//    too: its delta was cached), and so does a browser restart with the same
//    profile directory;
// 4a. a copy damaged in IndexedDB (whole record, wrong objects) is repaired
//    on the next entry (one Repair), the other 63 confirmed fresh;
// 5. ann walks to the nearest item, picks it up and drops it at her feet;
//    then east into the forest: prefetched on the way, entered fresh;
// 6. a frame the server cannot decode ends the session with the server's
//    code and reason, and the page lives on to show them; a forged token is
//    refused at sign-in with its reason;
// 7. through a relay (`hoard-demo relay --web`): its own page enters cold,
//    every snapshot checked against the world's signed head; ann's page
//    (`?relay=`) enters the meadow warm from the copies the origin gave her
//    (the cache is the world's, whichever way the data came), every shard's
//    signed head checked, and sees a house bob (native, at the origin) builds;
//    fern, whose world token binds her key, acts through the relay: the page
//    signs the action, the world's server checks it and applies it;
// 8. a browser whose storage quota is full (Chromium's own quota, set small
//    over CDP for a fresh origin) still enters the meadow whole, says it
//    keeps nothing (`persistent` false), and plays on (a tile changed,
//    drawn once processed).
//
// Writes the figures (target/web-check/web-check.json) and a screenshot.
// Usage: node test/browser.mjs [path/to/hoard-demo]
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const here = new URL(".", import.meta.url).pathname;
const demo = resolve(process.argv[2] ?? join(here, "../../target/debug/hoard-demo"));
const out = resolve(process.env.OUT ?? join(here, "../../target/web-check"));
mkdirSync(out, { recursive: true });
const scratch = mkdtempSync(join(tmpdir(), "hoard-web-"));
const deadline = setTimeout(() => fail("the check took over 240 s"), 240_000);
const children = [];
// Whatever goes wrong, the servers and clients this check started go too.
process.on("uncaughtException", (e) => fail(e.stack ?? String(e)));
process.on("unhandledRejection", (e) => fail(e?.stack ?? String(e)));

function fail(why) {
  console.error(`browser check FAILED: ${why}`);
  cleanup();
  process.exit(1);
}

function cleanup() {
  clearTimeout(deadline);
  browser?.close().catch(() => {});
  for (const child of children) child.kill("SIGKILL");
  rmSync(scratch, { recursive: true, force: true });
}

/** Runs hoard-demo; resolves each JSON line it prints to `onEvent`. */
function run(args, onEvent) {
  const child = spawn(demo, args, { stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  createInterface({ input: child.stdout }).on("line", (line) => {
    try {
      onEvent(JSON.parse(line));
    } catch {}
  });
  return child;
}

/** Waits for a JSON line of `child` with this `event`. */
function event(args, name) {
  return new Promise((resolveEvent, reject) => {
    const child = run(args, (e) => e.event === name && resolveEvent(e));
    child.on("exit", (code) => reject(new Error(`hoard-demo ${args[0]} exited with ${code} before ${name}`)));
  });
}

let browser;
const listening = await event(
  ["server", "--dev", "--data", join(scratch, "server"), "--listen", "127.0.0.1:0", "--web", "127.0.0.1:0"],
  "listening",
).catch((e) => fail(e.message));
if (!listening.web) fail("the server did not say where its page is");
const native = (player, extra) => [
  "client", "--headless", "--server", listening.addr, "--token", `dev:${player}`,
  "--cache-dir", join(scratch, `native-${player}`), "--zone", "meadow", ...extra,
];

const profile = join(scratch, "profile");
async function launch() {
  // As root in a container Chromium needs --no-sandbox; the background
  // services are off (this machine has no network beyond loopback).
  return chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1180, height: 600 },
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
}

async function entry(page, reload) {
  if (reload) await page.reload();
  else await page.goto(`${listening.web}?player=ann&zone=meadow`);
  await page.waitForFunction(() => document.getElementById("entry-stats").textContent.length > 0, null, { timeout: 60_000 });
  const stats = JSON.parse(await page.textContent("#entry-stats"));
  if (stats.error) fail(`the page failed: ${stats.error}`);
  await page.waitForFunction(() => window.game !== undefined, null, { timeout: 30_000 });
  return stats;
}

/** Waits until `predicate(arg)` holds in the page, or fails saying `what`. */
async function until(page, what, predicate, arg) {
  await page.waitForFunction(predicate, arg, { timeout: 15_000 }).catch(async () => {
    const state = await page.evaluate(() => ({ player: game.player, message: game.message, others: game.others, mine: game.houses.filter((h) => h.owner === "ann" && Math.abs(h.x - game.player[0]) < 3 && Math.abs(h.y - game.player[1]) < 3).map((h) => [String(h.id), h.x, h.y]) }));
    fail(`${what}; the page shows ${JSON.stringify(state)}`);
  });
}

const results = {};
browser = await launch();
let page = await browser.newPage();
page.on("console", (m) => console.log(`[page] ${m.text()}`));
page.on("pageerror", (e) => fail(`the page threw: ${e.message}`));

// 1. Cold, beside a native client's cold entry of the same zone.
results.cold = await entry(page, false);
const c = results.cold;
if (c.shards < 1 || c.snapshot !== c.shards || c.fresh !== 0) fail(`a cold entry is all snapshots: ${JSON.stringify(c)}`);
results.native_cold = await event(native("carl", ["--exit-after-ready"]), "zone_ready").catch((e) => fail(e.message));
if (results.native_cold.objects !== c.objects) fail(`the native client sees ${results.native_cold.objects} objects, the page ${c.objects}`);

// 2. Walk two steps south, then change the tile stood on.
await until(page, "ann stands at the crossroads", () => game.player[0] === 128 && game.player[1] === 128);
for (const y of [129, 130]) {
  await until(page, "the game takes a step", () => game.canStep());
  await page.keyboard.press("ArrowDown");
  await until(page, `ann walks to (128, ${y})`, (y) => game.player[1] === y, y);
}
const before = await page.evaluate(() => game.tileAt(128, 130));
const planted = before === 4 ? 1 : 4;
await page.keyboard.press(planted === 4 ? "t" : "f");
await until(page, "the tile ann changed is drawn changed", ([kind, n]) => game.tileAt(128, 130) === kind && game.processed >= n, [planted, 1]);
results.changed_tile = { x: 128, y: 130, from: before, to: planted };
// Build a house where ann stands, then demolish it: both drawn once processed.
await page.keyboard.press("b");
await until(page, "ann's house is drawn", () => game.houses.some((h) => h.owner === "ann" && h.x === 128 && h.y === 130));
await page.keyboard.press("x");
await until(page, "ann's house is gone", () => !game.houses.some((h) => h.owner === "ann" && h.x === 128 && h.y === 130));
results.built_and_demolished = true;

// 3. bob (native) walks in; each sees the other where they stand.
const bobSees = event(
  native("bob", ["--act", '{"Move":{"zone":0,"x":131,"y":129}}', "--act", '{"Move":{"zone":0,"x":132,"y":129}}', "--expect-player", "ann"]),
  "player",
).catch((e) => fail(e.message));
await until(page, "the page draws bob where he walked", () => game.others.some(([n, x, y]) => n === "bob" && x === 132 && y === 129));
const seen = await bobSees;
if (seen.x !== 128 || seen.y !== 130) fail(`bob sees ann at (${seen.x}, ${seen.y}), the page at (128, 130)`);
results.players = { bob_on_page: [132, 129], ann_seen_by_bob: [seen.x, seen.y] };
await page.screenshot({ path: join(out, "web-demo.png") });

// 4. Warm: a reload, then a browser restart.
results.reload = await entry(page, true);
const w = results.reload;
if (w.fresh !== w.shards || w.snapshot !== 0) fail(`a reload is all fresh: ${JSON.stringify(w)}`);
if (w.objects !== c.objects) fail(`a warm entry shows the same objects: ${w.objects} vs ${c.objects}`);
const kept = await page.evaluate(() => game.tileAt(128, 130));
if (kept !== planted) fail(`the changed tile came back from the cache as ${kept}, not ${planted}`);
await browser.close();
browser = await launch();
page = await browser.newPage();
results.restart = await entry(page, false);
const r = results.restart;
if (r.fresh !== r.shards) fail(`after a browser restart the cache is still there: ${JSON.stringify(r)}`);

// 4a. A damaged copy whose record is whole (an object gone, its digest
// recomputed: it loads, but is not the server's shard): the warm entry
// blames it by its Fresh tag and repairs it in one more round trip; the
// other 63 are confirmed.
const damaged = await page.evaluate(async () => {
  const lib = await import("/hoard.js");
  const db = await new Promise((resolve, reject) => {
    const open = indexedDB.open("hoard-cache", 1);
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
  const store = db.transaction("shards", "readwrite").objectStore("shards");
  const all = await new Promise((resolve) => (store.getAllKeys().onsuccess = (e) => resolve(e.target.result)));
  const key = all.find((k) => k.startsWith(`${hoard.world}/world/ann/meadow/`));
  const copy = lib.decodeCopy(await new Promise((resolve) => (store.get(key).onsuccess = (e) => resolve(e.target.result))));
  copy.objects.pop();
  copy.digest = lib.digestOf(copy.objects);
  await new Promise((resolve) => (store.put(lib.encodeCopy(copy), key).onsuccess = resolve));
  db.close();
  return key;
});
results.repair = await entry(page, true);
const p = results.repair;
if (p.repaired !== 1 || p.fresh !== p.shards - 1 || p.snapshot !== 0 || p.objects !== c.objects) {
  fail(`a damaged copy costs one repair, the rest stay fresh (${damaged}): ${JSON.stringify(p)}`);
}

// 4b. Walk to the nearest item, pick it up (it leaves the ground for ann's
// inventory), and drop it where she then stands.
const target = await page.evaluate(async () => {
  const frame = () => new Promise((r) => requestAnimationFrame(r));
  const away = (i) => Math.max(Math.abs(i.x - game.player[0]), Math.abs(i.y - game.player[1]));
  const item = [...game.items].sort((a, b) => away(a) - away(b))[0];
  if (!item) return null;
  for (let steps = 0; away(item) > 1 && steps < 300; steps++) {
    while (!game.canStep()) await frame();
    const [x, y] = game.player;
    game.key(item.x > x ? "ArrowRight" : item.x < x ? "ArrowLeft" : item.y > y ? "ArrowDown" : "ArrowUp");
  }
  return { id: String(item.id), kind: item.kind, at: [item.x, item.y], reached: away(item) <= 1 };
});
if (!target?.reached) fail(`ann reaches the nearest item: ${JSON.stringify(target)}`);
await page.keyboard.press("g");
await until(page, `item ${target.id} moves from the ground to ann's inventory`, (id) => game.inventory.some((i) => String(i.id) === id) && !game.items.some((i) => String(i.id) === id), target.id);
await page.keyboard.press("r");
await until(page, `item ${target.id} lies at ann's feet`, (id) => !game.inventory.some((i) => String(i.id) === id) && game.items.some((i) => String(i.id) === id && i.x === game.player[0] && i.y === game.player[1]), target.id);
results.picked_up_and_dropped = target;

// 5. Walk east to the meadow's edge: the forest beyond is prefetched on
// the way (within 32 tiles of the edge), so crossing into it is all fresh.
const crossing = await page.evaluate(async () => {
  const frame = () => new Promise((r) => requestAnimationFrame(r));
  for (let steps = 0; game.zone === "meadow" && steps < 2000; steps++) {
    while (!game.canStep()) await frame();
    if (game.zone === "meadow") game.key("ArrowRight");
  }
  while (game.zone !== "forest" || game.lastEntry?.zone !== "forest") await frame();
  return { entry: game.lastEntry, at: game.player, message: game.message };
});
const x = crossing.entry;
if (x.shards < 1 || x.fresh !== x.shards) fail(`crossing into the prefetched forest is all fresh: ${JSON.stringify(crossing)}`);
if (crossing.at[0] !== 0) fail(`ann arrives on the forest's west edge, not at ${crossing.at}`);
results.crossing = x;

// 6. Bad input: an EnterZone whose shard id is a float (no u64 field takes
// one) ends the session with Protocol (1) and the server's reason, and the
// page lives on to say so.
await page.evaluate(async () => {
  const { encodeValue } = await import("/hoard.js");
  const body = encodeValue([9, "meadow", true, [], [[1.5], [0, 0]], false]);
  const frame = new Uint8Array(5 + body.length);
  new DataView(frame.buffer).setUint32(0, 1 + body.length);
  frame[4] = 0x02;
  frame.set(body, 5);
  await hoard.send(frame);
});
await until(page, "the server's reason reaches the page", () => hoard.closed !== null);
// A forged token is refused at sign-in, and the page says why.
const forged = await browser.newPage();
await forged.goto(`${listening.web}?zone=meadow#token=v1.ann.4102444800.${"00".repeat(32)}`);
await forged.waitForFunction(() => document.getElementById("entry-stats").textContent.length > 0, null, { timeout: 30_000 });
const signIn = JSON.parse(await forged.textContent("#entry-stats"));
if (!/token/i.test(signIn.error ?? "")) fail(`a forged token is refused with the reason: ${JSON.stringify(signIn)}`);
results.forged_token = signIn;
const refused = await page.evaluate(() => ({ code: hoard.closed.code, message: hoard.closed.message }));
if (refused.code !== 1 || !refused.message.includes("does not decode")) fail(`a bad frame is refused as Protocol with its reason: ${JSON.stringify(refused)}`);
results.bad_frame = refused;

// 7. Through a relay: the same copies, each checked against the world's signature.
const relay = await event(
  ["relay", "--dev", "--upstream", listening.addr, "--listen", "127.0.0.1:0", "--data", join(scratch, "relay"), "--token", "dev:relay", "--web", "127.0.0.1:0"],
  "relaying",
).catch((e) => fail(e.message));
if (relay.world !== listening.fingerprint) fail(`the relay speaks for world ${relay.world}, the origin is ${listening.fingerprint}`);
// The relay's own page is another origin, with a cache of its own: dora
// enters cold, every snapshot checked against the world's signature.
const own = await browser.newPage();
own.on("pageerror", (e) => fail(`the relay's page threw: ${e.message}`));
await own.goto(`${relay.web}?player=dora&zone=meadow`);
await own.waitForFunction(() => document.getElementById("entry-stats").textContent.length > 0, null, { timeout: 60_000 });
const rc = JSON.parse(await own.textContent("#entry-stats"));
if (rc.error || rc.snapshot !== rc.shards || rc.objects !== c.objects) fail(`the relay's page enters cold, signed: ${JSON.stringify(rc)}`);
await own.waitForFunction(() => /signed by the world/.test(document.getElementById("status").textContent), null, { timeout: 15_000 });
results.relay_cold = rc;
await own.close();
// ann's page (the origin's, with her cache) through the relay: warm.
const relayed = await browser.newPage();
relayed.on("pageerror", (e) => fail(`the page through the relay threw: ${e.message}`));
await relayed.goto(`${listening.web}?player=ann&zone=meadow&world=${listening.fingerprint}&relay=${encodeURIComponent(relay.web)}`);
await relayed.waitForFunction(() => document.getElementById("entry-stats").textContent.length > 0, null, { timeout: 60_000 });
const v = JSON.parse(await relayed.textContent("#entry-stats"));
if (v.error) fail(`the page through the relay failed: ${v.error}`);
if (v.fresh !== v.shards || v.snapshot !== 0 || v.objects !== c.objects) fail(`through the relay the origin's copies are up to date: ${JSON.stringify(v)}`);
await relayed.waitForFunction(() => /signed by the world/.test(document.getElementById("status").textContent), null, { timeout: 15_000 });
results.relay_warm = v;
await event(native("bob", ["--act", '{"Move":{"zone":0,"x":132,"y":130}}', "--act", '{"Build":{"name":"relayed"}}', "--exit-after-ready"]), "zone_ready").catch((e) => fail(e.message));
await until(relayed, "bob's house, built at the origin, is drawn through the relay", () => game.houses.some((h) => h.owner === "bob" && h.x === 132 && h.y === 130));
results.relay_delta = true;

// 7b. A player whose world token binds her key acts through the relay: the
// page signs each action (WebCrypto Ed25519), the relay passes it up, and
// the world's server checks it before applying it.
const keyFile = join(scratch, "fern.key");
const minted = spawnSync(demo, ["server", "token", "--data", join(scratch, "server"), "--player", "fern", "--new-key", keyFile], { encoding: "utf8" });
if (minted.status !== 0) fail(`minting fern's token: ${minted.stderr}`);
const fernToken = minted.stdout.trim();
const fernKey = readFileSync(keyFile, "utf8").trim();
const signed = await browser.newPage();
signed.on("pageerror", (e) => fail(`the signing page threw: ${e.message}`));
await signed.goto(`${relay.web}?zone=meadow#token=${encodeURIComponent(fernToken)}&key=${encodeURIComponent(fernKey)}`);
await signed.waitForFunction(() => document.getElementById("entry-stats").textContent.length > 0, null, { timeout: 60_000 });
const s = JSON.parse(await signed.textContent("#entry-stats"));
if (s.error) fail(`fern's page through the relay failed: ${s.error}`);
await until(signed, "fern stands somewhere", () => game.player[0] > 0 && game.canStep());
const [fx, fy] = await signed.evaluate(() => game.player);
const fernWas = await signed.evaluate(([x, y]) => game.tileAt(x, y), [fx, fy]);
await signed.keyboard.press(fernWas === 4 ? "f" : "t");
await until(signed, "fern's signed action is processed at the origin and drawn", ([x, y, was]) => game.tileAt(x, y) !== was && game.processed >= 1, [fx, fy, fernWas]);
results.relay_signed_action = { entry: s, acted: true };

// 8. A full storage quota: the entry completes, the client goes on uncached.
const fullOrigin = new URL(listening.web);
fullOrigin.hostname = "localhost"; // another origin: storage of its own
const full = await browser.newPage();
full.on("pageerror", (e) => fail(`the page with a full quota threw: ${e.message}`));
const cdp = await browser.newCDPSession(full);
await cdp.send("Storage.overrideQuotaForOrigin", { origin: fullOrigin.origin, quotaSize: 16 * 1024 });
await full.goto(`${fullOrigin.origin}/?player=erin&zone=meadow`);
await full.waitForFunction(() => document.getElementById("entry-stats").textContent.length > 0, null, { timeout: 60_000 });
const q = JSON.parse(await full.textContent("#entry-stats"));
const now = await relayed.evaluate(() => [...hoard.shards("meadow").values()].reduce((n, copy) => n + copy.objects.length, 0));
if (q.error || q.snapshot !== q.shards || q.objects !== now) fail(`a full quota still enters the whole zone: ${JSON.stringify(q)}`);
await until(full, "the client says it keeps nothing", () => hoard.persistent === false);
await until(full, "erin stands somewhere", () => game.player[0] > 0 && game.canStep());
const [ex, ey] = await full.evaluate(() => game.player);
const was = await full.evaluate(([x, y]) => game.tileAt(x, y), [ex, ey]);
await full.keyboard.press(was === 4 ? "f" : "t");
await until(full, "erin's change is drawn, uncached", ([x, y, was]) => game.tileAt(x, y) !== was && game.processed >= 1, [ex, ey, was]);
results.quota_full = { entry: q, persistent: false, acted: true };
writeFileSync(join(out, "web-check.json"), JSON.stringify(results, null, 2));
console.log(JSON.stringify(results));
const n = results.native_cold;
console.log(
  `browser check passed: cold ${c.snapshot} snapshots ${c.bytes_rx} B in ${c.ms} ms (native ${n.shards_snapshot} snapshots ${n.bytes_rx} B in ${n.elapsed_ms} ms); ` +
    `a changed tile and bob seen; a damaged copy repaired (${p.bytes_rx} B down, ${p.bytes_tx} B up); reload ${w.fresh}/${w.shards} fresh ${w.bytes_rx} B down ${w.bytes_tx} B up in ${w.ms} ms; ` +
    `into the prefetched forest ${x.fresh}/${x.shards} fresh ${x.bytes_rx} B; ` +
    `a full quota: ${q.snapshot} snapshots, uncached, playing on; ` +
    `through a relay: cold ${rc.snapshot} signed snapshots ${rc.bytes_rx} B, warm ${v.fresh}/${v.shards} up to date and signed ${v.bytes_rx} B down ${v.bytes_tx} B up, bob's house seen, fern's signed action applied`,
);
cleanup();
process.exit(0);
