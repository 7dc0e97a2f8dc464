// The timeline page routes: `GET /v1/timelines?streams=a,b,c` (ad hoc; the
// list route of timeline-admin.ts hands it over) and `GET
// /v1/timelines/{name}/events` (named), their query (cursor, limit,
// direction, wait_ms), who may read them (consume on every stream of the
// set), the long poll, and the answer, whose events' JSON is the shards'
// rendering joined as it came. The page itself is timeline-page.ts; the
// waits, timeline-waits.ts.
import type uWS from "uWebSockets.js";
import type { Config } from "../config.js";
import { ApiError, asApiError } from "../errors.js";
import { ContentType } from "../shard/protocol.js";
import type { CursorSigner, Direction } from "../timeline/cursor.js";
import { checkTimelineName, type NamedTimeline, timelineNotFound } from "../timeline/names.js";
import { HEAD_BOUNDARY } from "../timeline/shard-page.js";
import type { TimelineStores } from "../timeline/stores.js";
import { streamSet } from "../timeline/stream-set.js";
import { checkQuery, intParam } from "../validate.js";
import { type ApiKey, checkStreams, type GuardedApp, sendRefusal } from "./auth.js";
import { exchange, send, sendError, type Exchange } from "./http.js";
import type { ShardPool } from "./shards.js";
import { TimelinePages, type PageRequest, type PageResult } from "./timeline-page.js";
import { TimelineWaits, type Waiter } from "./timeline-waits.js";
import type { RemoteTimelineReads } from "./cluster-timelines.js";
import { TIMELINE_AD_HOC_PARAMS, TIMELINE_NAMED_PARAMS } from "./query-params.js";

/** Events of a page without `limit` (API.md), unless timeline_page_events_max is lower. */
export const TIMELINE_PAGE_EVENTS_DEFAULT = 25;

/** A page as the client asked for it, checked. */
interface PageAsk {
  req: PageRequest;
  waitMs: number;
}

export interface TimelineDeps {
  config: Config;
  pool: ShardPool;
  /** The cursor signer and the named timelines. */
  stores: TimelineStores;
  /** The 503 to answer while the server is not ready or is draining, else null. */
  unavailable: () => ApiError | null;
  /** Cluster mode: the parts of pages other nodes own. */
  remote?: RemoteTimelineReads | null;
}

/**
 * Cluster mode: how often a long poll over streams of other nodes looks
 * again (their commits push nothing to this node), so a new event there
 * shows within this much of its commit.
 */
export const REMOTE_POLL_MS = 100;

/** The set of `?streams=a,b,c`, by the one stream-set rule (src/timeline/stream-set.ts). */
function adHocSet(raw: string | null, max: number): string[] {
  if (raw === null) throw new ApiError(400, "invalid_parameter", `"streams" is required: a comma-separated list of stream ids`, { parameter: "streams" });
  return streamSet(raw.split(","), max, "invalid_parameter");
}

/** The rest of the query, for a set: where the page starts, which way, how many, how long to wait. */
export function pageAsk(q: URLSearchParams, streams: readonly string[], config: Config, signer: CursorSigner): PageAsk {
  const dir = q.get("direction");
  if (dir !== null && dir !== "forward" && dir !== "backward") {
    throw new ApiError(400, "invalid_parameter", `"direction" must be "forward" or "backward"`, { parameter: "direction" });
  }
  const token = q.get("cursor");
  let direction: Direction = dir ?? "forward";
  let seqs: number[];
  if (token !== null) {
    const c = signer.decode(token, streams);
    if (dir !== null && dir !== c.direction) {
      throw new ApiError(400, "invalid_parameter", `"direction" is ${dir} but the cursor pages ${c.direction}; leave "direction" out with a cursor`, {
        parameter: "direction",
      });
    }
    direction = c.direction;
    seqs = c.seqs;
  } else {
    // Forward from before the oldest retained event; backward from each stream's head.
    seqs = streams.map(() => (direction === "forward" ? 0 : HEAD_BOUNDARY));
  }
  const max = config.timeline_page_events_max;
  const limit = intParam(q, "limit", Math.min(TIMELINE_PAGE_EVENTS_DEFAULT, max), 1, max);
  const waitMs = intParam(q, "wait_ms", 0, 0, config.timeline_wait_ms_max);
  if (waitMs > 0 && direction === "backward") {
    throw new ApiError(400, "invalid_parameter", `"wait_ms" applies to forward pages only: a backward page never waits`, { parameter: "wait_ms" });
  }
  return { req: { streams, direction, seqs, limit }, waitMs };
}

