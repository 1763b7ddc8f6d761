// The browser half of the cross-client test (tests/it/browser.rs): a page in
// Debian's Chromium (headless, playwright-core, a fresh profile) uses
// @hoard/web (web/dist/hoard.js) to sign in and enter a zone of the test's
// server, then takes commands on stdin, one JSON line each, and answers on
// stdout, one JSON line each:
//
//   (on start)                        → {"event":"ready","stats":{…}}, or
//                                       {"event":"entry-failed","name":…,"message":…}
//                                       when signing in or entering fails
//   {"act":[kind, value]}             → {"event":"processed"} | {"event":"refused","code":…,"message":…}
//   {"expect":[component, id, value]} → {"event":"seen"} once object `id`'s
//                                       `component` decodes to `value` (JSON-equal)
//   {"damage":shard}                  → {"event":"damaged"} once the live copy of
//                                       `shard` claims one seq less than it has
//                                       (the next delta will not follow it)
//   {"repairs":true}                  → {"event":"repairs","live":n}
//
// It ends when stdin closes, and after 120 s whatever happens.
// Usage: node test/cross.mjs '{"url":…,"certificateHashes":[hex…],"token":…,"registry":[…],"zone":…,"world":hex|null}'
// (`world`: the world to require, checking every shard's signed head, as
// through a relay).
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const options = JSON.parse(process.argv[2] ?? "{}");
const here = new URL(".", import.meta.url).pathname;
const client = readFileSync(join(here, "../dist/hoard.js"));
const profile = mkdtempSync(join(tmpdir(), "hoard-cross-"));
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
let browser;
let page;
const http = createServer((request, response) => {
  if (request.url === "/hoard.js") {
    response.setHeader("Content-Type", "text/javascript");
    return response.end(client);
  }
  response.setHeader("Content-Type", "text/html");
  response.end("<!doctype html><title>hoard cross-client test</title>");
});

function end(code, why) {
  if (why) say({ event: "failed", error: why });
  browser?.close().catch(() => {});
  http.close();
  rmSync(profile, { recursive: true, force: true });
  process.exit(code);
}
process.on("uncaughtException", (e) => end(1, e.stack ?? String(e)));
process.on("unhandledRejection", (e) => end(1, e?.stack ?? String(e)));
setTimeout(() => end(1, "the browser half took over 120 s"), 120_000).unref();

await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
});
page = await browser.newPage();
page.on("pageerror", (e) => end(1, `the page threw: ${e.message}`));
await page.goto(`http://127.0.0.1:${http.address().port}/`);
const entered = await page.evaluate(async (o) => {
  const lib = await import("/hoard.js");
  const unhex = (h) => new Uint8Array(h.match(/../g).map((b) => parseInt(b, 16)));
  const failed = (e) => ({ error: { name: e?.constructor?.name ?? "Error", message: String(e?.message ?? e) } });
  const hoard = await lib.HoardWebClient.connect({
    url: o.url,
    certificateHashes: o.certificateHashes.map(unhex),
    token: o.token,
    registry: o.registry,
    enter: o.zone,
    world: o.world ?? undefined,
  }).catch((e) => e);
  if (hoard instanceof Error) return failed(hoard);
  window.lib = lib;
  window.hoard = hoard;
  window.zone = o.zone;
  // The value of `component` of object `id` in the zone, as JSON.
  window.valueOf = (component, id) => {
    for (const copy of hoard.shards(o.zone)?.values() ?? []) {
      const object = copy.objects.find((x) => x.id === BigInt(id));
      if (object) return JSON.stringify(lib.components(object.state).get(component) ?? null);
    }
    return null;
  };
  return hoard.firstEntry.then((stats) => ({ stats }), failed);
}, options);
if (entered.error) say({ event: "entry-failed", name: entered.error.name, message: entered.error.message });
else say({ event: "ready", stats: entered.stats });

for await (const line of createInterface({ input: process.stdin })) {
  const command = JSON.parse(line);
  if (command.act) {
    const [kind, value] = command.act;
    const outcome = await page.evaluate(
      ([kind, value]) =>
        hoard.act(kind, value).then(
          () => ({ event: "processed" }),
          (e) => ({ event: "refused", code: e.code, message: e.message }),
        ),
      [kind, value],
    );
    say(outcome);
  } else if (command.damage !== undefined) {
    await page.evaluate((shard) => {
      const live = hoard.live.get(zone);
      const copy = live.get(BigInt(shard));
      live.set(copy.shard, { ...copy, seq: copy.seq - 1n });
    }, command.damage);
    say({ event: "damaged" });
  } else if (command.repairs) {
    say({ event: "repairs", live: await page.evaluate(() => hoard.liveRepairs) });
  } else if (command.expect) {
    const [component, id, value] = command.expect;
    await page.waitForFunction(([c, id, v]) => valueOf(c, id) === v, [component, id, JSON.stringify(value)], { timeout: 30_000 });
    say({ event: "seen" });
  }
}
end(0);
