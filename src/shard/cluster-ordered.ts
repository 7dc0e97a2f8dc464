// Ordered ingest (producer_ordering) in cluster mode: the rule of
// ordered.ts, with what an owner acknowledges in PostgreSQL first. An
// admission (or a gap expiry) is run by the rule at once and kept open;
// what it released (the batch for the log, as a tail row), the events it
// newly holds, the held events it released and the producers' new places go
// to PostgreSQL together, in one transaction fenced by the lease
// (tail.ts appendOrdered, ordered-store.ts); only then is the batch appended
// here and answered, and the rule's transaction closed. A failed commit
// undoes the admission (503), and the shard catches up, restoring each
// ordered stream from what PostgreSQL holds (restore()).
//
// Admissions of one stream take turns: the rule has one open transaction at
// a time, and the next batch must be framed against the log and dedup window
// the last one left. While one commits, the stream's next publishes wait in
// a bounded queue (their bodies copied out of the ring), and its gap timer
// waits for the next tick. Streams do not wait for each other: their
// admissions share the shard's group commit.
import { ApiError, asApiError } from "../errors.js";
import { logger } from "../logger.js";
import type { OrderedChanges, OrderedStore, ProducerRow } from "../cluster/ordered-store.js";
import type { TailBatch, TailStore } from "../cluster/tail.js";
import { commitFailed, shardMoving } from "./cluster-refusals.js";
import type { ContentType, Op, RequestOf } from "./protocol.js";
import type { Answer, Appended, Publisher } from "./publish.js";
import type { OrderedStream } from "./ordered.js";
import { ReleaseStaging, type Released } from "./release-frames.js";
import type { Stream } from "./stream.js";
import type { StreamAdmin } from "./admin.js";
import type { Outbox } from "./worker.js";

/** Publishes of one ordered stream waiting for its admission in commit, at most; past it, 429 (the shard's requests in flight bound them all). */
const ORDERED_WAITING_MAX = 32;

/** What the owner (WorkerCluster, cluster.ts) lends: its leases as this thread knows them. */
export interface OrderedOwner {
  /** The shard as served under `epoch`, or a 503 thrown. */
  serving(shard: number, epoch: number | undefined, stream: string): { epoch: number };
  /** The shards held, and whether each is catching up. */
  readonly held: ReadonlyMap<number, { epoch: number; syncing: boolean }>;
  clusterShardOf(stream: string): number;
  /** Each stream's latest batch on its way to PostgreSQL: a plain one (a stream just made ordered may have one), or an admission (a delete waits for it). */
  readonly lastCommit: WeakMap<Stream, Promise<void>>;
  /** Streams being deleted: nothing more of them is committed. */
  readonly removing: ReadonlySet<string>;
  /** After a failed commit: no publish until the shard has caught up. */
  recover(shard: number): void;
}

const EMPTY = Buffer.alloc(0);

export class ClusterOrdered {
  /** Streams with an admission committing (or about to run), and what waits behind it, in order. */
  private readonly turns = new Map<Stream, Array<() => boolean>>();
  private readonly staging = new ReleaseStaging();
  /** Restored from PostgreSQL, whose idle producers (left out) are not forgotten there yet: the next expiry does it. */
  private readonly unswept = new WeakSet<OrderedStream>();

  constructor(
    private readonly owner: OrderedOwner,
    private readonly tail: TailStore,
    private readonly store: OrderedStore,
    private readonly streams: StreamAdmin,
    private readonly publisher: Publisher,
    private readonly outbox: Outbox,
  ) {}

  /** A publish to an ordered stream this node serves (refusals thrown now, when it is not waiting). */
  publish(s: Stream, req: RequestOf<Op.Publish>): void {
    const shard = this.owner.clusterShardOf(s.id);
    const epoch = req.meta.clusterEpoch;
    this.owner.serving(shard, epoch, s.id);
    const waiting = this.turns.get(s);
    if (!waiting) return this.start(s, () => this.admit(s, req.meta.ct, req.body, epoch, req.reqId, true));
    if (waiting.length >= ORDERED_WAITING_MAX) {
      throw new ApiError(
        429,
        "shard_busy",
        `stream "${s.id}" has ${ORDERED_WAITING_MAX} publishes waiting for the one being committed (producer_ordering admits one batch at a time); retry`,
        { stream: s.id, retry_after_s: 1 },
      );
    }
    const ct = req.meta.ct;
    const body = Buffer.from(req.body); // the ring's room is taken back once this turn ends
    waiting.push(() => this.admit(s, ct, body, epoch, req.reqId, true));
  }

