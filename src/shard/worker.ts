// A shard worker: owns the streams that hash to it (sequencer, dedup window,
// log, retention) and serves every request for them that the front passes
// through its in-ring, answering through its out-ring.
//
// One of the two hub files (~700 lines: request dispatch, publish, replay, consume reads, checkpoints and retention). Splitting it by what it
// owns is issue 11; this session only touched it surgically.
import { parentPort, workerData } from "node:worker_threads";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { setImmediate as yieldToLoop } from "node:timers/promises";
import { Ring } from "../ring/ring.js";
import { copyBytes, u32 } from "../bytes.js";
import { ApiError, asApiError } from "../errors.js";
import { intParam, intValue, jsonTextProblem, rejectUnknownFields } from "../validate.js";
import type { Config } from "../config.js";
import type { ExternalCheckpoints } from "../consumer/external.js";
import { CorruptRecordError, type CorruptionInfo, type LogOptions, type RecoveryReport } from "../log/log.js";
import { frameBytesFor, frameTs, markBatchEnd, sealFrame, stampFrame, writeFrameHeader, RECORD_HEADER_BYTES } from "../log/record.js";
import { ByteWriter, JsonRenderer, checkFlatBatch, recordIdempotencyKey, renderEventsMessage, renderJsonPage, type EventLimits, type FlatBatch } from "../wire/event-codec.js";
import { EventFields, eventBytesFor, writeEvent } from "../wire/event-layout.js";
import { JsonBatch } from "../wire/json-batch.js";
import { eventBatchHeaderBytes, writeEventBatchHeader } from "../wire/event-batch.js";
import {
  CONSUME_HEAD_BYTES,
  ContentType,
  Op,
  PUSH_REQ_ID,
  WATCH_BINARY,
  WATCH_JSON,
  readRequest,
  shardOf,
  writeConsumeHead,
  writeResponse,
  writeResponseWith,
  type FrontCommand,
  type Request,
  type ScrubItem,
  type WorkerEvent,
  type WorkerInit,
} from "./protocol.js";
import { Stream, type StreamReport } from "./stream.js";
import { fullConfig, parseStreamConfigPatch, type StreamDefaults } from "./stream-config.js";
import { STREAM_ID } from "../stream-id.js";
import { hasMeta, readMeta } from "./stream-meta.js";

/** Requests taken from the ring before yielding to timers and fsync callbacks. */
const REQUESTS_PER_TURN_MAX = 64;

interface Reply {
  reqId: number;
  status: number;
  ct: ContentType;
  body: Uint8Array | string | null;
}

class ShardWorker {
  private readonly streams = new Map<string, Stream>();
  private readonly inRing: Ring;
  private readonly outRing: Ring;
  private readonly root: string;
  private readonly logOpts: LogOptions;
  private readonly defaults: StreamDefaults;
  private readonly limits: EventLimits;
  /** Replies the out-ring could not take yet; no request is read while any wait. */
  private outbox: Reply[] = [];
  private stopping = false;
  // Reused per request: the staging area for frames and the page buffers.
  private staging = Buffer.allocUnsafe(1 << 20);
  private bodyBuf = Buffer.allocUnsafe(1 << 20);
  private readonly pageBuf: Buffer;
  private readonly jsonPage = new ByteWriter(1 << 20);
  private readonly jsonBatch = new JsonBatch();
  private readonly fields = new EventFields();
  private readonly renderer = new JsonRenderer();
  /** PostgreSQL / Redis copies of group checkpoints, when configured. */
  private external: ExternalCheckpoints | null = null;
  /** Streams the front follows live, with the WATCH_* formats it wants. */
  private readonly watched = new Map<string, number>();

  constructor(private readonly init: WorkerInit) {
    const c = init.config;
    this.inRing = new Ring(init.inRing);
    this.outRing = new Ring(init.outRing);
    // Answers and pushes of one turn wake the front once.
    this.outRing.deferNotify = true;
    this.root = join(c.data_dir, "streams");
    this.logOpts = {
      segmentBytesMax: c.segment_bytes_max,
      indexIntervalBytes: c.index_interval_bytes,
      frameBytesMax: frameBytesFor(c.event_bytes_max + 4 * c.event_field_bytes_max + 256),
    };
    this.defaults = {
      retention_ms: c.default_retention_ms,
      dedup_window_ms: c.default_dedup_window_ms,
      durability: c.default_durability,
      max_event_bytes: c.event_bytes_max,
    };
    this.limits = { eventBytesMax: c.event_bytes_max, fieldBytesMax: c.event_field_bytes_max };
    this.pageBuf = Buffer.allocUnsafe(c.replay_page_bytes_max + this.logOpts.frameBytesMax);
  }

