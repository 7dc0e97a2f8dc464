// Reads of a stream's log: replay pages (JSON or EventBatch), where a new
// consumer starts, and the pages a consumer is served from the log. Every
// read stops at the committed seq: what is durable at the stream's level.
import { copyBytes } from "../bytes.js";
import { ApiError } from "../errors.js";
import { intParam, intValue } from "../validate.js";
import type { Config } from "../config.js";
import { CorruptRecordError, type CorruptionInfo } from "../log/log.js";
import { renderEventsMessage, renderJsonPage } from "../wire/event-codec.js";
import { eventBatchHeaderBytes, writeEventBatchHeader } from "../wire/event-batch.js";
import { CONSUME_HEAD_BYTES, ConsumeHeadKind, ContentType, writeConsumeHead, type ConsumeHead, type Op, type RequestOf } from "./protocol.js";
import type { ShardBuffers } from "./buffers.js";
import { checkGroup } from "../stream-id.js";
import { CONSUME_START, REPLAY_START, resolveStart } from "./start-position.js";
import type { Stream } from "./stream.js";
import type { Outbox } from "./worker.js";
import { logger } from "../logger.js";

export class LogReads {
  constructor(
    private readonly config: Config,
    private readonly outbox: Outbox,
    private readonly buffers: ShardBuffers,
  ) {}

  replay(stream: Stream, req: RequestOf<Op.Replay>): void {
    const log = stream.log;
    // The front has checked the names (unknown or repeated: 400).
    const q = new URLSearchParams(req.meta.query);
    const fromParam = q.get("from");
    const from = resolveStart(log, { from: fromParam, from_time: q.get("from_time") }, REPLAY_START);
    const toParam = q.get("to");
    const to = toParam === null ? Number.MAX_SAFE_INTEGER : intValue("to", toParam, 1);
    if (to < from && fromParam !== "latest") throw new ApiError(400, "invalid_parameter", `"to" (${to}) is below "from" (${from})`);
    const limitMax = this.config.replay_page_events_max;
    const limit = intParam(q, "limit", this.config.replay_page_events_default, 1, limitMax); // max: replay_page_events_max
    if (from < log.firstSeq) throw expired(from, log.firstSeq);
    const page = this.readPage(log, from, to, limit, this.config.replay_page_bytes_max);
    if (page.corrupt) damagedRead(stream.id, "replay", page.corrupt);
    stream.replayPages++;
    if (req.meta.accept === ContentType.FlatBuffers) {
      stream.replayEvents += page.count;
      // The envelope is written around the frames as read from the log.
      const info = { stream: stream.id, firstSeq: log.firstSeq, headSeq: log.committedSeq, next: page.next, count: page.count };
      const total = eventBatchHeaderBytes(Buffer.byteLength(stream.id)) + page.bytes;
      return this.outbox.replyWith(req.reqId, 200, ContentType.FlatBuffers, total, (data, at) => writeBatch(data, at, info, page.buf, page.bytes));
    }
    const info = { streamJson: stream.idJson(), firstSeq: log.firstSeq, headSeq: log.committedSeq, from };
    const bytesMax = this.config.replay_page_bytes_max;
    stream.replayEvents += renderJsonPage(this.buffers.jsonPage, this.buffers.renderer, page.buf, page.count, info, bytesMax);
    this.outbox.reply({ reqId: req.reqId, status: 200, ct: ContentType.Json, body: this.buffers.jsonPage.view() });
  }

  /**
   * Where a new consumer starts: `from` / `from_time` resolved to a seq (null
   * when neither is given), plus the group's checkpoint for the front to fall
   * back on.
   */
  consumeStart(s: Stream, req: RequestOf<Op.ConsumeStart>): void {
    const q = new URLSearchParams(req.meta.query);
    const log = s.log;
    const group = q.get("group");
    const from = resolveStart(log, { from: q.get("from"), from_time: q.get("from_time") }, CONSUME_START);
    const checkpoint = group === null ? null : (s.checkpoints.get(checkGroup(group))?.seq ?? null);
    this.outbox.json(req.reqId, 200, { from, checkpoint, head_seq: log.committedSeq, first_seq: log.firstSeq });
  }

  /** One page of the log for a consumer, as the message its socket gets. */
  consumeRead(stream: Stream, req: RequestOf<Op.ConsumeRead>): void {
    const log = stream.log;
    const from = req.meta.from;
    if (from < log.firstSeq) throw expired(from, log.firstSeq);
    const bytesMax = this.config.consume_page_bytes_max;
    const page = this.readPage(log, from, Number.MAX_SAFE_INTEGER, Math.min(req.meta.limit, this.config.consume_page_events_max), bytesMax);
    if (page.corrupt) damagedRead(stream.id, "consumer read", page.corrupt);
    const head = log.committedSeq;
    if (req.meta.accept === ContentType.FlatBuffers) {
      const info = { stream: stream.id, firstSeq: log.firstSeq, headSeq: head, next: page.next, count: page.count };
      const batchBytes = page.count === 0 ? 0 : eventBatchHeaderBytes(Buffer.byteLength(stream.id)) + page.bytes;
      const consumed: ConsumeHead = { kind: ConsumeHeadKind.Page, count: page.count, next: page.next, headSeq: head, firstSeq: log.firstSeq };
      return this.outbox.replyWith(req.reqId, 200, ContentType.None, CONSUME_HEAD_BYTES + batchBytes, (data, at) => {
        writeConsumeHead(data, at, consumed);
        if (page.count > 0) writeBatch(data, at + CONSUME_HEAD_BYTES, info, page.buf, page.bytes);
      });
    }
    const n = page.count === 0 ? 0 : renderEventsMessage(this.buffers.jsonPage, this.buffers.renderer, page.buf, page.count, stream.idJson(), bytesMax);
    const json = n === 0 ? null : this.buffers.jsonPage.view();
    const consumed: ConsumeHead = { kind: ConsumeHeadKind.Page, count: n, next: from + n, headSeq: head, firstSeq: log.firstSeq };
    this.outbox.replyWith(req.reqId, 200, ContentType.None, CONSUME_HEAD_BYTES + (json ? json.byteLength : 0), (data, at) => {
      writeConsumeHead(data, at, consumed);
      if (json) copyBytes(json, data, at + CONSUME_HEAD_BYTES);
    });
  }

  /** A page of frames into the page buffer; damage at its first record is a 500 corrupt_record. */
  private readPage(log: Stream["log"], from: number, to: number, eventsMax: number, bytesMax: number) {
    try {
      return log.read(from, to, eventsMax, bytesMax, this.buffers.page);
    } catch (err) {
      if (err instanceof CorruptRecordError) throw corruptRecord(err.info);
      throw err;
    }
  }
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
