// A shard's part of a timeline page (Op.TimelineRead). For the streams of
// the timeline it owns, from each one's boundary in the page's direction,
// their events merged by (ingest_ts, stream, seq) with a heap of the
// streams' next events: at most `limit` of them and about a replay page of
// bytes, each rendered as JSON once. The answer (src/timeline/shard-page.ts)
// adds what the front needs to merge the shards and place the next cursors:
// each stream's resolved boundary, head and first seq, and the horizon.
//
// The horizon: every event a stream will still commit gets an ingest_ts at
// or above min(now, the ingest_ts of its oldest record waiting for a sync).
// A forward page shows only events below the smallest horizon of its
// streams, so no event committed later can belong before one it showed.
//
// A read the shard gets to past its deadline (the page went out without
// it) is answered TIMELINE_READ_EXPIRED at once: under load, doing it
// anyway would keep every later read behind it late too.
import type { Config } from "../config.js";
import { Heap, keyOrder } from "../timeline/merge.js";
import { ShardPageWriter } from "../timeline/shard-page.js";
import type { ShardBuffers } from "./buffers.js";
import type { StreamAdmin } from "./admin.js";
import { ContentType, TIMELINE_READ_EXPIRED, type Op, type RequestOf } from "./protocol.js";
import { TimelineStream } from "./timeline-stream.js";
import type { Outbox } from "./worker.js";

/** Fewest events a stream's first chunk asks for: below it, reads cost more than the frames they bring. */
const FIRST_CHUNK_EVENTS_MIN = 8;

/**
 * Events a stream's first chunk asks for: twice its share of the page if
 * the page took evenly from its `streams` streams; later chunks double.
 */
export function firstChunkEvents(limit: number, streams: number): number {
  return Math.min(limit, Math.max(FIRST_CHUNK_EVENTS_MIN, Math.ceil((2 * limit) / streams)));
}

export class TimelineReads {
  /** One reader per stream of the largest read so far (their chunks are reused). */
  private readonly readers: TimelineStream[] = [];
  private readonly page = new ShardPageWriter();

  constructor(
    private readonly config: Config,
    private readonly outbox: Outbox,
    private readonly buffers: ShardBuffers,
    private readonly streams: StreamAdmin,
  ) {}

  read(req: RequestOf<Op.TimelineRead>): void {
    const m = req.meta;
    if (Date.now() >= m.deadlineMs) return this.outbox.reply({ reqId: req.reqId, status: TIMELINE_READ_EXPIRED, ct: ContentType.None, body: null });
    // Every stream first: an unknown one is a 404 naming it, before any read.
    const streams = m.streams.map((e) => this.streams.existing(e.id));
    let horizon = Math.min(m.nowMs, Date.now());
    for (const s of streams) {
      const ts = s.log.uncommittedTs();
      if (ts !== null && ts < horizon) horizon = ts;
    }
    const direction = m.backward ? "backward" : "forward";
    const before = keyOrder(direction);
    const heap = new Heap<TimelineStream>(before);
    const w = this.buffers.jsonPage;
    const page = this.page;
    w.reset();
    page.reset();
    const firstChunk = firstChunkEvents(m.limit, streams.length);
    let heldTs = -1;
    /** A reader's current event may be shown: a forward page holds back what is at the horizon or past it. */
    const showable = (r: TimelineStream): boolean => {
      if (!r.has) return false;
      if (m.backward || r.ts < horizon) return true;
      if (heldTs < 0 || r.ts < heldTs) heldTs = r.ts;
      return false;
    };
    for (let i = 0; i < streams.length; i++) {
      const r = (this.readers[i] ??= new TimelineStream());
      page.addStream(r.start(streams[i], m.streams[i].index, m.streams[i].seq, m.backward, horizon, firstChunk, m.limit, this.buffers.page));
      if (showable(r)) heap.push(r);
    }
    const bytesMax = this.config.replay_page_bytes_max;
    let truncated = false;
    for (let r = heap.peek(); r; r = heap.peek()) {
      if (page.eventCount === m.limit || (page.eventCount > 0 && w.length >= bytesMax)) {
        truncated = true;
        break;
      }
      const at = w.length;
      const tombstone = r.render(w, this.buffers.page);
      page.addEvent(r.index, tombstone, w.length - at, r.seq, r.ts);
      r.advance(this.buffers.page);
      if (showable(r)) heap.replaceTop(r);
      else heap.pop();
    }
    const json = w.view();
    const head = { horizon, heldTs, truncated };
    this.outbox.replyWith(req.reqId, 200, ContentType.None, page.bytes(json.byteLength), (data, at) => page.write(data, at, head, json));
  }
}
