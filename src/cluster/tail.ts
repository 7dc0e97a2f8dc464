// The open tail of a cluster shard's streams in PostgreSQL: one row per
// published batch (stream, first and last seq, the owner's epoch, the framed
// records), written before the publish is acknowledged, so that nothing
// acknowledged depends on one machine's disk. A new owner replays the rows
// after the last archived seq of each stream; rows go once their segment is
// archived.
//
// Group commit: batches of a shard's streams that come while a commit is in
// flight wait and go in the next one, one INSERT for all of them, so a shard
// costs one round trip per commit however many streams publish. Each INSERT
// reads the shard's lease row FOR SHARE (leases.ts, fence()): under an old
// epoch or a lease run out it inserts nothing, and every batch of it is
// refused with a FencedError. A row's primary key is (stream, first_seq): a
// batch can land once only.
//
// A batch of a producer_ordering stream carries its admission's changes to
// held events and producers (ordered-store.ts), which must land with its row
// or not at all: a group holding one is committed as one transaction, fenced
// once at its start; a group without (every plain publish) stays one statement.
import type postgres from "postgres";
import { fence } from "./leases.js";
import { writeOrdered, type OrderedChanges } from "./ordered-store.js";
import { plainTextArray, textArray } from "./sql-array.js";

export interface TailBatch {
  stream: string;
  firstSeq: number;
  lastSeq: number;
  /** The batch's record frames, as appended to the local log. */
  records: Uint8Array;
}

export interface TailRow extends TailBatch {
  epoch: number;
}

/** The shard is no longer this node's under this epoch: nothing of the commit landed. */
export class FencedError extends Error {
  constructor(
    readonly shard: number,
    readonly epoch: number,
  ) {
    super(`cluster shard ${shard}: epoch ${epoch} is no longer current (the lease passed or ran out); nothing was written`);
    this.name = "FencedError";
  }
}

interface Queue {
  epoch: number;
  waiting: Waiting[];
  committing: boolean;
  /** The commit loop while it runs. */
  running: Promise<void> | null;
  /**
   * Why the last commit failed, until reset(): the batches after it were
   * stamped on top of it, so none may land (a gap) until the owner has read
   * back what the database holds.
   */
  broken: Error | null;
}

interface Waiting {
  /** Null: an admission that appends nothing (it only holds events). */
  batch: TailBatch | null;
  ordered: OrderedChanges | null;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** Batches of one commit, at most: bounds a statement's parameters and its size. */
const COMMIT_BATCHES_MAX = 1000;

export class TailStore {
  /** Batches waiting for the next commit, by shard. */
  private readonly queues = new Map<number, Queue>();

  constructor(
    private readonly sql: postgres.Sql,
    private readonly nodeId: string,
  ) {}

  /**
   * Resolves once the batch is committed under `epoch`; rejects with a
   * FencedError if the epoch is not current. Batches of one stream must be
   * appended in seq order; they are committed in that order.
   */
  append(shard: number, epoch: number, batch: TailBatch): Promise<void> {
    return this.enqueue(shard, epoch, batch, null);
  }

  /**
   * As append(), for an ordered admission: its tail batch (null: it
   * appends nothing) and its changes land together, in the shard's order.
   */
  appendOrdered(shard: number, epoch: number, batch: TailBatch | null, changes: OrderedChanges): Promise<void> {
    return this.enqueue(shard, epoch, batch, changes);
  }

  private enqueue(shard: number, epoch: number, batch: TailBatch | null, ordered: OrderedChanges | null): Promise<void> {
    let q = this.queues.get(shard);
    if (!q) {
      q = { epoch, waiting: [], committing: false, running: null, broken: null };
      this.queues.set(shard, q);
    }
    if (q.epoch !== epoch) {
      // A new epoch of the shard (the node claimed it again): what waits under the old one cannot land.
      if (epoch < q.epoch) return Promise.reject(new FencedError(shard, epoch));
      for (const w of q.waiting.splice(0)) w.reject(new FencedError(shard, q.epoch));
      q.epoch = epoch;
      q.broken = null;
    }
    if (q.broken) return Promise.reject(q.broken);
    const done = new Promise<void>((resolve, reject) => q.waiting.push({ batch, ordered, resolve, reject }));
    if (!q.committing) q.running = this.commit(shard, q);
    return done;
  }

  /** Resolves once no commit of the shard is in flight (each waiting batch has its answer). */
  async settled(shard: number): Promise<void> {
    await this.queues.get(shard)?.running;
  }

  /** The owner has caught up with what the database holds: the shard's batches may go again. */
  reset(shard: number): void {
    const q = this.queues.get(shard);
    if (q && !q.committing) this.queues.delete(shard);
    else if (q) q.broken = null;
  }

