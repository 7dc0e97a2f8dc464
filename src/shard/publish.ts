// Publish: frames a batch (checks every event, drops duplicates, assigns seqs
// and the ingest_ts; nothing changes until the whole batch has passed),
// commits it to the stream's log and dedup window, pushes it live and answers
// once it is durable at the stream's level.
import { ApiError, asApiError } from "../errors.js";
import type { Config } from "../config.js";
import { frameBytesFor, markBatchEnd, sealFrame, stampFrame, writeFrameHeader, RECORD_HEADER_BYTES } from "../log/record.js";
import { u32 } from "../bytes.js";
import { checkFlatBatch, type EventLimits, type FlatBatch } from "../wire/event-codec.js";
import { BatchColumns, EventFields, eventBytesFor, writeEvent } from "../wire/event-layout.js";
import { JsonBatch } from "../wire/json-batch.js";
import { ContentType, type Op, type RequestOf } from "./protocol.js";
import type { StreamAdmin } from "./admin.js";
import { START_BUFFER_BYTES, type ShardBuffers } from "./buffers.js";
import type { Stream } from "./stream.js";
import type { OrderedStream } from "./ordered.js";
import { ReleaseStaging } from "./release-frames.js";
import type { WatchedStreams } from "./watch.js";
import type { Outbox } from "./worker.js";
import type { ShardMetrics } from "./metrics.js";
import { logger } from "../logger.js";
import { noteStorageRefusal } from "./disk-full-log.js";

/**
 * An event left out of a batch: its index in the request and the seq its
 * idempotency key already has, or (ordered ingest) its producer_seq, at or
 * below where its producer stands.
 */
export interface Duplicate {
  index: number;
  seq?: number;
  producer_seq?: number;
}

/**
 * A batch framed and ready to commit. There is one, reused by every publish
 * (its list and map emptied and refilled, where they used to be made anew per
 * batch): a shard frames one batch at a time, and the commit and the answer
 * take what they need from it before the next request is read.
 */
export interface FramedBatch {
  /** Where the frames are: the request body in the ring (binary) or the staging buffer (JSON). */
  frames: Buffer;
  bytes: number;
  count: number;
  /** Seq of the first frame (the head + 1 when framed); every frame has the same ingest_ts. */
  first: number;
  ts: number;
  readonly duplicates: Duplicate[];
  /** The frames' idempotency keys with their seqs, for the dedup window. */
  readonly keys: Map<string, number>;
  /**
   * Each frame's index in the request (duplicates squeezed out), and its
   * idempotency key or null: the first `count` entries (the arrays keep
   * their length from batch to batch, so they are not grown anew for each).
   */
  readonly indexes: number[];
  readonly frameKeys: Array<string | null>;
  /** Every event's producer fields and key, by its index in the request. */
  readonly cols: BatchColumns;
}

/** Frames in the log's order, as commit() and the live push take them. */
export type Appended = Pick<FramedBatch, "frames" | "bytes" | "count" | "first" | "ts" | "keys">;

/** Who waits for a batch's answer, and what it says besides the seqs. */
export interface Answer {
  reqId: number;
  duplicates: Duplicate[];
  held: unknown[] | null;
}

/** The cluster's part of a publish (src/shard/cluster.ts), set in cluster mode. */
export interface ClusterPublish {
  /** `epoch` undefined: the front does not serve the stream's shard (refused). */
  publish(id: string, stream: Stream | undefined, batch: FramedBatch, epoch: number | undefined, reqId: number): void;
  /** Ordered streams (src/shard/cluster-ordered.ts): their publishes take turns, framed when theirs comes; their gap timers. */
  readonly ordered: { publish(stream: Stream, req: RequestOf<Op.Publish>): void; expire(stream: Stream, nowMs: number): void };
}

/**
 * `expected_head_seq`: the head the batch must be appended on. Checked in
 * the same turn as the append (a shard takes one request at a time, and
 * nothing between here and commit() waits), so no other publish can move the
 * head in between. The head is the one appends go after, synced or not (an
 * fsync stream's batch still waiting for its sync counts): the head_seq of
 * GET /v1/streams/{id} and the last_seq of the last answer. A stream not yet
 * created has head 0. Checked before the batch: duplicates or not, a batch
 * sent on another head is refused whole (docs/decisions.md).
 */