/**
 * Bytes of the buffer every page's answer is written in when it fits: one
 * buffer for all, since uWS copies what the socket does not take at once
 * before send returns. A larger page (up to replay_page_bytes_max) gets its own.
 */
const PAGE_OUT_BYTES = 256 * 1024;
const pageOut = Buffer.allocUnsafe(PAGE_OUT_BYTES);
const EVENTS_OPEN = `{"events":[`;
const COMMA = 0x2c;

/**
 * The answer's body: the events' JSON as the shards rendered them, joined,
 * and the cursors. Valid until the next page is written (send copies it).
 */
function pageBody(r: PageResult, streams: readonly string[], signer: CursorSigner): Buffer {
  const next = signer.encode(streams, r.next);
  const prev = signer.encode(streams, r.prev);
  const partial = r.partial.length > 0 ? `,"partial":${JSON.stringify(r.partial)}` : "";
  // ASCII only (base64url, stream ids): one byte per character.
  const tail = `],"next_cursor":"${next}","prev_cursor":"${prev}","has_gap":${r.hasGap}${partial}}`;
  let bytes = EVENTS_OPEN.length + tail.length + Math.max(0, r.events.length - 1);
  for (const e of r.events) bytes += e.jsonBytes;
  const out = bytes <= PAGE_OUT_BYTES ? pageOut : Buffer.allocUnsafe(bytes);
  let at = out.write(EVENTS_OPEN, 0, "latin1");
  for (let i = 0; i < r.events.length; i++) {
    const e = r.events[i];
    if (i > 0) out[at++] = COMMA;
    at += e.body.copy(out, at, e.jsonAt, e.jsonAt + e.jsonBytes);
  }
  at += out.write(tail, at, "latin1");
  if (at !== bytes) throw new Error(`timeline page invariant: ${at} bytes written of ${bytes}`);
  return out.subarray(0, bytes);
}

export class Timelines {
  private readonly pages: TimelinePages;
  private readonly waits: TimelineWaits;
  /** Long polls waiting, each answered early by endWaits (shutdown). */
  private readonly polls = new Set<() => void>();

  constructor(private readonly deps: TimelineDeps) {
    this.pages = new TimelinePages(deps.config, deps.pool, deps.remote ?? null);
    this.waits = new TimelineWaits(deps.config, deps.pool);
  }

  private get signer(): CursorSigner {
    return this.deps.stores.signer;
  }

  /** The named route; the ad hoc one shares its path with the list and comes through adHoc. */
  register(routes: GuardedApp): void {
    routes.get("/v1/timelines/:name/events", "key", (res, req, key) => this.named(res, req, key));
  }

  /** Answers every long poll with the page it has (shutdown: nothing waits past the drain). */
  endWaits(): void {
    for (const end of [...this.polls]) end();
    this.waits.close();
  }

  /** GET /v1/timelines?streams=a,b,c&...: the route's admission has checked the key, this its scope and prefix. */
  adHoc(res: uWS.HttpResponse, req: uWS.HttpRequest, key: ApiKey | null): void {
    const query = req.getQuery() ?? "";
    this.begin(exchange(res), key, req.getHeader("authorization"), () => {
      const q = checkQuery(query, TIMELINE_AD_HOC_PARAMS);
      return { q, streams: adHocSet(q.get("streams"), this.deps.config.timeline_streams_max) };
    });
  }

