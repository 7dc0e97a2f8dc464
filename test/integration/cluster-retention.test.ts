// Retention in cluster mode: the owner keeps its copy's segments until the
// archive has them, and expires the archive itself (manifest rows fenced,
// then the objects), never the newest archived segment; a replay below what
// is left is 410 expired on every node.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { sleep, until } from "../helpers/cluster-db.js";
import { ownerOf, startCluster, type ClusterWorld } from "../helpers/cluster-nodes.js";

const SHARDS = 4;
const RETENTION_MS = 1500;
let w: ClusterWorld;

beforeAll(async () => {
  const args = [
    "--segment-bytes-max",
    "8192",
    "--cluster-archive-interval-ms",
    "100",
    "--default-retention-ms",
    String(RETENTION_MS),
    "--retention-check-interval-ms",
    "100",
  ];
  w = await startCluster(["r1", "r2"], { clusterShards: SHARDS, leaseMs: 2000, args });
}, 90_000);
afterAll(() => w?.stop());

const publish = (url: string, stream: string, from: number, n: number) =>
  fetch(`${url}/v1/streams/${stream}/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ events: Array.from({ length: n }, (_, k) => ({ type: "t", payload: { i: from + k } })) }),
  });

describe("retention in cluster mode", () => {
  it("expires the archive's old segments and their objects, keeps the newest, and answers 410 below what is left on every node", async () => {
    const stream = "ret.a";
    const owner = await ownerOf(w.nodes[0].url, w.nodes, stream, SHARDS);
    const other = w.nodes.find((n) => n !== owner)!;
    for (let i = 0; i < 10; i++) expect((await publish(owner.url, stream, i * 20, 20)).status).toBe(200);
    const first = await until("segments archived", async () => {
      const rows = await w.sql<
        { key: string; base_seq: string }[]
      >`select key, base_seq from ticker_cluster_segments where stream = ${stream} order by base_seq`;
      return rows.length >= 2 ? rows : null;
    });
    expect(existsSync(join(w.setup.archiveDir, first[0].key))).toBe(true);
    // Past retention, with newer events since: the old segments go from the manifest and the archive.
    await sleep(RETENTION_MS + 200);
    for (let i = 10; i < 20; i++) expect((await publish(owner.url, stream, i * 20, 20)).status).toBe(200);
    const left = await until("old segments expired", async () => {
      const rows = await w.sql<
        { base_seq: string; n: string }[]
      >`select min(base_seq) as base_seq, count(*) as n from ticker_cluster_segments where stream = ${stream}`;
      return Number(rows[0].n) >= 1 && Number(rows[0].base_seq) > Number(first[1].base_seq) ? Number(rows[0].base_seq) : null;
    });
    expect(existsSync(join(w.setup.archiveDir, first[0].key))).toBe(false);
    for (const n of [owner, other]) {
      const r = await fetch(`${n.url}/v1/streams/${stream}/events?from=1`);
      expect(r.status).toBe(410);
      const body = (await r.json()) as { error: { code: string; first_seq: number } };
      expect(body.error.code).toBe("expired");
      expect(body.error.first_seq).toBeGreaterThanOrEqual(left);
      // From the oldest seq it names, a page; retention goes on meanwhile (every 100 ms), so the oldest may move on first: then a 410 names a later one.
      let from = body.error.first_seq;
      for (let tries = 0; ; tries++) {
        const at = await fetch(`${n.url}/v1/streams/${stream}/events?from=${from}&limit=1`);
        if (at.status === 200) break;
        expect(at.status).toBe(410);
        const later = ((await at.json()) as { error: { first_seq: number } }).error.first_seq;
        expect(later).toBeGreaterThan(from);
        expect(tries).toBeLessThan(20);
        from = later;
      }
    }
  }, 60_000);
});