function checkHead(stream: Stream | undefined, expected: number): void {
  if (stream?.ordered) {
    throw new ApiError(
      400,
      "invalid_parameter",
      `"expected_head_seq" is not taken on a stream with producer_ordering: its events may be held and appended behind others; producer_seq orders them instead`,
      { parameter: "expected_head_seq" },
    );
  }
  const head = stream ? stream.log.headSeq + stream.pending : 0;
  if (head !== expected) {
    throw new ApiError(409, "head_mismatch", `expected head_seq ${expected}, but the stream's head_seq is ${head}; nothing was appended`, { head_seq: head });
  }
}

export class Publisher {
  // Reused per request: the staging area JSON events are framed into (grown on demand).
  private staging = Buffer.allocUnsafe(START_BUFFER_BYTES);
  private readonly jsonBatch = new JsonBatch();
  private readonly fields = new EventFields();
  private readonly limits: EventLimits;
  private readonly batch: FramedBatch = {
    frames: this.staging,
    bytes: 0,
    count: 0,
    first: 1,
    ts: 0,
    duplicates: [],
    keys: new Map(),
    indexes: [],
    frameKeys: [],
    cols: new BatchColumns(),
  };
  /** Where ordered streams frame what they release. */
  private readonly releases = new ReleaseStaging();
  /** Set by the worker in cluster mode. */
  cluster: ClusterPublish | null = null;

  constructor(
    private readonly config: Config,
    private readonly frameBytesMax: number,
    private readonly streams: StreamAdmin,
    private readonly outbox: Outbox,
    private readonly buffers: ShardBuffers,
    private readonly watched: WatchedStreams,
    private readonly metrics: ShardMetrics,
  ) {
    this.limits = { eventBytesMax: config.event_bytes_max, fieldBytesMax: config.event_field_bytes_max };
  }

  publish(req: RequestOf<Op.Publish>): void {
    const id = req.meta.stream;
    let stream = this.streams.get(id);
    if (!stream && !this.config.auto_create_streams) this.streams.existing(id);
    if (req.meta.expectedHeadSeq !== undefined) checkHead(stream, req.meta.expectedHeadSeq);
    if (this.cluster && stream?.ordered) return this.cluster.ordered.publish(stream, req);
    const batch = this.frame(stream, req.meta.ct, req.body);
    if (stream?.ordered) return this.publishOrdered(stream, stream.ordered, batch, req.reqId);
    // A new stream is created only once the whole batch has passed: a
    // rejected request leaves nothing behind, not even an empty stream.
    // Cluster mode: appended once PostgreSQL has it (src/shard/cluster.ts).
    if (this.cluster) return this.cluster.publish(id, stream, batch, req.meta.clusterEpoch, req.reqId);
    stream ??= this.streams.create(id, {});
    this.appendCommitted(stream, batch, { reqId: req.reqId, duplicates: batch.duplicates, held: null });
  }

  /** Appends a batch, pushes it live and answers (answer null: nobody to answer) once durable at the stream's level. */
  appendCommitted(stream: Stream, b: Appended, answer: Answer | null): void {
    this.commit(stream, b);
    this.afterAppend(stream, b, answer);
  }

  /**
   * A batch on a stream with producer_ordering: ordered.ts decides what goes
   * to the log now and what is held; the held ones are durable before the
   * answer, and the whole request stands or falls together.
   */
  private publishOrdered(stream: Stream, ordered: OrderedStream, batch: FramedBatch, reqId: number): void {
    const now = Date.now();
    // Start-up releases and gaps already due go first: they were there before this batch.
    if (ordered.due(now)) this.expireHeld(stream, now);
    const a = ordered.admit(batch, this.releases, stream.log, stream.dedup, now);
    const fsync = stream.config.durability === "fsync";
    try {
      ordered.keepHeld(fsync);
      this.commit(stream, a.released);
    } catch (err) {
      ordered.abort();
      throw err;
    }
    ordered.finish(!fsync);
    this.afterAppend(stream, a.released, { reqId, duplicates: batch.duplicates, held: a.held });
  }

