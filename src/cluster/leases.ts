// Cluster shards and their leases, in PostgreSQL (docs/CLUSTER.md once cluster
// mode is served; DESIGN.md "Beyond one machine"). Streams hash to a fixed
// number of cluster shards; a row per shard says who owns it, under which
// fencing epoch, and until when. Every statement here decides on the
// database's clock (now()), never a node's, and is conditional: a claim takes
// a shard only if it is free or its lease ran out, and bumps the epoch; a
// renewal extends only a lease the node still holds under the same epoch and
// that has not run out. What a node may do with a shard it knows only from
// the last answer: `validUntil` is a local deadline no later than the
// database's lease_until (measured from before the statement was sent), so a
// node stops writing before its lease can have passed to another node.
//
// Fencing is not here but in every durable write of an owner (tail batches,
// manifest rows, checkpoints), each a statement that succeeds only while its
// epoch is current (see fence()): a node that checked its lease and then
// froze cannot write after another node claimed the shard.
import type postgres from "postgres";
import { fnv1a } from "../hash.js";
import { textArray } from "./sql-array.js";

export interface Lease {
  shard: number;
  epoch: number;
  /** performance.now() before which the lease is certainly still the node's. */
  validUntil: number;
}

export interface LeaseOptions {
  /** This node's id (`--node-id`). */
  nodeId: string;
  /** How long a claim or renewal holds, ms. */
  leaseMs: number;
  /** The number of cluster shards (fixed for the life of the cluster). */
  shards: number;
  /** Local monotonic ms; performance.now() unless a test says otherwise. */
  now?: () => number;
}

/** A node that sent no heartbeat for this many leases is not counted when shards are balanced. */
const NODE_GONE_LEASES = 1;

/**
 * The fencing condition, as a query fragment to select from: the shard's
 * row as the owner's write expects it, read FOR SHARE. A claim (an UPDATE of
 * the row) then waits for a write in flight to commit, and a write that
 * comes after a claim re-reads the row and finds the new epoch: either way
 * no write of an old epoch lands after a new owner has the shard.
 */
export function fence(sql: postgres.Sql | postgres.TransactionSql, shard: number, owner: string, epoch: number) {
  return sql`select 1 from ticker_cluster_shards
    where shard = ${shard} and owner = ${owner} and epoch = ${epoch} and lease_until >= now() for share`;
}

export class ShardLeases {
  private readonly nodeId: string;
  private readonly leaseMs: number;
  private readonly shards: number;
  private readonly now: () => number;
  /** The leases this node holds, by shard, as the last answer showed them. */
  readonly held = new Map<number, Lease>();

  constructor(
    private readonly sql: postgres.Sql,
    o: LeaseOptions,
  ) {
    if (!Number.isSafeInteger(o.leaseMs) || o.leaseMs < 1) throw new Error(`leaseMs must be a positive integer, not ${o.leaseMs}`);
    if (!Number.isSafeInteger(o.shards) || o.shards < 1) throw new Error(`shards must be a positive integer, not ${o.shards}`);
    this.nodeId = o.nodeId;
    this.leaseMs = o.leaseMs;
    this.shards = o.shards;
    this.now = o.now ?? (() => performance.now());
  }

  /**
   * Makes the shard rows (once per cluster) and checks that the cluster has
   * the number of shards this node was started with: a stream's shard is
   * its hash modulo that number, so nodes that disagree would route apart.
   */
  async ensureShards(): Promise<void> {
    await this.sql`insert into ticker_cluster_shards (shard) select generate_series(0, ${this.shards - 1}::int) on conflict do nothing`;
    const [{ count }] = await this.sql<{ count: number }[]>`select count(*)::int as count from ticker_cluster_shards`;
    if (count !== this.shards) throw new Error(`the cluster has ${count} shards; this node was started with cluster_shards ${this.shards}`);
  }

  /** Says the node is alive (for balancing) and where it is reached. */
  async heartbeat(advertiseUrl: string): Promise<void> {
    await this.sql`insert into ticker_cluster_nodes (node_id, advertise_url, heartbeat_until)
      values (${this.nodeId}, ${advertiseUrl}, now() + ${this.leaseMs * NODE_GONE_LEASES} * interval '1 millisecond')
      on conflict (node_id) do update set advertise_url = excluded.advertise_url, heartbeat_until = excluded.heartbeat_until`;
  }

  /** Takes a shard that is free or whose lease ran out; null if another node holds it. */
  async claim(shard: number): Promise<Lease | null> {
    const sent = this.now();
    const rows = await this.sql<{ epoch: string }[]>`update ticker_cluster_shards
      set owner = ${this.nodeId}, epoch = epoch + 1, lease_until = now() + ${this.leaseMs} * interval '1 millisecond'
      where shard = ${shard} and (owner is null or lease_until < now())
      returning epoch`;
    if (rows.length === 0) return null;
    // now() is when the statement started, after `sent`: the local deadline comes first.
    const lease = { shard, epoch: Number(rows[0].epoch), validUntil: sent + this.leaseMs };
    this.held.set(shard, lease);
    return lease;
  }

