// The demo game in a browser: the same world and rules as the terminal
// client (`hoard-demo play`), drawn on a canvas. Terrain, houses and items
// come from the zone's shards (every one digest-checked by @hoard/web and
// kept in IndexedDB); other players from the zone's transient state; the
// inventory from the player's own shard of zone `inventory`. The player walks
// with the arrows (or WASD), one step at most every 70 ms (the server allows
// 15 a second); walking towards an edge prefetches the zone beyond it, so
// crossing costs no more than a `Fresh`. g picks up, r drops, b builds, x
// demolishes, t plants, f digs (docs/PROTOCOL.md, "The demo game").
//
// The page shows the last entry's figures, and writes them as JSON into
// `#entry-stats` (the headless client's `zone_ready` fields); `window.game`
// exposes what is drawn, for tests.

import type { EntryStats, HoardWebClient, ShardCopy } from "@hoard/web";
import { ServerError, components, decodeValue } from "@hoard/web";

/** Zone side in tiles. */
export const ZONE_SIZE = 256;
/** Distance from an edge at which the zone beyond it is prefetched. */
const PREFETCH_WITHIN = 32;
/** The shortest time between two steps. */
const STEP_EVERY_MS = 70;
/** Tile side in pixels. */
const TILE = 16;
/** The zone holding each player's inventory shard. */
const INVENTORY_ZONE = "inventory";

/** Grass, water, sand, rock, forest, road (the world files' glyphs, in order). */
const GLYPHS = [".", "~", ":", "^", "T", "="];
const TILE_COLOURS = ["#5a8f3c", "#2f5f9e", "#d8c68a", "#7b7770", "#2d5a27", "#a08050"];
const ITEM_COLOURS: Record<string, string> = { wood: "#9b6a3c", stone: "#b8b8b8", gold: "#f0c419", axe: "#d04040" };

interface ZoneInfo {
  index: number;
  north: string | null;
  south: string | null;
  east: string | null;
  west: string | null;
}
interface House {
  id: bigint;
  owner: string;
  name: string;
  x: number;
  y: number;
  w: number;
  h: number;
  colour: [number, number, number];
}
interface Item {
  id: bigint;
  kind: string;
  count: number;
  x: number;
  y: number;
}
/** What one shard holds, decoded once per digest. */
interface ShardView {
  digest: string;
  info?: ZoneInfo;
  rows: { x: number; y: number; tiles: number[] }[];
  houses: House[];
  items: Item[];
}
type Side = "north" | "south" | "east" | "west";

const asNumber = (v: unknown): number => (typeof v === "bigint" ? Number(v) : (v as number));
const hexOf = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** Decodes one shard's objects into the game's things. */
function decodeShard(copy: ShardCopy): ShardView {
  const view: ShardView = { digest: hexOf(copy.digest), rows: [], houses: [], items: [] };
  for (const o of copy.objects) {
    for (const [name, v] of components(o.state)) {
      const f = v as unknown[];
      if (name === "terrain") {
        const tiles = [...(f[2] as string)].map((g) => Math.max(0, GLYPHS.indexOf(g)));
        view.rows.push({ x: asNumber(f[0]), y: asNumber(f[1]), tiles });
      } else if (name === "house") {
        const [w, h] = (f[4] as unknown[]).map(asNumber);
        const colour = (f[5] as unknown[]).map(asNumber) as [number, number, number];
        view.houses.push({ id: o.id, owner: f[0] as string, name: f[1] as string, x: asNumber(f[2]), y: asNumber(f[3]), w, h, colour });
      } else if (name === "item") {
        view.items.push({ id: o.id, kind: f[0] as string, count: asNumber(f[1]), x: asNumber(f[2]), y: asNumber(f[3]) });
      } else if (name === "zone") {
        const side = (i: number) => (typeof f[i] === "string" ? (f[i] as string) : null);
        view.info = { index: asNumber(f[0]), north: side(1), south: side(2), east: side(3), west: side(4) };
      }
    }
  }
  return view;
}

/** The players of a zone's transient state: `[[name, x, y]]`. */
function decodePresence(payload: Uint8Array): [string, number, number][] {
  try {
    const list = decodeValue(payload) as unknown[];
    return list.map((p) => {
      const [name, x, y] = p as unknown[];
      return [name as string, asNumber(x), asNumber(y)];
    });
  } catch {
    return []; // an undecodable presence shows nobody
  }
}

/** The game in one page. */
export class Game {
  zone = "";
  info: ZoneInfo | null = null;
  player: [number, number] = [ZONE_SIZE / 2, ZONE_SIZE / 2];
  /** Tile kinds of the zone, row by row. */
  readonly tiles = new Uint8Array(ZONE_SIZE * ZONE_SIZE);
  houses: House[] = [];
  items: Item[] = [];
  inventory: Item[] = [];
  others: [string, number, number][] = [];
  lastEntry: EntryStats | null = null;
  message = "";
  /** Actions the server confirmed and refused, for the player and for tests. */
  processed = 0;
  refused = 0;
  private shardViews = new Map<bigint, ShardView>();
  private prefetched = new Set<string>();
  private lastStep = 0;
  private crossing = false;
  private readonly ctx: CanvasRenderingContext2D;