  /**
   * The gap timer of ordered streams: tombstones and held events whose gap
   * has waited gap_timeout_ms, appended with nobody waiting for an answer.
   */
  expireHeld(stream: Stream, nowMs: number): void {
    if (this.cluster) return this.cluster.ordered.expire(stream, nowMs);
    const ordered = stream.ordered;
    if (!ordered?.due(nowMs)) return;
    const r = ordered.expire(this.releases, stream.log, stream.dedup, nowMs);
    try {
      if (r.count > 0) this.commit(stream, r);
    } catch (err) {
      // Undone: still held, in memory and in held.log; the timer backs off before it tries again.
      logger().error({ kind: "storage", stream: stream.id, err }, `stream ${stream.id}: releasing held events failed: ${(err as Error).message}`);
      return ordered.expireFailed(nowMs);
    }
    ordered.finish(stream.config.durability !== "fsync");
    if (r.count > 0) this.afterAppend(stream, r, null);
  }

  /**
   * Pushes what was appended live and answers (`answer` null: a release of
   * the gap timer, nobody to answer), once durable at the stream's level.
   */
  private afterAppend(stream: Stream, b: Appended, answer: Answer | null): void {
    const log = stream.log;
    const { count, first } = b;
    const body =
      answer &&
      JSON.stringify({
        stream: stream.id,
        first_seq: count > 0 ? first : log.headSeq + 1,
        last_seq: count > 0 ? first + count - 1 : log.headSeq,
        count,
        duplicates: answer.duplicates,
        ...(answer.held ? { held: answer.held } : {}),
      });
    if (stream.config.durability !== "fsync") {
      // The push goes before the answer: a consumer sees an event no later
      // than its producer hears it was appended.
      if (count > 0) this.watched.pushLive(stream, b.frames, b.bytes, count, first);
      if (answer && body) this.outbox.json200(answer.reqId, body);
      return;
    }
    // Duplicates may point at records still waiting for their sync too.
    const s = stream;
    log.syncTo(log.headSeq, (err) => {
      if (err) {
        // The log has cut every record the failed sync covered: so go their keys.
        s.dedup.forgetFrom(s.log.headSeq + 1);
        // ...and ordered ingest's releases: held.log still lists what they took.
        s.ordered?.reload(s.log, Date.now());
        if (!answer) return logger().error({ kind: "storage", stream: s.id, err }, `stream ${s.id}: a sync of released held events failed: ${err.message}`);
        const e = asApiError(err);
        noteStorageRefusal(e, s.id);
        this.outbox.error(answer.reqId, e);
        return;
      }
      s.ordered?.synced(s.log.committedSeq);
      // The frames left the staging buffer long ago: read them back (from
      // the page cache) only if someone follows the stream.
      if (count > 0 && this.watched.has(s.id)) {
        const page = s.log.read(first, first + count - 1, count, this.config.consume_page_bytes_max, this.buffers.page);
        if (page.count === count) this.watched.pushLive(s, page.buf, page.bytes, count, first);
        else this.watched.pushHead(s, first + count - 1);
      }
      if (answer && body) this.outbox.json200(answer.reqId, body);
    });
  }

