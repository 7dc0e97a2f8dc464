// Delivery to active consumers, two ways:
//
// - live: the shard pushes each committed batch of a watched stream once,
//   already rendered; every caught-up consumer whose next seq is the batch's
//   first seq gets those same bytes;
// - log: a consumer that is behind, over its window or over its socket
//   buffer reads pages from the shard (ConsumeRead) until a page reaches the
//   head, then rides live again.
//
// The hand-off compares seqs only. Pushes and page answers come through one
// FIFO out-ring per shard, so a page that reached head H is followed by
// pushes starting at H + 1, and anything else sends the consumer back to the
// log. Memory per consumer is its socket buffer bound plus one message.
import { ApiError } from "../../errors.js";
import {
  CONSUME_HEAD_BYTES,
  ConsumeHeadKind,
  ContentType,
  Op,
  WATCH_BINARY,
  WATCH_JSON,
  readConsumeHead,
  responseJson,
  type ConsumeReadMeta,
  type Response,
} from "../../shard/protocol.js";
import type { ConsumeHub } from "./hub.js";
import { HubPart } from "./part.js";
import { joinRun, runsOf, type LiveBatch } from "./live-batch.js";
import { CLOSE_GOING_AWAY, CLOSE_SERVER_ERROR } from "./ports.js";
import type { Feed, Session } from "./state.js";

/** A rate-limited consumer's log pages hold this long of events at its max_rate. */
const PACE_PAGE_MS = 50;

/** What uWS's send() answers when it dropped the message: what was queued already passed maxBackpressure (1: sent, 0: queued). */
const SEND_DROPPED = 2;

export class Delivery extends HubPart {
  /** Largest message the live path sends as is; larger batches are paged from the log. */
  readonly liveMessageBytesMax: number;

  constructor(hub: ConsumeHub) {
    super(hub);
    this.liveMessageBytesMax = hub.limits.liveMessageBytesMax;
  }

  // ---- the log path ------------------------------------------------------

  /** Sends the consumer its next page from the log, if it may have one now. */
  pump(s: Session): void {
    if (s.closed || s.role !== "active" || s.busy || s.live) return;
    if (s.ws.getBufferedAmount() >= this.config.consumer_buffer_bytes_max) return; // drain() calls again
    const room = s.room;
    if (room <= 0) return; // an ack calls again
    const maxRate = s.params.maxRate;
    if (maxRate !== null && !this.paceAllows(s)) return; // its timer calls again
    s.busy = true;
    const epoch = s.epoch;
    let limit = Math.min(room, this.config.consume_page_events_max);
    // Pages of PACE_PAGE_MS worth of events: the pace is smooth, not a burst a second.
    if (maxRate !== null) limit = Math.min(limit, Math.max(1, Math.floor((maxRate * PACE_PAGE_MS) / 1000)));
    const meta: ConsumeReadMeta = { stream: s.feed.stream, from: s.nextSeq, limit, accept: s.params.binary ? ContentType.FlatBuffers : ContentType.Json };
    if (s.params.filter !== null) meta.filter = s.params.filter;
    if (s.params.conflate) meta.conflate = true;
    const ok = this.shards.send(s.feed.shard, Op.ConsumeRead, meta, null, (r) => {
      s.busy = false;
      if (s.closed) return;
      if (epoch !== s.epoch) return this.pump(s);
      this.onPage(s, r);
    });
    if (!ok) s.busy = false; // the tick tries again
  }

  private onPage(s: Session, r: Response): void {
    if (r.status === 410) {
      const first = (responseJson(r) as { error: { first_seq: number } }).error.first_seq;
      this.sendJson(s, { type: "reset", from: first, reason: "expired" });
      s.feed.first = first;
      s.nextSeq = first;
      s.acked = Math.max(s.acked, first - 1);
      return this.pump(s);
    }
    if (r.status !== 200) return this.hub.groups.fail(s, ApiError.fromBody(r.status, responseJson(r)), CLOSE_SERVER_ERROR);
    const h = readConsumeHead(r.body);
    if (h.kind !== ConsumeHeadKind.Page) throw new Error(`a ConsumeRead answer has a head of kind ${h.kind}`);
    const f = s.feed;
    if (h.headSeq > f.head) f.head = h.headSeq;
    f.first = h.firstSeq;
    if (h.count > 0) {
      // A binary EventBatch has no field for the seqs a filter or conflation passed over: a range message before it says them.
      if (s.params.binary && s.params.conflate)
        this.sendJson(s, { type: "range", from_seq: s.nextSeq, to_seq: h.next - 1, events: h.count, conflated: h.conflated });
      else if (s.params.binary && s.params.filter !== null) this.sendJson(s, { type: "range", from_seq: s.nextSeq, to_seq: h.next - 1, events: h.count });
      if (!this.sendData(s, r.body.subarray(CONSUME_HEAD_BYTES))) return;
      s.sentSeq = h.last;
      s.sentEpoch = s.epoch;
      if (s.params.maxRate !== null) s.paceAt = Math.max(this.clock.preciseMs(), s.paceAt) + (h.count * 1000) / s.params.maxRate;
    }
    // Past the filtered-out frames too (without a filter, next is the asked seq when count is 0).
    s.nextSeq = h.next;
    // Caught up: the next push of this stream starts right after the head
    // this page saw.
    if (s.nextSeq > h.headSeq) s.live = true;
    else this.pump(s);
  }

  /** Whether a rate-limited consumer may have its next page now; if not, a timer pumps it then. */
  private paceAllows(s: Session): boolean {
    const waitMs = s.paceAt - this.clock.preciseMs();
    if (waitMs <= 0) return true;
    if (!s.paceQueued) {
      s.paceQueued = true;
      this.clock.after(waitMs, () => {
        s.paceQueued = false;
        this.pump(s);
      });
    }
    return false;
  }

