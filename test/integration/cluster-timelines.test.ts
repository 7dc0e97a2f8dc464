// Timeline pages across the nodes of a cluster: a page over streams owned by
// different nodes, asked of any node, is the one merged order of all of them;
// a cursor one node signed pages on at another (the cluster's shared
// secret); backward pages; a long poll wakes for an event committed on
// another node; named timelines and their readers are served by every node
// (PostgreSQL); a node gone leaves its streams partial, not wrong. Two real
// `ticker serve` nodes on a private PostgreSQL.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sleep, until } from "../helpers/cluster-db.js";
import { ownerOf as ownerIn, startCluster, type ClusterNodeProcess, type ClusterWorld } from "../helpers/cluster-nodes.js";

const SHARDS = 4;
let w: ClusterWorld;

beforeAll(async () => {
  w = await startCluster(["t1", "t2"], { clusterShards: SHARDS, leaseMs: 2000 });
}, 90_000);
afterAll(() => w?.stop());

const ownerOf = (stream: string) => ownerIn(w.nodes[0].url, w.nodes, stream, SHARDS);

interface PageEvent {
  stream: string;
  seq: number;
  ingest_ts: number;
  payload: { n: number };
}
interface Page {
  events: PageEvent[];
  next_cursor: string;
  prev_cursor: string;
  has_gap: boolean;
  partial?: string[];
}

async function page(url: string, query: string): Promise<Page> {
  const r = await fetch(`${url}/v1/timelines?${query}`);
  const body = (await r.json()) as Page;
  expect(r.status, JSON.stringify(body)).toBe(200);
  return body;
}