  private async commit(shard: number, q: Queue): Promise<void> {
    q.committing = true;
    try {
      while (q.waiting.length > 0) {
        const epoch = q.epoch;
        const group = q.waiting.splice(0, COMMIT_BATCHES_MAX);
        try {
          if (group.some((w) => w.ordered !== null)) await this.commitOrdered(shard, epoch, group);
          else await this.commitPlain(shard, epoch, group);
          for (const w of group) w.resolve();
        } catch (err) {
          // What waits was stamped after what failed: it fails too.
          q.broken = err as Error;
          for (const w of [...group, ...q.waiting.splice(0)]) w.reject(err as Error);
        }
      }
    } finally {
      q.committing = false;
    }
  }

  /** A group of plain batches: one statement. */
  private async commitPlain(shard: number, epoch: number, group: Waiting[]): Promise<void> {
    const inserted = await this.insert(
      this.sql,
      shard,
      epoch,
      group.map((w) => w.batch as TailBatch),
    );
    if (inserted !== group.length) throw new FencedError(shard, epoch);
  }

  /** A group with ordered changes: its rows and the changes in one transaction, fenced at its start. */
  private async commitOrdered(shard: number, epoch: number, group: Waiting[]): Promise<void> {
    await this.sql.begin(async (tx) => {
      // Read FOR SHARE, the lease row stays locked to the end: a claim waits for this transaction.
      if ((await tx`${fence(tx, shard, this.nodeId, epoch)}`).length === 0) throw new FencedError(shard, epoch);
      const batches = group.flatMap((w) => (w.batch ? [w.batch] : []));
      if (batches.length > 0 && (await this.insert(tx, shard, epoch, batches)) !== batches.length) throw new FencedError(shard, epoch);
      await writeOrdered(
        tx,
        shard,
        group.flatMap((w) => (w.ordered ? [w.ordered] : [])),
      );
    });
  }

  private async insert(sql: postgres.Sql | postgres.TransactionSql, shard: number, epoch: number, batches: TailBatch[]): Promise<number> {
    // Base64, not hex: a third more bytes than the records rather than twice as many, encoded natively.
    const base64 = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64");
    const r = await sql`insert into ticker_cluster_tail (stream, first_seq, last_seq, shard, epoch, records)
      select b.stream, b.first_seq, b.last_seq, ${shard}, ${epoch}, decode(b.records, 'base64')
      from (${fence(sql, shard, this.nodeId, epoch)}) as lease,
        unnest(${textArray(batches.map((b) => b.stream))}::text[], ${plainTextArray(batches.map((b) => String(b.firstSeq)))}::bigint[],
          ${plainTextArray(batches.map((b) => String(b.lastSeq)))}::bigint[], ${plainTextArray(batches.map((b) => base64(b.records)))}::text[])
        as b(stream, first_seq, last_seq, records)`;
    return r.count;
  }

  /** The last seq of a stream's newest tail row (0: none). */
  async head(stream: string): Promise<number> {
    const [row] = await this.sql<{ last_seq: string }[]>`select last_seq from ticker_cluster_tail where stream = ${stream} order by first_seq desc limit 1`;
    return row ? Number(row.last_seq) : 0;
  }

  /** The rows of a stream from `fromSeq` on (the first may start below it), in seq order: what a new owner replays. */
  async read(stream: string, fromSeq: number): Promise<TailRow[]> {
    const rows = await this.sql<{ stream: string; first_seq: string; last_seq: string; epoch: string; records: Buffer }[]>`
      select stream, first_seq, last_seq, epoch, records from ticker_cluster_tail
      where stream = ${stream} and last_seq >= ${fromSeq} order by first_seq`;
    return rows.map((r) => ({ stream: r.stream, firstSeq: Number(r.first_seq), lastSeq: Number(r.last_seq), epoch: Number(r.epoch), records: r.records }));
  }

  /**
   * Deletes a stream's rows up to `archivedSeq` once that much is in the
   * archive, fenced like a write; false if the epoch is no longer current.
   */
  async trim(shard: number, epoch: number, stream: string, archivedSeq: number): Promise<boolean> {
    const sql = this.sql;
    const r = await sql`with lease as (${fence(sql, shard, this.nodeId, epoch)})
      delete from ticker_cluster_tail t using lease where t.stream = ${stream} and t.last_seq <= ${archivedSeq}`;
    if (r.count > 0) return true;
    // Nothing deleted: nothing to delete under a live lease, or refused. Tell them apart.
    const live = await sql`select 1 from (${fence(sql, shard, this.nodeId, epoch)}) as lease`;
    return live.length > 0;
  }
}
