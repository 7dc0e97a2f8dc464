// A shard worker's part in cluster mode (docs/CLUSTER.md): the cluster
// shards this node holds a lease on, as far as this thread's streams go.
//
// A publish is stamped here, committed to PostgreSQL (the tail, fenced by
// the lease's epoch), and only then appended to the local log, pushed live
// and answered: the local log is always a prefix of the truth (archive +
// tail), and a node that gets a shard back needs only what was added since.
// A commit that fails (fenced, or the database out of reach, where it may
// even have landed) fails every batch stamped after it too, and the shard
// takes no publish until it has read back what the database holds.
//
// Closed segments go to the archive: the object, then the manifest row
// (fenced: the commit point), then the tail rows it covers are deleted.
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import postgres from "postgres";
import type { Config } from "../config.js";
import { ApiError, asApiError } from "../errors.js";
import { logger } from "../logger.js";
import { clusterShardOf } from "../cluster/leases.js";
import { TailStore } from "../cluster/tail.js";
import { FencedCheckpoints } from "../cluster/checkpoints.js";
import { StreamCatalog } from "../cluster/catalog.js";
import { ArchivedHistory } from "../cluster/archived-history.js";
import { keysObjectOf, keysOfSegment } from "../cluster/segment-keys.js";
import { chunkPointsOf } from "../cluster/segment-chunks.js";
import { ArchiveMiss, archivedOnly, HistoryView, type ReadLog, type ReadStream } from "./history-view.js";
import { Manifest, openArchive, segmentKey, type Archive } from "../cluster/archive.js";
import { removeObjects, StreamRemoval } from "../cluster/removal.js";
import { appendRow, copyLinesUp, rememberKeys } from "./cluster-copy.js";
import { commitFailed, shardMoving, streamDeleting } from "./cluster-refusals.js";
import { FencedWrites } from "./cluster-writes.js";
import type { StreamAdmin } from "./admin.js";
import type { FramedBatch, Publisher } from "./publish.js";
import { ContentType, shardOf, type Op, type RequestOf } from "./protocol.js";
import type { Stream } from "./stream.js";
import { escapeStreamId, type StreamConfig } from "./stream-config.js";
import type { Outbox } from "./worker.js";
import type { ExternalCheckpoints } from "../consumer/external.js";
import { applyExternalCheckpoints } from "./external-checkpoints.js";
import { ClusterOrdered } from "./cluster-ordered.js";
import { OrderedStore } from "../cluster/ordered-store.js";

/** Connections of one shard thread: commits of its shards and the archiver, one each. */
const PG_CONNECTIONS = 2;
/** After a failed catch-up (the database out of reach), the next try. */
const CATCH_UP_RETRY_MS = 500;
const NO_KEYS: ReadonlyMap<string, number> = new Map();
/** Heads of other nodes' streams remembered at once (a replay on a non-owner reads one); past it they are all read again. */
const HEADS_MAX = 10_000;

interface Held {
  epoch: number;
  /** Not taking publishes: catching up with the database (after a gain, or a failed commit). */
  syncing: boolean;
}

export class WorkerCluster {
  private readonly sql: postgres.Sql;
  private readonly tail: TailStore;
  private readonly manifest: Manifest;
  private readonly checkpoints: FencedCheckpoints;
  private readonly catalog: StreamCatalog;
  private readonly removal: StreamRemoval;
  private readonly archive: Archive;
  /** Archived segments this thread serves history from. */
  readonly history: ArchivedHistory;
  /** producer_ordering's admissions, committed with their held events and producers. */
  readonly ordered: ClusterOrdered;
  readonly held = new Map<number, Held>();
  /** The last archived seq of each of this thread's streams in held shards. */
  private readonly archived = new Map<string, number>();
  private readonly archiver: NodeJS.Timeout;
  private archiving = false;
  /** When the archive's retention last ran (Date.now()). */
  private expiredMs = 0;
  /** Each stream's latest batch on its way to PostgreSQL: a batch of duplicates of it is answered once it lands. */
  readonly lastCommit = new WeakMap<Stream, Promise<void>>();
  /** The last catch-up or archiving run (exclusive()). */
  private serial: Promise<void> = Promise.resolve();
  /** Streams being deleted: their writes wait (503) until the removal is done. */
  readonly removing = new Set<string>();
  private readonly writes = new FencedWrites();
  /** One frame, for a look at a copy's newest event (copyLinesUp). */
  private readonly scratch: Buffer;
  /** Heads of streams other nodes own, as their tails last said (headOf). */
  private readonly heads = new Map<string, { head: number; readMs: number }>();

