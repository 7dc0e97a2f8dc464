// The systems bench:cluster compares: one `ticker serve` without cluster
// flags, or three in cluster mode on a private PostgreSQL and one archive
// directory (started as test/helpers/cluster-nodes.ts starts them for the
// tests, which loadtest does not import), each on a port chosen first so its
// advertised URL names it; and the CPU of every process of either, read from
// /proc, so a row can say which of them the two cores went to.
import { readdirSync } from "node:fs";
import postgres from "postgres";
import { clusterShardOf } from "../../src/cluster/leases.js";
import { migrate } from "../../src/consumer/schema.js";
import { startPostgres } from "../../test/harness/postgres.js";
import { onFreePort, type ServerProcess } from "../../test/harness/process.js";
import type { TickerProcess } from "../../test/harness/ticker.js";
import { CLK_TCK, machineBusyTicks, statFields, ticksOf } from "../lib/proc.js";
import type { TempDirs } from "../lib/run.js";
import { startTicker } from "../systems/ticker.js";
import { CLUSTER_NODES, SEGMENT_BYTES_MAX, type Setup } from "./cluster-rows.js";

/** The server's default cluster_shards: the bench runs the defaults but for the segment size. */
const CLUSTER_SHARDS = 64;
const SETTLE_TIMEOUT_MS = 60_000;
const POLL_MS = 250;
/** Over a lease renewal (every third of the 5 s default lease). */
const STABLE_MS = 3000;

export interface Node {
  id: string;
  server: TickerProcess;
}

export interface BenchSystem {
  setup: Setup;
  nodes: Node[];
  pg: ServerProcess | null;
  /** The cluster's PostgreSQL (the manifest), null for one node. */
  sql: postgres.Sql | null;
  /** Which node owns each cluster shard (one node: all of them). */
  owners: string[];
  stop(): Promise<void>;
}

export const sleep = (ms: number) => new Promise((ok) => setTimeout(ok, ms));

export async function startOneNode(dirs: TempDirs): Promise<BenchSystem> {
  const server = await startTicker(dirs.make(), { args: ["--segment-bytes-max", String(SEGMENT_BYTES_MAX)] });
  return {
    setup: "one",
    nodes: [{ id: "one", server }],
    pg: null,
    sql: null,
    owners: Array.from({ length: CLUSTER_SHARDS }, () => "one"),
    stop: async () => void (await server.stop()),
  };
}