async function publish(url: string, stream: string, n: number): Promise<void> {
  const r = await fetch(`${url}/v1/streams/${stream}/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ events: [{ type: "t", payload: { n } }] }),
  });
  expect(r.status).toBe(200);
}

/** Streams spread over both nodes: the first `perNode` of each owner's among candidates. */
async function spread(prefix: string, perNode: number): Promise<{ streams: string[]; owners: Map<string, ClusterNodeProcess> }> {
  const owners = new Map<string, ClusterNodeProcess>();
  const count = new Map<string, number>();
  for (let i = 0; owners.size < perNode * 2 && i < 200; i++) {
    const id = `${prefix}${i}`;
    const o = await ownerOf(id);
    if ((count.get(o.id) ?? 0) >= perNode) continue;
    count.set(o.id, (count.get(o.id) ?? 0) + 1);
    owners.set(id, o);
  }
  return { streams: [...owners.keys()].sort(), owners };
}

const order = (a: PageEvent, b: PageEvent) => a.ingest_ts - b.ingest_ts || (a.stream < b.stream ? -1 : a.stream > b.stream ? 1 : a.seq - b.seq);

describe("timeline pages in cluster mode", () => {
  it("merges streams of both nodes into one order on either node, a cursor signed by one paging on at the other, both ways", async () => {
    const { streams, owners } = await spread("tl-", 3);
    // Interleaved in time over both nodes: 4 rounds of one event a stream.
    let n = 0;
    for (let round = 0; round < 4; round++) for (const id of streams) await publish(owners.get(id)!.url, id, n++);
    const set = `streams=${streams.join(",")}`;
    const all: PageEvent[] = [];
    let p = await page(w.nodes[0].url, `${set}&limit=5`);
    // A part that did not come back in time (a loaded machine) is partial: its cursor keeps those streams' places.
    for (let hop = 1; p.events.length > 0 || p.partial; hop++) {
      expect(hop).toBeLessThan(200);
      all.push(...p.events);
      // Every other page from the other node: its cursor is the same secret's.
      p = await page(w.nodes[hop % 2].url, `${set}&cursor=${p.next_cursor}&limit=5`);
    }
    expect(all).toHaveLength(n);
    expect(all.map((e) => e.payload.n).sort((a, b) => a - b)).toEqual(Array.from({ length: n }, (_, i) => i));
    expect([...all].sort(order)).toEqual(all);
    for (const e of all) expect(streams).toContain(e.stream);

    // Backward from the head, at the other node: the same events, the other way round.
    const back: PageEvent[] = [];
    let b = await page(w.nodes[1].url, `${set}&direction=backward&limit=7`);
    while (b.events.length > 0 || b.partial) {
      back.push(...b.events);
      b = await page(w.nodes[0].url, `${set}&cursor=${b.next_cursor}&limit=7`);
    }
    expect(back).toEqual([...all].reverse());
  });

  it("wakes a long poll for an event committed on the other node", async () => {
    const { streams, owners } = await spread("lp-", 1);
    const far = streams.find((id) => owners.get(id) !== w.nodes[0])!;
    const set = `streams=${streams.join(",")}`;
    for (const id of streams) await publish(owners.get(id)!.url, id, 0);
    // The head, as a cursor forward from it.
    const head = await page(w.nodes[0].url, `${set}&direction=backward&limit=10`);
    expect(head.events).toHaveLength(2);
    const started = Date.now();
    const waiting = page(w.nodes[0].url, `${set}&cursor=${head.prev_cursor}&wait_ms=10000`);
    await sleep(300);
    await publish(owners.get(far)!.url, far, 99);
    const woken = await waiting;
    expect(woken.events.map((e) => [e.stream, e.payload.n])).toEqual([[far, 99]]);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("answers a malformed part read as any route does: a clear JSON error, nothing read", async () => {
    const at = `${w.nodes[0].url}/v1/cluster/timeline-read`;
    const post = (body: string) => fetch(at, { method: "POST", headers: { "content-type": "application/json" }, body });
    expect((await fetch(at)).status).toBe(405);
    const bad = await post(JSON.stringify({ streams: [], backward: false, limit: 1, nowMs: 0, deadlineMs: 0 }));
    expect([bad.status, ((await bad.json()) as { error: { code: string } }).error.code]).toEqual([400, "invalid_body"]);
    expect((await post("{")).status).toBe(400);
    // A stream this node does not serve: the asking node's map was stale, and it shows the part partial.
    const { streams, owners } = await spread("part-", 1);
    const theirs = streams.find((id) => owners.get(id) !== w.nodes[0])!;
    const moved = await post(
      JSON.stringify({ streams: [{ id: theirs, index: 0, seq: 0 }], backward: false, limit: 1, nowMs: Date.now(), deadlineMs: Date.now() + 1000 }),
    );
    expect([moved.status, ((await moved.json()) as { error: { code: string } }).error.code]).toEqual([503, "shard_moving"]);
  });

  it("serves named timelines and their readers from any node: what one node writes, the next request on the other sees", async () => {
    const { streams, owners } = await spread("nm-", 2);
    for (const id of streams) await publish(owners.get(id)!.url, id, 1);
    const [a, b] = w.nodes;
    const json = (method: string, body: unknown) => ({ method, headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const put = await fetch(`${a.url}/v1/timelines/nm`, json("PUT", { streams }));
    expect(put.status).toBe(201);
    const created = (await put.json()) as { streams: string[]; updated_at: number };
    expect(created.streams).toEqual(streams);
    const shown = (await (await fetch(`${b.url}/v1/timelines/nm`)).json()) as { streams: string[] };
    expect(shown.streams).toEqual(streams);
    const listed = (await (await fetch(`${b.url}/v1/timelines`)).json()) as { timelines: Array<{ name: string }> };
    expect(listed.timelines.map((t) => t.name)).toContain("nm");
    // Its page by name on the other node, and a reader's position stored on one and read on the other.
    const named = async (url: string, query: string) => (await (await fetch(`${url}/v1/timelines/nm/events?${query}`)).json()) as Page;
    const first = await until("a first page", async () => {
      const p = await named(b.url, "limit=2");
      return p.events.length > 0 ? p : null;
    });
    const stored = await fetch(`${b.url}/v1/timelines/nm/readers/r1`, json("PUT", { cursor: first.next_cursor }));
    expect(stored.status).toBe(201);
    const back = (await (await fetch(`${a.url}/v1/timelines/nm/readers/r1`)).json()) as { cursor: string };
    expect(back.cursor).toBe(first.next_cursor);
    const seen = [...first.events];
    for (let p = await named(a.url, `cursor=${back.cursor}`); p.events.length > 0 || p.partial; p = await named(a.url, `cursor=${p.next_cursor}`))
      seen.push(...p.events);
    expect(seen.map((e) => e.stream).sort()).toEqual(streams);
    // A stream that does not exist anywhere in the cluster is refused; one of the other node's is not.
    const unknown = await fetch(`${a.url}/v1/timelines/nm2`, json("PUT", { streams: ["nm-nowhere"] }));
    expect([unknown.status, ((await unknown.json()) as { error: { code: string; stream: string } }).error]).toMatchObject([
      404,
      { code: "stream_not_found", stream: "nm-nowhere" },
    ]);
    // A new set on one node: the old set's readers are gone on the other.
    const changed = await fetch(`${b.url}/v1/timelines/nm`, json("PUT", { streams: streams.slice(0, 2) }));
    expect(changed.status).toBe(200);
    expect((await fetch(`${a.url}/v1/timelines/nm/readers/r1`)).status).toBe(404);
    expect((await fetch(`${a.url}/v1/timelines/nm`, { method: "DELETE" })).status).toBe(204);
    expect((await fetch(`${b.url}/v1/timelines/nm`)).status).toBe(404);
    expect((await fetch(`${b.url}/v1/timelines/nm/events`)).status).toBe(404);
  });

  it("leaves the streams of a node that is gone partial, and serves them again once another node has taken them", async () => {
    const { streams, owners } = await spread("gone-", 2);
    for (const id of streams) await publish(owners.get(id)!.url, id, 1);
    const victim = w.nodes[1];
    const survivor = w.nodes[0];
    const theirs = streams.filter((id) => owners.get(id) === victim);
    victim.server.killNow();
    await victim.server.ended;
    const set = `streams=${streams.join(",")}`;
    const cut = await page(survivor.url, set);
    expect(cut.partial).toEqual(theirs);
    expect(cut.events.map((e) => e.stream).sort()).toEqual(streams.filter((id) => !theirs.includes(id)));
    // The survivor takes the victim's shards once their leases run out: the same page is whole again.
    const whole = await until("the page whole again", async () => {
      const r = await fetch(`${survivor.url}/v1/timelines?${set}`);
      const body = (await r.json()) as Page;
      return r.status === 200 && !body.partial ? body : (await sleep(200), null);
    });
    expect(whole.events.map((e) => e.stream).sort()).toEqual(streams);
  }, 60_000);
});