  constructor(
    private readonly config: Config,
    /** This thread's shard and the number of them: which streams of a cluster shard are its own. */
    private readonly shard: number,
    private readonly shards: number,
    private readonly frameBytesMax: number,
    private readonly streams: StreamAdmin,
    private readonly publisher: Publisher,
    private readonly outbox: Outbox,
    /** Group checkpoints in PostgreSQL (cluster mode always has them): a gained stream's groups resume from there. */
    private readonly external: () => ExternalCheckpoints | null,
  ) {
    this.sql = postgres(config.cluster_postgres_url, { max: PG_CONNECTIONS, onnotice: () => {}, idle_timeout: 30 });
    this.tail = new TailStore(this.sql, config.node_id);
    this.manifest = new Manifest(this.sql, config.node_id);
    this.checkpoints = new FencedCheckpoints(this.sql, config.node_id);
    this.catalog = new StreamCatalog(this.sql, config.node_id);
    this.removal = new StreamRemoval(this.sql, config.node_id);
    this.scratch = Buffer.allocUnsafe(frameBytesMax);
    this.archive = openArchive(config.archive);
    this.history = new ArchivedHistory(this.archive, this.manifest, {
      cacheBytesMax: config.archive_cache_bytes_max,
      frameBytesMax,
      manifestTtlMs: config.archive_manifest_ttl_ms,
    });
    this.archiver = setInterval(() => void this.archiveClosed(), config.cluster_archive_interval_ms);
    this.ordered = new ClusterOrdered(this, this.tail, new OrderedStore(this.sql), streams, publisher, outbox);
  }

  /** The first seq of a stream not in the archive yet, as far as this node knows (its copy keeps it until it is). */
  keepFrom(s: Stream): number {
    return this.held.has(this.clusterShardOf(s.id)) ? (this.archived.get(s.id) ?? 0) + 1 : Number.POSITIVE_INFINITY;
  }

  /** A stream's history as its reads see it: the archive below this node's copy. */
  logOf(s: Stream): ReadLog {
    return new HistoryView(this.history, s.id, s.log);
  }

  /** A stream this node does not own, from the archive alone. */
  archivedOnly(id: string): ReadStream {
    return archivedOnly(this.history, id, (s) => this.headOf(s));
  }

  /** The newest tail row's last seq of a stream this node does not own, read again after archive_manifest_ttl_ms. */
  private headOf(id: string): number {
    const known = this.heads.get(id);
    if (known && performance.now() - known.readMs < this.config.archive_manifest_ttl_ms) return known.head;
    if (this.heads.size >= HEADS_MAX) this.heads.clear();
    const readMs = performance.now();
    throw new ArchiveMiss(this.tail.head(id).then((head) => void this.heads.set(id, { head, readMs })));
  }

  /** The shard as this node serves it under `epoch` (the lease the front saw), or 503: moving, catching up, or the stream being deleted. */
  serving(shard: number, epoch: number | undefined, stream: string): Held {
    const h = this.held.get(shard);
    if (!h || h.epoch !== epoch || h.syncing) throw shardMoving(shard);
    if (this.removing.has(stream)) throw streamDeleting(stream);
    return h;
  }

  clusterShardOf(stream: string): number {
    return clusterShardOf(stream, this.config.cluster_shards);
  }

  /**
   * The node holds `shard` under `epoch` now: this thread's streams of it
   * catch up with the database before it takes a publish.
   */
  async gain(shard: number, epoch: number): Promise<void> {
    const h: Held = { epoch, syncing: true };
    this.held.set(shard, h);
    // Batches of an earlier epoch still in flight get their answers (landed or fenced) first.
    await this.tail.settled(shard);
    await this.catchUp(shard, h, true);
  }

  /** The node no longer holds `shard`: its local copies stay, and are brought up to date if it comes back. */
  lose(shard: number): void {
    this.held.delete(shard);
  }

