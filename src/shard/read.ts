// Reads of a stream's log: replay pages (JSON or EventBatch), where a new
// consumer starts, and the pages a consumer is served from the log. Every
// read stops at the committed seq: what is durable at the stream's level.
import { copyBytes } from "../bytes.js";
import { ApiError } from "../errors.js";
import { intParam, intValue } from "../validate.js";
import type { Config } from "../config.js";
import { CorruptRecordError, type CorruptionInfo, type FramePage } from "../log/log.js";
import { frameSeqAt, renderEventsMessage, renderJsonPage } from "../wire/event-codec.js";
import { eventBatchHeaderBytes, writeEventBatchHeader } from "../wire/event-batch.js";
import { CONSUME_HEAD_BYTES, ConsumeHeadKind, ContentType, writeConsumeHead, type ConsumeHead, type Op, type RequestOf } from "./protocol.js";
import type { ShardBuffers } from "./buffers.js";
import { checkGroup } from "../stream-id.js";
import { CONSUME_START, REPLAY_START, resolveStart } from "./start-position.js";
import type { Stream } from "./stream.js";
import type { Outbox } from "./worker.js";
import type { WatchedStreams } from "./watch.js";
import { logger } from "../logger.js";
import { type EventFilter, parseFilter, parseMaxRate } from "../wire/event-filter.js";
import { PageConflater } from "../wire/event-conflate.js";
import type { ReadLog, ReadStream } from "./history-view.js";

/** Filters of consumers' reads, parsed once per distinct query: a few per stream in practice, cleared when this many. */
const FILTER_CACHE_MAX = 256;

/**
 * While live batches were pushed this recently, a replay page holds at most
 * BUSY_PAGE_EVENTS_MAX events and BUSY_PAGE_BYTES_MAX bytes: rendering one
 * is then ~1 ms of the shard's thread, the most a live push waits behind it
 * (docs/consume.md, "Rate-limited reads"). Its `next` says where to go on.
 */
const LIVE_BUSY_MS = 100;
const BUSY_PAGE_EVENTS_MAX = 1000;
const BUSY_PAGE_BYTES_MAX = 256 * 1024;

export class LogReads {
  constructor(
    private readonly config: Config,
    private readonly outbox: Outbox,
    private readonly buffers: ShardBuffers,
    private readonly watched: WatchedStreams,
  ) {
    this.conflater = new PageConflater(config.consume_page_events_max);
  }

  private readonly filters = new Map<string, EventFilter | null>();
  /** One for the shard: pages are conflated one at a time on its thread. */
  private readonly conflater: PageConflater;

  /** `log`: the stream's log, or in cluster mode its history (archive, then this node's copy: history-view.ts). */
  replay(stream: ReadStream, req: RequestOf<Op.Replay>, log: ReadLog = stream.log): void {
    // The front has checked the names (unknown or repeated: 400).
    const q = new URLSearchParams(req.meta.query);
    const fromParam = q.get("from");
    const from = resolveStart(log, { from: fromParam, from_time: q.get("from_time") }, REPLAY_START);
    const toParam = q.get("to");
    const to = toParam === null ? Number.MAX_SAFE_INTEGER : intValue("to", toParam, 1);
    if (to < from && fromParam !== "latest") throw new ApiError(400, "invalid_parameter", `"to" (${to}) is below "from" (${from})`);
    // A node that does not own the stream serves what the archive holds; past it, the front sends the reader to the owner.
    if (req.meta.archiveOnly && from > log.committedSeq) throw new ApiError(307, "not_owner", `seq ${from} is past the archive: the stream's owner serves it`);
    const limitMax = this.config.replay_page_events_max;
    let limit = intParam(q, "limit", this.config.replay_page_events_default, 1, limitMax); // max: replay_page_events_max
    const filter = parseFilter(q, this.config);
    // A page holds at most a second of events at max_rate: the front holds its answer that long (docs/consume.md).
    const maxRate = parseMaxRate(q);
    if (maxRate !== null) limit = Math.min(limit, maxRate);
    if (from < log.firstSeq) throw expired(from, log.firstSeq);
    // With a filter, `limit` bounds the events sent; the page scans up to replay_page_events_max.
    let scanMax = filter ? limitMax : limit;
    let bytesMax = this.config.replay_page_bytes_max;
    if (performance.now() - this.watched.lastPushMs < LIVE_BUSY_MS) {
      scanMax = Math.min(scanMax, BUSY_PAGE_EVENTS_MAX);
      bytesMax = Math.min(bytesMax, BUSY_PAGE_BYTES_MAX);
    }
    const page = this.readPage(log, from, to, scanMax, bytesMax);
    if (page.corrupt) damagedRead(stream.id, "replay", page.corrupt);
    if (filter) narrow(page, filter, limit);
    stream.replayPages++;
    if (req.meta.accept === ContentType.FlatBuffers) {
      stream.replayEvents += page.count;
      // The envelope is written around the frames as read from the log.
      const info = { stream: stream.id, firstSeq: log.firstSeq, headSeq: log.committedSeq, next: page.next, count: page.count };
      const total = eventBatchHeaderBytes(Buffer.byteLength(stream.id)) + page.bytes;
      return this.outbox.replyWith(req.reqId, 200, ContentType.FlatBuffers, total, (data, at) => writeBatch(data, at, info, page.buf, page.bytes));
    }
    const info = { streamJson: stream.idJson(), firstSeq: log.firstSeq, headSeq: log.committedSeq, next: page.next };
    stream.replayEvents += renderJsonPage(this.buffers.jsonPage, this.buffers.renderer, page.buf, page.count, info, bytesMax);
    this.outbox.reply({ reqId: req.reqId, status: 200, ct: ContentType.Json, body: this.buffers.jsonPage.view() });
  }

