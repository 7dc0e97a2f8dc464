// Ordered ingest's state in PostgreSQL (src/cluster/ordered-store.ts, committed
// through src/cluster/tail.ts appendOrdered) against a real private
// PostgreSQL: an admission's tail row, held events and producers' places land
// together in one transaction or not at all, under an old epoch nothing of
// them lands, and a new owner reads back held events and the producers that
// are not idle.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ShardLeases } from "../../src/cluster/leases.js";
import { OrderedStore, type OrderedChanges } from "../../src/cluster/ordered-store.js";
import { FencedError, TailStore, type TailBatch } from "../../src/cluster/tail.js";
import { clusterDb, sleep, type ClusterDb } from "../helpers/cluster-db.js";

let db: ClusterDb;
beforeAll(async () => {
  db = await clusterDb();
});
afterAll(async () => {
  await db?.stop();
});

const row = (stream: string, firstSeq: number, lastSeq: number): TailBatch => ({ stream, firstSeq, lastSeq, records: randomBytes(32) });
const held = (producerId: string, producerSeq: number, receivedMs = 1000) => ({ producerId, producerSeq, receivedMs, frame: randomBytes(24) });
const changes = (stream: string, c: Partial<OrderedChanges>): OrderedChanges => ({ stream, held: [], released: [], producers: [], idleBeforeMs: null, ...c });

/** A fresh database with node "a" owning its one shard: its tail and ordered store. */
async function owner() {
  const sql = (await db.fresh())();
  const leases = new ShardLeases(sql, { nodeId: "a", leaseMs: 30_000, shards: 1 });
  await leases.ensureShards();
  const { epoch } = (await leases.claim(0))!;
  return { sql, epoch, tail: new TailStore(sql, "a"), store: new OrderedStore(sql) };
}