  private named(res: uWS.HttpResponse, req: uWS.HttpRequest, key: ApiKey | null): void {
    const name = req.getParameter(0) ?? "";
    const query = req.getQuery() ?? "";
    const authorization = req.getHeader("authorization");
    const x = exchange(res);
    const found = (t: NamedTimeline | undefined) =>
      this.begin(x, key, authorization, () => {
        checkTimelineName(name);
        const q = checkQuery(query, TIMELINE_NAMED_PARAMS);
        if (!t) throw timelineNotFound(name);
        return { q, streams: t.streams };
      });
    this.deps.stores.names.find(name).then(found, (err: unknown) => sendError(x, asApiError(err)));
  }

  /** The checks of both routes, in one order: readiness, the names and query, the key on the set, the page asked for. */
  private begin(x: Exchange, key: ApiKey | null, authorization: string, set: () => { q: URLSearchParams; streams: readonly string[] }): void {
    let ask: PageAsk;
    try {
      const down = this.deps.unavailable();
      if (down) throw down;
      const { q, streams } = set();
      const refused = checkStreams(key, "consume", streams);
      if (refused) return sendRefusal(x, refused);
      ask = pageAsk(q, streams, this.deps.config, this.signer);
      ask.req.authorization = authorization;
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      return sendError(x, err);
    }
    this.serve(x, ask);
  }

  private serve(x: Exchange, ask: PageAsk): void {
    this.pages.read(ask.req, (r) => {
      if (x.aborted || x.done) return;
      if (r instanceof ApiError) return sendError(x, r);
      if (r.events.length > 0 || r.partial.length > 0 || ask.waitMs === 0) return this.answer(x, ask, r);
      this.longPoll(x, ask, r);
    });
  }

  private answer(x: Exchange, ask: PageAsk, r: PageResult): void {
    send(x, 200, ContentType.Json, pageBody(r, ask.req.streams, this.signer));
  }

  /**
   * Waits for the page's first event: looks again when a stream of the set
   * commits a batch (or, for events held back until the clock passes their
   * millisecond, just after it), and answers the empty page at the end of
   * wait_ms. The streams are watched before the next look, so a batch
   * committed after the first one is never missed.
   */
  private longPoll(x: Exchange, ask: PageAsk, first: PageResult): void {
    let last = first;
    let reading = false;
    let again = false;
    let over = false;
    let waiter: Waiter | null = null;
    let clockTimer: NodeJS.Timeout | undefined;
    let deadline: NodeJS.Timeout | undefined;
    let remotePoll: NodeJS.Timeout | undefined;
    const finish = () => {
      over = true;
      clearTimeout(clockTimer);
      clearTimeout(deadline);
      clearInterval(remotePoll);
      this.polls.delete(end);
      if (waiter !== null) this.waits.disarm(waiter);
    };
    const end = () => {
      if (over) return;
      finish();
      this.answer(x, ask, last);
    };
    const look = () => {
      if (over) return;
      if (reading) {
        again = true;
        return;
      }
      reading = true;
      again = false;
      clearTimeout(clockTimer);
      this.pages.read(ask.req, (r) => {
        reading = false;
        if (over) return;
        if (x.aborted) return finish();
        if (r instanceof ApiError) {
          finish();
          return sendError(x, r);
        }
        last = r;
        if (r.events.length > 0 || r.partial.length > 0) return end();
        if (again) return look();
        if (r.clockHeldTs >= 0) clockTimer = setTimeout(look, Math.max(1, r.clockHeldTs + 1 - Date.now()));
      });
    };
    const armed = this.waits.arm(ask.req.streams, look);
    if (armed === "full") {
      const max = this.deps.config.timeline_waiters_max;
      return sendError(x, new ApiError(429, "server_busy", `timeline_waiters_max (${max}) long polls are waiting; retry later`, { timeline_waiters_max: max }));
    }
    if (armed === "busy") return sendError(x, new ApiError(429, "shard_busy", "a shard owning this timeline's streams is at capacity; retry later"));
    waiter = armed;
    deadline = setTimeout(end, ask.waitMs);
    if (this.pages.readsRemote(ask.req.streams)) remotePoll = setInterval(look, REMOTE_POLL_MS);
    this.polls.add(end);
    x.onAbort = finish;
    look();
  }
}