  /** The gap timer: a due expiry of a stream this node serves takes its turn (if it is not free, the next tick tries again). */
  expire(s: Stream, nowMs: number): void {
    if (!s.ordered?.due(nowMs) || this.turns.has(s)) return;
    if (this.servingEpoch(this.owner.clusterShardOf(s.id)) === null) return;
    this.start(s, () => {
      try {
        return this.expireNow(s, Date.now());
      } catch (err) {
        logger().error({ kind: "cluster", stream: s.id, err }, `stream ${s.id}: releasing held events failed: ${(err as Error).message}`);
        return false;
      }
    });
  }

  /**
   * A catch-up: the stream's rule from what PostgreSQL holds, before the
   * shard takes a publish (whatever this node had, from its log or a
   * held.log, is replaced).
   */
  async restore(s: Stream): Promise<void> {
    const o = s.ordered;
    if (!o) return;
    const nowMs = Date.now();
    const state = await this.store.read(s.id, nowMs - s.config.dedup_window_ms);
    if (s.ordered !== o) return;
    o.restoreFrom(state.producers, state.held, nowMs);
    this.unswept.add(o);
  }

  /** The shard's epoch if it is held and not catching up, else null (a non-owner's copy expires nothing). */
  private servingEpoch(shard: number): number | null {
    const h = this.owner.held.get(shard);
    return h && !h.syncing ? h.epoch : null;
  }

  private start(s: Stream, job: () => boolean): void {
    this.turns.set(s, [job]);
    this.next(s);
  }

  /** Runs what waits, in order, until one of them commits (its end calls this again). */
  private next(s: Stream): void {
    const waiting = this.turns.get(s);
    if (!waiting) return;
    for (let job = waiting.shift(); job; job = waiting.shift()) if (job()) return;
    this.turns.delete(s);
  }

  /** One admission (`expireFirst`: a due expiry goes before it); true if it is committing (its end runs the next). */
  private admit(s: Stream, ct: ContentType, body: Buffer, epoch: number | undefined, reqId: number, expireFirst: boolean): boolean {
    try {
      const shard = this.owner.clusterShardOf(s.id);
      const h = this.owner.serving(shard, epoch, s.id);
      const o = s.ordered;
      if (!o || this.streams.get(s.id) !== s) throw shardMoving(shard);
      // Plain batches from before the stream was ordered land first: the rule frames after the log's head.
      const plain = s.pending > 0 ? this.owner.lastCommit.get(s) : undefined;
      if (plain) return this.after(s, plain, () => this.admit(s, ct, body, epoch, reqId, expireFirst));
      if (!o.clustered) o.restoreFrom(null, [], Date.now()); // made ordered here: its places are the log's
      const nowMs = Date.now();
      // Gaps already due go first: they were there before this batch.
      if (expireFirst && o.due(nowMs)) {
        this.turns.get(s)?.unshift(() => this.admit(s, ct, body, epoch, reqId, false));
        return this.expireNow(s, nowMs);
      }
      const batch = this.publisher.frame(s, ct, body);
      const a = o.admit(batch, this.staging, s.log, s.dedup, nowMs);
      try {
        const answer: Answer = { reqId, duplicates: batch.duplicates.map((d) => ({ ...d })), held: a.held };
        const changes = changesOf(s.id, o, nowMs, null);
        if (changes) storable(changes);
        return this.commit(s, o, shard, h.epoch, a.released, changes, answer);
      } catch (err) {
        o.abort(); // the rule's transaction is open until the commit settles it
        throw err;
      }
    } catch (err) {
      this.refuse(reqId, asApiError(err));
      return false;
    }
  }

  /** Gaps past gap_timeout_ms (tombstones, held events), and the idle-producer sweep; true if committing. */
  private expireNow(s: Stream, nowMs: number): boolean {
    const o = s.ordered;
    const shard = this.owner.clusterShardOf(s.id);
    const epoch = this.servingEpoch(shard);
    if (!o || epoch === null || this.streams.get(s.id) !== s || this.owner.removing.has(s.id)) return false;
    if (s.pending > 0) return false; // a plain batch still landing: the next tick
    if (!o.clustered) o.restoreFrom(null, [], nowMs);
    const producersBefore = o.producers;
    const r = o.expire(this.staging, s.log, s.dedup, nowMs);
    try {
      // PostgreSQL forgets idle producers when the rule does (or left them out of a restore), not at every tick.
      const sweep = o.producers < producersBefore || this.unswept.has(o) ? nowMs - s.config.dedup_window_ms : null;
      return this.commit(s, o, shard, epoch, r, changesOf(s.id, o, nowMs, sweep), null);
    } catch (err) {
      o.expireFailed(nowMs);
      throw err;
    }
  }

