// ticker/client in front of three real cluster nodes (`ticker serve
// --cluster-postgres-url` on a private PostgreSQL), given only the first
// node's url: a stream owned elsewhere costs one redirect, then its requests
// go straight to the owner (the client's `redirects` stops counting); a
// replay and a grouped consumer through that node reach the owner too; a
// consumer whose shard moves to a node that joined reconnects to it; and a
// producer publishing through the kill -9 of a stream's owner goes on once
// another node holds the shard, every acknowledged event there exactly once.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { Ticker, type Subscription, type TickerError } from "../../src/client/index.js";
import { clusterShardOf } from "../../src/cluster/leases.js";
import { clusterDb, until, type ClusterDb } from "../helpers/cluster-db.js";
import { scrape } from "../helpers/prometheus.js";
import { clusterSetup, clusterView, settled, startNode, type ClusterNodeProcess, type ClusterSetup, type ClusterView } from "../helpers/cluster-nodes.js";

const SHARDS = 8;
let db: ClusterDb;
let setup: ClusterSetup;
let nodes: ClusterNodeProcess[] = [];
const clients: Ticker[] = [];

beforeAll(async () => {
  db = await clusterDb();
  const { url } = await db.freshUrl();
  // Segments of the default size: nothing here is archived, so a non-owner serves no page itself (see the replay test).
  setup = clusterSetup(url, { clusterShards: SHARDS, leaseMs: 2000 });
  nodes = await Promise.all(["n1", "n2", "n3"].map((id) => startNode(setup, id)));
  await settled(nodes, SHARDS);
}, 90_000);
afterAll(async () => {
  for (const c of clients) c.close();
  await Promise.allSettled(nodes.map((n) => n.server.stop()));
  await db?.stop();
});

/** A client of node n1 only: everything it reaches elsewhere, it learned from n1's redirects. */
function client(): Ticker {
  const t = new Ticker({ url: nodes[0].url });
  clients.push(t);
  return t;
}

/** A stream name (`prefix-<i>`) whose cluster shard `view` gives to `owner`, other than those in `not`. */
function ownedBy(view: ClusterView, owner: string, prefix: string, not: string[] = []): string {
  for (let i = 0; ; i++) {
    const name = `${prefix}-${i}`;
    if (view.shards[clusterShardOf(name, SHARDS)].owner === owner && !not.includes(name)) return name;
  }
}

const events = (from: number, n: number) => Array.from({ length: n }, (_, i) => ({ type: "t", payload: from + i }));

async function payloads(t: Ticker, stream: string, pageEvents?: number): Promise<number[]> {
  const out: number[] = [];
  for await (const e of t.replay(stream, { pageEvents })) out.push(e.payload as number);
  return out;
}

const seqRange = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const distinct = (seqs: number[]) => [...new Set(seqs)].sort((a, b) => a - b);

/** Pulls from `sub` (acking each event) until seq `last` comes; the seqs in the order they came. Not `for await`: its break would close `sub`. */
async function pull(sub: Subscription, last: number): Promise<number[]> {
  const seqs: number[] = [];
  for (;;) {
    const r = await sub.next();
    if (r.done) throw new Error(`the subscription of ${sub.stream} ended before seq ${last}`);
    seqs.push(r.value.seq);
    sub.ack(r.value.seq);
    if (r.value.seq === last) return seqs;
  }
}

