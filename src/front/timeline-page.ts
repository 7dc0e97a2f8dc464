// One page of a timeline, as the front makes it: one TimelineRead per shard
// that owns streams of the set, sent at once; the answers that come within
// timeline_source_timeout_ms merged (a heap over the shards, the same order
// as the shard's own merge), cut at the page's limits and at the horizon,
// and the boundaries of the next and previous pages worked out from what
// was shown. A shard that does not answer in time is left out: its streams
// keep their boundaries and are listed as `partial`. The read carries the
// time the page gives up on it, past which the shard skips it.
import type { Config } from "../config.js";
import { ApiError } from "../errors.js";
import { Op, responseJson, TIMELINE_READ_EXPIRED, type RequestMeta } from "../shard/protocol.js";
import type { Direction, TimelineCursor } from "../timeline/cursor.js";
import { Heap, keyOrder, type EventKey } from "../timeline/merge.js";
import { type AnswerEvents, HEAD_BOUNDARY, readShardPage, resolvedByShard, timeCut, type PageEvent, type ShardPage } from "../timeline/shard-page.js";
import type { ShardPool } from "./shards.js";
import { LateReads } from "./timeline-late.js";
import type { PartAnswer, RemoteTimelineReads } from "./cluster-timelines.js";

export interface PageRequest {
  /** The set: sorted, without repeats. */
  streams: readonly string[];
  direction: Direction;
  /** One boundary per stream of the set (HEAD_BOUNDARY: its head, found by its shard). */
  seqs: readonly number[];
  limit: number;
  /** Cluster mode: the caller's Authorization, which another owner's part is asked with. */
  authorization?: string;
}

export interface PageResult {
  /** In the page's order. */
  events: PageEvent[];
  next: TimelineCursor;
  prev: TimelineCursor;
  hasGap: boolean;
  /** Streams whose shard did not answer in time, in set order. */
  partial: string[];
  /**
   * Forward: when events were held back because the clock had not passed
   * their millisecond yet, the earliest such ingest_ts (a long poll looks
   * again just after it); else -1. Events held back behind a record waiting
   * for its sync show once it commits, which its shard pushes.
   */
  clockHeldTs: number;
}

/** What the shards are, for a page: ShardPool in the server. */
export type PageShards = Pick<ShardPool, "send" | "shardFor" | "deliverReady">;

/**
 * One shard's part: its streams' entries, and its answer once it came. In
 * cluster mode a part may be another node's (`url`: its shards' answers, one
 * page each) or nobody's right now (`unowned`: never sent, partial).
 */
interface ShardPart {
  /** The local shard (-1: another node's part, or nobody's). */
  shard: number;
  url?: string;
  unowned?: boolean;
  meta: RequestMeta<Op.TimelineRead>;
  /** False when the shard could not take the request (full ring, too many in flight) or was behind on reads given up on. */
  sent: boolean;
  answer: ShardPage[] | ApiError | null;
}

/**
 * Shards' answers are copied out of the rings into slabs of this many bytes,
 * one after another, as Node's Buffer pool does for small buffers: a page's
 * answers are a few KiB each, and a fresh ArrayBuffer per answer is memory
 * outside the heap whose growth starts full collections. A slab is freed by
 * the collector once no page refers to it; a page holds its answers only
 * until it is sent (an empty page held by a long poll refers to none).
 */
const ANSWER_SLAB_BYTES = 128 * 1024;
let slab = Buffer.allocUnsafe(ANSWER_SLAB_BYTES);
let slabUsed = 0;

function answerCopy(body: Uint8Array): Buffer {
  const n = body.byteLength;
  if (n > ANSWER_SLAB_BYTES / 4) return Buffer.from(body);
  if (slabUsed + n > ANSWER_SLAB_BYTES) {
    slab = Buffer.allocUnsafe(ANSWER_SLAB_BYTES);
    slabUsed = 0;
  }
  const copy = slab.subarray(slabUsed, slabUsed + n);
  copy.set(body);
  // 8-aligned like the ring's messages: V8 copies out of shared memory fastest when both ends are aligned alike.
  slabUsed += (n + 7) & ~7;
  return copy;
}

const shardBusy = () =>
  new ApiError(
    429,
    "shard_busy",
    "the shards owning this timeline's streams are at capacity (rings full, shard_requests_max in flight, or behind on timeline reads); retry later",
  );

export class TimelinePages {
  private readonly late = new LateReads();

  constructor(
    private readonly config: Config,
    private readonly shards: PageShards,
    /** Cluster mode: the parts other nodes own. */
    private readonly remote: RemoteTimelineReads | null = null,
  ) {}

  /** Whether any stream of the set is read from another node (they push nothing here: a long poll looks again on a timer). */
  readsRemote(streams: readonly string[]): boolean {
    return this.remote !== null && streams.some((id) => this.remote?.placeOf(id).kind !== "local");
  }

