// A node's part in the cluster: a loop that renews its leases well before
// they run out, says it is alive, and moves towards an even spread of shards
// (leases.ts), and tells its owner what it gained and lost, and the other
// nodes that the shard map changed (routing.ts). Safety does not
// depend on the loop keeping time: whether the node may write to a shard is
// mayWrite(), the local deadline of the last lease the database granted, so
// a node whose loop is stuck (a frozen process, a database out of reach)
// stops writing on time anyway.
import { EventEmitter } from "node:events";
import type postgres from "postgres";
import { clusterShardOf, ShardLeases, type Lease } from "./leases.js";
import { announce } from "./routing.js";

export interface ClusterNodeOptions {
  nodeId: string;
  /** Where other nodes send this node's shards' requests (307). */
  advertiseUrl: string;
  leaseMs: number;
  shards: number;
  /** A loop turn every this long (default a third of the lease: two renewals can fail before it runs out). */
  turnMs?: number;
}

export interface ClusterNodeEvents {
  /** Shards this node now holds (claimed in a turn). */
  gained: [Lease[]];
  /** Shards it no longer holds: released to balance, or lost (its lease ran out or passed on). */
  lost: [number[]];
  /** A turn failed (the database unreachable, a statement refused); the next turn tries again. */
  error: [Error];
}

export class ClusterNode extends EventEmitter<ClusterNodeEvents> {
  readonly leases: ShardLeases;
  private readonly turnMs: number;
  private timer: NodeJS.Timeout | null = null;
  private turning: Promise<void> | null = null;
  private stopped = false;

  constructor(
    private readonly sql: postgres.Sql,
    private readonly o: ClusterNodeOptions,
  ) {
    super();
    this.leases = new ShardLeases(sql, { nodeId: o.nodeId, leaseMs: o.leaseMs, shards: o.shards });
    this.turnMs = o.turnMs ?? Math.max(1, Math.floor(o.leaseMs / 3));
  }

  /** Joins the cluster: the shard rows, a heartbeat, a first share of shards; then the loop. */
  async start(): Promise<void> {
    await this.leases.ensureShards();
    await this.turn();
    this.schedule();
  }

  /** The lease of the cluster shard a stream is in, if this node may write to it now. */
  ownerOf(stream: string): Lease | null {
    return this.leases.mayWrite(clusterShardOf(stream, this.o.shards));
  }

  /** Leaves: the loop stops and every shard is released, so other nodes take them at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.turning;
    const held = [...this.leases.held.keys()];
    for (const shard of held) await this.leases.release(shard);
    if (held.length > 0) {
      this.emit("lost", held);
      await announce(this.sql, held);
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.turning = this.turn().finally(() => {
        this.turning = null;
        this.schedule();
      });
    }, this.turnMs);
  }

  private async turn(): Promise<void> {
    try {
      const { lost } = await this.leases.renew();
      if (lost.length > 0) this.emit("lost", lost);
      await this.leases.heartbeat(this.o.advertiseUrl);
      const { claimed, released } = await this.leases.balance();
      if (released.length > 0) this.emit("lost", released);
      if (claimed.length > 0)
        this.emit(
          "gained",
          claimed.map((shard) => this.leases.held.get(shard)).filter((l): l is Lease => l !== undefined),
        );
      // A hint to the other nodes' shard maps; the table stays the truth.
      await announce(this.sql, [...released, ...claimed]);
    } catch (err) {
      this.emit("error", err as Error);
    }
  }
}
