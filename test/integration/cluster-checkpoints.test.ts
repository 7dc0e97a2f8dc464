// Group checkpoints in cluster mode (src/cluster/checkpoints.ts) against a
// real private PostgreSQL: a checkpoint lands under a live lease, the ones
// set during a commit share the next statement with the latest of each
// group winning, and once the lease passed to another node the old owner's
// checkpoint lands nothing and is refused with FencedError.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { ShardLeases } from "../../src/cluster/leases.js";
import { FencedCheckpoints } from "../../src/cluster/checkpoints.js";
import { FencedError } from "../../src/cluster/tail.js";
import { clusterDb, sleep, type ClusterDb } from "../helpers/cluster-db.js";

let db: ClusterDb;
beforeAll(async () => {
  db = await clusterDb();
});
afterAll(async () => {
  await db?.stop();
});

describe("cluster checkpoints", () => {
  it("land under a live lease; those set during a commit share the next one, the latest of each group winning", async () => {
    const open = await db.fresh();
    const sql = open();
    const leases = new ShardLeases(sql, { nodeId: "a", leaseMs: 30_000, shards: 1 });
    await leases.ensureShards();
    const { epoch } = (await leases.claim(0))!;
    const cps = new FencedCheckpoints(sql, "a");
    const first = cps.set(0, epoch, "s", "g", 1);
    // Set while the first is in flight: one statement for all, one row per (stream, group).
    await Promise.all([first, ...Array.from({ length: 20 }, (_, i) => cps.set(0, epoch, i % 2 ? "s" : "t", "g", 2 + i))]);
    const rows = await sql<{ stream: string; seq: string }[]>`select stream, seq from ticker_checkpoints order by stream`;
    expect(rows.map((r) => [r.stream, Number(r.seq)])).toEqual([
      ["s", 21],
      ["t", 20],
    ]);
  });

  it("after the lease passes to another node, the old owner's checkpoint lands nothing and is refused with FencedError", async () => {
    const open = await db.fresh();
    const a = new ShardLeases(open(), { nodeId: "a", leaseMs: 300, shards: 1 });
    const b = new ShardLeases(open(), { nodeId: "b", leaseMs: 30_000, shards: 1 });
    await a.ensureShards();
    const old = (await a.claim(0))!;
    const cpsA = new FencedCheckpoints(open(), "a");
    const cpsB = new FencedCheckpoints(open(), "b");
    await cpsA.set(0, old.epoch, "s", "g", 10);
    await sleep(400); // a's lease runs out
    const now = (await b.claim(0))!;
    await cpsB.set(0, now.epoch, "s", "g", 12);
    // The frozen owner wakes and acks under its old epoch: refused, and the checkpoint does not go back.
    await expect(cpsA.set(0, old.epoch, "s", "g", 11)).rejects.toBeInstanceOf(FencedError);
    const [row] = await open()<{ seq: string }[]>`select seq from ticker_checkpoints where stream = 's' and group_name = 'g'`;
    expect(Number(row.seq)).toBe(12);
  });
});
