// Ticker nodes in cluster mode as real `ticker serve` processes on one
// private PostgreSQL and one archive directory, each on a port chosen first
// (its advertised URL names it), for the cluster's integration and fault tests.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { onFreePort } from "../harness/process.js";
import { TickerProcess } from "../harness/ticker.js";
import postgres from "postgres";
import { afterAll, beforeAll } from "vitest";
import { clusterDb, until, type ClusterDb } from "./cluster-db.js";
import { clusterShardOf } from "../../src/cluster/leases.js";

export interface ClusterSetup {
  postgresUrl: string;
  /** The archive directory every node shares (file://). */
  archiveDir: string;
  /** Another archive instead (an s3:// URL). */
  archiveUrl?: string;
  clusterShards: number;
  leaseMs: number;
  /** More `ticker serve` flags for every node. */
  args?: string[];
  /** An admin key, for the helpers' own requests to nodes with API keys. */
  token?: string;
}

export interface ClusterNodeProcess {
  id: string;
  /** The PostgreSQL it was started with. */
  postgresUrl: string;
  dataDir: string;
  port: number;
  server: TickerProcess;
  url: string;
}

export function clusterSetup(postgresUrl: string, o: Partial<ClusterSetup> = {}): ClusterSetup {
  return {
    postgresUrl,
    archiveDir: o.archiveDir ?? mkdtempSync(join(tmpdir(), "ticker-archive-")),
    archiveUrl: o.archiveUrl,
    clusterShards: o.clusterShards ?? 8,
    leaseMs: o.leaseMs ?? 2000,
    args: o.args,
    token: o.token,
  };
}

/**
 * Starts node `id`: a fresh data dir and port unless `at` gives them (a
 * restart keeps both), PostgreSQL at `postgresUrl` unless given another (a
 * proxy's, that the test cuts).
 */
export async function startNode(c: ClusterSetup, id: string, at?: { dataDir: string; port: number }, postgresUrl = c.postgresUrl): Promise<ClusterNodeProcess> {
  const dataDir = at?.dataDir ?? mkdtempSync(join(tmpdir(), `ticker-node-${id}-`));
  const launch = async (port: number) => {
    const server = await TickerProcess.start(dataDir, {
      args: [
        "--port",
        String(port),
        "--shards",
        "2",
        "--cluster-postgres-url",
        postgresUrl,
        "--node-id",
        id,
        "--advertise-url",
        `http://127.0.0.1:${port}`,
        "--archive",
        c.archiveUrl ?? `file://${c.archiveDir}`,
        "--cluster-shards",
        String(c.clusterShards),
        "--cluster-lease-ms",
        String(c.leaseMs),
        ...(c.args ?? []),
      ],
    });
    return { id, postgresUrl, dataDir, port, server, url: server.url };
  };
  return at ? launch(at.port) : onFreePort(launch);
}

export interface ClusterView {
  node_id: string;
  serving: number[];
  nodes: Array<{ node_id: string; url: string | null; shards: number }>;
  shards: Array<{ shard: number; owner: string | null; epoch: number; url: string | null }>;
}

export async function clusterView(url: string, token?: string): Promise<ClusterView> {
  const r = await fetch(`${url}/v1/cluster`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  if (r.status !== 200) throw new Error(`GET /v1/cluster: ${r.status} ${await r.text()}`);
  return (await r.json()) as ClusterView;
}

/** Waits until every shard has a live owner among `nodes`, spread as balancing spreads them, and each node serves the shards the map gives it. */
export async function settled(nodes: ClusterNodeProcess[], shards: number, ms = 30_000, token?: string): Promise<ClusterView> {
  return until(
    `all ${shards} shards served by ${nodes.map((n) => n.id).join(", ")}`,
    async () => {
      const views = await Promise.all(nodes.map((n) => clusterView(n.url, token).catch(() => null)));
      if (views.some((v) => v === null)) return null;
      const ids = new Set(nodes.map((n) => n.id));
      const v = views[0]!;
      if (v.shards.length !== shards || v.shards.some((s) => !s.owner || !ids.has(s.owner))) return null;
      // Each node takes up to ceil(shards / nodes); the last to claim gets what is left, at least this.
      const least = Math.max(1, shards - (nodes.length - 1) * Math.ceil(shards / nodes.length));
      if (nodes.some((n) => v.shards.filter((s) => s.owner === n.id).length < least)) return null;
      for (const n of views) {
        const mine = v.shards.filter((s) => s.owner === n!.node_id).map((s) => s.shard);
        if (mine.length !== n!.serving.length || mine.some((s) => !n!.serving.includes(s))) return null;
      }
      return v;
    },
    ms,
  );
}

/** The node that owns a stream's cluster shard, as `via`'s map says. */
export async function ownerOf(via: string, nodes: ClusterNodeProcess[], stream: string, shards: number, token?: string): Promise<ClusterNodeProcess> {
  const v = await clusterView(via, token);
  const owner = v.shards[clusterShardOf(stream, shards)].owner;
  const n = nodes.find((x) => x.id === owner);
  if (!n) throw new Error(`no node of ${nodes.map((x) => x.id).join(", ")} owns ${stream} (the map says ${owner})`);
  return n;
}

/** Starts a node again on its data dir and port, after a kill or a stop. */
export function restartNode(c: ClusterSetup, n: ClusterNodeProcess): Promise<ClusterNodeProcess> {
  return startNode(c, n.id, { dataDir: n.dataDir, port: n.port }, n.postgresUrl);
}

/** A test's cluster: a fresh database, a client on it, the nodes started and settled; stop() ends it all. */
export interface ClusterWorld {
  db: ClusterDb;
  sql: postgres.Sql;
  setup: ClusterSetup;
  nodes: ClusterNodeProcess[];
  stop(): Promise<void>;
}

export async function startCluster(ids: string[], o: Partial<ClusterSetup>): Promise<ClusterWorld> {
  const db = await clusterDb();
  const { url } = await db.freshUrl();
  const sql = postgres(url, { max: 2, onnotice: () => {} });
  const setup = clusterSetup(url, o);
  const world: ClusterWorld = {
    db,
    sql,
    setup,
    nodes: [],
    async stop() {
      await Promise.allSettled(world.nodes.map((n) => n.server.stop()));
      await sql.end();
      await db.stop();
    },
  };
  world.nodes = await Promise.all(ids.map((id) => startNode(setup, id)));
  await settled(world.nodes, setup.clusterShards, 30_000, setup.token);
  return world;
}

/**
 * A test file's two-node cluster (small segments, a quick archiver: a few
 * kB of events reach the archive within a second), started before its tests
 * and stopped after, with the questions its tests ask: which nodes are
 * alive, who owns a stream, the other live node.
 */
export function smallCluster(ids: string[], shards: number) {
  let world: ClusterWorld | undefined;
  beforeAll(async () => {
    world = await startCluster(ids, { clusterShards: shards, leaseMs: 2000, args: ["--segment-bytes-max", "8192", "--cluster-archive-interval-ms", "100"] });
  }, 90_000);
  afterAll(() => world?.stop());
  const w = () => {
    if (!world) throw new Error("the cluster is not started yet (use it inside a test or a later hook)");
    return world;
  };
  const live = () => w().nodes.filter((n) => n.server.exit === null);
  return {
    world: w,
    live,
    ownerOf: (stream: string) => ownerOf(live()[0].url, live(), stream, shards),
    otherThan: (n: ClusterNodeProcess) => live().find((x) => x !== n) as ClusterNodeProcess,
  };
}
