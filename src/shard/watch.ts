// Live delivery for consumers: the streams the front follows, in which
// formats, and the pushes it gets for them (each committed batch, or only the
// news that the head moved, or that the stream was deleted).
import { copyBytes } from "../bytes.js";
import { renderEventsMessage } from "../wire/event-codec.js";
import { eventBatchHeaderBytes } from "../wire/event-batch.js";
import {
  CONSUME_HEAD_BYTES,
  ConsumeHeadKind,
  ContentType,
  PUSH_REQ_ID,
  WATCH_BINARY,
  WATCH_JSON,
  writeConsumeHead,
  type ConsumeHead,
  type Op,
  type RequestOf,
} from "./protocol.js";
import type { ShardBuffers } from "./buffers.js";
import { writeBatch } from "./read.js";
import type { Stream } from "./stream.js";
import type { Outbox } from "./worker.js";

export class WatchedStreams {
  /** Stream id -> the WATCH_* formats the front wants its live batches in. */
  private readonly formats = new Map<string, number>();

  constructor(
    private readonly outbox: Outbox,
    private readonly buffers: ShardBuffers,
  ) {}

  watch(req: RequestOf<Op.Watch>): void {
    const id = req.meta.stream;
    if (req.meta.watch) this.formats.set(id, req.meta.watch);
    else this.formats.delete(id);
    this.outbox.reply({ reqId: req.reqId, status: 204, ct: ContentType.None, body: null });
  }

  /** performance.now() of the last live batch pushed: replay pages are kept short while live consumers are served (read.ts). */
  lastPushMs = Number.NEGATIVE_INFINITY;

  has(id: string): boolean {
    return this.formats.has(id);
  }

  /** A deleted stream: the front hears of it (404 push) if it followed it. */
  deleted(id: string): void {
    if (this.formats.delete(id)) this.outbox.reply({ reqId: PUSH_REQ_ID, status: 404, ct: ContentType.None, body: id });
  }

  /**
   * Sends the front a just-committed batch of a watched stream, rendered in
   * the formats its consumers want. When the out-ring cannot take it right
   * now, only the new head goes (queued): the front then serves those
   * consumers from the log, so nothing here ever waits or grows.
   */
  pushLive(s: Stream, frames: Buffer, bytes: number, count: number, first: number): void {
    const mask = this.formats.get(s.id);
    if (!mask) return;
    this.lastPushMs = performance.now();
    const last = first + count - 1;
    const idBytes = Buffer.byteLength(s.id);
    const info = { stream: s.id, firstSeq: s.log.firstSeq, headSeq: last, next: last + 1, count };
    const binBytes = mask & WATCH_BINARY ? eventBatchHeaderBytes(idBytes) + bytes : 0;
    let json: Buffer | null = null;
    if (mask & WATCH_JSON) {
      renderEventsMessage(this.buffers.jsonPage, this.buffers.renderer, frames, count, s.idJson(), Number.MAX_SAFE_INTEGER);
      json = this.buffers.jsonPage.view();
    }
    const jsonBytes = json ? json.byteLength : 0;
    const total = CONSUME_HEAD_BYTES + idBytes + binBytes + jsonBytes;
    const head: ConsumeHead = { kind: ConsumeHeadKind.Batch, count, first, last, firstSeq: s.log.firstSeq, idBytes, binBytes, jsonBytes };
    const fits =
      total <= this.outbox.messageBytesMax &&
      this.outbox.writeNowWith(PUSH_REQ_ID, 200, ContentType.None, total, (data, at) => {
        writeConsumeHead(data, at, head);
        let p = at + CONSUME_HEAD_BYTES;
        p += Buffer.from(data.buffer, data.byteOffset + p, idBytes).write(s.id, "utf8");
        if (binBytes > 0) writeBatch(data, p, info, frames, bytes);
        if (json) copyBytes(json, data, p + binBytes);
      });
    if (!fits) this.pushHead(s, last);
  }

  /** Tells the front only that a watched stream's head moved. */
  pushHead(s: Stream, head: number): void {
    if (!this.formats.has(s.id)) return;
    const idBytes = Buffer.byteLength(s.id);
    const body = Buffer.allocUnsafe(CONSUME_HEAD_BYTES + idBytes);
    writeConsumeHead(body, 0, { kind: ConsumeHeadKind.HeadMoved, headSeq: head, firstSeq: s.log.firstSeq, idBytes });
    body.write(s.id, CONSUME_HEAD_BYTES, "utf8");
    this.outbox.reply({ reqId: PUSH_REQ_ID, status: 200, ct: ContentType.None, body });
  }
}