  /**
   * Commits an admission (answer null: an expiry) and appends it once
   * landed; true if it went to PostgreSQL, false if it changed nothing
   * there and was settled at once.
   */
  private commit(s: Stream, o: OrderedStream, shard: number, epoch: number, r: Released, changes: OrderedChanges | null, answer: Answer | null): boolean {
    // The frames leave the shard's staging (reused by the next admission of any stream) for the wait.
    const b: Appended = {
      frames: r.count > 0 ? Buffer.from(r.frames.subarray(0, r.bytes)) : EMPTY,
      bytes: r.bytes,
      count: r.count,
      first: r.first,
      ts: r.ts,
      keys: new Map(r.keys),
    };
    if (r.count === 0 && changes === null) {
      o.finish(true);
      if (answer) this.publisher.appendCommitted(s, b, answer);
      return false;
    }
    const row = b.count > 0 ? { stream: s.id, firstSeq: b.first, lastSeq: b.first + b.count - 1, records: b.frames } : null;
    // Events without producer fields change nothing of the rule's: a plain tail row.
    const landed = changes ? this.tail.appendOrdered(shard, epoch, row, changes) : this.tail.append(shard, epoch, row as TailBatch);
    this.owner.lastCommit.set(s, landed);
    landed.then(
      () => {
        if (this.streams.get(s.id) !== s || s.ordered !== o) {
          if (answer) this.refuse(answer.reqId, shardMoving(shard));
          // Ordering switched off meanwhile: PostgreSQL holds a batch this copy does not.
          if (this.streams.get(s.id) === s) this.owner.recover(shard);
          return this.next(s);
        }
        try {
          this.publisher.appendCommitted(s, b, answer);
          o.finish(true);
          o.placesUnsaved = false;
          if (changes && changes.idleBeforeMs !== null) this.unswept.delete(o);
        } catch (err) {
          // PostgreSQL has it and this disk does not: read it back before going on.
          o.abort();
          if (answer) this.refuse(answer.reqId, asApiError(err));
          this.owner.recover(shard);
        }
        this.next(s);
      },
      (err: Error) => {
        if (answer) o.abort();
        else o.expireFailed(Date.now());
        logger().warn(
          { kind: "cluster", shard, stream: s.id, err: err.message },
          `cluster shard ${shard}: an ordered commit of stream ${s.id} failed: ${err.message}`,
        );
        if (answer) this.refuse(answer.reqId, commitFailed("the batch", shard, err));
        this.owner.recover(shard);
        this.next(s);
      },
    );
    return true;
  }

  /** Runs `job` once `first` settles, ahead of what waits. */
  private after(s: Stream, first: Promise<void>, job: () => boolean): boolean {
    const again = () => {
      this.turns.get(s)?.unshift(job);
      this.next(s);
    };
    first.then(again, again);
    return true;
  }

  private refuse(reqId: number, e: ApiError): void {
    this.outbox.error(reqId, e);
  }
}

/**
 * PostgreSQL's text holds no NUL character, which a producer_id may (JSON's
 * \u0000, or FlatBuffers bytes): refused (400) before the commit, which
 * would fail, and fail again at every retry, each time costing the whole
 * shard a catch-up.
 */
function storable(c: OrderedChanges): void {
  for (const p of [...c.held, ...c.producers]) {
    if (p.producerId.includes("\0")) {
      throw new ApiError(400, "invalid_event", `a "producer_id" with a NUL character is not taken on a stream with producer_ordering in cluster mode`);
    }
  }
}

/**
 * What the admission or expiry in progress changes in PostgreSQL, or null
 * if nothing: held events in and out, and each producer that appended with
 * its new last seq (all the rule knows, the first time: its places came
 * from the log).
 */
function changesOf(stream: string, o: OrderedStream, nowMs: number, idleBeforeMs: number | null): OrderedChanges | null {
  const { newHeld, releasedHeld, out } = o.pendingChanges();
  // In release order: a producer's last release is its highest seq (a tombstone's is its range's end). No object per event.
  const last = new Map<string, number>();
  for (const r of out) {
    if (r.kind === "gap") last.set(r.producerId, r.toSeq);
    else if (r.producerId !== "") last.set(r.producerId, r.producerSeq);
  }
  const rows = new Map<string, ProducerRow>();
  if (o.placesUnsaved) for (const p of o.places()) rows.set(p.producerId, p);
  for (const [producerId, lastSeq] of last) rows.set(producerId, { producerId, lastSeq, lastSeenMs: nowMs });
  if (newHeld.length === 0 && releasedHeld.length === 0 && rows.size === 0 && idleBeforeMs === null) return null;
  const producers = [...rows.values()];
  return {
    stream,
    held: [...newHeld],
    released: releasedHeld.map((r) => ({ producerId: r.entry.producerId, producerSeq: r.entry.producerSeq })),
    producers,
    idleBeforeMs,
  };
}