  /**
   * Validates and encodes the whole batch against the stream as it is now
   * (absent: a stream this batch would create), changing nothing of it.
   * JSON events are written as frames into the staging buffer; binary ones
   * arrive framed and are stamped in place in the ring. The frames of an
   * ordered stream are not sealed: what the log gets of them is framed
   * again in release order (ordered.ts), and sealed there, once.
   */
  frame(stream: Stream | undefined, ct: ContentType, body: Buffer): FramedBatch {
    const limits = stream ? { ...this.limits, eventBytesMax: stream.config.max_event_bytes } : this.limits;
    const isJson = ct !== ContentType.FlatBuffers;
    // JSON is scanned from a worker-local copy (the scanner decodes escapes
    // into the room after it); binary frames are checked, stamped and
    // written straight from the ring: plain loads and stores in JIT code are
    // as fast on shared memory as on any, while V8's bulk copies out of it
    // are not, and pwrite takes the bytes from wherever they are.
    const raw = isJson ? this.buffers.ownCopy(body) : body;
    const own = this.buffers.body; // after ownCopy, which may have grown it
    let flat: FlatBatch | null = null;
    const cols = this.batch.cols;
    if (isJson) this.jsonBatch.scan(own, raw.length, this.config.publish_events_max);
    else flat = checkFlatBatch(raw, this.config.publish_events_max, limits, this.frameBytesMax, this.fields, cols);
    const n = flat ? flat.count : this.jsonBatch.count;
    const out = flat ? raw.subarray(flat.start, flat.end) : null;
    const ts = Math.max(Date.now(), stream ? Math.max(stream.log.lastTs, stream.pendingTs) : 0);
    let seq = (stream ? stream.log.headSeq + stream.pending : 0) + 1;
    const first = seq;
    let bytes = 0; // frames kept so far (in `out`, or in staging for JSON)
    let count = 0;
    let at = 0; // next binary frame in `out`; duplicates are squeezed out in place
    let lastAt = 0; // the last frame kept, which carries the batch's commit mark
    const duplicates = this.batch.duplicates;
    const batchKeys = this.batch.keys;
    const indexes = this.batch.indexes;
    const frameKeys = this.batch.frameKeys;
    const seal = !stream?.ordered;
    duplicates.length = 0;
    batchKeys.clear();
    for (let i = 0; i < n; i++) {
      let key: string | null;
      let frameBytes: number;
      if (flat && out) {
        frameBytes = u32(out, at);
        key = flat.anyIdempotencyKey ? cols.idempotencyKey(i, out, at + RECORD_HEADER_BYTES) : null;
        if (key !== null && this.isDuplicate(stream, batchKeys, key, i, duplicates)) {
          at += frameBytes;
          continue;
        }
        if (bytes !== at) out.copyWithin(bytes, at, at + frameBytes);
        at += frameBytes;
        stampFrame(out, bytes, seq, ts);
      } else {
        const f = this.jsonBatch.fields(i, this.fields, limits);
        key = f.idemAt < 0 ? null : own.toString("utf8", f.idemAt, f.idemAt + f.idemLen);
        if (key !== null && this.isDuplicate(stream, batchKeys, key, i, duplicates)) continue;
        cols.noteWritten(i, f);
        this.ensureStaging(bytes + RECORD_HEADER_BYTES + eventBytesFor(f) + 8);
        const bodyBytes = writeEvent(this.staging, bytes + RECORD_HEADER_BYTES, own, f);
        frameBytes = frameBytesFor(bodyBytes);
        writeFrameHeader(this.staging, bytes, frameBytes, bodyBytes, seq, ts);
      }
      if (key !== null) batchKeys.set(key, seq);
      if (seal) sealFrame(out ?? this.staging, bytes, frameBytes); // staging may have grown: read it now
      indexes[count] = i;
      frameKeys[count] = key;
      lastAt = bytes;
      bytes += frameBytes;
      count++;
      seq++;
    }
    if (count > 0 && seal) markBatchEnd(out ?? this.staging, lastAt);
    const b = this.batch;
    frameKeys.fill(null, count); // no stale key kept alive past this batch's end
    b.frames = out ?? this.staging;
    b.bytes = bytes;
    b.count = count;
    b.first = first;
    b.ts = ts;
    return b;
  }

  /** Appends a framed batch to the stream's log and its keys to the dedup window. */
  commit(stream: Stream, b: Appended): void {
    if (b.count > 0) {
      const startedMs = performance.now();
      stream.log.append(b.frames, b.bytes, b.count, stream.config.durability === "fsync");
      this.metrics.observeAppend((performance.now() - startedMs) / 1000);
      stream.publishedEvents += b.count;
      stream.publishedBytes += b.bytes;
    }
    for (const [key, s] of b.keys) stream.dedup.add(key, s, b.ts);
  }

  private ensureStaging(bytes: number): void {
    if (bytes <= this.staging.length) return;
    const next = Buffer.allocUnsafe(Math.max(bytes, this.staging.length * 2));
    this.staging.copy(next);
    this.staging = next;
  }

  /** An idempotency key already in the stream's window or earlier in this batch. */
  private isDuplicate(stream: Stream | undefined, batchKeys: Map<string, number>, key: string, index: number, duplicates: Duplicate[]): boolean {
    const seq = stream?.dedup.get(key) ?? batchKeys.get(key);
    if (seq === undefined) return false;
    duplicates.push({ index, seq });
    return true;
  }
}
