// A shard worker: owns the streams that hash to it (sequencer, dedup window,
// log, retention) and serves every request for them that the front passes
// through its in-ring, answering through its out-ring.
//
// One of the two hub files (~700 lines: request dispatch, publish, replay, consume reads, checkpoints and retention). Splitting it by what it
// owns is issue 11; this session only touched it surgically.
import { parentPort, workerData } from "node:worker_threads";
import { mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { setImmediate as yieldToLoop } from "node:timers/promises";
import { Ring } from "../ring/ring.js";
import { ApiError, asApiError } from "../errors.js";
import type { Config } from "../config.js";
import type { ExternalCheckpoints } from "../consumer/external.js";
import type { CorruptionInfo, LogOptions } from "../log/log.js";
import { frameBytesFor, markBatchEnd, sealFrame, stampFrame, u32, writeFrameHeader, RECORD_HEADER_BYTES } from "../log/record.js";
import { checkFlatBatch, recordIdempotencyKey, type EventLimits, type FlatBatch } from "../wire/event-codec.js";
import { EventFields, eventBytesFor, writeEvent } from "../wire/event-layout.js";
import { JsonBatch } from "../wire/json-batch.js";
import {
  ContentType,
  Op,
  readRequest,
  shardOf,
  writeResponse,
  writeResponseWith,
  type FrontCommand,
  type Request,
  type RequestOf,
  type ScrubItem,
  type WorkerEvent,
  type WorkerInit,
} from "./protocol.js";
import { StreamAdmin } from "./admin.js";
import { ShardBuffers } from "./buffers.js";
import { ConsumerGroups } from "./groups.js";
import { LogReads } from "./read.js";
import { applyRetention } from "./retention.js";
import { Stream, type StreamReport } from "./stream.js";
import { WatchedStreams } from "./watch.js";
import { fullConfig, type StreamDefaults } from "./stream-config.js";
import { hasMeta, readMeta } from "./stream-meta.js";

/** Requests taken from the ring before yielding to timers and fsync callbacks. */
const REQUESTS_PER_TURN_MAX = 64;

/** An answer or a push, as the out-ring takes it. */
interface Reply {
  reqId: number;
  status: number;
  ct: ContentType;
  body: Uint8Array | string | null;
}

/**
 * The shard's one way back to the front: answers and pushes enter the
 * out-ring in the order they are made. What the ring cannot take yet waits
 * here, and the loop reads no request while anything waits.
 */
export class Outbox {
  private readonly queue: Reply[] = [];
  private draining = false;

  constructor(private readonly ring: Ring) {}

  /** Replies waiting for room in the out-ring. */
  get waiting(): number {
    return this.queue.length;
  }

  get messageBytesMax(): number {
    return this.ring.messageBytesMax;
  }

  reply(r: Reply): void {
    if (this.queue.length === 0 && writeResponse(this.ring, r.reqId, r.status, r.ct, r.body)) return;
    // A body may be a view of a reused buffer (the page writer), which a
    // push from an fsync callback can overwrite before the outbox drains.
    if (r.body instanceof Uint8Array) r.body = Uint8Array.prototype.slice.call(r.body);
    this.queue.push(r);
    // Replies also come from callbacks (fsync completions) while the request
    // loop may be parked: drain from here too rather than wait for it.
    if (!this.draining) void this.drain();
  }

  json(reqId: number, status: number, value: unknown): void {
    this.reply({ reqId, status, ct: ContentType.Json, body: JSON.stringify(value) });
  }

  json200(reqId: number, body: string): void {
    this.reply({ reqId, status: 200, ct: ContentType.Json, body });
  }

  /** A reply written in place when the out-ring has room, else queued. */
  replyWith(reqId: number, status: number, ct: ContentType, bodyBytes: number, fill: (data: Uint8Array, at: number) => void): void {
    if (this.writeNowWith(reqId, status, ct, bodyBytes, fill)) return;
    const body = Buffer.allocUnsafe(bodyBytes);
    fill(body, 0);
    this.reply({ reqId, status, ct, body });
  }

  /** A message written in place now, or not at all (false): only when nothing waits and the ring has room. */
  writeNowWith(reqId: number, status: number, ct: ContentType, bodyBytes: number, fill: (data: Uint8Array, at: number) => void): boolean {
    return this.queue.length === 0 && writeResponseWith(this.ring, reqId, status, ct, bodyBytes, fill);
  }

  async drain(): Promise<void> {
    if (this.draining) return this.ring.waitWritable(1000);
    this.draining = true;
    try {
      while (this.queue.length > 0) {
        const r = this.queue[0];
        if (writeResponse(this.ring, r.reqId, r.status, r.ct, r.body)) this.queue.shift();
        else await this.ring.waitWritable(1000);
      }
    } finally {
      this.draining = false;
    }
  }
}

class ShardWorker {
  private readonly streams: StreamAdmin;
  private readonly inRing: Ring;
  private readonly outbox: Outbox;
  private readonly root: string;
  private readonly logOpts: LogOptions;
  private readonly defaults: StreamDefaults;
  private readonly limits: EventLimits;
  private stopping = false;
  // Reused per request: the staging area for frames.
  private staging = Buffer.allocUnsafe(1 << 20);
  private readonly buffers: ShardBuffers;
  private readonly groups: ConsumerGroups;
  private readonly reads: LogReads;
  private readonly jsonBatch = new JsonBatch();
  private readonly fields = new EventFields();
  /** PostgreSQL / Redis copies of group checkpoints, when configured. */
  private external: ExternalCheckpoints | null = null;
  /** Streams the front follows live, and the pushes for them. */
  private readonly watched: WatchedStreams;

  constructor(private readonly init: WorkerInit) {
    const c = init.config;
    this.inRing = new Ring(init.inRing);
    const outRing = new Ring(init.outRing);
    // Answers and pushes of one turn wake the front once.
    outRing.deferNotify = true;
    this.outbox = new Outbox(outRing);
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
    this.buffers = new ShardBuffers(c.replay_page_bytes_max, this.logOpts.frameBytesMax);
    this.groups = new ConsumerGroups(this.outbox, this.buffers, () => this.external);
    this.reads = new LogReads(c, this.outbox, this.buffers);
    this.watched = new WatchedStreams(this.outbox, this.buffers);
    this.streams = new StreamAdmin(this.root, this.logOpts, this.defaults, c, this.outbox, this.buffers, this.watched, () => this.external);
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
      this.streams.adopt(s);
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
    const loaded = await this.external.load(this.streams.ids());
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
    const retention = setInterval(() => applyRetention(this.streams.values(), Date.now()), this.config.retention_check_interval_ms);
    while (!this.stopping) {
      let taken = 0;
      while (taken < REQUESTS_PER_TURN_MAX && this.outbox.waiting === 0) {
        const msg = this.inRing.read();
        if (!msg) break;
        const req = readRequest(this.inRing, msg);
        try {
          this.handle(req);
        } catch (err) {
          const e = asApiError(err);
          if (e.status === 500) console.error(`shard ${this.init.shard}: ${(err as Error).stack ?? err}`);
          this.outbox.reply({ reqId: req.reqId, status: e.status, ct: ContentType.Json, body: e.body() });
        }
        this.inRing.release();
        taken++;
      }
      if (this.outbox.waiting > 0) await this.outbox.drain();
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

  private handle(req: Request): void {
    switch (req.op) {
      case Op.Publish:
        return this.publish(req);
      case Op.Replay:
        return this.reads.replay(this.streams.existing(req.meta.stream), req);
      case Op.PutStream:
        return this.streams.put(req);
      case Op.GetStream:
        return this.streams.show(req);
      case Op.DeleteStream:
        return this.streams.remove(req);
      case Op.ListStreams:
        return this.streams.list(req);
      case Op.SetCheckpoint:
        return this.groups.setCheckpoint(this.streams.existing(req.meta.stream), req);
      case Op.GetCheckpoint:
        return this.groups.getCheckpoint(this.streams.existing(req.meta.stream), req);
      case Op.Lag:
        return this.groups.lag(this.streams.existing(req.meta.stream), req);
      case Op.Groups:
        return this.groups.list(this.streams.existing(req.meta.stream), req);
      case Op.ConsumeStart:
        return this.reads.consumeStart(this.streams.existing(req.meta.stream), req);
      case Op.ConsumeRead:
        return this.reads.consumeRead(this.streams.existing(req.meta.stream), req);
      case Op.Watch:
        return this.watched.watch(req);
      default:
        throw new ApiError(500, "internal", `unknown op ${(req as Request).op}`);
    }
  }

  // ---- publish ---------------------------------------------------------

  private publish(req: RequestOf<Op.Publish>): void {
    const id = req.meta.stream;
    let stream = this.streams.get(id);
    if (!stream && !this.config.auto_create_streams) this.streams.existing(id);
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
    const raw = isJson ? this.buffers.ownCopy(req.body) : req.body;
    const own = this.buffers.body; // after ownCopy, which may have grown it
    let flat: FlatBatch | null = null;
    if (isJson) this.jsonBatch.scan(own, raw.length, this.config.publish_events_max);
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
        key = f.idemAt < 0 ? null : own.toString("utf8", f.idemAt, f.idemAt + f.idemLen);
        if (key !== null && this.isDuplicate(stream, batchKeys, key, i, duplicates)) continue;
        this.ensureStaging(bytes + RECORD_HEADER_BYTES + eventBytesFor(f) + 8);
        const bodyBytes = writeEvent(this.staging, bytes + RECORD_HEADER_BYTES, own, f);
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
    stream ??= this.streams.create(id, {});
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
      if (count > 0) this.watched.pushLive(stream, out ?? this.staging, bytes, count, first);
      return this.outbox.json200(reqId, body);
    }
    // Duplicates may point at records still waiting for their sync too.
    const s = stream;
    log.syncTo(log.headSeq, (err) => {
      if (err) {
        // The log has cut every record the failed sync covered: so go their keys.
        s.dedup.forgetFrom(s.log.headSeq + 1);
        const e = asApiError(err);
        this.outbox.reply({ reqId, status: e.status, ct: ContentType.Json, body: e.body() });
        return;
      }
      // The frames left the staging buffer long ago: read them back (from
      // the page cache) only if someone follows the stream.
      if (count > 0 && this.watched.has(s.id)) {
        const page = s.log.read(first, first + count - 1, count, this.config.consume_page_bytes_max, this.buffers.page);
        if (page.count === count) this.watched.pushLive(s, page.buf, page.bytes, count, first);
        else this.watched.pushHead(s, first + count - 1);
      }
      this.outbox.json200(reqId, body);
    });
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
