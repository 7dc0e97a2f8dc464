// ticker/client replaying archived history through a node that does not own
// the stream: what the archive holds is served there (its pages show the
// stream's head from PostgreSQL, so the replay goes on), the rest by the
// owner the node redirects to; a second replay goes straight to the owner
// for what the first learned.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { Ticker } from "../../src/client/index.js";
import { clusterShardOf } from "../../src/cluster/leases.js";
import { until } from "../helpers/cluster-db.js";
import { clusterView, startCluster, type ClusterWorld } from "../helpers/cluster-nodes.js";

const SHARDS = 4;
let w: ClusterWorld;
const clients: Ticker[] = [];

beforeAll(async () => {
  // Small segments, archived often: a few hundred events make history a non-owner serves from the archive.
  w = await startCluster(["n1", "n2"], { clusterShards: SHARDS, leaseMs: 2000, args: ["--segment-bytes-max", "8192", "--cluster-archive-interval-ms", "100"] });
}, 90_000);
afterAll(async () => {
  for (const c of clients) await c.close();
  await w?.stop();
});

async function payloads(t: Ticker, stream: string): Promise<number[]> {
  const out: number[] = [];
  for await (const e of t.replay(stream, { pageEvents: 100 })) out.push(e.payload as number);
  return out;
}

describe("ticker/client replaying a cluster's archive", () => {
  it("replays a stream whole through a non-owner, the archived part served there and the rest by the owner", async () => {
    const view = await clusterView(w.nodes[0].url);
    let stream = "";
    for (let i = 0; !stream; i++) if (view.shards[clusterShardOf(`arch-${i}`, SHARDS)].owner === "n2") stream = `arch-${i}`;
    const t = new Ticker({ url: w.nodes[0].url });
    clients.push(t);
    for (let i = 0; i < 20; i++)
      await t.publish(
        stream,
        Array.from({ length: 50 }, (_, k) => ({ type: "t", payload: i * 50 + k })),
      );
    await until("archived segments", async () => {
      const [r] = await w.sql<{ n: string }[]>`select count(*) as n from ticker_cluster_segments where stream = ${stream}`;
      return Number(r.n) >= 2 ? true : null;
    });
    const reader = new Ticker({ url: w.nodes[0].url });
    clients.push(reader);
    expect(await payloads(reader, stream)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(reader.redirects).toBeGreaterThanOrEqual(1);
    const before = reader.redirects;
    expect(await payloads(reader, stream)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(reader.redirects).toBe(before);
  });
});
