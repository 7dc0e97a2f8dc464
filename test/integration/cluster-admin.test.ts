// The admin writes of cluster mode that reach past a stream's events: a
// stream's delete (every row the cluster holds of it, fenced, then the
// archive's objects, and a former owner's stale copy never served again) and
// a dead-letter redrive through any node. Two real `ticker serve` nodes on a
// private PostgreSQL and a shared archive directory.
import { mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { escapeStreamId } from "../../src/shard/stream-config.js";
import { sleep, until } from "../helpers/cluster-db.js";
import { ownerOf as ownerIn, restartNode, settled, smallCluster, startCluster, type ClusterWorld } from "../helpers/cluster-nodes.js";
import { Consumer } from "../helpers/consumer.js";

const SHARDS = 4;
const cluster = smallCluster(["a1", "a2"], SHARDS);
const { live, ownerOf, otherThan } = cluster;
let w: ClusterWorld;
let sql: postgres.Sql;
beforeAll(() => {
  w = cluster.world();
  sql = w.sql;
});

async function publish(url: string, stream: string, n: number, tag: string): Promise<{ first_seq: number; last_seq: number }> {
  const events = Array.from({ length: n }, (_, i) => ({ type: "t", key: `k${i % 7}`, payload: { tag, i } }));
  const r = await fetch(`${url}/v1/streams/${stream}/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ events }),
  });
  expect(r.status).toBe(200);
  return (await r.json()) as { first_seq: number; last_seq: number };
}

async function replay(url: string, stream: string): Promise<Array<{ seq: number; payload: { tag: string; i: number } }>> {
  const out: Array<{ seq: number; payload: { tag: string; i: number } }> = [];
  for (let from = 1; ; ) {
    const r = await fetch(`${url}/v1/streams/${stream}/events?from=${from}&limit=1000`);
    expect(r.status).toBe(200);
    const page = (await r.json()) as { events: typeof out; next: number; head_seq: number };
    out.push(...page.events);
    if (page.events.length === 0 || page.next > page.head_seq) return out;
    from = page.next;
  }
}

const rowsOf = async (stream: string) => {
  const [r] = await sql<{ tail: string; segments: string; configs: string; checkpoints: string }[]>`select
    (select count(*) from ticker_cluster_tail where stream = ${stream}) as tail,
    (select count(*) from ticker_cluster_segments where stream = ${stream}) as segments,
    (select count(*) from ticker_cluster_streams where stream = ${stream}) as configs,
    (select count(*) from ticker_checkpoints where stream = ${stream}) as checkpoints`;
  return { tail: Number(r.tail), segments: Number(r.segments), configs: Number(r.configs), checkpoints: Number(r.checkpoints) };
};

const archivedObjects = (stream: string) => {
  try {
    return readdirSync(join(w.setup.archiveDir, escapeStreamId(stream)));
  } catch {
    return [];
  }
};

describe("a stream's delete in cluster mode", () => {
  it("removes through any node every row and archived object of the stream; a publish after it starts the stream again at seq 1", async () => {
    const stream = "doomed";
    const owner = await ownerOf(stream);
    const other = otherThan(owner);
    for (let i = 0; i < 6; i++) await publish(owner.url, stream, 50, "old");
    const put = await fetch(`${other.url}/v1/streams/${stream}`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: `{"retention_ms":86400000}`,
    });
    expect(put.status).toBe(200);
    const cp = await fetch(`${other.url}/v1/streams/${stream}/checkpoint`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: `{"group":"g","seq":100}`,
    });
    expect(cp.status).toBe(200);
    await until("segments archived", async () => ((await rowsOf(stream)).segments >= 2 ? true : null));
    expect(archivedObjects(stream).length).toBeGreaterThanOrEqual(2);

    // Through the node that does not own it: 307 to the owner, which removes it.
    const redirected = await fetch(`${other.url}/v1/streams/${stream}`, { method: "DELETE", redirect: "manual" });
    expect(redirected.status).toBe(307);
    const del = await fetch(`${other.url}/v1/streams/${stream}`, { method: "DELETE" });
    expect(del.status).toBe(204);
    expect(await rowsOf(stream)).toEqual({ tail: 0, segments: 0, configs: 0, checkpoints: 0 });
    expect(archivedObjects(stream)).toEqual([]);
    for (const n of live()) expect((await fetch(`${n.url}/v1/streams/${stream}`)).status).toBe(404);
    const again = await fetch(`${other.url}/v1/streams/${stream}`, { method: "DELETE" });
    expect(again.status).toBe(404);

    const p = await publish(owner.url, stream, 5, "new");
    expect([p.first_seq, p.last_seq]).toEqual([1, 5]);
    const events = await replay(other.url, stream);
    expect(events.map((e) => [e.seq, e.payload.tag])).toEqual([1, 2, 3, 4, 5].map((seq) => [seq, "new"]));
    const shown = (await (await fetch(`${other.url}/v1/streams/${stream}`)).json()) as { retention_ms: number };
    expect(shown.retention_ms).not.toBe(86_400_000);
  });

  it("takes publishes racing a delete: each answered 200 or 503 stream_deleting, and what stays is whole, gap-free and only what was acknowledged", async () => {
    const stream = "raced";
    const owner = await ownerOf(stream);
    await publish(owner.url, stream, 20, "before");
    const answers: Array<{ tag: string; status: number; code?: string; at: number }> = [];
    let deletedAt = Number.POSITIVE_INFINITY;
    const send = async (tag: string) => {
      const r = await fetch(`${owner.url}/v1/streams/${stream}/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ events: [{ type: "t", payload: { tag, i: 0 } }] }),
      });
      const body = (await r.json()) as { error?: { code: string } };
      answers.push({ tag, status: r.status, code: body.error?.code, at: performance.now() });
    };
    const racers = Array.from({ length: 4 }, (_, k) =>
      (async () => {
        for (let i = 0; i < 25; i++) await send(`r${k}-${i}`);
      })(),
    );
    await sleep(20);
    const del = await fetch(`${owner.url}/v1/streams/${stream}`, { method: "DELETE" });
    deletedAt = performance.now();
    expect(del.status).toBe(204);
    await Promise.all(racers);
    for (const a of answers) expect(a.status === 200 || (a.status === 503 && a.code === "stream_deleting"), JSON.stringify(a)).toBe(true);
    const kept = await replay(owner.url, stream);
    expect(kept.map((e) => e.seq)).toEqual(kept.map((_, i) => i + 1));
    const acked = new Set(answers.filter((a) => a.status === 200).map((a) => a.tag));
    for (const e of kept) expect(acked.has(e.payload.tag), e.payload.tag).toBe(true);
    // Acknowledged after the delete was answered: made again, and kept.
    const after = answers.filter((a) => a.status === 200 && a.at > deletedAt).map((a) => a.tag);
    expect(after.length).toBeGreaterThan(0);
    for (const tag of after) expect(kept.map((e) => e.payload.tag)).toContain(tag);
    expect(kept.some((e) => e.payload.tag === "before")).toBe(false);
  });

  it("a former owner's copy of the deleted stream is never served: its next gain starts from what the cluster holds", async () => {
    const stream = "reborn";
    const first = await ownerOf(stream);
    // Within one segment: nothing archived, so only the events tell the old life from the new one.
    await publish(first.url, stream, 30, "old");
    first.server.killNow();
    await first.server.ended;
    const second = otherThan(first);
    // Until the lease runs out, the second node still sends the stream to the first (307).
    await until(`${second.id} serving ${stream}`, async () => {
      const r = await fetch(`${second.url}/v1/streams/${stream}`, { redirect: "manual" });
      return r.status === 200 ? true : (await sleep(100), null);
    });
    const del = await fetch(`${second.url}/v1/streams/${stream}`, { method: "DELETE" });
    expect(del.status).toBe(204);
    await publish(second.url, stream, 40, "new");
    expect((await rowsOf(stream)).segments).toBe(0);

    // The first node comes back with its old copy (30 events); then the second goes, and the first takes every shard.
    const back = await restartNode(w.setup, first);
    w.nodes.push(back);
    await settled([back, second], SHARDS);
    second.server.killNow();
    await second.server.ended;
    await settled([back], SHARDS);
    const events = await until("the stream served by the returned node", async () => {
      const r = await fetch(`${back.url}/v1/streams/${stream}/events?from=1&limit=1000`);
      return r.status === 200 ? ((await r.json()) as { events: Array<{ seq: number; payload: { tag: string } }> }).events : (await sleep(100), null);
    });
    expect(events.map((e) => [e.seq, e.payload.tag])).toEqual(Array.from({ length: 40 }, (_, i) => [i + 1, "new"]));
    // And it goes on from there.
    const p = await publish(back.url, stream, 1, "next");
    expect(p.first_seq).toBe(41);
    // The second node again, so the next tests have two.
    const again = await restartNode(w.setup, second);
    w.nodes.push(again);
    await settled([back, again], SHARDS);
  }, 60_000);
});

