// Three `ticker serve` nodes in cluster mode on a private PostgreSQL and a
// shared archive directory: any node takes any stream's request and sends it
// to the owner (307), a publish is answered only once its tail row is in
// PostgreSQL, closed segments reach the archive and their tail rows go, and
// when the owner is killed another node takes its shards and goes on from
// what the database holds, nothing acknowledged lost.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { request } from "node:http";
import type postgres from "postgres";
import { sleep, until } from "../helpers/cluster-db.js";
import { clusterView, startCluster, type ClusterNodeProcess, type ClusterWorld } from "../helpers/cluster-nodes.js";
import { clusterShardOf } from "../../src/cluster/leases.js";

const SHARDS = 8;
let w: ClusterWorld;
let sql: postgres.Sql;
let nodes: ClusterNodeProcess[] = [];

beforeAll(async () => {
  // Small segments: a few hundred events close one, and the archiver runs often.
  w = await startCluster(["n1", "n2", "n3"], {
    clusterShards: SHARDS,
    leaseMs: 2000,
    args: ["--segment-bytes-max", "8192", "--cluster-archive-interval-ms", "100"],
  });
  sql = w.sql;
  nodes = w.nodes;
}, 90_000);
// Every node, the killed one too: w.nodes is the list as started.
afterAll(() => w?.stop());

const events = (n: number, from = 0) => JSON.stringify({ events: Array.from({ length: n }, (_, i) => ({ type: "t", payload: { i: from + i } })) });

async function publish(url: string, stream: string, n: number, from = 0): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(`${url}/v1/streams/${stream}/events`, { method: "POST", headers: { "content-type": "application/json" }, body: events(n, from) });
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

/** A WebSocket upgrade request's answer when it is refused (an upgrade that goes through fails the test). */
function upgrade(url: string): Promise<{ code: number; location: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request(url, {
      headers: { connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==" },
    });
    req.on("response", (res) => {
      res.resume();
      resolve({ code: res.statusCode ?? 0, location: res.headers.location });
    });
    req.on("upgrade", () => reject(new Error(`upgraded: ${url}`)));
    req.on("error", reject);
    req.end();
  });
}

async function ownerOf(stream: string): Promise<ClusterNodeProcess> {
  const v = await clusterView(nodes[0].url);
  const owner = v.shards[clusterShardOf(stream, SHARDS)].owner;
  const n = nodes.find((x) => x.id === owner);
  if (!n) throw new Error(`no node owns ${stream}`);
  return n;
}

