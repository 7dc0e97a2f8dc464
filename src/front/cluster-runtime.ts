// Cluster mode on the main thread (docs/CLUSTER.md): the node's lease loop
// (node.ts), the shard map of the whole cluster (routing.ts), and what the
// front asks of them for every stream request: serve it here, under which
// epoch, or send it to the owner. A shard is served here only once this
// node holds a live lease on it AND every shard thread has caught its
// streams up with the database under that epoch.
import postgres from "postgres";
import type { Config } from "../config.js";
import { logger } from "../logger.js";
import type { ShardPool } from "./shards.js";
import { clusterShardOf } from "../cluster/leases.js";
import { ClusterNode } from "../cluster/node.js";
import { ShardMap } from "../cluster/routing.js";

export type ClusterRoute =
  | { kind: "local"; epoch: number }
  | { kind: "redirect"; url: string; owner: string }
  /** Nobody serves the shard right now (a lease ran out and is not claimed yet, or this node is catching up). */
  | { kind: "unavailable"; shard: number };

export class ClusterRuntime {
  /** Shards caught up under their epoch, by shard. */
  private readonly serving = new Map<number, number>();
  private readonly refresher: NodeJS.Timeout;

  private constructor(
    private readonly config: Config,
    private readonly sql: postgres.Sql,
    readonly node: ClusterNode,
    private readonly map: ShardMap,
    pool: ShardPool,
    /** The front's part when a shard leaves: its consumers are told to reconnect. */
    onLost: (shard: number) => void,
  ) {
    node.on("gained", (leases) => {
      for (const { shard, epoch } of leases) {
        logger().info({ kind: "cluster", shard, epoch }, `cluster: shard ${shard} is this node's (epoch ${epoch}); catching up`);
        void pool.clusterGain(shard, epoch).then(() => {
          if (node.leases.held.get(shard)?.epoch === epoch) this.serving.set(shard, epoch);
        });
      }
    });
    node.on("lost", (shards) => {
      for (const shard of shards) {
        logger().info({ kind: "cluster", shard }, `cluster: shard ${shard} left this node`);
        this.serving.delete(shard);
        pool.clusterLose(shard);
        onLost(shard);
      }
    });
    node.on("error", (err) => logger().warn({ kind: "cluster", err: err.message }, `cluster: a lease turn failed: ${err.message}`));
    // The table is the truth; notices only make the map fresher sooner.
    this.refresher = setInterval(() => void map.refresh().catch(() => undefined), Math.max(100, Math.floor(config.cluster_lease_ms / 3)));
  }

  /** Joins the cluster: the schema (migrated by the caller), the map, the first leases. */
  static async start(config: Config, pool: ShardPool, onLost: (shard: number) => void): Promise<ClusterRuntime> {
    const sql = postgres(config.cluster_postgres_url, { max: 4, onnotice: () => {}, idle_timeout: 30 });
    const node = new ClusterNode(sql, {
      nodeId: config.node_id,
      advertiseUrl: config.advertise_url,
      leaseMs: config.cluster_lease_ms,
      shards: config.cluster_shards,
    });
    const map = new ShardMap(node.leases, config.cluster_shards);
    const rt = new ClusterRuntime(config, sql, node, map, pool, onLost);
    await map.listen(sql);
    await node.start();
    await map.refresh();
    return rt;
  }

  /** Where a request for `stream` is served. */
  route(stream: string): ClusterRoute {
    const shard = clusterShardOf(stream, this.config.cluster_shards);
    const lease = this.node.leases.mayWrite(shard);
    if (lease && this.serving.get(shard) === lease.epoch) return { kind: "local", epoch: lease.epoch };
    const owner = this.map.ownerOf(stream);
    if (owner?.url && owner.owner && owner.owner !== this.config.node_id) return { kind: "redirect", url: owner.url, owner: owner.owner };
    return { kind: "unavailable", shard };
  }

  /**
   * Where each shard is served right now: here, by another node (its URL,
   * by node id), or by nobody (a lease run out and not claimed yet, or this
   * node still catching up); for a request over every stream (the list).
   */
  placement(): { peers: Map<string, string>; unserved: number[] } {
    const peers = new Map<string, string>();
    const unserved: number[] = [];
    for (const s of this.map.all()) {
      const lease = this.node.leases.mayWrite(s.shard);
      if (lease && this.serving.get(s.shard) === lease.epoch) continue;
      if (s.owner && s.url && s.owner !== this.config.node_id) peers.set(s.owner, s.url);
      else unserved.push(s.shard);
    }
    return { peers, unserved };
  }

  /** GET /v1/cluster: this node, every node that owns a shard, and each shard's owner and epoch, as the table said last. */
  describe(): Record<string, unknown> {
    const shards = this.map.all();
    const nodes = new Map<string, { node_id: string; url: string | null; shards: number }>();
    for (const s of shards) {
      if (!s.owner) continue;
      const n = nodes.get(s.owner) ?? { node_id: s.owner, url: s.url, shards: 0 };
      n.shards++;
      nodes.set(s.owner, n);
    }
    return {
      node_id: this.config.node_id,
      advertise_url: this.config.advertise_url,
      cluster_shards: this.config.cluster_shards,
      lease_ms: this.config.cluster_lease_ms,
      serving: [...this.serving.keys()].sort((a, b) => a - b),
      nodes: [...nodes.values()].sort((a, b) => (a.node_id < b.node_id ? -1 : 1)),
      shards: shards.map((s) => ({ shard: s.shard, owner: s.owner, epoch: s.epoch, url: s.url })),
    };
  }

  /** Leaves: every shard released at once, so the others take them without waiting out the leases. */
  async stop(): Promise<void> {
    clearInterval(this.refresher);
    this.serving.clear();
    try {
      await this.node.stop();
      await this.map.close();
    } finally {
      await this.sql.end({ timeout: 2 });
    }
  }
}