  /** A publish in cluster mode (Publisher.publish hands it over once the batch is framed). */
  publish(id: string, existing: Stream | undefined, batch: FramedBatch, epoch: number | undefined, reqId: number): void {
    const shard = this.clusterShardOf(id);
    const h = this.serving(shard, epoch, id);
    const stream = existing ?? this.streams.create(id, {});
    const answer = { reqId, duplicates: [...batch.duplicates], held: null };
    if (batch.count === 0) {
      // Every event a duplicate: of what is appended (answered now), or of a batch still being committed (answered with it).
      const waiting = answer.duplicates.some((d) => (d.seq ?? 0) > stream.log.headSeq) ? this.lastCommit.get(stream) : undefined;
      if (!waiting) return this.publisher.appendCommitted(stream, batch, answer);
      const b = { ...batch, keys: NO_KEYS as Map<string, number> };
      waiting.then(
        () => this.publisher.appendCommitted(stream, b, answer),
        () => this.refuse(reqId, commitFailed("the batch these events repeat", shard)),
      );
      return;
    }
    // The batch's frames leave the reused staging area (or the ring) for the wait.
    const frames = Buffer.from(batch.frames.subarray(0, batch.bytes));
    const { count, first, ts, bytes } = batch;
    stream.pending += count;
    stream.pendingTs = ts;
    // In the window now: a batch stamped before this one commits must still see them.
    for (const [key, seq] of batch.keys) stream.dedup.add(key, seq, ts);
    const commit = this.tail.append(shard, h.epoch, { stream: stream.id, firstSeq: first, lastSeq: first + count - 1, records: frames });
    this.lastCommit.set(stream, commit);
    commit.then(
      () => {
        stream.pending -= count;
        if (this.streams.get(stream.id) !== stream) return this.refuse(reqId, shardMoving(shard));
        try {
          this.publisher.appendCommitted(stream, { frames, bytes, count, first, ts, keys: NO_KEYS as Map<string, number> }, answer);
        } catch (err) {
          // PostgreSQL has it and this disk does not: read it back before going on.
          this.refuse(reqId, asApiError(err));
          this.recover(shard);
        }
      },
      (err: Error) => {
        // Every batch stamped after this one fails with it (TailStore): none is appended.
        stream.pending = 0;
        stream.dedup.forgetFrom(stream.log.headSeq + 1);
        logger().warn({ kind: "cluster", shard, stream: stream.id, err: err.message }, `cluster shard ${shard}: a tail commit failed: ${err.message}`);
        this.refuse(reqId, commitFailed("the batch", shard, err));
        this.recover(shard);
      },
    );
  }

  /** A stream config in cluster mode: the whole config in PostgreSQL (fenced) first, then this copy's, then answered. */
  putStream(req: RequestOf<Op.PutStream>): void {
    const id = req.meta.stream;
    const shard = this.clusterShardOf(id);
    const h = this.serving(shard, req.meta.clusterEpoch, id);
    const patch = this.streams.patchOf(req);
    const config = this.streams.configAfter(id, patch);
    this.writes.track(id, this.catalog.put(shard, h.epoch, id, config)).then(
      (landed) => {
        if (!landed || this.held.get(shard) !== h) return this.refuse(req.reqId, shardMoving(shard));
        try {
          this.streams.apply(req.reqId, id, patch);
        } catch (err) {
          this.refuse(req.reqId, asApiError(err));
        }
      },
      (err: Error) => this.refuse(req.reqId, commitFailed("the stream config", shard, err)),
    );
  }

  /** A checkpoint in cluster mode: in PostgreSQL (fenced) first, then here, then answered. */
  setCheckpoint(s: Stream, group: string, seq: number, epoch: number | undefined, reqId: number): void {
    const shard = this.clusterShardOf(s.id);
    const h = this.serving(shard, epoch, s.id);
    this.writes.track(s.id, this.checkpoints.set(shard, h.epoch, s.id, group, seq)).then(
      () => {
        if (this.streams.get(s.id) === s) s.checkpoints.set(group, seq);
        this.outbox.json(reqId, 200, { group, seq });
      },
      (err: Error) => this.refuse(reqId, commitFailed("the checkpoint", shard, err)),
    );
  }