  /**
   * Extends every lease the node holds, in one statement. A lease that ran
   * out or passed to another node is dropped from `held` and returned among
   * the lost: the node must stop writing to those shards (it already has,
   * if it kept to validUntil).
   */
  async renew(): Promise<{ renewed: Lease[]; lost: number[] }> {
    const mine = [...this.held.values()];
    if (mine.length === 0) return { renewed: [], lost: [] };
    const sent = this.now();
    const rows = await this.sql<{ shard: number; epoch: string }[]>`update ticker_cluster_shards s
      set lease_until = now() + ${this.leaseMs} * interval '1 millisecond'
      from unnest(${textArray(mine.map((l) => String(l.shard)))}::int[], ${textArray(mine.map((l) => String(l.epoch)))}::bigint[]) as h(shard, epoch)
      where s.shard = h.shard and s.owner = ${this.nodeId} and s.epoch = h.epoch and s.lease_until >= now()
      returning s.shard, s.epoch`;
    const kept = new Set(rows.map((r) => r.shard));
    const renewed: Lease[] = [];
    const lost: number[] = [];
    for (const l of mine) {
      if (kept.has(l.shard)) {
        l.validUntil = sent + this.leaseMs;
        renewed.push(l);
      } else {
        this.held.delete(l.shard);
        lost.push(l.shard);
      }
    }
    return { renewed, lost };
  }

  /** Gives a shard back at once (a clean stop or a rebalance), so the next owner need not wait out the lease. */
  async release(shard: number): Promise<void> {
    const l = this.held.get(shard);
    if (!l) return;
    this.held.delete(shard);
    await this.sql`update ticker_cluster_shards set owner = null, lease_until = '-infinity'
      where shard = ${shard} and owner = ${this.nodeId} and epoch = ${l.epoch}`;
  }

  /** Whether the node may write to a shard now: it holds the lease and its local deadline has not passed. */
  mayWrite(shard: number): Lease | null {
    const l = this.held.get(shard);
    return l !== undefined && this.now() < l.validUntil ? l : null;
  }

  /**
   * One step towards an even spread: with N live nodes each should hold
   * ceil(shards / N) at most. A node over its share releases the shards it
   * ranks lowest; one under it claims free or expired shards, those it ranks
   * highest first (rendezvous hashing: nodes prefer different shards, and a
   * shard's preferred owner does not change when an unrelated node comes or
   * goes). Returns what changed.
   */
  async balance(): Promise<{ claimed: number[]; released: number[] }> {
    const [{ others }] = await this.sql<{ others: number }[]>`select count(*)::int as others from ticker_cluster_nodes
      where heartbeat_until >= now() and node_id <> ${this.nodeId}`;
    const share = Math.ceil(this.shards / (others + 1));
    const claimed: number[] = [];
    const released: number[] = [];
    const rank = (shard: number) => rendezvous(this.nodeId, shard);
    if (this.held.size > share) {
      const extra = [...this.held.keys()].sort((a, b) => rank(a) - rank(b)).slice(0, this.held.size - share);
      for (const shard of extra) {
        await this.release(shard);
        released.push(shard);
      }
      return { claimed, released };
    }
    if (this.held.size === share) return { claimed, released };
    const open = await this.sql<{ shard: number }[]>`select shard from ticker_cluster_shards where owner is null or lease_until < now()`;
    for (const { shard } of open.sort((a, b) => rank(b.shard) - rank(a.shard))) {
      if (this.held.size >= share) break;
      if (await this.claim(shard)) claimed.push(shard);
    }
    return { claimed, released };
  }

  /** Every shard's owner and epoch, for GET /v1/cluster and the client's shard map. */
  async map(): Promise<Array<{ shard: number; owner: string | null; epoch: number; live: boolean; advertise_url: string | null }>> {
    const rows = await this.sql<{ shard: number; owner: string | null; epoch: string; live: boolean; advertise_url: string | null }[]>`
      select s.shard, s.owner, s.epoch, s.lease_until >= now() as live, n.advertise_url
      from ticker_cluster_shards s left join ticker_cluster_nodes n on n.node_id = s.owner order by s.shard`;
    return rows.map((r) => ({ ...r, epoch: Number(r.epoch) }));
  }
}

/** A node's preference for a shard: a hash of both (rendezvous / highest-random-weight hashing). */
export function rendezvous(nodeId: string, shard: number): number {
  return fnv1a(`${nodeId}\u0000${shard}`);
}

/**
 * The cluster shard a stream belongs to (the shard workers' hash, modulo
 * cluster_shards). A dead-letter stream `{stream}.dlq` goes with its stream:
 * the owner that nacks an event writes its dead letter under the same lease.
 */
export function clusterShardOf(stream: string, shards: number): number {
  return fnv1a(stream.endsWith(DLQ_SUFFIX) ? stream.slice(0, -DLQ_SUFFIX.length) : stream) % shards;
}

const DLQ_SUFFIX = ".dlq";