describe("ticker/client in front of a cluster", () => {
  it("publishes through one node to streams owned by the other two: one redirect each, then straight to the owner", async () => {
    const view = await clusterView(nodes[0].url);
    const onB = ownedBy(view, "n2", "pub");
    const onC = ownedBy(view, "n3", "pub");
    /** The 307s n1 answered: the server's side of the client's count. */
    const redirected = async () => (await scrape(nodes[0].url)).sum("ticker_http_responses_total", { status: "307" });
    const before = await redirected();
    const t = client();
    const p = t.producer({ lingerMs: 0 });
    for (let i = 0; i < 10; i++) {
      await p.send(onB, events(i * 20, 20));
      await p.send(onC, events(i * 20, 20));
      await p.flush();
    }
    expect(t.redirects).toBe(2);
    // A plain publish and the admin calls about those streams take the learned route too.
    expect(await t.publish(onB, events(200, 5))).toMatchObject({ first_seq: 201, last_seq: 205 });
    expect(await t.streams.get(onC)).toMatchObject({ id: onC, head_seq: 200 });
    expect(t.redirects).toBe(2);
    await p.close();
    expect(await payloads(t, onB)).toEqual(Array.from({ length: 205 }, (_, i) => i));
    expect(await payloads(t, onC)).toEqual(Array.from({ length: 200 }, (_, i) => i));
    expect(t.redirects).toBe(2);
    expect((await redirected()) - before).toBe(2);
  });

  it("replays a stream through a node that does not own it: the first page is redirected, the rest asked of the owner", async () => {
    const view = await clusterView(nodes[0].url);
    const stream = ownedBy(view, "n3", "replayed");
    const writer = client();
    for (let i = 0; i < 5; i++) await writer.publish(stream, events(i * 100, 100));
    const t = client();
    // 50-event pages, 4 asked ahead: ten requests to the owner, one redirect. (Archived history would be served by
    // the non-owner, whose pages say the archive's last seq as head_seq: a replay started there ends at it.)
    expect(await payloads(t, stream, 50)).toEqual(Array.from({ length: 500 }, (_, i) => i));
    expect(t.redirects).toBe(1);
  });

  it("connects a grouped consumer through a node that does not own the stream, and its acks are the group's checkpoint there", async () => {
    const view = await clusterView(nodes[0].url);
    const stream = ownedBy(view, "n2", "grouped");
    const t = client();
    await t.publish(stream, events(0, 50));
    const sub = t.consume(stream, { group: "g", from: "earliest" });
    expect(await sub.ready).toMatchObject({ role: "active", from: 1, head_seq: 50 });
    expect(t.redirects).toBe(1);
    const live = t.producer({ lingerMs: 0 });
    await live.send(stream, events(50, 50));
    await live.close();
    expect(await pull(sub, 100)).toEqual(seqRange(1, 100));
    await sub.close();
    // Acks are written behind the deliveries: the checkpoint may still be on its way (404 until its first write).
    const at = () =>
      t.checkpoints.get(stream, "g").then(
        (c) => c.seq,
        (e: TickerError) => (e.status === 404 ? 0 : Promise.reject(e)),
      );
    await until("the group's checkpoint at 100", async () => ((await at()) === 100 ? true : null));
    // The producer and the checkpoint reads went straight to the owner the consumer's redirect taught.
    expect(t.redirects).toBe(1);
  });

  it("a consumer whose shard moves to a node that joined is closed with shard_moving, reconnects through the url given, and gets every event", async () => {
    const view = await clusterView(nodes[0].url);
    // One stream on every cluster shard, so some are on the shards the new node takes.
    const streams = Array.from({ length: SHARDS }, (_, shard) => {
      for (let i = 0; ; i++) if (clusterShardOf(`moved-${i}`, SHARDS) === shard) return `moved-${i}`;
    });
    const t = client();
    for (const s of streams) await t.publish(s, events(0, 10));
    const ends: TickerError[] = [];
    const subs = streams.map((s) => {
      const sub = t.consume(s, { group: "m", from: "earliest" });
      sub.on("reconnect", ({ error }) => ends.push(error));
      return sub;
    });
    for (const seqs of await Promise.all(subs.map((sub) => pull(sub, 10)))) expect(seqs).toEqual(seqRange(1, 10));
    const joined = await startNode(setup, "n4");
    nodes.push(joined);
    const after = await settled(nodes, SHARDS);
    const moved = streams.filter((_s, shard) => after.shards[shard].owner !== view.shards[shard].owner);
    expect(moved.length).toBeGreaterThanOrEqual(Math.floor(SHARDS / 4));
    const p = t.producer({ lingerMs: 0 });
    for (const s of streams) await p.send(s, events(10, 10));
    await p.close();
    // Every subscription resumes after its acks, wherever its stream is now.
    for (const seqs of await Promise.all(subs.map((sub) => pull(sub, 20)))) expect(distinct(seqs)).toEqual(seqRange(11, 20));
    expect(ends.map((e) => e.code)).toContain("shard_moving");
    expect(ends.length).toBeGreaterThanOrEqual(moved.length);
    await Promise.all(subs.map((sub) => sub.close()));
  }, 60_000);

  it("a producer publishing through kill -9 of the stream's owner goes on once another node holds the shard: every acknowledged event once", async () => {
    const view = await clusterView(nodes[0].url);
    const victimId = view.shards.find((s) => s.owner !== "n1")?.owner as string;
    const victim = nodes.find((n) => n.id === victimId) as ClusterNodeProcess;
    const stream = ownedBy(view, victimId, "failover");
    const t = client();
    const p = t.producer({ lingerMs: 0, batchEventsMax: 25 });
    await p.send(stream, events(0, 50));
    await p.flush();
    const sub = t.consume(stream, { group: "f", from: "earliest" });
    const lost: TickerError[] = [];
    sub.on("reconnect", ({ error }) => lost.push(error));
    const received = pull(sub, 1000);
    let redirectsBefore = 0;
    // Each flush resolves once its events are acknowledged: the ones after the kill only once a survivor took the shard.
    for (let i = 50; i < 1000; i += 50) {
      if (i === 500) {
        redirectsBefore = t.redirects;
        victim.server.killNow();
      }
      await p.send(stream, events(i, 50));
      await p.flush();
    }
    await p.close();
    const owner = (await clusterView(nodes[0].url)).shards[clusterShardOf(stream, SHARDS)].owner;
    expect(owner).not.toBe(victimId);
    expect(await payloads(t, stream)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    // At least once, from the group's acks: every seq came.
    expect(distinct(await received)).toEqual(seqRange(1, 1000));
    // The dead owner was forgotten: the new one was learned from n1's redirects, the consumer lost its connection and came back.
    expect(t.redirects).toBeGreaterThan(redirectsBefore);
    expect(lost.length).toBeGreaterThan(0);
    await sub.close();
    nodes = nodes.filter((n) => n !== victim);
  }, 60_000);
});