  /**
   * A stream's removal in cluster mode: its writes refused meanwhile, its
   * batches on their way settled, then all the cluster holds of it gone in one
   * fenced transaction (the commit point), then this copy and the archive's
   * objects; answered once all of that is done.
   */
  deleteStream(req: RequestOf<Op.DeleteStream>): void {
    const id = req.meta.stream;
    const shard = this.clusterShardOf(id);
    const h = this.serving(shard, req.meta.clusterEpoch, id);
    const s = this.streams.existing(id);
    this.removing.add(id);
    const removed = this.exclusive(async () => {
      await this.writes.settled(id, () => this.lastCommit.get(s));
      if (this.held.get(shard) !== h || h.syncing) throw shardMoving(shard);
      const gone = await this.removal.remove(shard, h.epoch, id);
      if (gone === null) throw shardMoving(shard);
      const copy = this.streams.get(id);
      if (copy) this.streams.removeNow(copy, true);
      this.archived.delete(id);
      this.heads.delete(id);
      this.history.forget(id);
      await removeObjects(this.archive, id, gone);
    });
    removed
      .then(
        () => this.outbox.reply({ reqId: req.reqId, status: 204, ct: ContentType.None, body: null }),
        (err: Error) => {
          if (err instanceof ApiError) return this.refuse(req.reqId, err);
          // It may have landed: the shard reads back what the database holds before it goes on.
          this.refuse(req.reqId, commitFailed("the stream's removal", shard, err));
          this.recover(shard);
        },
      )
      .finally(() => this.removing.delete(id));
  }

  private refuse(reqId: number, e: ApiError): void {
    this.outbox.error(reqId, e);
  }

  /** After a failed commit: no publish until the shard's streams have caught up. */
  recover(shard: number): void {
    const h = this.held.get(shard);
    if (!h || h.syncing) return;
    h.syncing = true;
    void this.catchUp(shard, h, false);
  }

  /**
   * Brings this thread's streams of a shard up to what the database holds,
   * retrying while the shard is still held; `listed`: also the streams the
   * database knows and this node does not have (a gain).
   */
  private async catchUp(shard: number, h: Held, listed: boolean): Promise<void> {
    const live = () => this.held.get(shard) === h;
    for (;;) {
      if (!live()) return;
      try {
        // One at a time with other catch-ups and the archiver: two of them on one stream would each take its copy for theirs.
        await this.exclusive(async () => {
          const ids = new Set<string>();
          for (const s of this.streams.values()) if (this.clusterShardOf(s.id) === shard) ids.add(s.id);
          if (listed) for (const id of await this.manifest.streamsOf(shard)) if (shardOf(id, this.shards) === this.shard) ids.add(id);
          const configs = await this.catalog.ofShard(shard);
          for (const id of ids) if (live()) await this.catchUpStream(id, live, configs.get(id));
          const external = this.external();
          if (listed && external && live()) await applyExternalCheckpoints(external, this.streams, [...ids]);
          if (!live()) return;
          this.tail.reset(shard);
          h.syncing = false;
        });
        return;
      } catch (err) {
        logger().warn(
          { kind: "cluster", shard, err: (err as Error).message },
          `cluster shard ${shard}: catching up failed, retrying: ${(err as Error).message}`,
        );
        await new Promise((r) => setTimeout(r, CATCH_UP_RETRY_MS));
      }
    }
  }

  /**
   * One stream: kept if its local log lines up with the archive (a segment
   * starts right after the last archived seq, and it is not behind it),
   * else started again after it; then the tail rows past its head appended.
   */
  private async catchUpStream(id: string, live: () => boolean, config: Partial<StreamConfig> | undefined): Promise<void> {
    const archivedThrough = await this.manifest.archivedThrough(id);
    let s = this.streams.get(id);
    const rows = await this.tail.read(id, Math.min(s?.log.headSeq ?? 0, archivedThrough) + 1);
    // The shard left (or came back under another epoch) meanwhile: that catch-up decides, not this one.
    if (!live()) return;
    const clusterHead = rows.length > 0 ? rows[rows.length - 1].lastSeq : archivedThrough;
    const state = { archivedThrough, rows, clusterHead, archivedEnd: () => this.removal.archivedEnd(id, archivedThrough) };
    if (s && !(await copyLinesUp(s, state, this.scratch))) {
      logger().info({ kind: "cluster", stream: id }, `stream ${id}: this node's copy starts again after seq ${archivedThrough} (the archive moved on)`);
      this.streams.drop(id);
      s = undefined;
    }
    // A stream with no event yet exists if a config was set for it.
    if (!s && clusterHead === 0 && !config) return;
    s ??= this.streams.create(id, config ?? {}, archivedThrough + 1);
    // The config the cluster has, over whatever this copy had.
    if (config) s.update(config);
    for (const row of rows) {
      if (row.lastSeq <= s.log.headSeq) continue;
      if (row.firstSeq !== s.log.headSeq + 1) throw new Error(`stream ${id}: tail row ${row.firstSeq}..${row.lastSeq} does not follow head ${s.log.headSeq}`);
      appendRow(s, row);
    }
    await rememberKeys(s, this.manifest, this.archive, this.config.dedup_keys_max);
    await this.ordered.restore(s);
    this.archived.set(id, archivedThrough);
  }