  private get config(): Config {
    return this.init.config;
  }

  /** Opens every stream this shard owns; recovery runs here, before ready. */
  recover(): WorkerEvent {
    mkdirSync(this.root, { recursive: true });
    const recovery: Array<{ stream: string; report: StreamReport }> = [];
    const scrub: ScrubItem[] = [];
    const unreadable: string[] = [];
    for (const name of readdirSync(this.root)) {
      const dir = join(this.root, name);
      if (!hasMeta(dir)) continue; // a crash between mkdir and the first write: nothing in it
      const read = readMeta(dir, () => fullConfig({}, this.defaults));
      if (read === null) {
        // Every shard sees it; shard 0 alone reports it.
        if (this.init.shard === 0) unreadable.push(dir);
        continue;
      }
      // Only the owner may open a stream: opening runs recovery, which writes.
      if (shardOf(read.meta.id, this.init.shards) !== this.init.shard) continue;
      const { stream: s, report: r } = Stream.open(dir, read, this.logOpts, this.config.dedup_keys_max, this.defaults);
      this.streams.set(s.id, s);
      for (const u of r.unverified) scrub.push({ stream: s.id, ...u, frameBytesMax: this.logOpts.frameBytesMax });
      r.unverified = [];
      if (r.truncatedBytes > 0 || r.rebuiltIndexes > 0 || r.corruptions.length > 0 || r.files.length > 0) recovery.push({ stream: s.id, report: r });
    }
    return { type: "ready", streams: this.streams.size, recovery, scrub, unreadable };
  }

  /**
   * With PostgreSQL or Redis configured, their checkpoints win over the data
   * dir's: Redis (set on every ack) first, then PostgreSQL (batched). The data
   * dir may be new, restored or behind; those stores are shared.
   */
  async loadExternalCheckpoints(): Promise<void> {
    const c = this.config;
    if (!c.postgres_url && !c.redis_url) return;
    // Loaded only when configured: the PostgreSQL and Redis clients cost each
    // shard thread megabytes of heap.
    const { ExternalCheckpoints } = await import("../consumer/external.js");
    this.external = await ExternalCheckpoints.open({
      postgresUrl: c.postgres_url || undefined,
      redisUrl: c.redis_url || undefined,
      flushIntervalMs: c.checkpoint_flush_interval_ms,
      keyPrefix: c.redis_key_prefix,
    });
    const loaded = await this.external.load([...this.streams.keys()]);
    for (const [id, groups] of loaded) {
      const s = this.streams.get(id)!;
      for (const [group, seq] of groups) if (s.checkpoints.get(group)?.seq !== seq) s.checkpoints.set(group, seq);
    }
  }

  noteVerified(stream: string, baseSeq: number): void {
    this.streams.get(stream)?.log.markVerified(baseSeq);
  }

  /** Damage the background scrub found: shown in the stream's info from now on. */
  noteCorruption(stream: string, info: CorruptionInfo): void {
    this.streams.get(stream)?.noteCorruption(info);
  }

