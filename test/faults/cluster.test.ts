// A cluster of three real nodes on a private PostgreSQL under load
// (producers through any node, grouped consumers, a checkpoint poller),
// while the test kills an owner with kill -9, freezes one past its lease
// (SIGSTOP, then SIGCONT) and cuts one from PostgreSQL (a TCP proxy), and
// then restarts every node in turn. The history checker of the fault suite
// judges it: every acknowledged event present once, seqs gap-free, no batch
// cut, no checkpoint back; and the frozen owner, woken, writes nothing.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { clusterDb, sleep, type ClusterDb } from "../helpers/cluster-db.js";
import { clusterSetup, ownerOf, restartNode, settled, startNode, type ClusterNodeProcess, type ClusterSetup } from "../helpers/cluster-nodes.js";
import { tcpProxy, type TcpProxy } from "../helpers/tcp-proxy.js";
import { signal } from "../harness/process.js";
import { failures, History } from "./history.js";
import { readBack, runSeed } from "./load.js";
import { ClusterLoad as Load, GROUPS, prepare, PRODUCERS, STREAMS } from "./cluster-load.js";
import { recordResult } from "./scale.js";

const SHARDS = 8;
const LEASE_MS = 2000;

let db: ClusterDb;
let proxy: TcpProxy;
let setup: ClusterSetup;
let nodes: ClusterNodeProcess[] = [];
/** One history for the whole run: the rolling restart's consumers resume from checkpoints the first test's acks set. */
const history = new History();

beforeAll(async () => {
  db = await clusterDb();
  const { url, port, via } = await db.freshUrl();
  proxy = await tcpProxy(port);
  // 64 KiB segments: archiving runs through the faults too.
  setup = clusterSetup(url, {
    clusterShards: SHARDS,
    leaseMs: LEASE_MS,
    args: ["--segment-bytes-max", String(64 << 10), "--cluster-archive-interval-ms", "200"],
  });
  // n3 reaches PostgreSQL through the proxy the test cuts.
  nodes = await Promise.all([startNode(setup, "n1"), startNode(setup, "n2"), startNode(setup, "n3", undefined, via(proxy.port))]);
  await settled(nodes, SHARDS);
}, 90_000);
afterAll(async () => {
  await Promise.allSettled(nodes.map((n) => n.server.stop()));
  await proxy?.close();
  await db?.stop();
});

function judge(name: string, load: Load, counts: ReturnType<History["check"]>, cases: number, seed: number, extra: Record<string, number>): void {
  const statuses: Record<number, number> = {};
  for (const p of load.producers) for (const [k, v] of Object.entries(p.stats.statuses)) statuses[Number(k)] = (statuses[Number(k)] ?? 0) + v;
  console.log(`${name}: ${JSON.stringify(counts)}, answers ${JSON.stringify(statuses)}, ${JSON.stringify(extra)}`);
  recordResult({
    fault: name,
    setup: `3 nodes, ${SHARDS} cluster shards, lease ${LEASE_MS} ms, 64 KiB segments; ${PRODUCERS} producers through any node, ${STREAMS.length} streams, JSON + FlatBuffers batches of 1-1,000 events, half keyed and retried; ${GROUPS.length} group per stream; seed ${seed}`,
    cases,
    survived: Object.keys(failures(counts)).length === 0 && load.unexpected.length === 0 ? cases : 0,
    acked: counts.acked,
    lost: counts.lost,
    duplicates: counts.duplicated + counts.sessionDuplicates,
    gaps: counts.gaps,
    other: { "checkpoint regressions": counts.checkpointRegressions, "half batches": counts.halfBatches, delivered: counts.delivered, ...extra },
  });
  expect(load.unexpected).toEqual([]);
  expect(failures(counts)).toEqual({});
  expect(counts.acked).toBeGreaterThan(1000);
  expect(counts.delivered).toBeGreaterThan(1000);
}

describe("a cluster under faults", () => {
  it("loses nothing acknowledged through kill -9 of an owner, a frozen owner and a node cut from PostgreSQL; the woken owner writes nothing", async () => {
    const seed = runSeed("cluster faults");
    await prepare(nodes[0].url, history);
    const load = new Load(
      history,
      seed,
      nodes.map((n) => n.url),
      "f",
    );
    await sleep(2000);

    // kill -9 of the owner of a stream; it comes back on the same data dir and port.
    const killed = await ownerOf(nodes[0].url, nodes, STREAMS[0], SHARDS);
    const alive = nodes.filter((n) => n !== killed);
    killed.server.killNow();
    load.retarget(killed.url, alive[0].url);
    await settled(alive, SHARDS, 30_000);
    await sleep(1000);
    const back = await restartNode(setup, killed);
    nodes = [...alive, back];
    await settled(nodes, SHARDS, 30_000);
    await sleep(1000);

    // SIGSTOP an owner past its lease, with a publish waiting in its socket; SIGCONT.
    const frozen = await ownerOf(nodes[0].url, nodes, STREAMS[1], SHARDS);
    const others = nodes.filter((n) => n !== frozen);
    load.retarget(frozen.url, others[0].url);
    signal(frozen.server.pid, "SIGSTOP");
    const probe = fetch(`${frozen.url}/v1/streams/${STREAMS[1]}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ events: [{ type: "stale", payload: { stale: true } }] }),
      redirect: "manual",
    }).then((r) => r.status);
    await settled(others, SHARDS, 30_000);
    await sleep(LEASE_MS);
    signal(frozen.server.pid, "SIGCONT");
    const probeStatus = await probe;
    await settled(nodes, SHARDS, 30_000);
    await sleep(1000);

    // n3 cut from PostgreSQL past its lease, then healed.
    const cut = nodes.find((n) => n.id === "n3")!;
    const reachable = nodes.filter((n) => n !== cut);
    load.retarget(cut.url, reachable[0].url);
    proxy.cut();
    await settled(reachable, SHARDS, 30_000);
    await sleep(LEASE_MS);
    proxy.heal();
    await settled(nodes, SHARDS, 30_000);
    await sleep(1000);

    await load.stop(nodes[0].url);
    const replays = await readBack(nodes[0].url, STREAMS);
    const counts = load.history.check(replays);
    // The frozen owner's publish, answered after it woke, was refused: never appended under its old lease.
    expect([307, 503]).toContain(probeStatus);
    const stale = [...replays.values()].flat().filter((e) => (e.payload as { stale?: boolean } | undefined)?.stale === true);
    expect(stale).toEqual([]);
    judge("cluster: kill -9, SIGSTOP past the lease, cut from PostgreSQL", load, counts, 3, seed, { "stale owner's writes that landed": stale.length });
  }, 240_000);

  it("loses nothing acknowledged through a rolling restart of every node under load", async () => {
    const seed = runSeed("cluster rolling restart");
    const load = new Load(
      history,
      seed,
      nodes.map((n) => n.url),
      "r",
    );
    await sleep(1500);
    for (const n of [...nodes]) {
      const rest = nodes.filter((x) => x !== n);
      load.retarget(n.url, rest[0].url);
      await n.server.stop();
      await settled(rest, SHARDS, 30_000);
      const back = await restartNode(setup, n);
      nodes = [...rest, back];
      await settled(nodes, SHARDS, 30_000);
      await sleep(500);
    }
    await load.stop(nodes[0].url);
    const counts = load.history.check(await readBack(nodes[0].url, STREAMS));
    judge("cluster: rolling restart of 3 nodes under load", load, counts, 3, seed, {});
  }, 240_000);
});