  // ---- the live path -----------------------------------------------------

  /**
   * A live batch (or head news) from a shard. Batches are held until the
   * current turn of the event loop ends and then sent joined: when the
   * front is busy, a socket gets one write for many pushes.
   */
  onPush(r: Response): void {
    if (r.status === 404) {
      const feed = this.feeds.get(Buffer.from(r.body).toString("utf8"));
      if (feed)
        for (const s of [...feed.sessions])
          this.hub.groups.fail(s, new ApiError(404, "stream_deleted", `stream "${feed.stream}" was deleted`), CLOSE_GOING_AWAY);
      return;
    }
    const h = readConsumeHead(r.body);
    if (h.kind === ConsumeHeadKind.Page) throw new Error("a push has the head of a ConsumeRead answer");
    const feed = this.feeds.get(Buffer.from(r.body.buffer, r.body.byteOffset + CONSUME_HEAD_BYTES, h.idBytes).toString("utf8"));
    if (!feed) return;
    let batch: LiveBatch;
    if (h.kind === ConsumeHeadKind.HeadMoved) batch = { count: 0, first: h.headSeq + 1, last: h.headSeq, firstSeq: h.firstSeq, bin: null, json: null };
    else {
      const idEnd = CONSUME_HEAD_BYTES + h.idBytes;
      // Copies: the ring's bytes are reused once this callback returns.
      const bin = h.binBytes > 0 ? Buffer.from(r.body.subarray(idEnd, idEnd + h.binBytes)) : null;
      const json = h.jsonBytes > 0 ? Buffer.from(r.body.subarray(idEnd + h.binBytes, idEnd + h.binBytes + h.jsonBytes)) : null;
      batch = { count: h.count, first: h.first, last: h.last, firstSeq: h.firstSeq, bin, json };
      feed.pendingBytes += h.binBytes + h.jsonBytes;
    }
    if (batch.last > feed.head) feed.head = batch.last;
    feed.first = batch.firstSeq;
    feed.pending.push(batch);
    if (feed.pendingBytes >= this.liveMessageBytesMax) this.flushLive(feed);
    else if (!feed.flushQueued) {
      feed.flushQueued = true;
      const wait = feed.nextFlushAt - this.clock.preciseMs();
      // Timers have 1 ms steps: a wait shorter than that (one consumer, a
      // quick flush) would become a whole millisecond of latency.
      if (wait < 1) this.clock.soon(() => this.flushLive(feed));
      else this.clock.after(wait, () => this.flushLive(feed));
    }
  }

  /**
   * Sends the batches held for a feed to its live consumers. A flush costs a
   * socket write per consumer (~10 µs each on loopback), so the next one
   * waits as long as this one took: with one consumer that is nothing, with
   * a thousand the front spends at most about half its time writing and each
   * write carries more events.
   */
  private flushLive(feed: Feed): void {
    if (!feed.flushQueued && feed.pending.length === 0) return;
    feed.flushQueued = false;
    const batches = feed.pending;
    feed.pending = [];
    feed.pendingBytes = 0;
    if (this.feeds.get(feed.stream) !== feed) return;
    const t0 = this.clock.preciseMs();
    for (const run of runsOf(batches)) {
      const b = joinRun(feed.stream, run);
      for (const s of feed.sessions) {
        if (s.live && s.role === "active") this.deliverLive(s, b, s.params.binary ? b.bin : b.json);
      }
    }
    const t1 = this.clock.preciseMs();
    feed.nextFlushAt = t1 + (t1 - t0);
  }

  private deliverLive(s: Session, b: LiveBatch, msg: Buffer | null): void {
    if (b.last < s.nextSeq) return; // already sent
    const fits =
      !s.viaLog &&
      b.count > 0 &&
      b.first === s.nextSeq &&
      msg !== null &&
      msg.byteLength <= this.liveMessageBytesMax &&
      b.count <= s.room &&
      s.ws.getBufferedAmount() < this.config.consumer_buffer_bytes_max;
    // Filtered and rate-limited consumers always go back to the log, where the shard filters and pace holds.
    if (!fits) {
      s.live = false;
      return this.pump(s);
    }
    if (this.sendData(s, msg)) s.nextSeq = b.last + 1;
  }

  /** Tells the shard which live formats the feed needs; false if the shard is too busy to hear it. */
  updateWatch(f: Feed): boolean {
    let mask = 0;
    for (const s of f.sessions) mask |= s.params.binary ? WATCH_BINARY : WATCH_JSON;
    if (mask === f.mask) return true;
    if (!this.shards.setWatch(f.stream, "consume", mask)) {
      // A stale wider mask only costs rendering; one lacking a wanted format would starve consumers.
      return (mask & f.mask) === mask;
    }
    f.mask = mask;
    return true;
  }

  // ---- sending -----------------------------------------------------------

  sendJson(s: Session, value: unknown): void {
    if (s.closed) return;
    s.lastSent = this.clock.nowMs();
    s.ws.cork(() => s.ws.send(JSON.stringify(value), false));
  }

  /** Sends an events message (binary EventBatch or JSON text); false if the socket failed. */
  private sendData(s: Session, msg: Uint8Array): boolean {
    if (s.closed) return false;
    s.lastSent = this.clock.nowMs();
    let status = 0;
    s.ws.cork(() => {
      status = s.ws.send(msg, s.params.binary);
    });
    // uWS's own bound was hit, which the checks above rule out (Limits.socketBytesMax).
    if (status === SEND_DROPPED) {
      this.hub.groups.fail(s, new ApiError(500, "internal", "the socket buffer overflowed"), CLOSE_SERVER_ERROR);
      return false;
    }
    return true;
  }
}
