// The browser check: the demo server with --web, Debian's Chromium driven
// headless by playwright-core (nothing downloaded). A first visit enters the
// meadow cold (every shard a snapshot, digests checked); a reload enters
// warm from the page's IndexedDB cache (every shard fresh); a browser
// restart with the same profile directory is warm too. Writes a screenshot
// and the entries' figures under $OUT (default: target/web-check).
//
// Usage: node test/browser.mjs [path/to/hoard-demo]
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from "node:fs";
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

function fail(why) {
  console.error(`browser check FAILED: ${why}`);
  process.exitCode = 1;
  cleanup();
  process.exit(1);
}

const server = spawn(demo, ["server", "--dev", "--data", join(scratch, "server"), "--listen", "127.0.0.1:0", "--web", "127.0.0.1:0"], {
  stdio: ["ignore", "pipe", "inherit"],
});
let browser;
function cleanup() {
  clearTimeout(deadline);
  browser?.close().catch(() => {});
  server.kill("SIGTERM");
  rmSync(scratch, { recursive: true, force: true });
}

const listening = await new Promise((resolveLine, reject) => {
  server.on("exit", (code) => reject(new Error(`the server exited with ${code}`)));
  createInterface({ input: server.stdout }).on("line", (line) => {
    try {
      const event = JSON.parse(line);
      if (event.event === "listening") resolveLine(event);
    } catch {}
  });
}).catch((e) => fail(e.message));
if (!listening.web) fail("the server did not say where its page is");

const profile = join(scratch, "profile");
async function launch() {
  // As root in a container Chromium needs --no-sandbox; the background
  // services are off (this machine has no network beyond loopback).
  return chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

async function entry(page, reload) {
  if (reload) await page.reload();
  else await page.goto(`${listening.web}?player=ann&zone=meadow`);
  await page.waitForFunction(() => document.getElementById("entry-stats").textContent.length > 0, null, { timeout: 60_000 });
  const stats = JSON.parse(await page.textContent("#entry-stats"));
  if (stats.error) fail(`the page failed: ${stats.error}`);
  return stats;
}

const results = {};
browser = await launch();
let page = await browser.newPage();
page.on("console", (m) => console.log(`[page] ${m.text()}`));
results.cold = await entry(page, false);
const c = results.cold;
if (c.shards < 1 || c.snapshot !== c.shards || c.fresh !== 0) fail(`a cold entry is all snapshots: ${JSON.stringify(c)}`);
results.reload = await entry(page, true);
const w = results.reload;
if (w.fresh !== w.shards || w.snapshot !== 0) fail(`a reload is all fresh: ${JSON.stringify(w)}`);
if (w.objects !== c.objects) fail(`a warm entry shows the same objects: ${w.objects} vs ${c.objects}`);
await page.screenshot({ path: join(out, "web-demo.png") });
await browser.close();
browser = await launch();
page = await browser.newPage();
results.restart = await entry(page, false);
const r = results.restart;
if (r.fresh !== r.shards) fail(`after a browser restart the cache is still there: ${JSON.stringify(r)}`);
writeFileSync(join(out, "web-check.json"), JSON.stringify(results, null, 2));
console.log(JSON.stringify(results));
console.log(`browser check passed: cold ${c.snapshot} snapshots ${c.bytes_rx} B, reload ${w.fresh}/${w.shards} fresh ${w.bytes_rx} B down ${w.bytes_tx} B up`);
cleanup();
process.exit(0);