describe("ordered ingest's store in PostgreSQL", () => {
  it("an admission's tail row, held events and producers land in one transaction with the plain batches of its group, and read back", async () => {
    const { sql, epoch, tail, store } = await owner();
    const h3 = held("p", 3, 5000);
    const first = tail.appendOrdered(
      0,
      epoch,
      row("o", 1, 1),
      changes("o", { held: [h3, held("p", 4)], producers: [{ producerId: "p", lastSeq: 1, lastSeenMs: 5000 }] }),
    );
    // A plain batch and two admissions (one appends nothing) while the first commit is in flight: one transaction for them.
    const plain = tail.append(0, epoch, row("plain", 1, 3));
    const holdOnly = tail.appendOrdered(0, epoch, null, changes("o2", { held: [held("q", 2)] }));
    const release = tail.appendOrdered(
      0,
      epoch,
      row("o", 2, 4),
      changes("o", {
        released: [
          { producerId: "p", producerSeq: 3 },
          { producerId: "p", producerSeq: 4 },
        ],
        producers: [{ producerId: "p", lastSeq: 4, lastSeenMs: 6000 }],
      }),
    );
    await Promise.all([first, plain, holdOnly, release]);
    const [{ commits }] = await sql<{ commits: number }[]>`select count(distinct xmin::text)::int as commits from ticker_cluster_tail`;
    expect(commits).toBe(2);
    const [{ together }] = await sql<{ together: boolean }[]>`select
      (select xmin::text from ticker_cluster_tail where stream = 'plain') = (select xmin::text from ticker_cluster_held where stream = 'o2') as together`;
    expect(together).toBe(true);
    expect(await store.read("o", 0)).toEqual({ held: [], producers: [{ producerId: "p", lastSeq: 4, lastSeenMs: 6000 }] });
    const o2 = await store.read("o2", 0);
    expect(o2.held.map((h) => [h.producerId, h.producerSeq])).toEqual([["q", 2]]);
    expect((await tail.read("o", 1)).map((r) => [r.firstSeq, r.lastSeq])).toEqual([
      [1, 1],
      [2, 4],
    ]);
  });

  it("a new owner reads back held events whole and the producers that are not idle, unless they hold an event; the idle sweep forgets the same ones", async () => {
    const { sql, epoch, tail, store } = await owner();
    const h = held("holder", 9, 1234);
    await tail.appendOrdered(
      0,
      epoch,
      null,
      changes("s", {
        held: [h],
        producers: [
          { producerId: "fresh", lastSeq: 5, lastSeenMs: 10_000 },
          { producerId: "idle", lastSeq: 7, lastSeenMs: 100 },
          { producerId: "holder", lastSeq: 3, lastSeenMs: 100 },
        ],
      }),
    );
    const back = await store.read("s", 5000);
    expect(back.producers.map((p) => p.producerId).sort()).toEqual(["fresh", "holder"]);
    expect(back.held).toHaveLength(1);
    expect(back.held[0]).toMatchObject({ producerId: "holder", producerSeq: 9, receivedMs: 1234 });
    expect(back.held[0].frame.equals(h.frame)).toBe(true);
    await tail.appendOrdered(0, epoch, null, changes("s", { idleBeforeMs: 5000 }));
    const left = await sql<{ producer_id: string }[]>`select producer_id from ticker_cluster_producers where stream = 's' order by producer_id`;
    expect(left.map((r) => r.producer_id)).toEqual(["fresh", "holder"]);
  });

  it("under an old epoch nothing of an admission lands (FencedError), and one whose tail row cannot land leaves its held events and places out too", async () => {
    const open = await db.fresh();
    const sql = open();
    const a = new ShardLeases(open(), { nodeId: "a", leaseMs: 300, shards: 1 });
    const b = new ShardLeases(open(), { nodeId: "b", leaseMs: 30_000, shards: 1 });
    await a.ensureShards();
    const old = (await a.claim(0))!;
    const tailA = new TailStore(open(), "a");
    const store = new OrderedStore(sql);
    await tailA.appendOrdered(0, old.epoch, row("s", 1, 1), changes("s", { producers: [{ producerId: "p", lastSeq: 1, lastSeenMs: 1 }] }));
    await sleep(400);
    const taken = (await b.claim(0))!;
    expect(taken.epoch).toBe(old.epoch + 1);
    // The old owner, frozen past its lease: a release and a new hold, refused whole.
    const stale = changes("s", { held: [held("p", 5)], producers: [{ producerId: "p", lastSeq: 3, lastSeenMs: 2 }] });
    await expect(tailA.appendOrdered(0, old.epoch, row("s", 2, 3), stale)).rejects.toBeInstanceOf(FencedError);
    // One that appends nothing, from a store that has not failed yet (a failed one refuses without asking): the fence alone stops it.
    await expect(new TailStore(open(), "a").appendOrdered(0, old.epoch, null, changes("s", { held: [held("p", 6)] }))).rejects.toBeInstanceOf(FencedError);
    expect(await store.read("s", 0)).toEqual({ held: [], producers: [{ producerId: "p", lastSeq: 1, lastSeenMs: 1 }] });
    expect((await tailA.read("s", 1)).map((r) => r.firstSeq)).toEqual([1]);

    // The new owner: a tail row that is there already (seq 1) fails the transaction, its held event and place with it.
    const tailB = new TailStore(open(), "b");
    await expect(
      tailB.appendOrdered(0, taken.epoch, row("s", 1, 2), changes("s", { held: [held("p", 9)], producers: [{ producerId: "p", lastSeq: 2, lastSeenMs: 3 }] })),
    ).rejects.toThrow();
    expect(await store.read("s", 0)).toEqual({ held: [], producers: [{ producerId: "p", lastSeq: 1, lastSeenMs: 1 }] });
    // After its catch-up (reset), its commits land again.
    tailB.reset(0);
    await tailB.appendOrdered(0, taken.epoch, row("s", 2, 2), changes("s", { producers: [{ producerId: "p", lastSeq: 2, lastSeenMs: 3 }] }));
    expect((await store.read("s", 0)).producers).toEqual([{ producerId: "p", lastSeq: 2, lastSeenMs: 3 }]);
  });
});
