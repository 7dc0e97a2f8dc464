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

/**
 * A round of live writes yields to the event loop after this long, so that
 * publishes, acks and other streams' consumers are served between its
 * slices (a round to 10,000 consumers takes ~50-90 ms of writes here).
 */
const FLUSH_SLICE_MS = 4;
/** Consumers written between two looks at the clock. */
const FLUSH_CLOCK_EVERY = 64;

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
    if (feed.writing && feed.pendingBytes >= this.liveMessageBytesMax) {
      // A round of writes is still going and this much came meanwhile: the
      // consumers it will not have reached read it from the log instead.
      const from = feed.pending.length > 0 ? feed.pending[0].first : batch.first;
      feed.pending = [{ count: 0, first: from, last: feed.head, firstSeq: feed.first, bin: null, json: null }];
      feed.pendingBytes = 0;
      return;
    }
    feed.pending.push(batch);
    if (feed.writing) return; // the round's end flushes what came meanwhile
    if (feed.pendingBytes >= this.liveMessageBytesMax) this.flushLive(feed);
    else this.queueFlush(feed);
  }

  /**
   * Flushes a feed's pending batches once its pause since the last round
   * has passed. The pause is as long as that round's writes took, up to
   * consumer_coalesce_ms_max: with one consumer it is nothing, with ten
   * thousand (a round of ~60 ms) the front writes half the time and each
   * write carries every event of the pause and the round. Not shorter: each
   * message costs a consumer too, and on a box shared with the consumers
   * more rounds a second is more of their CPU (docs/decisions.md, "Live
   * rounds"). An event's wait for its write to start is bounded by that
   * pause plus the round before it.
   */
  private queueFlush(feed: Feed): void {
    if (feed.flushQueued) return;
    feed.flushQueued = true;
    const wait = feed.nextFlushAt - this.clock.preciseMs();
    // Timers have 1 ms steps: a wait shorter than that (one consumer, a
    // quick flush) would become a whole millisecond of latency.
    if (wait < 1) this.clock.soon(() => this.flushLive(feed));
    else this.clock.after(wait, () => this.flushLive(feed));
  }

  /** Sends the batches held for a feed to its live consumers: a round of writes, one per consumer, in slices. */
  private flushLive(feed: Feed): void {
    feed.flushQueued = false;
    if (feed.writing || feed.pending.length === 0) return;
    const batches = feed.pending;
    feed.pending = [];
    feed.pendingBytes = 0;
    if (this.feeds.get(feed.stream) !== feed) return;
    const runs = runsOf(batches).map((run) => joinRun(feed.stream, run));
    this.writeSlice(feed, runs, [...feed.sessions], 0, 0);
  }

  /** Writes `runs` to sessions[from..] until FLUSH_SLICE_MS has passed, then goes on in the loop's next turn. */
  private writeSlice(feed: Feed, runs: LiveBatch[], sessions: Session[], from: number, spentMs: number): void {
    const t0 = this.clock.preciseMs();
    let i = from;
    while (i < sessions.length) {
      const s = sessions[i++];
      // A run it cannot take sends it to the log: the runs after are not for it then.
      for (const b of runs) {
        if (!s.live || s.role !== "active") break;
        this.deliverLive(s, b, s.params.binary ? b.bin : b.json);
      }
      if (i % FLUSH_CLOCK_EVERY === 0 && this.clock.preciseMs() - t0 >= FLUSH_SLICE_MS) break;
    }
    const t1 = this.clock.preciseMs();
    const spent = spentMs + (t1 - t0);
    if (i < sessions.length) {
      feed.writing = true;
      this.clock.soon(() => this.writeSlice(feed, runs, sessions, i, spent));
      return;
    }
    feed.writing = false;
    feed.nextFlushAt = t1 + Math.min(spent, this.config.consumer_coalesce_ms_max);
    if (feed.pending.length > 0) this.queueFlush(feed);
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
    const mask = (f.binarySessions > 0 ? WATCH_BINARY : 0) | (f.jsonSessions > 0 ? WATCH_JSON : 0);
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