  async run(): Promise<void> {
    const retention = setInterval(() => this.applyRetention(), this.config.retention_check_interval_ms);
    while (!this.stopping) {
      let taken = 0;
      while (taken < REQUESTS_PER_TURN_MAX && this.outbox.length === 0) {
        const msg = this.inRing.read();
        if (!msg) break;
        const req = readRequest(this.inRing, msg);
        try {
          this.handle(req);
        } catch (err) {
          const e = asApiError(err);
          if (e.status === 500) console.error(`shard ${this.init.shard}: ${(err as Error).stack ?? err}`);
          this.reply({ reqId: req.reqId, status: e.status, ct: ContentType.Json, body: e.body() });
        }
        this.inRing.release();
        taken++;
      }
      if (this.outbox.length > 0) await this.drainOutbox();
      else if (taken === 0) await this.inRing.waitReadable(1000);
      else if (taken === REQUESTS_PER_TURN_MAX) await yieldToLoop();
    }
    clearInterval(retention);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const s of this.streams.values()) {
      try {
        s.log.flush();
      } finally {
        s.close();
      }
    }
    await this.external?.close(); // the last batch of checkpoints
  }

  private reply(r: Reply): void {
    if (this.outbox.length === 0 && writeResponse(this.outRing, r.reqId, r.status, r.ct, r.body)) return;
    // A body may be a view of a reused buffer (the page writer), which a
    // push from an fsync callback can overwrite before the outbox drains.
    if (r.body instanceof Uint8Array) r.body = Uint8Array.prototype.slice.call(r.body);
    this.outbox.push(r);
    // Replies also come from callbacks (fsync completions) while the request
    // loop may be parked: drain from here too rather than wait for it.
    if (!this.draining) void this.drainOutbox();
  }

  private draining = false;

  private async drainOutbox(): Promise<void> {
    if (this.draining) return this.outRing.waitWritable(1000);
    this.draining = true;
    try {
      while (this.outbox.length > 0) {
        const r = this.outbox[0];
        if (writeResponse(this.outRing, r.reqId, r.status, r.ct, r.body)) this.outbox.shift();
        else await this.outRing.waitWritable(1000);
      }
    } finally {
      this.draining = false;
    }
  }

  private json(reqId: number, status: number, value: unknown): void {
    this.reply({ reqId, status, ct: ContentType.Json, body: JSON.stringify(value) });
  }

  private handle(req: Request): void {
    switch (req.op) {
      case Op.Publish:
        return this.publish(req);
      case Op.Replay:
        return this.replay(req);
      case Op.PutStream:
        return this.putStream(req);
      case Op.GetStream:
        return this.json(req.reqId, 200, this.existing(req.meta.stream!).info());
      case Op.DeleteStream: {
        const s = this.existing(req.meta.stream!);
        this.streams.delete(s.id);
        s.remove();
        void this.external?.deleteStream(s.id);
        if (this.watched.delete(s.id)) this.reply({ reqId: PUSH_REQ_ID, status: 404, ct: ContentType.None, body: s.id });
        return this.reply({ reqId: req.reqId, status: 204, ct: ContentType.None, body: null });
      }
      case Op.ListStreams:
        return this.json(req.reqId, 200, { streams: [...this.streams.values()].map((s) => s.info()) });
      case Op.SetCheckpoint:
        return this.setCheckpoint(req);
      case Op.GetCheckpoint: {
        const s = this.existing(req.meta.stream!);
        const group = groupParam(req.meta.query);
        return this.json(req.reqId, 200, { group, seq: this.checkpointOf(s, group).seq });
      }
      case Op.Lag: {
        const s = this.existing(req.meta.stream!);
        return this.json(req.reqId, 200, this.lag(s, groupParam(req.meta.query)));
      }
      case Op.Groups: {
        const s = this.existing(req.meta.stream!);
        return this.json(req.reqId, 200, { groups: [...s.checkpoints.groups.keys()].sort().map((g) => ({ ...this.lag(s, g), members: [] })) });
      }
      case Op.ConsumeStart:
        return this.json(req.reqId, 200, this.consumeStart(this.existing(req.meta.stream!), req.meta.query ?? ""));
      case Op.ConsumeRead:
        return this.consumeRead(req);
      case Op.Watch: {
        const id = req.meta.stream!;
        if (req.meta.watch) this.watched.set(id, req.meta.watch);
        else this.watched.delete(id);
        return this.reply({ reqId: req.reqId, status: 204, ct: ContentType.None, body: null });
      }
      default:
        throw new ApiError(500, "internal", `unknown op ${req.op}`);
    }
  }

  private existing(id: string): Stream {
    const s = this.streams.get(id);
    if (!s) throw new ApiError(404, "stream_not_found", `stream "${id}" does not exist`, { stream: id });
    return s;
  }

  private createStream(id: string, patch: Parameters<typeof fullConfig>[0]): Stream {
    const s = Stream.create(this.root, id, fullConfig(patch, this.defaults), this.logOpts, this.config.dedup_keys_max);
    this.streams.set(id, s);
    return s;
  }

  private putStream(req: Request): void {
    const body = req.body.byteLength > 0 ? this.jsonBody(req) : undefined;
    const patch = parseStreamConfigPatch(body, this.config.event_bytes_max);
    const id = req.meta.stream!;
    const existing = this.streams.get(id);
    if (existing) {
      existing.update(patch);
      return this.json(req.reqId, 200, existing.info());
    }
    return this.json(req.reqId, 201, this.createStream(id, patch).info());
  }

  /** A control-plane JSON body (stream config, checkpoint). */
  private jsonBody(req: Request): unknown {
    const bytes = this.ownCopy(req.body);
    const problem = jsonTextProblem(bytes);
    if (problem) throw new ApiError(400, "invalid_json", `request body is not valid JSON: ${problem}`);
    try {
      return JSON.parse(bytes.toString("utf8"));
    } catch (err) {
      throw new ApiError(400, "invalid_json", `request body is not valid JSON: ${(err as Error).message}`);
    }
  }

  // ---- checkpoints and lag ----------------------------------------------

  private checkpointOf(s: Stream, group: string) {
    const c = s.checkpoints.get(group);
    if (!c) throw new ApiError(404, "group_not_found", `group "${group}" has no checkpoint on stream "${s.id}"`, { group });
    return c;
  }

  private setCheckpoint(req: Request): void {
    const s = this.existing(req.meta.stream!);
    const body = this.jsonBody(req);
    if (typeof body !== "object" || body === null || Array.isArray(body)) throw new ApiError(400, "invalid_body", `body must be {"group": "...", "seq": N}`);
    rejectUnknownFields(body, CHECKPOINT_FIELDS, "invalid_body");
    const group = checkGroup((body as { group?: unknown }).group);
    const seq = (body as { seq?: unknown }).seq;
    if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 0) {
      throw new ApiError(400, "invalid_parameter", `"seq" must be an integer from 0 to head_seq (${s.log.headSeq})`, { head_seq: s.log.headSeq });
    }
    if (seq > s.log.headSeq) {
      throw new ApiError(400, "invalid_parameter", `"seq" ${seq} is above the stream's head_seq ${s.log.headSeq}`, { head_seq: s.log.headSeq });
    }
    s.checkpoints.set(group, seq);
    this.external?.write(s.id, group, seq);
    this.json(req.reqId, 200, { group, seq });
  }

  /**
   * Lag in events and in time: lag_ms is how long the oldest event the group
   * has not acknowledged has waited (0 when it is caught up).
   */
  private lag(s: Stream, group: string): Record<string, unknown> {
    const checkpoint = this.checkpointOf(s, group).seq;
    const log = s.log;
    const head = log.committedSeq;
    let lagMs = 0;
    const oldest = Math.max(checkpoint + 1, log.firstSeq);
    if (oldest <= head) {
      const page = log.read(oldest, oldest, 1, 1, this.pageBuf);
      if (page.count === 1) lagMs = Math.max(0, Date.now() - frameTs(page.buf, 0));
    }
    return { group, head_seq: head, checkpoint_seq: checkpoint, lag: Math.max(0, head - checkpoint), lag_ms: lagMs };
  }

  // ---- publish ---------------------------------------------------------

  private publish(req: Request): void {
    const id = req.meta.stream!;
    let stream = this.streams.get(id);
    if (!stream && !this.config.auto_create_streams) this.existing(id);
    const limits = stream ? { ...this.limits, eventBytesMax: stream.config.max_event_bytes } : this.limits;
    // Validate and encode the whole batch before anything is appended. JSON
    // events are written as frames into the staging buffer; binary ones
    // arrive framed and are stamped in place in the worker's copy.
    const isJson = req.meta.ct !== ContentType.FlatBuffers;
    // JSON is scanned from a worker-local copy (the scanner decodes escapes
    // into the room after it); binary frames are checked, stamped and
    // written straight from the ring: plain loads and stores in JIT code are
    // as fast on shared memory as on any, while V8's bulk copies out of it
    // are not, and pwrite takes the bytes from wherever they are.
    const raw = isJson ? this.ownCopy(req.body) : req.body;
    let flat: FlatBatch | null = null;
    if (isJson) this.jsonBatch.scan(this.bodyBuf, raw.length, this.config.publish_events_max);
    else flat = checkFlatBatch(raw, this.config.publish_events_max, limits, this.logOpts.frameBytesMax, this.fields);
    const n = flat ? flat.count : this.jsonBatch.count;
    const out = flat ? raw.subarray(flat.start, flat.end) : null;
    // A new stream is created only once the whole batch has passed: a
    // rejected request leaves nothing behind, not even an empty stream.
    const ts = Math.max(Date.now(), stream ? stream.log.lastTs : 0);
    let seq = (stream ? stream.log.headSeq : 0) + 1;
    const first = seq;
    let bytes = 0; // frames kept so far (in `out`, or in staging for JSON)
    let count = 0;
    let at = 0; // next binary frame in `out`; duplicates are squeezed out in place
    let lastAt = 0; // the last frame kept, which carries the batch's commit mark
    const duplicates: Array<{ index: number; seq: number }> = [];
    const batchKeys = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      let key: string | null;
      let frameBytes: number;
      if (flat && out) {
        frameBytes = u32(out, at);
        key = flat.anyIdempotencyKey ? recordIdempotencyKey(out, at, this.fields) : null;
        if (key !== null && this.isDuplicate(stream, batchKeys, key, i, duplicates)) {
          at += frameBytes;
          continue;
        }
        if (bytes !== at) out.copyWithin(bytes, at, at + frameBytes);
        at += frameBytes;
        stampFrame(out, bytes, seq, ts);
      } else {
        const f = this.jsonBatch.fields(i, this.fields, limits);
        key = f.idemAt < 0 ? null : this.bodyBuf.toString("utf8", f.idemAt, f.idemAt + f.idemLen);
        if (key !== null && this.isDuplicate(stream, batchKeys, key, i, duplicates)) continue;
        this.ensureStaging(bytes + RECORD_HEADER_BYTES + eventBytesFor(f) + 8);
        const bodyBytes = writeEvent(this.staging, bytes + RECORD_HEADER_BYTES, this.bodyBuf, f);
        frameBytes = frameBytesFor(bodyBytes);
        writeFrameHeader(this.staging, bytes, frameBytes, bodyBytes, seq, ts);
      }
      if (key !== null) batchKeys.set(key, seq);
      sealFrame(out ?? this.staging, bytes, frameBytes); // staging may have grown: read it now
      lastAt = bytes;
      bytes += frameBytes;
      count++;
      seq++;
    }
    if (count > 0) markBatchEnd(out ?? this.staging, lastAt);
    stream ??= this.createStream(id, {});
    const log = stream.log;
    const durable = stream.config.durability === "fsync";
    if (count > 0) log.append(out ?? this.staging, bytes, count, durable);
    for (const [key, s] of batchKeys) stream.dedup.add(key, s, ts);
    const body = JSON.stringify({
      stream: id,
      first_seq: count > 0 ? first : log.headSeq + 1,
      last_seq: count > 0 ? first + count - 1 : log.headSeq,
      count,
      duplicates,
    });
    const reqId = req.reqId;
    if (!durable) {
      // The push goes before the answer: a consumer sees an event no later
      // than its producer hears it was appended.
      if (count > 0) this.pushLive(stream, out ?? this.staging, bytes, count, first);
      return this.json200(reqId, body);
    }
    // Duplicates may point at records still waiting for their sync too.
    const s = stream;
    log.syncTo(log.headSeq, (err) => {
      if (err) {
        // The log has cut every record the failed sync covered: so go their keys.
        s.dedup.forgetFrom(s.log.headSeq + 1);
        const e = asApiError(err);
        this.reply({ reqId, status: e.status, ct: ContentType.Json, body: e.body() });
        return;
      }
      // The frames left the staging buffer long ago: read them back (from
      // the page cache) only if someone follows the stream.
      if (count > 0 && this.watched.has(s.id)) {
        const page = s.log.read(first, first + count - 1, count, this.config.consume_page_bytes_max, this.pageBuf);
        if (page.count === count) this.pushLive(s, page.buf, page.bytes, count, first);
        else this.pushHead(s, first + count - 1);
      }
      this.json200(reqId, body);
    });
  }

  private json200(reqId: number, body: string): void {
    this.reply({ reqId, status: 200, ct: ContentType.Json, body });
  }

  /**
   * Copies a request body out of the shared ring into worker memory (one
   * native memcpy), for the parsers that need a buffer of their own: the JSON
   * scanner writes decoded strings after the body, and V8's string decoding
   * and JSON.parse take slower paths on shared memory.
   */
  private ownCopy(shared: Buffer): Buffer {
    // Twice the body: JsonBatch decodes escaped strings into the space after it.
    if (2 * shared.byteLength > this.bodyBuf.length) this.bodyBuf = Buffer.allocUnsafe(Math.max(2 * shared.byteLength, this.bodyBuf.length * 2));
    copyBytes(shared, this.bodyBuf, 0);
    return this.bodyBuf.subarray(0, shared.byteLength);
  }

  private ensureStaging(bytes: number): void {
    if (bytes <= this.staging.length) return;
    const next = Buffer.allocUnsafe(Math.max(bytes, this.staging.length * 2));
    this.staging.copy(next);
    this.staging = next;
  }

  /** An idempotency key already in the stream's window or earlier in this batch. */
  private isDuplicate(stream: Stream | undefined, batchKeys: Map<string, number>, key: string, index: number, duplicates: Array<{ index: number; seq: number }>): boolean {
    const seq = stream?.dedup.get(key) ?? batchKeys.get(key);
    if (seq === undefined) return false;
    duplicates.push({ index, seq });
    return true;
  }

  // ---- replay ----------------------------------------------------------

  private replay(req: Request): void {
    const stream = this.existing(req.meta.stream!);
    const log = stream.log;
    // The front has checked the names (unknown or repeated: 400).
    const q = new URLSearchParams(req.meta.query ?? "");
    const fromParam = q.get("from");
    const fromTime = q.get("from_time");
    if (fromParam !== null && fromTime !== null) throw new ApiError(400, "invalid_parameter", `give "from" or "from_time", not both`);
    let from: number;
    if (fromTime !== null) from = Math.max(log.seqAtTime(intValue("from_time", fromTime, 0)), log.firstSeq);
    else if (fromParam === null || fromParam === "earliest") from = log.firstSeq;
    else if (fromParam === "latest") from = log.headSeq + 1;
    else from = intValue("from", fromParam, 1);
    const to = q.get("to") === null ? Number.MAX_SAFE_INTEGER : intValue("to", q.get("to")!, 1);
    if (to < from && fromParam !== "latest") throw new ApiError(400, "invalid_parameter", `"to" (${to}) is below "from" (${from})`);
    const limitMax = this.config.replay_page_events_max;
    const limit = intParam(q, "limit", this.config.replay_page_events_default, 1, limitMax); // max: replay_page_events_max
    if (from < log.firstSeq) throw expired(from, log.firstSeq);
    const page = this.readPage(log, from, to, limit, this.config.replay_page_bytes_max);
    if (page.corrupt) console.error(`stream ${stream.id}: replay stopped at damaged record ${page.corrupt.seq} (${page.corrupt.reason})`);
    if (req.meta.accept === ContentType.FlatBuffers) {
      // The envelope is written around the frames as read from the log.
      const info = { stream: stream.id, firstSeq: log.firstSeq, headSeq: log.committedSeq, next: page.next, count: page.count };
      const total = eventBatchHeaderBytes(Buffer.byteLength(stream.id)) + page.bytes;
      return this.replyWith(req.reqId, 200, ContentType.FlatBuffers, total, (data, at) => this.writeBatch(data, at, info, page.buf, page.bytes));
    }
    const info = { streamJson: stream.idJson(), firstSeq: log.firstSeq, headSeq: log.committedSeq, from };
    const bytesMax = this.config.replay_page_bytes_max;
    renderJsonPage(this.jsonPage, this.renderer, page.buf, page.count, info, bytesMax);
    this.reply({ reqId: req.reqId, status: 200, ct: ContentType.Json, body: this.jsonPage.view() });
  }

  // ---- consume ---------------------------------------------------------

  /**
   * Where a new consumer starts: `from` / `from_time` resolved to a seq (null
   * when neither is given), plus the group's checkpoint for the front to fall
   * back on.
   */
  private consumeStart(s: Stream, query: string): Record<string, unknown> {
    const q = new URLSearchParams(query);
    const log = s.log;
    const group = q.get("group");
    const fromParam = q.get("from");
    const fromTime = q.get("from_time");
    let from: number | null = null;
    if (fromTime !== null) from = Math.max(log.seqAtTime(intValue("from_time", fromTime, 0)), log.firstSeq);
    else if (fromParam === "earliest") from = log.firstSeq;
    else if (fromParam === "latest") from = log.committedSeq + 1;
    else if (fromParam !== null) {
      from = intValue("from", fromParam, 1);
      if (from > log.committedSeq + 1) {
        throw new ApiError(400, "invalid_parameter", `"from" ${from} is beyond head_seq + 1 (${log.committedSeq + 1})`, { head_seq: log.committedSeq });
      }
    }
    const checkpoint = group === null ? null : (s.checkpoints.get(checkGroup(group))?.seq ?? null);
    return { from, checkpoint, head_seq: log.committedSeq, first_seq: log.firstSeq };
  }

  /** One page of the log for a consumer, as the message its socket gets. */
  private consumeRead(req: Request): void {
    const stream = this.existing(req.meta.stream!);
    const log = stream.log;
    const from = req.meta.from!;
    if (from < log.firstSeq) throw expired(from, log.firstSeq);
    const bytesMax = this.config.consume_page_bytes_max;
    const page = this.readPage(log, from, Number.MAX_SAFE_INTEGER, Math.min(req.meta.limit!, this.config.consume_page_events_max), bytesMax);
    if (page.corrupt) console.error(`stream ${stream.id}: consumer read stopped at damaged record ${page.corrupt.seq} (${page.corrupt.reason})`);
    const head = log.committedSeq;
    if (req.meta.accept === ContentType.FlatBuffers) {
      const info = { stream: stream.id, firstSeq: log.firstSeq, headSeq: head, next: page.next, count: page.count };
      const batchBytes = page.count === 0 ? 0 : eventBatchHeaderBytes(Buffer.byteLength(stream.id)) + page.bytes;
      const consumed = { count: page.count, a: page.next, b: head, firstSeq: log.firstSeq, idBytes: 0, binBytes: batchBytes, jsonBytes: 0 };
      return this.replyWith(req.reqId, 200, ContentType.None, CONSUME_HEAD_BYTES + batchBytes, (data, at) => {
        writeConsumeHead(data, at, consumed);
        if (page.count > 0) this.writeBatch(data, at + CONSUME_HEAD_BYTES, info, page.buf, page.bytes);
      });
    }
    const n = page.count === 0 ? 0 : renderEventsMessage(this.jsonPage, this.renderer, page.buf, page.count, stream.idJson(), bytesMax);
    const json = n === 0 ? null : this.jsonPage.view();
    const consumed = { count: n, a: from + n, b: head, firstSeq: log.firstSeq, idBytes: 0, binBytes: 0, jsonBytes: json ? json.byteLength : 0 };
    this.replyWith(req.reqId, 200, ContentType.None, CONSUME_HEAD_BYTES + consumed.jsonBytes, (data, at) => {
      writeConsumeHead(data, at, consumed);
      if (json) copyBytes(json, data, at + CONSUME_HEAD_BYTES);
    });
  }

  /** An EventBatch envelope around frames, written at data[at]. */
  private writeBatch(data: Uint8Array, at: number, info: Parameters<typeof writeEventBatchHeader>[2], frames: Buffer, bytes: number): void {
    const headerBytes = writeEventBatchHeader(data, at, info, bytes);
    copyBytes(frames.subarray(0, bytes), data, at + headerBytes);
  }

  /**
   * Sends the front a just-committed batch of a watched stream, rendered in
   * the formats its consumers want. When the out-ring cannot take it right
   * now, only the new head goes (queued): the front then serves those
   * consumers from the log, so nothing here ever waits or grows.
   */
  private pushLive(s: Stream, frames: Buffer, bytes: number, count: number, first: number): void {
    const mask = this.watched.get(s.id);
    if (!mask) return;
    const last = first + count - 1;
    const idBytes = Buffer.byteLength(s.id);
    const info = { stream: s.id, firstSeq: s.log.firstSeq, headSeq: last, next: last + 1, count };
    const binBytes = mask & WATCH_BINARY ? eventBatchHeaderBytes(idBytes) + bytes : 0;
    let json: Buffer | null = null;
    if (mask & WATCH_JSON) {
      renderEventsMessage(this.jsonPage, this.renderer, frames, count, s.idJson(), Number.MAX_SAFE_INTEGER);
      json = this.jsonPage.view();
    }
    const jsonBytes = json ? json.byteLength : 0;
    const total = CONSUME_HEAD_BYTES + idBytes + binBytes + jsonBytes;
    const head = { count, a: first, b: last, firstSeq: s.log.firstSeq, idBytes, binBytes, jsonBytes };
    const fits =
      this.outbox.length === 0 &&
      total <= this.outRing.messageBytesMax &&
      writeResponseWith(this.outRing, PUSH_REQ_ID, 200, ContentType.None, total, (data, at) => {
        writeConsumeHead(data, at, head);
        let p = at + CONSUME_HEAD_BYTES;
        p += Buffer.from(data.buffer, data.byteOffset + p, idBytes).write(s.id, "utf8");
        if (binBytes > 0) this.writeBatch(data, p, info, frames, bytes);
        if (json) copyBytes(json, data, p + binBytes);
      });
    if (!fits) this.pushHead(s, last);
  }

  /** Tells the front only that a watched stream's head moved. */
  private pushHead(s: Stream, head: number): void {
    if (!this.watched.has(s.id)) return;
    const idBytes = Buffer.byteLength(s.id);
    const body = Buffer.allocUnsafe(CONSUME_HEAD_BYTES + idBytes);
    writeConsumeHead(body, 0, { count: 0, a: head + 1, b: head, firstSeq: s.log.firstSeq, idBytes, binBytes: 0, jsonBytes: 0 });
    body.write(s.id, CONSUME_HEAD_BYTES, "utf8");
    this.reply({ reqId: PUSH_REQ_ID, status: 200, ct: ContentType.None, body });
  }

  /** A reply written in place when the out-ring has room, else queued. */
  private replyWith(reqId: number, status: number, ct: ContentType, bodyBytes: number, fill: (data: Uint8Array, at: number) => void): void {
    if (this.outbox.length === 0 && writeResponseWith(this.outRing, reqId, status, ct, bodyBytes, fill)) return;
    const body = Buffer.allocUnsafe(bodyBytes);
    fill(body, 0);
    this.reply({ reqId, status, ct, body });
  }

  /** A page of frames into pageBuf; damage at its first record is a 500 corrupt_record. */
  private readPage(log: Stream["log"], from: number, to: number, eventsMax: number, bytesMax: number) {
    try {
      return log.read(from, to, eventsMax, bytesMax, this.pageBuf);
    } catch (err) {
      if (err instanceof CorruptRecordError) throw corruptRecord(err.info);
      throw err;
    }
  }

  // ---- retention -------------------------------------------------------

  private applyRetention(): void {
    const now = Date.now();
    for (const s of this.streams.values()) {
      try {
        if (s.log.applyRetention(now, s.config.retention_ms, s.config.retention_bytes, s.config.durability === "fsync") > 0) {
          s.dedup.forgetBelow(s.log.firstSeq);
        }
        s.dedup.expire(now);
      } catch (err) {
        console.error(`stream ${s.id}: retention failed: ${(err as Error).message}`);
      }
    }
  }
}

