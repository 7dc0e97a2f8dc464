// Snapshots in cluster mode, three `ticker serve` nodes on a private
// PostgreSQL and a shared archive: GET .../snapshot through any node is
// served by the stream's owner (307 from the others), and after the owner is
// killed the new owner, whose copy of the stream starts after the archive,
// snapshots the whole history: keys last written in archived segments only
// are there. A consumer's from=snapshot on it gets that snapshot, then every
// later event once.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import WebSocket from "ws";
import { sleep, until } from "../helpers/cluster-db.js";
import { ownerOf, startCluster, type ClusterNodeProcess, type ClusterWorld } from "../helpers/cluster-nodes.js";
import { api, replayAll } from "../helpers/server.js";

const SHARDS = 6;
let w: ClusterWorld;

beforeAll(async () => {
  // Small segments, archived often; an archive cache of 8 of them, smaller than the failover stream's history.
  w = await startCluster(["s1", "s2", "s3"], {
    clusterShards: SHARDS,
    leaseMs: 2000,
    args: ["--segment-bytes-max", String(128 * 1024), "--cluster-archive-interval-ms", "100", "--archive-cache-bytes-max", String(1024 * 1024)],
  });
}, 90_000);
afterAll(() => w?.stop());

/** `n` events from `from`: key `${prefix}${j % keys}`, every tenth without a key (in no snapshot); `pad` bytes more in each. */
const keyed = (n: number, from: number, prefix: string, keys: number, pad: number) => ({
  events: Array.from({ length: n }, (_, i) => {
    const j = from + i;
    const payload = { i: j, pad: "x".repeat(pad) };
    return j % 10 === 9 ? { type: "note", payload } : { type: "quote", key: `${prefix}${j % keys}`, payload };
  }),
});

async function publish(url: string, stream: string, n: number, from: number, prefix: string, keys: number, pad = 0): Promise<number> {
  const r = await api(`${url}/v1/streams/${stream}/events`, "POST", keyed(n, from, prefix, keys, pad));
  if (r.status !== 200) throw new Error(`publish: ${r.status} ${JSON.stringify(r.json)}`);
  return r.json.last_seq as number;
}

/** Every page of a snapshot (fetch follows a 307 to the owner), each page naming the same cut. */
async function snapshotAll(url: string, stream: string, limit: number): Promise<{ asOf: number; keys: number; firstSeq: number; events: any[] }> {
  const first = await api(`${url}/v1/streams/${stream}/snapshot?limit=${limit}`, "GET");
  if (first.status !== 200) throw new Error(`snapshot: ${first.status} ${JSON.stringify(first.json)}`);
  const asOf = first.json.as_of_seq;
  const out = [...first.json.events];
  for (let next = first.json.next_after_seq; next !== null; ) {
    const r = await api(`${url}/v1/streams/${stream}/snapshot?as_of_seq=${asOf}&after_seq=${next}&limit=${limit}`, "GET");
    expect(r.status).toBe(200);
    expect(r.json.as_of_seq).toBe(asOf);
    out.push(...r.json.events);
    next = r.json.next_after_seq;
  }
  return { asOf, keys: first.json.keys, firstSeq: first.json.first_seq, events: out };
}

/** The newest event of each key among `all` up to seq `asOf`, ascending by seq: what a snapshot must be. */
function newestPerKey(all: any[], asOf: number): any[] {
  const byKey = new Map<string, any>();
  for (const e of all) if (e.seq <= asOf && e.key !== undefined) byKey.set(e.key, e);
  return [...byKey.values()].sort((a, b) => a.seq - b.seq);
}

const archivedThrough = async (stream: string) => {
  const [r] = await w.sql<{ last: string | null }[]>`select max(last_seq) as last from ticker_cluster_segments where stream = ${stream}`;
  return Number(r.last ?? 0);
};