describe("the stream list in cluster mode", () => {
  it("lists every stream of the cluster on any node, each once, with its owner's view of it", async () => {
    const ids = Array.from({ length: 12 }, (_, i) => `listed-${i}`);
    for (const id of ids) await publish((await ownerOf(id)).url, id, 3, "l");
    const owners = new Set(await Promise.all(ids.map(async (id) => (await ownerOf(id)).id)));
    expect(owners.size).toBe(2);
    for (const n of live()) {
      const r = await fetch(`${n.url}/v1/streams`);
      expect(r.status).toBe(200);
      const listed = ((await r.json()) as { streams: Array<{ id: string; head_seq: number }> }).streams.filter((s) => s.id.startsWith("listed-"));
      expect(listed.map((s) => s.id)).toEqual([...ids].sort());
      for (const s of listed) expect(s.head_seq).toBe(3);
    }
    // One node's part alone: the streams of the shards it serves.
    const n = live()[0];
    const part = (await (await fetch(`${n.url}/v1/streams`, { headers: { "ticker-node-only": "1" } })).json()) as { streams: Array<{ id: string }> };
    const mine = await Promise.all(ids.map(async (id) => ((await ownerOf(id)) === n ? id : null)));
    expect(part.streams.map((s) => s.id).filter((id) => id.startsWith("listed-"))).toEqual(mine.filter((id) => id !== null).sort());
  });
});