  constructor(
    private readonly client: HoardWebClient,
    private readonly canvas: HTMLCanvasElement,
    private readonly onEntry: (stats: EntryStats) => void,
    private readonly onChange: () => void,
  ) {
    this.ctx = canvas.getContext("2d")!;
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

  /** Enters `zone` (and the inventory), standing at `at`. */
  async start(zone: string, at: [number, number] = [ZONE_SIZE / 2, ZONE_SIZE / 2]): Promise<EntryStats> {
    const stats = await this.enter(zone, at);
    await this.client.enterZone(INVENTORY_ZONE).catch((e) => (this.message = `no inventory: ${e.message}`));
    this.draw();
    return stats;
  }

  /** The tile kind at (x, y) of the zone drawn. */
  tileAt(x: number, y: number): number {
    return this.tiles[y * ZONE_SIZE + x];
  }

  /** Whether a step now would be taken (not crossing, and the last one long enough ago). */
  canStep(): boolean {
    return !this.crossing && performance.now() - this.lastStep >= STEP_EVERY_MS;
  }

  /** Handles a key; `true` if it was the game's. */
  key(key: string): boolean {
    const step: Record<string, Side> = {
      ArrowUp: "north", w: "north", ArrowDown: "south", s: "south",
      ArrowRight: "east", d: "east", ArrowLeft: "west", a: "west",
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
          (h) => h.owner === this.client.perspective && Math.abs(h.x - x) <= 2 && Math.abs(h.y - y) <= 2,
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
  act(action: unknown, done: string): Promise<void> {
    return this.client.act("action", action).then(
      () => {
        this.processed++;
        this.say(done);
      },
      (e: Error) => {
        this.refused++;
        this.say(e instanceof ServerError ? `refused (${e.code}): ${e.message}` : `failed: ${e.message}`);
      },
    );
  }

  private say(text: string): true {
    this.message = text;
    this.draw();
    return true;
  }

  private async enter(zone: string, at: [number, number]): Promise<EntryStats> {
    this.zone = zone;
    this.shardViews.clear();
    this.others = [];
    const stats = await this.client.enterZone(zone);
    this.rebuild(this.client.shards(zone)!);
    if (!this.info) throw new Error(`zone ${zone} has no \`zone\` object; is this a hoard-demo world?`);
    this.player = at;
    this.prefetched.clear();
    this.lastEntry = stats;
    this.onEntry(stats);
    this.move(at);
    return stats;
  }

  private move([x, y]: [number, number]): void {
    const index = this.info!.index;
    this.client.act("action", { Move: [index, x, y] }).catch((e: Error) => {
      // The server's place for us is in the zone's presence; go back there.
      const me = this.client.transientOf(this.zone);
      const mine = me && decodePresence(me).find(([name]) => name === this.client.perspective);
      if (mine) this.player = [mine[1], mine[2]];
      this.say(e instanceof ServerError ? `can't go there (${e.code}): ${e.message}` : `failed: ${e.message}`);
    });
  }

  private step(side: Side): void {
    const now = performance.now();
    if (!this.canStep()) return;
    this.lastStep = now;
    const [x, y] = this.player;
    const last = ZONE_SIZE - 1;
    const atEdge = { north: y === 0, south: y === last, east: x === last, west: x === 0 }[side];
    if (atEdge) {
      const next = this.info![side];
      if (!next) return void this.say("the world ends here");
      const arrival: [number, number] = { north: [x, last], south: [x, 0], east: [0, y], west: [last, y] }[side] as [number, number];
      this.cross(next, arrival);
      return;
    }
    const to: [number, number] = { north: [x, y - 1], south: [x, y + 1], east: [x + 1, y], west: [x - 1, y] }[side] as [number, number];
    this.player = to;
    this.move(to);
    this.prefetchAhead(side);
    this.draw();
  }

  /** Prefetches the zone beyond the edge the player walks towards, once within reach. */
  private prefetchAhead(side: Side): void {
    const [x, y] = this.player;
    const distance = { north: y, south: ZONE_SIZE - 1 - y, east: ZONE_SIZE - 1 - x, west: x }[side];
    const next = this.info![side];
    if (!next || distance >= PREFETCH_WITHIN || this.prefetched.has(next)) return;
    this.prefetched.add(next);
    this.say(`prefetching ${next}`);
    this.client.prefetch(next).catch((e: Error) => this.say(`could not prefetch ${next}: ${e.message}`));
  }

  private async cross(next: string, arrival: [number, number]): Promise<void> {
    this.crossing = true;
    const from = this.zone;
    try {
      this.say(`entering ${next}…`);
      await this.client.leaveZone(from);
      await this.enter(next, arrival);
      this.say("");
    } catch (e) {
      this.say(`could not enter ${next}: ${(e as Error).message}; back to ${from}`);
      await this.enter(from, this.player).catch(() => {});
    } finally {
      this.crossing = false;
    }
  }

  /** Redraws the zone's things from its shards (each decoded once per digest). */
  private rebuild(shards: ReadonlyMap<bigint, ShardCopy>): void {
    const views = new Map<bigint, ShardView>();
    const changed: ShardView[] = [];
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
    // Only the changed shards' terrain is written again.
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

  private rebuildInventory(shards: ReadonlyMap<bigint, ShardCopy>): void {
    this.inventory = [...shards.values()].flatMap((c) => decodeShard(c).items);
    this.onChange();
  }

  /** Draws the map around the player. */
  draw(): void {
    const ctx = this.ctx;
    const cols = Math.floor(this.canvas.width / TILE);
    const rows = Math.floor(this.canvas.height / TILE);
    const clamp = (v: number, span: number) => Math.min(Math.max(0, v - Math.floor(span / 2)), ZONE_SIZE - span);
    const left = clamp(this.player[0], cols);
    const top = clamp(this.player[1], rows);
    const inView = (x: number, y: number) => x >= left && x < left + cols && y >= top && y < top + rows;
    const px = (x: number) => (x - left) * TILE;
    const py = (y: number) => (y - top) * TILE;
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
    const person = (x: number, y: number, name: string, colour: string) => {
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
}