export async function startCluster(dirs: TempDirs): Promise<BenchSystem> {
  const pg = await startPostgres();
  const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
  const nodes: Node[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.server.stop()));
    await sql.end();
    await pg.stop();
  };
  try {
    await migrate(pg.url);
    const archive = dirs.make();
    for (let i = 1; i <= CLUSTER_NODES; i++) {
      const id = `n${i}`;
      const dataDir = dirs.make();
      const server = await onFreePort((port) =>
        startTicker(dataDir, {
          args: [
            "--port",
            String(port),
            "--segment-bytes-max",
            String(SEGMENT_BYTES_MAX),
            "--cluster-postgres-url",
            pg.url,
            "--node-id",
            id,
            "--advertise-url",
            `http://127.0.0.1:${port}`,
            "--archive",
            `file://${archive}`,
          ],
        }),
      );
      nodes.push({ id, server });
    }
    const owners = await settled(nodes);
    return { setup: "cluster", nodes, pg, sql, owners, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

interface ClusterMap {
  node_id: string;
  serving: number[];
  shards: Array<{ shard: number; owner: string | null }>;
}

/**
 * Waits until every shard has a live owner, every node serves some and what
 * the map gives it, and the map stays so for STABLE_MS (a joining node takes
 * its share over a few lease renewals; 64 shards settle as 22, 22 and 20).
 * Returns the owners by shard.
 */
async function settled(nodes: Node[]): Promise<string[]> {
  const t0 = performance.now();
  let seen = "";
  let since = 0;
  for (;;) {
    const maps = await Promise.all(
      nodes.map((n) =>
        fetch(`${n.server.url}/v1/cluster`)
          .then((r) => (r.ok ? (r.json() as Promise<ClusterMap>) : null))
          .catch(() => null),
      ),
    );
    const v = maps[0];
    if (v && maps.every((m) => m !== null) && v.shards.length === CLUSTER_SHARDS) {
      const owners = v.shards.map((s) => s.owner ?? "");
      const ids = new Set(nodes.map((n) => n.id));
      const owned = owners.every((o) => ids.has(o)) && nodes.every((n) => owners.includes(n.id));
      const agreed = maps.every((m) => m!.serving.length === owners.filter((o) => o === m!.node_id).length);
      const key = owners.join(",");
      if (!owned || !agreed) seen = "";
      else if (key !== seen) [seen, since] = [key, performance.now()];
      else if (performance.now() - since >= STABLE_MS) return owners;
    }
    if (performance.now() - t0 > SETTLE_TIMEOUT_MS) throw new Error(`the cluster did not settle in ${SETTLE_TIMEOUT_MS / 1000} s`);
    await sleep(POLL_MS);
  }
}

export const ownerOf = (sys: BenchSystem, stream: string): Node => {
  const id = sys.owners[clusterShardOf(stream, CLUSTER_SHARDS)];
  const n = sys.nodes.find((x) => x.id === id);
  if (!n) throw new Error(`no node owns ${stream}`);
  return n;
};

/** `perNode` stream names owned by each of the cluster's nodes (as many on one node): a load spread over every owner. */
export function spreadStreams(sys: BenchSystem, prefix: string, perNode: number): string[] {
  const out: string[] = [];
  const taken = new Map<string, number>();
  for (let i = 0; out.length < perNode * CLUSTER_NODES; i++) {
    const name = `${prefix}-${i}`;
    const id = ownerOf(sys, name).id;
    const n = taken.get(id) ?? 0;
    if (sys.setup === "cluster" && n >= perNode) continue;
    taken.set(id, n + 1);
    out.push(name);
  }
  return out;
}

/** The last seq of `stream` the manifest says is archived (0: none). */
export async function archivedLast(sys: BenchSystem, stream: string): Promise<number> {
  const [r] = await sys.sql!<{ last: string | null }[]>`select max(last_seq) as last from ticker_cluster_segments where stream = ${stream}`;
  return Number(r.last ?? 0);
}

/**
 * Waits until the owners have archived what they will (the manifest's
 * segment count unchanged for `quietMs`, past an archiving interval, with
 * some of `stream` in it): a replay measured meanwhile would share the cores
 * with the copying of other streams' segments. Returns `stream`'s archived
 * last seq.
 */
export async function archivingDone(sys: BenchSystem, stream: string, quietMs: number, timeoutMs: number): Promise<number> {
  const segments = async () => Number((await sys.sql!<{ n: string }[]>`select count(*) as n from ticker_cluster_segments`)[0].n);
  const t0 = performance.now();
  let last = await segments();
  let since = performance.now();
  for (;;) {
    await sleep(POLL_MS);
    const now = await segments();
    if (now !== last) [last, since] = [now, performance.now()];
    else if (performance.now() - since >= quietMs && (await archivedLast(sys, stream)) > 0) return archivedLast(sys, stream);
    if (performance.now() - t0 > timeoutMs) throw new Error(`archiving still moving after ${timeoutMs / 1000} s (${now} segments)`);
  }
}

// ---- CPU by process ------------------------------------------------------------

export interface CpuMark {
  at: number;
  nodes: number[];
  pg: number;
  self: NodeJS.CpuUsage;
  machine: number;
}

export interface CpuUse {
  wallS: number;
  /** Each node's CPU seconds, all its threads. */
  nodesS: number[];
  pgS: number;
  clientS: number;
  /** The rest of the machine's busy time: anyone else on the VM. */
  otherS: number;
}

/**
 * PostgreSQL's CPU ticks: the postmaster's own and its reaped children's
 * (cutime, cstime: a backend whose connection closed), and those of every
 * child alive now (backends, the checkpointer, the WAL writer).
 */
function pgTicks(postmaster: number): number {
  const f = statFields(`/proc/${postmaster}/stat`);
  let ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const c = statFields(`/proc/${d}/stat`);
      if (Number(c[1]) === postmaster) ticks += Number(c[11]) + Number(c[12]);
    } catch {
      // Gone between the listing and the read: its ticks are the postmaster's cutime now.
    }
  }
  return ticks;
}

export function cpuMark(sys: BenchSystem): CpuMark {
  return {
    at: performance.now(),
    nodes: sys.nodes.map((n) => ticksOf(`/proc/${n.server.pid}/stat`)),
    pg: sys.pg ? pgTicks(sys.pg.pid) : 0,
    self: process.cpuUsage(),
    machine: machineBusyTicks(),
  };
}

export function cpuSince(sys: BenchSystem, m: CpuMark): CpuUse {
  const now = cpuMark(sys);
  const self = process.cpuUsage(m.self);
  const nodesS = now.nodes.map((t, i) => (t - m.nodes[i]) / CLK_TCK);
  const pgS = (now.pg - m.pg) / CLK_TCK;
  const clientS = (self.user + self.system) / 1e6;
  const machineS = (now.machine - m.machine) / CLK_TCK;
  const sum = nodesS.reduce((a, b) => a + b, 0);
  // Read at slightly different instants: a little below zero is rounding.
  return { wallS: (now.at - m.at) / 1000, nodesS, pgS, clientS, otherS: Math.max(0, machineS - sum - pgS - clientS) };
}