  /**
   * Where a new consumer starts: `from` / `from_time` resolved to a seq (null
   * when neither is given), plus the group's checkpoint for the front to fall
   * back on.
   */
  consumeStart(s: Stream, req: RequestOf<Op.ConsumeStart>, log: ReadLog = s.log): void {
    const q = new URLSearchParams(req.meta.query);
    const group = q.get("group");
    const from = resolveStart(log, { from: q.get("from"), from_time: q.get("from_time") }, CONSUME_START);
    const checkpoint = group === null ? null : (s.checkpoints.get(checkGroup(group))?.seq ?? null);
    this.outbox.json(req.reqId, 200, { from, checkpoint, head_seq: log.committedSeq, first_seq: log.firstSeq });
  }

  /** One page of the log for a consumer, as the message its socket gets. */
  consumeRead(stream: Stream, req: RequestOf<Op.ConsumeRead>, log: ReadLog = stream.log): void {
    const from = req.meta.from;
    if (from < log.firstSeq) throw expired(from, log.firstSeq);
    const bytesMax = this.config.consume_page_bytes_max;
    const filter = req.meta.filter === undefined ? null : this.filterOf(req.meta.filter);
    const conflate = req.meta.conflate === true;
    const scanMax = this.config.consume_page_events_max;
    const limit = Math.min(req.meta.limit, scanMax);
    // Filtered or conflated, `limit` (the room in the window) bounds the events sent, not those scanned.
    const page = this.readPage(log, from, Number.MAX_SAFE_INTEGER, filter || conflate ? scanMax : limit, bytesMax);
    if (page.corrupt) damagedRead(stream.id, "consumer read", page.corrupt);
    if (filter) narrow(page, filter, conflate ? scanMax : limit);
    const conflated = conflate ? this.conflatePage(page, limit) : 0;
    // Past the events sent: the seq of the last one is not next - 1 when frames after it were left out.
    const gappy = filter !== null || conflate;
    const head = log.committedSeq;
    if (req.meta.accept === ContentType.FlatBuffers) {
      const info = { stream: stream.id, firstSeq: log.firstSeq, headSeq: head, next: page.next, count: page.count };
      const batchBytes = page.count === 0 ? 0 : eventBatchHeaderBytes(Buffer.byteLength(stream.id)) + page.bytes;
      const last = page.count === 0 ? 0 : gappy ? frameSeqAt(page.buf, page.count - 1) : page.next - 1;
      const consumed: ConsumeHead = { kind: ConsumeHeadKind.Page, count: page.count, next: page.next, last, conflated, headSeq: head, firstSeq: log.firstSeq };
      return this.outbox.replyWith(req.reqId, 200, ContentType.None, CONSUME_HEAD_BYTES + batchBytes, (data, at) => {
        writeConsumeHead(data, at, consumed);
        if (page.count > 0) writeBatch(data, at + CONSUME_HEAD_BYTES, info, page.buf, page.bytes);
      });
    }
    const range = gappy ? { from, next: page.next, droppedBefore: conflate ? this.conflater.droppedBefore : undefined } : undefined;
    const n = page.count === 0 ? 0 : renderEventsMessage(this.buffers.jsonPage, this.buffers.renderer, page.buf, page.count, stream.idJson(), bytesMax, range);
    const json = n === 0 ? null : this.buffers.jsonPage.view();
    const next = n < page.count ? frameSeqAt(page.buf, n) : page.next;
    const last = n === 0 ? 0 : gappy ? frameSeqAt(page.buf, n - 1) : next - 1;
    const sentConflated = conflate ? this.conflater.droppedBefore[n] : 0;
    const consumed: ConsumeHead = { kind: ConsumeHeadKind.Page, count: n, next, last, conflated: sentConflated, headSeq: head, firstSeq: log.firstSeq };
    this.outbox.replyWith(req.reqId, 200, ContentType.None, CONSUME_HEAD_BYTES + (json ? json.byteLength : 0), (data, at) => {
      writeConsumeHead(data, at, consumed);
      if (json) copyBytes(json, data, at + CONSUME_HEAD_BYTES);
    });
  }

