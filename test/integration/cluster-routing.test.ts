// The shard map (src/cluster/routing.ts) against a real private PostgreSQL:
// read from the lease table, kept fresh by the nodes' change notices
// (LISTEN/NOTIFY) without being asked, and the 307 target of a stream.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { clusterShardOf, ShardLeases } from "../../src/cluster/leases.js";
import { ClusterNode } from "../../src/cluster/node.js";
import { redirectLocation, ShardMap } from "../../src/cluster/routing.js";
import { clusterDb, until, type ClusterDb } from "../helpers/cluster-db.js";

const SHARDS = 8;
/** How long the map may take to follow a change. */
const WAIT_MS = 10_000;
let db: ClusterDb;
beforeAll(async () => {
  db = await clusterDb();
});
afterAll(async () => {
  await db?.stop();
});

describe("the cluster's shard map", () => {
  it("follows the nodes' claims and releases through their notices alone, and sends a stream's requests to its owner", async () => {
    const open = await db.fresh();
    const observerSql = open();
    const map = new ShardMap(new ShardLeases(observerSql, { nodeId: "observer", leaseMs: 60_000, shards: SHARDS }), SHARDS);
    await map.listen(observerSql);
    // The map is read once; after that only the nodes' notices make it read the table again.
    const opts = { leaseMs: 60_000, shards: SHARDS, turnMs: 200 };
    const a = new ClusterNode(open(), { nodeId: "a", advertiseUrl: "http://a.example:8080", ...opts });
    const b = new ClusterNode(open(), { nodeId: "b", advertiseUrl: "http://b.example:8080", ...opts });
    try {
      await new ShardLeases(open(), { nodeId: "setup", leaseMs: 1, shards: SHARDS }).ensureShards();
      await map.refresh();
      expect(map.all().every((s) => s.owner === null && s.url === null)).toBe(true);

      await a.start();
      await until("a owning every shard in the map", () => (map.all().every((s) => s.owner === "a") ? true : null), WAIT_MS);
      expect(map.ownerOf("prices.eurusd")).toMatchObject({ owner: "a", url: "http://a.example:8080", shard: clusterShardOf("prices.eurusd", SHARDS) });

      // b joins: a gives up half at its next turn, b claims them at its next.
      await b.start();
      await until(
        "half the shards on each node",
        () => (map.all().filter((s) => s.owner === "a").length === SHARDS / 2 && map.all().filter((s) => s.owner === "b").length === SHARDS / 2 ? true : null),
        WAIT_MS,
      );
      const onB = map.all().find((s) => s.owner === "b")!;
      const stream = Array.from({ length: 1000 }, (_, i) => `s${i}`).find((id) => clusterShardOf(id, SHARDS) === onB.shard)!;
      expect(redirectLocation(map.ownerOf(stream)!.url!, `/v1/streams/${stream}/events?from=5&limit=10`)).toBe(
        `http://b.example:8080/v1/streams/${stream}/events?from=5&limit=10`,
      );

      // b leaves cleanly: its shards are free at once (a keeps its share while b's heartbeat lasts), and the map says so.
      await b.stop();
      await until("b gone from the map", () => (map.all().every((s) => s.owner !== "b") ? true : null), WAIT_MS);
      expect(map.all().filter((s) => s.owner === null).length).toBe(SHARDS / 2);
    } finally {
      await Promise.allSettled([a.stop(), b.stop()]);
      await map.close();
    }
  });

  it("a 307 target keeps the request's path and query and takes only the owner's origin", () => {
    expect(redirectLocation("http://10.0.0.7:8080", "/v1/streams/a%2Fb/events?from=1")).toBe("http://10.0.0.7:8080/v1/streams/a%2Fb/events?from=1");
    expect(redirectLocation("https://node-2.internal", "/v1/cluster")).toBe("https://node-2.internal/v1/cluster");
    expect(() => redirectLocation("http://a:1", "v1/streams")).toThrow('a request path starts with "/"');
  });
});
