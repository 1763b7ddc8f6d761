// demo/game.ts
import { ServerError, components, decodeValue } from "@hoard/web";
var ZONE_SIZE = 256;
var PREFETCH_WITHIN = 32;
var STEP_EVERY_MS = 70;
var TILE = 16;
var INVENTORY_ZONE = "inventory";
var GLYPHS = [".", "~", ":", "^", "T", "="];
var TILE_COLOURS = ["#5a8f3c", "#2f5f9e", "#d8c68a", "#7b7770", "#2d5a27", "#a08050"];
var ITEM_COLOURS = { wood: "#9b6a3c", stone: "#b8b8b8", gold: "#f0c419", axe: "#d04040" };
var asNumber = (v) => typeof v === "bigint" ? Number(v) : v;
var hexOf = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
function decodeShard(copy) {
  const view = { digest: hexOf(copy.digest), rows: [], houses: [], items: [] };
  for (const o of copy.objects) {
    for (const [name, v] of components(o.state)) {
      const f = v;
      if (name === "terrain") {
        const tiles = [...f[2]].map((g) => Math.max(0, GLYPHS.indexOf(g)));
        view.rows.push({ x: asNumber(f[0]), y: asNumber(f[1]), tiles });
      } else if (name === "house") {
        const [w, h] = f[4].map(asNumber);
        const colour = f[5].map(asNumber);
        view.houses.push({ id: o.id, owner: f[0], name: f[1], x: asNumber(f[2]), y: asNumber(f[3]), w, h, colour });
      } else if (name === "item") {
        view.items.push({ id: o.id, kind: f[0], count: asNumber(f[1]), x: asNumber(f[2]), y: asNumber(f[3]) });
      } else if (name === "zone") {
        const side = (i) => typeof f[i] === "string" ? f[i] : null;
        view.info = { index: asNumber(f[0]), north: side(1), south: side(2), east: side(3), west: side(4) };
      }
    }
  }
  return view;
}
function decodePresence(payload) {
  try {
    const list = decodeValue(payload);
    return list.map((p) => {
      const [name, x, y] = p;
      return [name, asNumber(x), asNumber(y)];
    });
  } catch {
    return [];
  }
}
var Game = class {
  constructor(client, canvas, onEntry, onChange) {
    this.client = client;
    this.canvas = canvas;
    this.onEntry = onEntry;
    this.onChange = onChange;
    this.ctx = canvas.getContext("2d");
    client.onZone((zone, shards) => {
      if (zone === this.zone) this.rebuild(shards);
      if (zone === INVENTORY_ZONE) this.rebuildInventory(shards);
      this.draw();
    });
    client.onTransient((zone, payload) => {
      if (zone !== this.zone) return;
      this.others = decodePresence(payload).filter(([name]) => name !== client.perspective);
      this.draw();
    });
  }
  client;
  canvas;
  onEntry;
  onChange;
  zone = "";
  info = null;
  player = [ZONE_SIZE / 2, ZONE_SIZE / 2];
  /** Tile kinds of the zone, row by row. */
  tiles = new Uint8Array(ZONE_SIZE * ZONE_SIZE);
  houses = [];
  items = [];
  inventory = [];
  others = [];
  lastEntry = null;
  message = "";
  /** Actions the server confirmed and refused, for the player and for tests. */
  processed = 0;
  refused = 0;
  shardViews = /* @__PURE__ */ new Map();
  prefetched = /* @__PURE__ */ new Set();
  lastStep = 0;
  crossing = false;
  ctx;
  /** Enters `zone` (and the inventory), standing at `at`. */
  async start(zone, at = [ZONE_SIZE / 2, ZONE_SIZE / 2]) {
    const stats = await this.enter(zone, at);
    await this.client.enterZone(INVENTORY_ZONE).catch((e) => this.message = `no inventory: ${e.message}`);
    this.draw();
    return stats;
  }
  /** The tile kind at (x, y) of the zone drawn. */
  tileAt(x, y) {
    return this.tiles[y * ZONE_SIZE + x];
  }
  /** Whether a step now would be taken (not crossing, and the last one long enough ago). */
  canStep() {
    return !this.crossing && performance.now() - this.lastStep >= STEP_EVERY_MS;
  }
  /** Handles a key; `true` if it was the game's. */
  key(key) {
    const step = {
      ArrowUp: "north",
      w: "north",
      ArrowDown: "south",
      s: "south",
      ArrowRight: "east",
      d: "east",
      ArrowLeft: "west",
      a: "west"
    };
    if (step[key]) {
      this.step(step[key]);
      return true;
    }
    const [x, y] = this.player;
    switch (key) {
      case "g": {
        const item = this.items.find((i) => Math.abs(i.x - x) <= 1 && Math.abs(i.y - y) <= 1);
        if (!item) return this.say("nothing to pick up here");
        this.act({ PickUp: [item.id] }, `picked up ${item.count} ${item.kind}`);
        return true;
      }
      case "r": {
        const item = this.inventory[0];
        if (!item) return this.say("your inventory is empty");
        this.act({ Drop: [item.id] }, `dropped ${item.count} ${item.kind}`);
        return true;
      }
      case "b":
        this.act({ Build: [`${this.client.perspective}'s house`] }, "built a house");
        return true;
      case "x": {
        const own = this.houses.find(
          (h) => h.owner === this.client.perspective && Math.abs(h.x - x) <= 2 && Math.abs(h.y - y) <= 2
        );
        if (!own) return this.say("none of your houses is near");
        this.act({ Demolish: [own.id] }, "demolished your house");
        return true;
      }
      case "t":
        this.act({ Terraform: [4] }, "planted a forest");
        return true;
      case "f":
        this.act({ Terraform: [1] }, "dug a pond");
        return true;
    }
    return false;
  }
  /** Sends an action; the message says what became of it. */
  act(action, done) {
    return this.client.act("action", action).then(
      () => {
        this.processed++;
        this.say(done);
      },
      (e) => {
        this.refused++;
        this.say(e instanceof ServerError ? `refused (${e.code}): ${e.message}` : `failed: ${e.message}`);
      }
    );
  }
  say(text) {
    this.message = text;
    this.draw();
    return true;
  }
  async enter(zone, at) {
    this.zone = zone;
    this.shardViews.clear();
    this.others = [];
    const stats = await this.client.enterZone(zone);
    this.rebuild(this.client.shards(zone));
    if (!this.info) throw new Error(`zone ${zone} has no \`zone\` object; is this a hoard-demo world?`);
    this.player = at;
    this.prefetched.clear();
    this.lastEntry = stats;
    this.onEntry(stats);
    this.move(at);
    return stats;
  }
  move([x, y]) {
    const index = this.info.index;
    this.client.act("action", { Move: [index, x, y] }).catch((e) => {
      const me = this.client.transientOf(this.zone);
      const mine = me && decodePresence(me).find(([name]) => name === this.client.perspective);
      if (mine) this.player = [mine[1], mine[2]];
      this.say(e instanceof ServerError ? `can't go there (${e.code}): ${e.message}` : `failed: ${e.message}`);
    });
  }
  step(side) {
    const now = performance.now();
    if (!this.canStep()) return;
    this.lastStep = now;
    const [x, y] = this.player;
    const last = ZONE_SIZE - 1;
    const atEdge = { north: y === 0, south: y === last, east: x === last, west: x === 0 }[side];
    if (atEdge) {
      const next = this.info[side];
      if (!next) return void this.say("the world ends here");
      const arrival = { north: [x, last], south: [x, 0], east: [0, y], west: [last, y] }[side];
      this.cross(next, arrival);
      return;
    }
    const to = { north: [x, y - 1], south: [x, y + 1], east: [x + 1, y], west: [x - 1, y] }[side];
    this.player = to;
    this.move(to);
    this.prefetchAhead(side);
    this.draw();
  }
  /** Prefetches the zone beyond the edge the player walks towards, once within reach. */
  prefetchAhead(side) {
    const [x, y] = this.player;
    const distance = { north: y, south: ZONE_SIZE - 1 - y, east: ZONE_SIZE - 1 - x, west: x }[side];
    const next = this.info[side];
    if (!next || distance >= PREFETCH_WITHIN || this.prefetched.has(next)) return;
    this.prefetched.add(next);
    this.say(`prefetching ${next}`);
    this.client.prefetch(next).catch((e) => this.say(`could not prefetch ${next}: ${e.message}`));
  }
  async cross(next, arrival) {
    this.crossing = true;
    const from = this.zone;
    try {
      this.say(`entering ${next}\u2026`);
      await this.client.leaveZone(from);
      await this.enter(next, arrival);
      this.say("");
    } catch (e) {
      this.say(`could not enter ${next}: ${e.message}; back to ${from}`);
      await this.enter(from, this.player).catch(() => {
      });
    } finally {
      this.crossing = false;
    }
  }
  /** Redraws the zone's things from its shards (each decoded once per digest). */
  rebuild(shards) {
    const views = /* @__PURE__ */ new Map();
    const changed = [];
    for (const [shard, copy] of shards) {
      const known = this.shardViews.get(shard);
      if (known && known.digest === hexOf(copy.digest)) {
        views.set(shard, known);
      } else {
        const view = decodeShard(copy);
        views.set(shard, view);
        changed.push(view);
      }
    }
    this.shardViews = views;
    this.houses = [...views.values()].flatMap((v) => v.houses);
    this.items = [...views.values()].flatMap((v) => v.items);
    for (const view of changed) {
      if (view.info) this.info = view.info;
      for (const row of view.rows) {
        if (row.y >= ZONE_SIZE) continue;
        row.tiles.forEach((t, i) => {
          if (row.x + i < ZONE_SIZE) this.tiles[row.y * ZONE_SIZE + row.x + i] = t;
        });
      }
    }
    this.onChange();
  }
  rebuildInventory(shards) {
    this.inventory = [...shards.values()].flatMap((c) => decodeShard(c).items);
    this.onChange();
  }
  /** Draws the map around the player. */
  draw() {
    const ctx = this.ctx;
    const cols = Math.floor(this.canvas.width / TILE);
    const rows = Math.floor(this.canvas.height / TILE);
    const clamp = (v, span) => Math.min(Math.max(0, v - Math.floor(span / 2)), ZONE_SIZE - span);
    const left = clamp(this.player[0], cols);
    const top = clamp(this.player[1], rows);
    const inView = (x, y) => x >= left && x < left + cols && y >= top && y < top + rows;
    const px = (x) => (x - left) * TILE;
    const py = (y) => (y - top) * TILE;
    for (let y = top; y < top + rows; y++) {
      for (let x = left; x < left + cols; x++) {
        ctx.fillStyle = TILE_COLOURS[this.tileAt(x, y)] ?? "#000";
        ctx.fillRect(px(x), py(y), TILE, TILE);
      }
    }
    ctx.font = "10px system-ui, sans-serif";
    for (const h of this.houses) {
      if (!inView(h.x, h.y) && !inView(h.x + h.w - 1, h.y + h.h - 1)) continue;
      ctx.fillStyle = `rgb(${h.colour.join(",")})`;
      ctx.fillRect(px(h.x) + 1, py(h.y) + 1, h.w * TILE - 2, h.h * TILE - 2);
      ctx.strokeStyle = "#222";
      ctx.strokeRect(px(h.x) + 1, py(h.y) + 1, h.w * TILE - 2, h.h * TILE - 2);
    }
    for (const i of this.items) {
      if (!inView(i.x, i.y)) continue;
      ctx.fillStyle = ITEM_COLOURS[i.kind] ?? "#e0e0e0";
      ctx.fillRect(px(i.x) + 4, py(i.y) + 4, TILE - 8, TILE - 8);
    }
    const person = (x, y, name, colour) => {
      if (!inView(x, y)) return;
      ctx.fillStyle = colour;
      ctx.beginPath();
      ctx.arc(px(x) + TILE / 2, py(y) + TILE / 2, TILE / 2 - 2, 0, 2 * Math.PI);
      ctx.fill();
      ctx.fillStyle = "#fff";
      ctx.fillText(name, px(x) + TILE, py(y));
    };
    for (const [name, x, y] of this.others) person(x, y, name, "#e060e0");
    person(this.player[0], this.player[1], this.client.perspective, "#ffe040");
  }
};
export {
  Game,
  ZONE_SIZE
};