describe("a dead-letter redrive in cluster mode", () => {
  it("is served by the stream's owner through any node, each dead letter moved once however often it is called", async () => {
    const stream = "jobs";
    const owner = await ownerOf(stream);
    const other = otherThan(owner);
    await publish(owner.url, stream, 5, "job");
    const c = await Consumer.connect(owner.url, stream, "group=workers&from=earliest&max_attempts=1");
    await c.eventsThrough(5);
    c.send({ type: "nack", seq: 2, reason: "boom" });
    await until("the dead letter", async () => {
      const r = await fetch(`${owner.url}/v1/streams/${stream}.dlq/events?from=1`);
      return r.status === 200 && ((await r.json()) as { events: unknown[] }).events.length === 1 ? true : (await sleep(100), null);
    });
    await c.close();

    const redrive = () =>
      fetch(`${other.url}/v1/streams/${stream}/dlq/redrive`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    const manual = await fetch(`${other.url}/v1/streams/${stream}/dlq/redrive`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
      redirect: "manual",
    });
    expect(manual.status).toBe(307);
    const r1 = await redrive();
    expect(r1.status).toBe(200);
    expect(await r1.json()).toMatchObject({ moved: 1, duplicates: 0 });
    const r2 = await redrive();
    expect(await r2.json()).toMatchObject({ moved: 0, duplicates: 1 });
    const events = await replay(other.url, stream);
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(events[5].payload).toEqual(events[1].payload);
  });
});

describe("the stream list of a cluster with API keys", () => {
  let k: ClusterWorld;
  const keysFile = join(mkdtempSync(join(tmpdir(), "ticker-keys-")), "keys.json");
  const auth = (key: string) => ({ authorization: `Bearer ${key}` });
  beforeAll(async () => {
    writeFileSync(
      keysFile,
      JSON.stringify([
        { key: "k-admin", scopes: ["publish", "admin"] },
        { key: "k-md", scopes: ["admin"], prefix: "md." },
        { key: "k-publish", scopes: ["publish"] },
      ]),
    );
    k = await startCluster(["b1", "b2"], { clusterShards: SHARDS, leaseMs: 2000, args: ["--api-keys-file", keysFile], token: "k-admin" });
  }, 90_000);
  afterAll(() => k?.stop());

  it("asks the other owners with the caller's key: its scope and prefix hold on every node's part", async () => {
    const ids = ["md.a", "md.b", "md.c", "md.d", "fx.a", "fx.b", "fx.c", "fx.d"];
    for (const id of ids) {
      // At the owner: fetch drops Authorization when it follows a 307 to another origin.
      const owner = await ownerIn(k.nodes[0].url, k.nodes, id, SHARDS, "k-admin");
      const r = await fetch(`${owner.url}/v1/streams/${id}/events`, {
        method: "POST",
        headers: { "content-type": "application/json", ...auth("k-admin") },
        body: `{"events":[{"type":"t"}]}`,
      });
      expect(r.status).toBe(200);
    }
    const owners = new Set(await Promise.all(ids.map(async (id) => (await ownerIn(k.nodes[0].url, k.nodes, id, SHARDS, "k-admin")).id)));
    expect(owners.size).toBe(2);
    const list = async (key?: string) => {
      const r = await fetch(`${k.nodes[1].url}/v1/streams`, { headers: key ? auth(key) : {} });
      return { status: r.status, ids: r.status === 200 ? ((await r.json()) as { streams: Array<{ id: string }> }).streams.map((s) => s.id) : [] };
    };
    expect(await list("k-admin")).toEqual({ status: 200, ids: [...ids].sort() });
    expect(await list("k-md")).toEqual({ status: 200, ids: ["md.a", "md.b", "md.c", "md.d"] });
    expect((await list("k-publish")).status).toBe(403);
    expect((await list()).status).toBe(401);
  });
});