  /** Reads one page; `done` gets it, or the error of a shard (an unknown stream: 404 naming it). */
  read(req: PageRequest, done: (r: PageResult | ApiError) => void): void {
    this.round(req, Date.now(), (parts, nowMs) => {
      const r = this.merge(req, parts, nowMs);
      // From the head: each shard placed its streams' heads under its own
      // horizon, and the page's is the smallest. Once more with that one for
      // all, so that the boundary is a true cut of the order (shards asked
      // again all have this horizon then: see docs/decisions.md).
      if (r instanceof ApiError || !r.retryAt) return done(r instanceof ApiError ? r : r.page);
      this.round(req, r.retryAt, (again, at) => {
        const r2 = this.merge(req, again, at);
        done(r2 instanceof ApiError ? r2 : r2.page);
      });
    });
  }

  /**
   * Sends every shard its part and calls back with the parts once all
   * answered or the source timeout ran out. A shard behind on reads given
   * up on is not asked (src/front/timeline-late.ts): its part is not sent.
   */
  private round(req: PageRequest, nowMs: number, then: (parts: ShardPart[], nowMs: number) => void): void {
    const parts = this.split(req, nowMs, Date.now() + this.config.timeline_source_timeout_ms);
    /** Sent parts not answered yet: those still here when the page goes out are given up on. */
    const awaiting = new Set<ShardPart>();
    let finished = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      for (const p of awaiting) if (p.shard >= 0) this.late.gaveUp(p.shard);
      then(parts, nowMs);
    };
    for (const p of parts) {
      if (p.unowned) continue;
      if (p.url !== undefined) {
        p.sent = true;
        awaiting.add(p);
        this.remote?.read(p.url, p.meta, req.authorization ?? "", (answers) => {
          awaiting.delete(p);
          if (finished) return;
          p.answer = answers === null ? null : pagesOf(answers, req.streams);
          if (awaiting.size === 0) finish();
        });
        continue;
      }
      // Answers already in its out-ring may show it caught up.
      if (this.late.behind(p.shard)) this.shards.deliverReady(p.shard);
      if (this.late.behind(p.shard)) continue;
      p.sent = this.shards.send(p.shard, Op.TimelineRead, p.meta, null, (r) => {
        awaiting.delete(p);
        if (finished) return this.late.answered(p.shard); // too late: the page went without it
        // Past its deadline the shard read nothing: as if it had not answered.
        if (r.status !== TIMELINE_READ_EXPIRED) {
          // Copied: the ring's bytes are reused once this callback returns.
          p.answer = r.status === 200 ? [readShardPage(answerCopy(r.body), req.streams)] : ApiError.fromBody(r.status, responseJson(r));
        }
        if (awaiting.size === 0) finish();
      });
      if (p.sent) awaiting.add(p);
    }
    if (awaiting.size === 0) return finish();
    timer = setTimeout(() => {
      // Answers that came in time but wait in the rings are taken first.
      for (const p of awaiting) if (p.shard >= 0) this.shards.deliverReady(p.shard);
      finish();
    }, this.config.timeline_source_timeout_ms);
  }

  private split(req: PageRequest, nowMs: number, deadlineMs: number): ShardPart[] {
    const byPlace = new Map<number | string, ShardPart>();
    for (let i = 0; i < req.streams.length; i++) {
      const place = this.remote?.placeOf(req.streams[i]) ?? { kind: "local" as const };
      const shard = place.kind === "local" ? this.shards.shardFor(req.streams[i]) : -1;
      const key = place.kind === "local" ? shard : place.kind === "remote" ? `node:${place.node}` : "unowned";
      let p = byPlace.get(key);
      if (!p) {
        p = { shard, meta: { streams: [], backward: req.direction === "backward", limit: req.limit, nowMs, deadlineMs }, sent: false, answer: null };
        if (place.kind === "remote") p.url = place.url;
        if (place.kind === "unowned") p.unowned = true;
        byPlace.set(key, p);
      }
      p.meta.streams.push({ id: req.streams[i], index: i, seq: req.seqs[i] });
    }
    return [...byPlace.values()];
  }

  /**
   * Merges the shards' answers into the page. `retryAt` is set when a page
   * from the head (HEAD_BOUNDARY) had shards whose horizons were past the
   * page's: then it is read again with the page's horizon for all.
   */
  private merge(req: PageRequest, parts: ShardPart[], nowMs: number): ApiError | { page: PageResult; retryAt: number | null } {
    const answered: ShardPage[] = [];
    for (const p of parts) {
      if (p.answer instanceof ApiError) return p.answer;
      if (p.answer) answered.push(...p.answer);
    }
    if (answered.length === 0) {
      if (parts.every((p) => p.unowned)) return unowned();
      if (!parts.some((p) => p.sent)) return shardBusy();
      return { page: emptyPage(req, nowMs), retryAt: null };
    }
    const backward = req.direction === "backward";
    const before = keyOrder(req.direction);
    let horizon = Number.POSITIVE_INFINITY;
    for (const a of answered) horizon = Math.min(horizon, a.horizon);
    // A shard that stopped early may hold events past its last one shown: nothing past the earliest such cut is shown.
    let cut: EventKey | null = null;
    for (const a of answered) {
      const last = a.events.lastKey();
      if (a.truncated && last && (cut === null || before(last, cut))) cut = last;
    }
    const events: PageEvent[] = [];
    const bytesMax = this.config.replay_page_bytes_max;
    let bytes = 0;
    let clockHeldTs = -1;
    /** Backward: the lowest seq left out at the horizon, per stream. */
    let leftOut: Map<number, number> | null = null;
    // The shards' answers are each in the page's order: a heap of their next events.
    const heads = new Heap<AnswerEvents>(before);
    for (const a of answered) if (a.events.has) heads.push(a.events);
    for (let e = heads.peek(); e; e = heads.peek()) {
      if (events.length === req.limit || (events.length > 0 && bytes >= bytesMax)) break;
      if (cut !== null && before(cut, e)) break;
      if (e.ts < horizon) {
        const shown = e.event();
        events.push(shown);
        bytes += shown.jsonBytes + 1;
      } else if (backward) {
        leftOut ??= new Map();
        leftOut.set(e.index, e.seq);
      } else {
        if (horizon === nowMs) clockHeldTs = e.ts;
        break;
      }
      e.advance();
      if (e.has) heads.replaceTop(e);
      else heads.pop();
    }
    if (!backward && horizon === nowMs) {
      // Shards hold back what is at the horizon themselves: they say what.
      for (const a of answered) if (a.heldTs >= 0 && (clockHeldTs < 0 || a.heldTs < clockHeldTs)) clockHeldTs = a.heldTs;
    }
    const boundary = unansweredBoundaries(req, horizon);
    let hasGap = false;
    for (const a of answered) {
      for (const s of a.streams) {
        boundary[s.index] = s.boundary;
        if (s.gap) hasGap = true;
      }
    }
    if (leftOut) for (const [index, seq] of leftOut as Map<number, number>) boundary[index] = Math.min(boundary[index], seq - 1);
    const next = [...boundary];
    // Forward events come ascending (the last one of a stream wins), backward ones descending.
    for (const e of events) {
      next[e.index] = backward ? e.seq - 1 : e.seq;
      if (e.tombstone) hasGap = true;
    }
    const page: PageResult = {
      events,
      next: { direction: req.direction, seqs: next },
      prev: { direction: backward ? "forward" : "backward", seqs: boundary },
      hasGap,
      partial: partialOf(req, answered),
      clockHeldTs,
    };
    const retryAt = req.seqs.some(resolvedByShard) && answered.some((a) => a.horizon > horizon) ? horizon : null;
    return { page, retryAt };
  }
}