  /** Runs `fn` after every catch-up and archiving run before it. */
  private exclusive(fn: () => Promise<void>): Promise<void> {
    const run = this.serial.then(fn);
    this.serial = run.catch(() => undefined);
    return run;
  }

  /** Copies closed segments of held shards' streams to the archive, in seq order, one at a time. */
  private archiveClosed(): Promise<void> {
    if (this.archiving || this.held.size === 0) return Promise.resolve();
    this.archiving = true;
    return this.exclusive(() => this.archiveNow());
  }

  /**
   * Retention of the archive, by the stream's owner: the archived segments
   * past retention_ms or retention_bytes (the archive's bytes and this
   * node's copy's, newest kept first) leave the manifest (fenced), then the
   * archive.
   */
  private async expireArchived(shard: number, h: Held, s: Stream): Promise<void> {
    const localBytes = s.log.segments.filter((g) => g.lastSeq > (this.archived.get(s.id) ?? 0)).reduce((n, g) => n + g.size, 0);
    const gone = await this.manifest.expire(shard, h.epoch, s.id, Date.now() - s.config.retention_ms, s.config.retention_bytes, localBytes);
    if (gone.length > 0) this.history.forget(s.id);
    for (const e of gone) {
      await this.archive.delete(e.key);
      if ((e.keyed ?? 0) > 0) await this.archive.delete(keysObjectOf(e.key));
    }
  }

  private async archiveNow(): Promise<void> {
    // Retention of the archive runs at the local retention's pace, not at every archiving run.
    const expire = Date.now() - this.expiredMs >= this.config.retention_check_interval_ms;
    if (expire) this.expiredMs = Date.now();
    try {
      for (const s of [...this.streams.values()]) {
        const shard = this.clusterShardOf(s.id);
        const h = this.held.get(shard);
        if (!h || h.syncing) continue;
        for (;;) {
          const through = this.archived.get(s.id) ?? 0;
          const seg = s.log.segments.find((g) => g.baseSeq === through + 1);
          if (!seg?.closed || seg.empty || this.streams.get(s.id) !== s) break;
          const key = segmentKey(escapeStreamId(s.id), seg.baseSeq, h.epoch, randomBytes(4).toString("hex"));
          // Off the thread: a closed segment is up to segment_bytes_max, and publishes go on meanwhile (retention keeps it: keepFrom).
          const bytes = await readFile(seg.logPath);
          await this.archive.put(key, bytes);
          // Its keys beside it, before the manifest row that makes both exist.
          const keys = keysOfSegment(bytes);
          if (keys.length > 0) await this.archive.put(keysObjectOf(key), Buffer.from(JSON.stringify(keys)));
          const entry = {
            stream: s.id,
            baseSeq: seg.baseSeq,
            lastSeq: seg.lastSeq,
            epoch: h.epoch,
            key,
            bytes: bytes.byteLength,
            keyed: keys.length,
            lastTs: seg.lastTs,
            points: await chunkPointsOf(bytes, this.frameBytesMax),
          };
          // Lost, or catching up since the object went (catch-ups wait for this run, but a failed commit marks the shard at once).
          if (this.held.get(shard) !== h || h.syncing || this.streams.get(s.id) !== s) break;
          if (!(await this.manifest.commit(shard, entry))) break; // the lease passed: the next owner archives it
          this.archived.set(s.id, seg.lastSeq);
          await this.tail.trim(shard, h.epoch, s.id, seg.lastSeq);
        }
        if (expire && this.held.get(shard) === h && !h.syncing) await this.expireArchived(shard, h, s);
      }
    } catch (err) {
      logger().warn({ kind: "cluster", err: (err as Error).message }, `cluster: archiving failed, retrying: ${(err as Error).message}`);
    } finally {
      this.archiving = false;
    }
  }

  async close(): Promise<void> {
    clearInterval(this.archiver);
    await this.sql.end({ timeout: 2 });
  }
}
