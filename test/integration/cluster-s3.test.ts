// Cluster mode with an s3:// archive: two `ticker serve` nodes on a private
// PostgreSQL and a local S3-compatible server (s3rver), through the AWS SDK.
// Closed segments land in the bucket, a node that does not own the stream
// serves them from there, and after the owner's kill -9 the new owner serves
// the whole stream, archive and tail, from seq 1.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { chunkPointsOf, parsePoints } from "../../src/cluster/segment-chunks.js";
import { until } from "../helpers/cluster-db.js";
import { ownerOf, settled, startCluster, type ClusterWorld } from "../helpers/cluster-nodes.js";
import { startS3, type S3Server } from "../harness/s3.js";

const SHARDS = 4;
let s3: S3Server;
let w: ClusterWorld;

beforeAll(async () => {
  s3 = await startS3();
  await s3.createBucket("ticker");
  w = await startCluster(["s1", "s2"], {
    clusterShards: SHARDS,
    leaseMs: 2000,
    archiveUrl: `s3://ticker/cluster-a?endpoint=${encodeURIComponent(s3.endpoint)}&region=us-east-1&path_style=true`,
    args: ["--segment-bytes-max", "8192", "--cluster-archive-interval-ms", "100"],
  });
}, 90_000);
afterAll(async () => {
  await w?.stop();
  await s3?.stop();
});

async function readAll(url: string, stream: string): Promise<number[]> {
  const seqs: number[] = [];
  for (let from = 1; ; ) {
    const r = await fetch(`${url}/v1/streams/${stream}/events?from=${from}&limit=1000`);
    expect(r.status).toBe(200);
    const page = (await r.json()) as { events: Array<{ seq: number; payload: { i: number } }>; next: number };
    if (page.events.length === 0) return seqs;
    for (const e of page.events) {
      expect(e.payload.i).toBe(e.seq - 1);
      seqs.push(e.seq);
    }
    from = page.next;
  }
}

describe("a cluster with an s3:// archive", () => {
  it("archives closed segments to the bucket and serves them from any node, also after the owner's kill -9", async () => {
    const stream = "s3.history";
    const owner = await ownerOf(w.nodes[0].url, w.nodes, stream, SHARDS);
    const other = w.nodes.find((n) => n !== owner)!;
    for (let i = 0; i < 20; i++) {
      const events = Array.from({ length: 20 }, (_, k) => ({ type: "t", payload: { i: i * 20 + k } }));
      const r = await fetch(`${owner.url}/v1/streams/${stream}/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ events }),
      });
      expect(r.status).toBe(200);
    }
    const archived = await until("segments in the bucket", async () => {
      const [r] = await w.sql<
        { n: string; last: string | null; key: string | null }[]
      >`select count(*) as n, max(last_seq) as last, min(key) as key from ticker_cluster_segments where stream = ${stream}`;
      return Number(r.n) >= 2 ? { last: Number(r.last), key: r.key! } : null;
    });
    // The object is in the bucket under the prefix, as the manifest row names it.
    const object = await fetch(`${s3.endpoint}/ticker/cluster-a/${archived.key}`);
    expect(object.status).toBe(200);
    const segment = Buffer.from(await object.arrayBuffer());
    expect(segment.byteLength).toBeGreaterThan(0);
    // Its row holds the points of its chunks as the owner built them from those bytes (one chunk: 8 KiB segments).
    const [row] = await w.sql<{ points: Buffer; base_seq: string }[]>`select points, base_seq from ticker_cluster_segments where key = ${archived.key}`;
    expect(row.points.equals((await chunkPointsOf(segment, 1 << 24)) as Buffer)).toBe(true);
    expect(parsePoints(row.points, { baseSeq: Number(row.base_seq), lastSeq: Number.MAX_SAFE_INTEGER, bytes: segment.length })?.seqs).toEqual(
      Float64Array.of(Number(row.base_seq)),
    );
    // A non-owner serves the archived part itself.
    const page = await fetch(`${other.url}/v1/streams/${stream}/events?from=1&limit=10`, { redirect: "manual" });
    expect(page.status).toBe(200);
    expect(((await page.json()) as { events: unknown[] }).events).toHaveLength(10);
    expect(await readAll(other.url, stream)).toEqual(Array.from({ length: 400 }, (_, i) => i + 1));
    owner.server.killNow();
    await settled([other], SHARDS, 30_000);
    expect(await readAll(other.url, stream)).toEqual(Array.from({ length: 400 }, (_, i) => i + 1));
    const next = await fetch(`${other.url}/v1/streams/${stream}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ events: [{ type: "t", payload: { i: 400 } }] }),
    });
    expect(((await next.json()) as { first_seq: number }).first_seq).toBe(401);
  }, 60_000);
});
