// Cluster shard leases (src/cluster/leases.ts) against a real private
// PostgreSQL: claims on the database's clock, epochs, renewal, loss, fencing
// of a writer's statement, and balancing as nodes come and go. Each test has
// its own database, so its shard rows start empty.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import type postgres from "postgres";
import { fence, ShardLeases, rendezvous } from "../../src/cluster/leases.js";
import { clusterDb, sleep, type ClusterDb } from "../helpers/cluster-db.js";

let db: ClusterDb;
beforeAll(async () => {
  db = await clusterDb();
});
afterAll(async () => {
  await db?.stop();
});
const cluster = () => db.fresh();

describe("cluster shard leases", () => {
  it("a claim takes a free shard under a new epoch; another node gets it only once the lease ran out, and the old owner's renewal then fails", async () => {
    const open = await cluster();
    const a = new ShardLeases(open(), { nodeId: "a", leaseMs: 600, shards: 4 });
    const b = new ShardLeases(open(), { nodeId: "b", leaseMs: 600, shards: 4 });
    await a.ensureShards();
    await b.ensureShards();
    expect((await a.claim(0))?.epoch).toBe(1);
    expect(await b.claim(0)).toBeNull();
    expect((await a.renew()).renewed.map((l) => l.shard)).toEqual([0]);
    let taken = await b.claim(0);
    for (let i = 0; !taken && i < 40; i++) {
      await sleep(50);
      taken = await b.claim(0);
    }
    expect(taken?.epoch).toBe(2);
    expect(await a.renew()).toEqual({ renewed: [], lost: [0] });
    expect(a.mayWrite(0)).toBeNull();
    expect(b.mayWrite(0)?.epoch).toBe(2);
    const map = await a.map();
    expect(map[0]).toMatchObject({ shard: 0, owner: "b", epoch: 2, live: true });
    expect(map[1]).toMatchObject({ shard: 1, owner: null, epoch: 0, live: false });
  });

  it("a node may write only before its local deadline, which never passes the lease it was granted", async () => {
    const open = await cluster();
    let t = 1000;
    const a = new ShardLeases(open(), { nodeId: "a", leaseMs: 5000, shards: 2, now: () => t });
    await a.ensureShards();
    await a.claim(1);
    t = 5999;
    expect(a.mayWrite(1)?.epoch).toBe(1);
    t = 6000;
    expect(a.mayWrite(1)).toBeNull();
    await a.renew();
    expect(a.mayWrite(1)?.validUntil).toBe(11_000);
    expect(a.mayWrite(0)).toBeNull();
  });

  it("fencing: a write under an old epoch inserts nothing, and a claim waits for a fenced write in flight to commit", async () => {
    const open = await cluster();
    const sqlA = open();
    const a = new ShardLeases(sqlA, { nodeId: "a", leaseMs: 400, shards: 1 });
    const b = new ShardLeases(open(), { nodeId: "b", leaseMs: 60_000, shards: 1 });
    await a.ensureShards();
    await sqlA`create table fenced_writes (epoch bigint, written_at timestamptz default clock_timestamp())`;
    const write = (sql: postgres.Sql | postgres.TransactionSql, node: string, epoch: number) =>
      sql`insert into fenced_writes (epoch) select ${epoch}::bigint from (${fence(sql, 0, node, epoch)}) as lease`;
    const lease = (await a.claim(0))!;

    let claimedAt = 0;
    let committedAt = 0;
    await sqlA.begin(async (tx) => {
      expect((await write(tx, "a", lease.epoch)).count).toBe(1);
      await sleep(600); // the lease runs out while this write holds the row
      void b.claim(0).then(() => (claimedAt = performance.now()));
      await sleep(300);
      expect(claimedAt).toBe(0); // still waiting for the write to commit
      committedAt = performance.now();
    });
    for (let i = 0; claimedAt === 0 && i < 100; i++) await sleep(20);
    expect(claimedAt).toBeGreaterThan(committedAt);
    expect(b.mayWrite(0)?.epoch).toBe(2);
    // The woken old owner's next write is refused by the database, not by itself.
    expect((await write(sqlA, "a", lease.epoch)).count).toBe(0);
    expect((await write(sqlA, "b", 2)).count).toBe(1);
    expect((await sqlA`select epoch from fenced_writes order by written_at`).map((r) => Number(r.epoch))).toEqual([1, 2]);
  });

  it("balance spreads the shards over the live nodes, a joining node takes its share, and a dead node's shards go to the others", async () => {
    const open = await cluster();
    const SHARDS = 12;
    const nodes = ["a", "b", "c"].map((id) => new ShardLeases(open(), { nodeId: id, leaseMs: 2000, shards: SHARDS }));
    const [a, b, c] = nodes;
    await a.ensureShards();
    const keepAlive = async (live: ShardLeases[]) => {
      for (const n of live) {
        await n.renew();
        await n.heartbeat(`http://${n === a ? "a" : n === b ? "b" : "c"}:8080`);
      }
    };
    const round = async (live: ShardLeases[]) => {
      await keepAlive(live);
      for (let i = 0; i < 3; i++) for (const n of live) await n.balance();
    };
    const owners = async () => (await a.map()).map((s) => (s.live ? s.owner : null));
    const count = (list: Array<string | null>, id: string) => list.filter((o) => o === id).length;

    await round([a]);
    expect(count(await owners(), "a")).toBe(SHARDS);
    await round([a, b]);
    expect([count(await owners(), "a"), count(await owners(), "b")]).toEqual([6, 6]);
    await round([a, b, c]);
    const three = await owners();
    expect(["a", "b", "c"].map((id) => count(three, id))).toEqual([4, 4, 4]);
    // c stops: no renewal, no heartbeat. Once its leases and heartbeat run out, a and b take its shards.
    const before = [[...a.held.keys()], [...b.held.keys()]];
    for (const end = Date.now() + 2200; Date.now() < end; await sleep(200)) await keepAlive([a, b]);
    await round([a, b]);
    expect([[...a.held.keys()], [...b.held.keys()]].map((held, i) => before[i].every((s) => held.includes(s)))).toEqual([true, true]);
    const two = await owners();
    expect(two.every((o) => o === "a" || o === "b")).toBe(true);
    expect([count(two, "a"), count(two, "b")]).toEqual([6, 6]);
    for (const n of [a, b]) for (const l of n.held.values()) expect(n.mayWrite(l.shard)).not.toBeNull();
  });

  it("a node started with another cluster_shards is refused", async () => {
    const open = await cluster();
    await new ShardLeases(open(), { nodeId: "a", leaseMs: 1000, shards: 12 }).ensureShards();
    await expect(new ShardLeases(open(), { nodeId: "b", leaseMs: 1000, shards: 8 }).ensureShards()).rejects.toThrow(
      "the cluster has 12 shards; this node was started with cluster_shards 8",
    );
  });

  it("rendezvous ranks differ between nodes and are stable", () => {
    const order = (node: string) => Array.from({ length: 16 }, (_, s) => s).sort((x, y) => rendezvous(node, y) - rendezvous(node, x));
    expect(order("a")).toEqual(order("a"));
    expect(order("a")).not.toEqual(order("b"));
  });
});