/** The streams no answer speaks for (their shard, or node, did not answer in time), in set order. */
function partialOf(req: PageRequest, answered: readonly ShardPage[]): string[] {
  const covered = new Set<number>();
  for (const a of answered) for (const s of a.streams) covered.add(s.index);
  return req.streams.filter((_, i) => !covered.has(i));
}

/**
 * Another node's shards' answers as pages: an error answer fails the page;
 * one that read nothing (expired), or bytes that do not add up (null: the
 * whole part), leave their streams partial.
 */
function pagesOf(answers: readonly PartAnswer[], ids: readonly string[]): ShardPage[] | ApiError | null {
  const pages: ShardPage[] = [];
  for (const a of answers) {
    if (a.status === TIMELINE_READ_EXPIRED) continue;
    if (a.status !== 200) return ApiError.fromBody(a.status, jsonOf(a.body));
    try {
      pages.push(readShardPage(a.body, ids));
    } catch {
      return null;
    }
  }
  return pages;
}

function jsonOf(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString("utf8"));
  } catch {
    return null;
  }
}

const unowned = () =>
  new ApiError(503, "shard_unowned", "no live node serves this timeline's streams right now (a node left or is catching up); retry", { retry_after_s: 1 });

/**
 * The boundaries of a page before its answers are placed: the request's,
 * except that a stream still "at the head" becomes the cut at the page's
 * horizon. A stream whose shard did not answer keeps that: resolved later,
 * next_cursor and prev_cursor then still name one and the same seq of it.
 */
function unansweredBoundaries(req: PageRequest, horizon: number): number[] {
  return req.seqs.map((seq) => (seq === HEAD_BOUNDARY ? timeCut(horizon) : seq));
}

/** No shard answered in time: the same boundaries again (the head as the cut at `nowMs`), every stream partial. */
function emptyPage(req: PageRequest, nowMs: number): PageResult {
  const seqs = unansweredBoundaries(req, nowMs);
  return {
    events: [],
    next: { direction: req.direction, seqs },
    prev: { direction: req.direction === "backward" ? "forward" : "backward", seqs },
    hasGap: false,
    partial: req.streams.slice(),
    clockHeldTs: -1,
  };
}