describe("snapshots in cluster mode", () => {
  it("GET .../snapshot through a node that does not own the stream is 307 to the owner, whose snapshot is the newest event of every key", async () => {
    const stream = "snap.routed";
    const owner = await ownerOf(w.nodes[0].url, w.nodes, stream, SHARDS);
    const other = w.nodes.find((n) => n !== owner)!;
    await publish(owner.url, stream, 300, 0, "k", 41);
    const r = await fetch(`${other.url}/v1/streams/${stream}/snapshot?limit=25`, { redirect: "manual" });
    expect(r.status).toBe(307);
    expect(r.headers.get("location")).toBe(`${owner.url}/v1/streams/${stream}/snapshot?limit=25`);
    expect(((await r.json()) as { error: { code: string; owner: string } }).error).toMatchObject({ code: "not_owner", owner: owner.id });
    const snap = await snapshotAll(other.url, stream, 25);
    expect(snap.asOf).toBe(300);
    expect(snap.keys).toBe(41);
    expect(snap.events).toEqual(newestPerKey(await replayAll(owner.url, stream), 300));
    // The route is served, so other methods are 405 as on one node (no longer 501).
    expect((await fetch(`${other.url}/v1/streams/${stream}/snapshot`, { method: "POST" })).status).toBe(405);
  }, 30_000);

  let survivors: ClusterNodeProcess[] = [];
  let published = 0;
  const stream = "snap.failover";

  it("after a kill -9 of the owner, the new owner's snapshot holds the keys last written in archived segments only, as of the head", async () => {
    const victim = await ownerOf(w.nodes[0].url, w.nodes, stream, SHARDS);
    survivors = w.nodes.filter((n) => n !== victim);
    // Keys "a…" written in the first 400 seqs only, then "b…" keys for 2,000 more: the a-keys' newest events are old.
    // About 1 KiB each, 2.4 MiB in all: more than the archive cache, so a snapshot's pages fetch segments the index read before.
    for (let from = 0; from < 400; from += 200) published = await publish(victim.url, stream, 200, from, "a", 151, 1000);
    for (let from = 400; from < 2400; from += 200) published = await publish(victim.url, stream, 200, from, "b", 21, 1000);
    expect(published).toBe(2400);
    await until("most of the stream archived", async () => ((await archivedThrough(stream)) >= 2000 ? true : null));
    victim.server.killNow();
    // Served again once both survivors' maps name the new owner and it has caught the stream up (404 or 503 until then).
    const owner = await until(
      "the shard served by a survivor",
      async () => {
        const seen = await Promise.all(survivors.map((n) => ownerOf(n.url, w.nodes, stream, SHARDS).catch(() => null)));
        const o = seen[0];
        if (o === null || o === victim || seen[1] !== o) return null;
        const r = await fetch(`${o.url}/v1/streams/${stream}`).catch(() => null);
        return r?.status === 200 ? o : null;
      },
      30_000,
    );
    // Its copy starts after what the archive held when it took the shard: the a-keys are in the archive alone.
    const info = (await api(`${owner.url}/v1/streams/${stream}`, "GET")).json;
    expect(info.first_seq).toBeGreaterThan(2000);
    const other = survivors.find((n) => n !== owner)!;
    const snap = await snapshotAll(other.url, stream, 37);
    expect(snap.asOf).toBe(2400);
    expect(snap.firstSeq).toBe(1);
    expect(snap.keys).toBe(172);
    const expected = newestPerKey(await replayAll(owner.url, stream), 2400);
    expect(expected.filter((e) => e.key.startsWith("a"))).toHaveLength(151);
    expect(snap.events).toEqual(expected);
    // Published to since: the index goes on from the new owner's copy.
    published = await publish(other.url, stream, 50, 2400, "a", 5);
    const again = await snapshotAll(owner.url, stream, 1000);
    expect(again.asOf).toBe(2450);
    expect(again.events).toEqual(newestPerKey(await replayAll(owner.url, stream), 2450));
  }, 60_000);

  it("from=snapshot on the new owner (reached through another node) is the snapshot, snapshot_end, then every later event once", async () => {
    expect(survivors).toHaveLength(2);
    const owner = await ownerOf(survivors[0].url, w.nodes, stream, SHARDS);
    const other = survivors.find((n) => n !== owner)!;
    let publishing = true;
    const producer = (async () => {
      while (publishing) published = await publish(owner.url, stream, 20, published, "b", 21);
    })();
    await sleep(50);
    // The upgrade through a node that does not own the stream is a 307, which ws follows.
    const ws = new WebSocket(`${other.url.replace(/^http/, "ws")}/v1/streams/${stream}/consume?from=snapshot`, { followRedirects: true });
    const messages: any[] = [];
    ws.on("message", (d: Buffer) => messages.push(JSON.parse(d.toString("utf8"))));
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    await until("snapshot_end", () => (messages.some((m) => m.type === "snapshot_end") ? true : null));
    const endAt = messages.findIndex((m) => m.type === "snapshot_end");
    const asOf = messages[endAt].as_of_seq;
    await sleep(200);
    publishing = false;
    await producer;
    await until("the last event published", () => {
      const last = messages.at(-1);
      return last?.type === "events" && last.events.at(-1).seq === published ? true : null;
    });
    ws.close();
    expect(messages[0]).toMatchObject({ type: "hello", from: asOf + 1 });
    const before = messages.slice(1, endAt);
    expect(before.every((m) => m.type === "events" && m.snapshot === true)).toBe(true);
    const all = await replayAll(owner.url, stream);
    const expected = newestPerKey(all, asOf);
    expect(expected.filter((e) => e.key.startsWith("a") && e.seq <= 400).length).toBeGreaterThan(100);
    expect(before.flatMap((m) => m.events)).toEqual(expected);
    const after = messages.slice(endAt + 1).filter((m) => m.type === "events");
    expect(after.every((m) => m.snapshot === undefined)).toBe(true);
    // No gap and no duplicate at the seam or after it.
    expect(after.flatMap((m) => m.events.map((e: any) => e.seq))).toEqual(Array.from({ length: published - asOf }, (_, i) => asOf + 1 + i));
    expect(asOf).toBeGreaterThanOrEqual(2450);
  }, 30_000);

  it("a damaged archived segment below the new owner's copy makes its snapshot 500 corrupt_record, as a damaged record does on one node", async () => {
    const damaged = "snap.damaged";
    const owner = await ownerOf(survivors[0].url, w.nodes, damaged, SHARDS);
    const next = survivors.find((n) => n !== owner)!;
    for (let from = 0; from < 400; from += 200) await publish(owner.url, damaged, 200, from, "d", 31, 1000);
    await until("two segments archived", async () => ((await archivedThrough(damaged)) >= 200 ? true : null));
    const [first] = await w.sql<{ key: string }[]>`select key from ticker_cluster_segments where stream = ${damaged} order by base_seq limit 1`;
    // A byte of a record's payload in the middle of the oldest segment: its CRC no longer checks.
    const path = join(w.setup.archiveDir, first.key);
    const bytes = readFileSync(path);
    bytes[bytes.length >> 1] ^= 0x01;
    writeFileSync(path, bytes);
    // A clean stop gives the shards up at once: the other survivor's copy starts after the archive.
    await owner.server.stop();
    await until(
      "the shard served by the other survivor",
      async () => {
        const r = await fetch(`${next.url}/v1/streams/${damaged}`).catch(() => null);
        return r?.status === 200 ? true : null;
      },
      30_000,
    );
    const r = await api(`${next.url}/v1/streams/${damaged}/snapshot`, "GET");
    expect(r.status).toBe(500);
    expect(r.json.error.code).toBe("corrupt_record");
  }, 30_000);
});