describe("a cluster of three nodes", () => {
  it("shows its shard map, spread over the nodes, on every node", async () => {
    const v = await clusterView(nodes[1].url);
    expect(v.node_id).toBe("n2");
    expect(v.shards).toHaveLength(SHARDS);
    expect(v.nodes.map((n) => n.node_id).sort()).toEqual(["n1", "n2", "n3"]);
    for (const n of v.nodes) expect(n.shards).toBeGreaterThanOrEqual(2);
    for (const s of v.shards) expect(s.epoch).toBeGreaterThan(0);
  });

  it("sends a request for a stream owned elsewhere to its owner with 307, and a client that follows gets it served", async () => {
    const owner = await ownerOf("routed");
    const other = nodes.find((n) => n !== owner)!;
    const r = await fetch(`${other.url}/v1/streams/routed/events?from=1`, { redirect: "manual" });
    expect(r.status).toBe(307);
    expect(r.headers.get("location")).toBe(`${owner.url}/v1/streams/routed/events?from=1`);
    expect(((await r.json()) as { error: { code: string; owner: string } }).error).toMatchObject({ code: "not_owner", owner: owner.id });
    // fetch follows a 307 with the method and the body.
    const p = await publish(other.url, "routed", 3);
    expect(p.status).toBe(200);
    expect(p.body).toMatchObject({ first_seq: 1, last_seq: 3 });
    const page = (await (await fetch(`${other.url}/v1/streams/routed/events?from=1`)).json()) as { events: Array<{ seq: number }> };
    expect(page.events.map((e) => e.seq)).toEqual([1, 2, 3]);
  });

  it("refuses a consumer's upgrade on a node that does not own the stream, naming the owner", async () => {
    const owner = await ownerOf("routed");
    const other = nodes.find((n) => n !== owner)!;
    const status = await upgrade(`${other.url}/v1/streams/routed/consume?group=g`);
    expect(status).toEqual({ code: 307, location: `${owner.url}/v1/streams/routed/consume?group=g` });
  });

  it("creates a stream with its config through any node, the config in PostgreSQL before the answer", async () => {
    const owner = await ownerOf("configured");
    const other = nodes.find((n) => n !== owner)!;
    const r = await fetch(`${other.url}/v1/streams/configured`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ dedup_window_ms: 60_000 }),
    });
    expect(r.status).toBe(201);
    const [row] = await sql<{ config: { dedup_window_ms: number } }[]>`select config from ticker_cluster_streams where stream = 'configured'`;
    expect(row.config.dedup_window_ms).toBe(60_000);
    const shown = (await (await fetch(`${other.url}/v1/streams/configured`)).json()) as { dedup_window_ms: number; head_seq: number };
    expect([shown.dedup_window_ms, shown.head_seq]).toEqual([60_000, 0]);
  });

  it("answers a publish only once its batch is a tail row in PostgreSQL, fenced by the owner's epoch", async () => {
    const owner = await ownerOf("tailed");
    const p = await publish(owner.url, "tailed", 5);
    expect(p.status).toBe(200);
    const rows = await sql<
      { first_seq: string; last_seq: string; epoch: string }[]
    >`select first_seq, last_seq, epoch from ticker_cluster_tail where stream = 'tailed'`;
    const v = await clusterView(owner.url);
    expect(rows.map((r) => [Number(r.first_seq), Number(r.last_seq), Number(r.epoch)])).toEqual([[1, 5, v.shards[clusterShardOf("tailed", SHARDS)].epoch]]);
  });

  it("copies closed segments to the archive and drops the tail rows they cover", async () => {
    const owner = await ownerOf("archived");
    for (let i = 0; i < 20; i++) expect((await publish(owner.url, "archived", 20, i * 20)).status).toBe(200);
    // Every closed segment archived: the manifest stops growing (the archiver takes a stream's closed segments in one run).
    let seen = -1;
    const segs = await until("archived segments", async () => {
      const rows = await sql<
        { base_seq: string; last_seq: string }[]
      >`select base_seq, last_seq from ticker_cluster_segments where stream = 'archived' order by base_seq`;
      const settledAt = rows.length >= 2 && rows.length === seen;
      seen = rows.length;
      if (!settledAt) await sleep(300);
      return settledAt ? rows.map((r) => [Number(r.base_seq), Number(r.last_seq)]) : null;
    });
    expect(segs[0][0]).toBe(1);
    for (let i = 1; i < segs.length; i++) expect(segs[i][0]).toBe(segs[i - 1][1] + 1);
    const through = segs[segs.length - 1][1];
    await until("tail rows trimmed", async () => {
      const [r] = await sql<{ n: string }[]>`select count(*) as n from ticker_cluster_tail where stream = 'archived' and last_seq <= ${through}`;
      return Number(r.n) === 0 ? true : null;
    });
    // Another node serves what the archive holds itself, and sends a reader past it to the owner.
    const other = nodes.find((n) => n !== owner)!;
    const got: Array<{ seq: number; payload: { i: number } }> = [];
    for (let from = 1; from <= through; ) {
      const page = await fetch(`${other.url}/v1/streams/archived/events?from=${from}&limit=1000`, { redirect: "manual" });
      expect(page.status).toBe(200);
      const body = (await page.json()) as { events: Array<{ seq: number; payload: { i: number } }>; next: number };
      expect(body.events.length).toBeGreaterThan(0);
      got.push(...body.events);
      from = body.next;
    }
    expect(got.map((e) => e.seq)).toEqual(Array.from({ length: through }, (_, i) => i + 1));
    expect(got.map((e) => e.payload.i)).toEqual(Array.from({ length: through }, (_, i) => i));
    const past = await fetch(`${other.url}/v1/streams/archived/events?from=${through + 1}`, { redirect: "manual" });
    expect(past.status).toBe(307);
    expect(past.headers.get("location")).toBe(`${owner.url}/v1/streams/archived/events?from=${through + 1}`);
  });

  it("moves a killed owner's shards to the others, which go on from what PostgreSQL holds", async () => {
    const stream = "failover";
    const victim = await ownerOf(stream);
    const survivors = nodes.filter((n) => n !== victim);
    let acked = 0;
    for (let i = 0; i < 10; i++) {
      const p = await publish(victim.url, stream, 50, acked);
      expect(p.status).toBe(200);
      acked = p.body.last_seq as number;
    }
    // A stream config, through a node that does not own the stream: in PostgreSQL before the answer, and on the new owner after.
    const put = await fetch(`${survivors[0].url}/v1/streams/${stream}`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ retention_ms: 123_456_789 }),
    });
    expect(put.status).toBe(200);
    expect(((await put.json()) as { retention_ms: number }).retention_ms).toBe(123_456_789);
    // A group's checkpoint, through a node that does not own the stream: in PostgreSQL before the answer.
    const cp = await fetch(`${survivors[0].url}/v1/streams/${stream}/checkpoint`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ group: "g", seq: 321 }),
    });
    expect(cp.status).toBe(200);
    const [row] = await sql<{ seq: string }[]>`select seq from ticker_checkpoints where stream = ${stream} and group_name = 'g'`;
    expect(Number(row.seq)).toBe(321);
    // Some of it archived, the rest only in the tail: the new owner needs both.
    await until("a segment of the stream archived", async () => {
      const [r] = await sql<{ n: string }[]>`select count(*) as n from ticker_cluster_segments where stream = ${stream}`;
      return Number(r.n) > 0 ? true : null;
    });
    victim.server.killNow();
    const killedAt = Date.now();
    let answer: { status: number; body: Record<string, unknown> };
    for (;;) {
      answer = await publish(survivors[0].url, stream, 1, acked).catch(() => ({ status: 0, body: {} }));
      if (answer.status === 200) break;
      expect([0, 503]).toContain(answer.status);
      if (Date.now() - killedAt > 30_000) throw new Error(`no publish accepted 30 s after the kill: ${JSON.stringify(answer)}`);
      await sleep(50);
    }
    expect(answer.body.first_seq).toBe(acked + 1);
    // Everything acknowledged is there once, in order, and the group's checkpoint moved with the shard.
    const seqs: number[] = [];
    const payloads: number[] = [];
    for (let from = 1; from <= acked + 1; ) {
      const page = (await (await fetch(`${survivors[1].url}/v1/streams/${stream}/events?from=${from}&limit=1000`)).json()) as {
        events: Array<{ seq: number; payload: { i: number } }>;
        next: number;
      };
      if (page.events.length === 0) break;
      for (const e of page.events) {
        seqs.push(e.seq);
        payloads.push(e.payload.i);
      }
      from = page.next;
    }
    expect(seqs).toEqual(Array.from({ length: acked + 1 }, (_, i) => i + 1));
    expect(payloads).toEqual(Array.from({ length: acked + 1 }, (_, i) => i));
    const moved = (await (await fetch(`${survivors[1].url}/v1/streams/${stream}/checkpoint?group=g`)).json()) as { seq: number };
    expect(moved.seq).toBe(321);
    const info = (await (await fetch(`${survivors[1].url}/v1/streams/${stream}`)).json()) as { retention_ms: number; head_seq: number };
    expect(info.retention_ms).toBe(123_456_789);
    expect(info.head_seq).toBe(acked + 1);
    nodes = survivors;
    const newOwner = await ownerOf(stream);
    expect(newOwner.id).not.toBe(victim.id);
  }, 60_000);
});