const expired = (seq: number, firstSeq: number) =>
  new ApiError(410, "expired", `seq ${seq} has expired; the oldest retained seq is ${firstSeq}`, { first_seq: firstSeq });

const corruptRecord = (info: CorruptionInfo) =>
  new ApiError(500, "corrupt_record", new CorruptRecordError(info).message, { seq: info.seq, segment: info.segment });

/** Group names follow the stream id rule. */
const GROUP = STREAM_ID;

const CHECKPOINT_FIELDS: ReadonlySet<string> = new Set(["group", "seq"]);

function checkGroup(g: unknown): string {
  if (typeof g !== "string" || !GROUP.test(g)) throw new ApiError(400, "invalid_group", `group must match ${GROUP.source}`);
  return g;
}

function groupParam(query: string | undefined): string {
  const g = new URLSearchParams(query ?? "").get("group");
  if (g === null) throw new ApiError(400, "invalid_parameter", `"group" is required`);
  return checkGroup(g);
}


const port = parentPort!;
const worker = new ShardWorker(workerData as WorkerInit);
const fatal = (err: unknown) => {
  port.postMessage({ type: "fatal", message: (err as Error).stack ?? String(err) } satisfies WorkerEvent);
  process.exit(1);
};
try {
  const ready = worker.recover();
  await worker.loadExternalCheckpoints();
  port.postMessage(ready);
} catch (err) {
  fatal(err);
}
port.on("message", (cmd: FrontCommand) => {
  if (cmd.type === "corruption") worker.noteCorruption(cmd.stream, cmd.info);
  else if (cmd.type === "verified") worker.noteVerified(cmd.stream, cmd.baseSeq);
  else if (cmd.type === "shutdown") {
    void worker.stop().then(() => {
      port.postMessage({ type: "closed" } satisfies WorkerEvent);
      port.close();
    }, fatal);
  }
});
worker.run().catch(fatal);
