// The open tail in PostgreSQL (src/cluster/tail.ts) against a real private
// PostgreSQL: batches land under a live lease and read back whole and in
// order, batches that come during a commit share the next one, a write under
// an old epoch lands nothing, and trimming is fenced like a write.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { randomBytes } from "node:crypto";
import { ShardLeases } from "../../src/cluster/leases.js";
import fc from "fast-check";
import { textArray } from "../../src/cluster/sql-array.js";
import { FencedError, TailStore, type TailBatch } from "../../src/cluster/tail.js";
import { clusterDb, sleep, type ClusterDb } from "../helpers/cluster-db.js";

let db: ClusterDb;
beforeAll(async () => {
  db = await clusterDb();
});
afterAll(async () => {
  await db?.stop();
});

const batch = (stream: string, firstSeq: number, lastSeq: number): TailBatch => ({ stream, firstSeq, lastSeq, records: randomBytes(64 + firstSeq) });

describe("the cluster tail store", () => {
  it("batches land under a live lease and read back whole, in seq order; those that come during a commit share the next one", async () => {
    const open = await db.fresh();
    const sql = open();
    const leases = new ShardLeases(sql, { nodeId: "a", leaseMs: 30_000, shards: 2 });
    await leases.ensureShards();
    const { epoch } = (await leases.claim(1))!;
    const tail = new TailStore(sql, "a");
    const first = batch("s0", 1, 10);
    // 50 more batches of 5 streams, appended while the first commit is in flight, each stream's in seq order.
    const next = new Map<string, number>([["s0", 11]]);
    const later = Array.from({ length: 50 }, (_, i) => {
      const stream = `s${i % 5}`;
      const from = next.get(stream) ?? 1;
      next.set(stream, from + 3);
      return batch(stream, from, from + 2);
    });
    await Promise.all([tail.append(1, epoch, first), ...later.map((b) => tail.append(1, epoch, b))]);

    const rows = await tail.read("s0", 1);
    expect(rows.map((r) => [r.firstSeq, r.lastSeq])).toEqual([[1, 10], ...later.filter((b) => b.stream === "s0").map((b) => [b.firstSeq, b.lastSeq])]);
    expect(Buffer.from(rows[0].records).equals(Buffer.from(first.records))).toBe(true);
    expect(rows.every((r) => r.epoch === epoch)).toBe(true);
    expect((await tail.read("s0", 12)).map((r) => r.firstSeq)[0]).toBe(11); // the row holding 12 starts at 11
    // One transaction for the first batch, one for everything that waited behind it.
    const [{ commits }] = await sql<{ commits: number }[]>`select count(distinct xmin::text)::int as commits from ticker_cluster_tail`;
    expect(commits).toBe(2);
  });

  it("after the lease passes to another node, the old owner's batches land nothing and are refused with FencedError", async () => {
    const open = await db.fresh();
    const a = new ShardLeases(open(), { nodeId: "a", leaseMs: 300, shards: 1 });
    const b = new ShardLeases(open(), { nodeId: "b", leaseMs: 30_000, shards: 1 });
    await a.ensureShards();
    const old = (await a.claim(0))!;
    const tailA = new TailStore(open(), "a");
    const tailB = new TailStore(open(), "b");
    await tailA.append(0, old.epoch, batch("s", 1, 5));
    await sleep(400);
    // Run out but not yet claimed: refused all the same.
    await expect(tailA.append(0, old.epoch, batch("s", 6, 6))).rejects.toBeInstanceOf(FencedError);
    const taken = (await b.claim(0))!;
    expect(taken.epoch).toBe(old.epoch + 1);
    await expect(tailA.append(0, old.epoch, batch("s", 6, 7))).rejects.toThrow(`cluster shard 0: epoch ${old.epoch} is no longer current`);
    await tailB.append(0, taken.epoch, batch("s", 6, 9));
    expect((await tailB.read("s", 1)).map((r) => [r.firstSeq, r.epoch])).toEqual([
      [1, old.epoch],
      [6, taken.epoch],
    ]);
    // A store that moved on to a newer epoch refuses an older one without asking the database.
    await expect(tailB.append(0, taken.epoch - 1, batch("s", 10, 10))).rejects.toBeInstanceOf(FencedError);
  });

  it("trim deletes a stream's rows up to the archived seq under a live lease, and nothing under an old epoch", async () => {
    const open = await db.fresh();
    const sql = open();
    const a = new ShardLeases(sql, { nodeId: "a", leaseMs: 30_000, shards: 1 });
    await a.ensureShards();
    const { epoch } = (await a.claim(0))!;
    const tail = new TailStore(sql, "a");
    for (const [f, l] of [
      [1, 4],
      [5, 9],
      [10, 12],
    ])
      await tail.append(0, epoch, batch("s", f, l));
    await tail.append(0, epoch, batch("t", 1, 3));
    expect(await tail.trim(0, epoch - 1, "s", 9)).toBe(false);
    expect((await tail.read("s", 1)).length).toBe(3);
    expect(await tail.trim(0, epoch, "s", 9)).toBe(true);
    expect((await tail.read("s", 1)).map((r) => r.firstSeq)).toEqual([10]);
    expect(await tail.trim(0, epoch, "s", 9)).toBe(true); // nothing left to delete, lease still live
    expect((await tail.read("t", 1)).length).toBe(1);
  });

  it("textArray carries any text PostgreSQL takes (no NUL) through a ::text[] cast unchanged", async () => {
    const sql = (await db.fresh())();
    const text = fc.string({ unit: "binary", maxLength: 20 }).map((v) => v.split("\u0000").join(""));
    await fc.assert(
      fc.asyncProperty(fc.array(text, { maxLength: 8 }), async (values) => {
        const [{ back }] = await sql<{ back: string[] }[]>`select ${textArray(values)}::text[] as back`;
        expect(back).toEqual(values);
      }),
      { numRuns: 200 },
    );
  });
});