  /** Keeps the newest frame per key of a page (at most `keepMax`); returns how many it left out. */
  private conflatePage(page: FramePage, keepMax: number): number {
    const c = this.conflater.conflate(page.buf, page.count, keepMax);
    page.count = c.count;
    page.bytes = c.bytes;
    if (c.stopSeq >= 0) page.next = c.stopSeq;
    return c.conflated;
  }

  /** A consumer's filter, from the query text the front checked (`types` / `keys`). */
  private filterOf(text: string): EventFilter | null {
    let f = this.filters.get(text);
    if (f === undefined) {
      if (this.filters.size >= FILTER_CACHE_MAX) this.filters.clear();
      f = parseFilter(new URLSearchParams(text), this.config);
      this.filters.set(text, f);
    }
    return f;
  }

  /** A page of frames into the page buffer; damage at its first record is a 500 corrupt_record. */
  private readPage(log: ReadLog, from: number, to: number, eventsMax: number, bytesMax: number) {
    try {
      return log.read(from, to, eventsMax, bytesMax, this.buffers.page);
    } catch (err) {
      if (err instanceof CorruptRecordError) throw corruptRecord(err.info);
      throw err;
    }
  }
}

/** Keeps a page's matching frames (at most `keepMax`); its `next` stays past the frames looked at. */
function narrow(page: FramePage, filter: EventFilter, keepMax: number): void {
  const kept = filter.compact(page.buf, page.count, keepMax);
  page.count = kept.count;
  page.bytes = kept.bytes;
  if (kept.stopSeq >= 0) page.next = kept.stopSeq;
}

/** An EventBatch envelope around frames, written at data[at]. */
export function writeBatch(data: Uint8Array, at: number, info: Parameters<typeof writeEventBatchHeader>[2], frames: Buffer, bytes: number): void {
  const headerBytes = writeEventBatchHeader(data, at, info, bytes);
  copyBytes(frames.subarray(0, bytes), data, at + headerBytes);
}

const expired = (seq: number, firstSeq: number) =>
  new ApiError(410, "expired", `seq ${seq} has expired; the oldest retained seq is ${firstSeq}`, { first_seq: firstSeq });

const corruptRecord = (info: CorruptionInfo) =>
  new ApiError(500, "corrupt_record", new CorruptRecordError(info).message, { seq: info.seq, segment: info.segment });

/** One line per read that stopped at a damaged record (the record is never served). */
function damagedRead(stream: string, what: string, c: CorruptionInfo): void {
  logger().error({ kind: "storage", stream, seq: c.seq, reason: c.reason }, `stream ${stream}: ${what} stopped at damaged record ${c.seq} (${c.reason})`);
}
