// Timeline pages under load (bench:timelines part B): 25-event pages of
// `GET /v1/timelines?streams=...&cursor=...` over a set of the data set's
// streams, from a pool of cursors spread over the whole merged range, both
// directions, driven by autocannon:
// - at a fixed rate (autocannon's overallRate), for latency;
// - as fast as `connections` keep-alive connections go, one request
//   outstanding on each, for throughput and its latency;
// and, to check what autocannon's pacing does to the latency, the same
// fixed rate evenly paced (lib/pacing.ts: one request per millisecond).
//
// The pool comes from one walk over the timeline (pages of WALK_LIMIT
// events from the start to the end, which also checks that the route hands
// out every event once): every k-th page's next_cursor (forward) and
// prev_cursor (backward from the same cut). Cursors stay valid as long as
// the data dir keeps its secret, so the pool is kept beside the data set.
import autocannon from "autocannon";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TickerProcess } from "../../test/harness/ticker.js";
import { HttpRawClient, HttpRawConnection } from "../../src/client/http.js";
import { newHistogram, wallNow } from "../lib/latency.js";
import { pace, type PacedLane, type PaceStats } from "../lib/pacing.js";
import type { Residency } from "../lib/page-cache.js";
import { cpuMark, cpuSince, cpuWindow, waitQuiet, type CpuUse } from "../lib/proc.js";

/** Events per page of the walk: timeline_page_events_max's default, the fewest pages. */
const WALK_LIMIT = 1000;
/** Events per measured page: the route's default `limit`. */
export const PAGE_LIMIT = 25;
/** Cursors per direction in the pool. */
const POOL_PER_DIRECTION = 1000;
const REQUEST_TIMEOUT_MS = 30_000;
const QUIET_BEFORE_POINT_MS = 5000;

const EVENT_KEY = Buffer.from(`{"seq":`);
const NEXT_KEY = Buffer.from(`],"next_cursor":"`);
const PREV_KEY = Buffer.from(`","prev_cursor":"`);
const GAP_KEY = Buffer.from(`","has_gap":`);
const PARTIAL_KEY = `"partial":`;
/** The end of a page that can hold "partial" (after has_gap; 64 streams of ~130-character ids at most). */
const PARTIAL_TAIL_CHARS = 64 * 132 + 64;

interface PageTail {
  events: number;
  next: string;
  prev: string;
  hasGap: boolean;
  partial: boolean;
}

/**
 * Reads a page's event count and cursors from its bytes, without parsing
 * its events: the body ends `],"next_cursor":"..","prev_cursor":"..","has_gap":b}`
 * (and `,"partial":[..]` when a shard was left out), and every event's JSON
 * starts with {"seq": (a payload of ours cannot hold that).
 */
function pageTail(body: Buffer): PageTail {
  const n = body.lastIndexOf(NEXT_KEY);
  const p = body.indexOf(PREV_KEY, n);
  const g = body.indexOf(GAP_KEY, p);
  if (n < 0 || p < 0 || g < 0) throw new Error(`not a timeline page: ...${body.toString("utf8", Math.max(0, body.length - 200))}`);
  let events = 0;
  for (let at = body.indexOf(EVENT_KEY); at !== -1 && at < n; at = body.indexOf(EVENT_KEY, at + EVENT_KEY.length)) events++;
  const gapAt = g + GAP_KEY.length;
  return {
    events,
    next: body.toString("latin1", n + NEXT_KEY.length, p),
    prev: body.toString("latin1", p + PREV_KEY.length, g),
    hasGap: body[gapAt] === 0x74, // "t"rue
    partial: body.indexOf(PARTIAL_KEY, gapAt, "latin1") !== -1,
  };
}

export interface CursorPool {
  streams: string[];
  forward: string[];
  backward: string[];
  /** The walk that made it. */
  walkPages: number;
  walkEvents: number;
  /** Pages of the walk that left a stream out (`partial`): its events came on a later page. */
  walkPartial: number;
  walkS: number;
}

const setPath = (streams: readonly string[]) => `/v1/timelines?streams=${streams.join(",")}`;

/** Pages the whole timeline forward from its start, keeping every k-th page's cursors. */
async function walk(port: number, streams: string[], events: number, log: (l: string) => void): Promise<CursorPool> {
  const conn = await HttpRawConnection.connect(port, { timeoutMs: REQUEST_TIMEOUT_MS });
  const every = Math.max(1, Math.floor(events / WALK_LIMIT / POOL_PER_DIRECTION));
  const pool: CursorPool = { streams, forward: [], backward: [], walkPages: 0, walkEvents: 0, walkPartial: 0, walkS: 0 };
  const t0 = performance.now();
  let lastLog = t0;
  try {
    let cursor: string | null = null;
    // Bounded: twice the pages the events fill, in case a shard keeps missing its time.
    for (let page = 0; page < 2 * Math.ceil(events / WALK_LIMIT) + 100; page++) {
      const r = await conn.get(`${setPath(streams)}&limit=${WALK_LIMIT}${cursor === null ? "" : `&cursor=${cursor}`}`);
      if (r.status !== 200) throw new Error(`walk, page ${pool.walkPages + 1}: HTTP ${r.status}: ${r.body.toString("utf8", 0, 300)}`);
      const t = pageTail(r.body);
      if (t.hasGap || t.partial)
        throw new Error(`walk, page ${pool.walkPages + 1}: has_gap ${t.hasGap}, partial ${t.partial}: the data set should have neither`);
      if (t.events === 0) break;
      if (pool.walkPages % every === 0) {
        pool.forward.push(t.next);
        pool.backward.push(t.prev);
      }
      pool.walkPages++;
      pool.walkEvents += t.events;
      cursor = t.next;
      if (performance.now() - lastLog > 10_000) {
        lastLog = performance.now();
        log(`cursor walk over ${streams.length} streams: ${Math.round((100 * pool.walkEvents) / events)}%`);
      }
    }
  } finally {
    conn.close();
  }
  pool.walkS = (performance.now() - t0) / 1000;
  if (pool.walkEvents !== events) throw new Error(`the walk over ${streams.length} streams met ${pool.walkEvents} events, the streams hold ${events}`);
  return pool;
}

/** The kept pool if the server still takes its cursors, else a new walk (kept for next time). */
export async function cursorPool(server: TickerProcess, keepIn: string, streams: string[], events: number, log: (l: string) => void): Promise<CursorPool> {
  const file = join(keepIn, `cursors-${streams.length}.json`);
  try {
    const kept = JSON.parse(readFileSync(file, "utf8")) as CursorPool;
    const probe = await fetch(`${server.url}${setPath(streams)}&limit=1&cursor=${kept.forward[kept.forward.length >> 1]}`);
    if (kept.streams.join(",") === streams.join(",") && probe.status === 200) return kept;
    log(`kept cursors in ${file} not taken (HTTP ${probe.status}): walking again`);
  } catch {
    // None kept yet.
  }
  const pool = await walk(server.port, streams, events, log);
  writeFileSync(file, `${JSON.stringify(pool)}\n`);
  return pool;
}

/**
 * After a restart the server scrubs every closed segment (a piscina thread
 * reading the whole data set); pages are timed only once the server has gone
 * quiet: under SETTLE_QUIET_CORES over a SETTLE_WINDOW_MS window.
 */
const SETTLE_TIMEOUT_MS = 10 * 60_000;
const SETTLE_WINDOW_MS = 1000;
const SETTLE_QUIET_CORES = 0.05;

export async function settled(server: TickerProcess): Promise<string> {
  const t0 = performance.now();
  let quiet = false;
  while (!quiet && performance.now() - t0 < SETTLE_TIMEOUT_MS) {
    const mark = cpuMark(server.pid);
    await new Promise((r) => setTimeout(r, SETTLE_WINDOW_MS));
    if (server.exit) throw new Error(`server exited (${server.exit}) while settling:\n${server.outputTail()}`);
    quiet = cpuSince(mark, server.pid).serverCores < SETTLE_QUIET_CORES;
  }
  const scrub = /scrub: verified \d+ closed segments/.exec(server.output)?.[0] ?? "no closed segments to scrub";
  const s = ((performance.now() - t0) / 1000).toFixed(0);
  return quiet ? `timed once it was idle, ${s} s after ready ("${scrub}")` : `still busy ${s} s after ready: pages timed anyway ("${scrub}")`;
}

/** Request paths of the pool, forward and backward cursors taken in turn. */
function pagePaths(pool: CursorPool): string[] {
  const base = `${setPath(pool.streams)}&limit=${PAGE_LIMIT}&cursor=`;
  const out: string[] = [];
  for (let i = 0; i < Math.max(pool.forward.length, pool.backward.length); i++) {
    if (i < pool.forward.length) out.push(base + pool.forward[i]);
    if (i < pool.backward.length) out.push(base + pool.backward[i]);
  }
  return out;
}

export interface PagePoint {
  /** autocannon at a rate, the same rate evenly paced, or autocannon as fast as answered. */
  kind: "rate" | "even" | "max";
  /** The driver, as the report names it. */
  how: string;
  connections: number;
  /** Asked rate (pages/s), or null for as fast as the connections go. */
  rate: number | null;
  pagesPerS: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Answers that were not 2xx, connection errors and timeouts: each must be 0. */
  non2xx: number;
  /** 2xx pages that left a stream out (`partial`: its shard missed timeline_source_timeout_ms). */
  partial: number;
  errors: number;
  timeouts: number;
  cpu: CpuUse;
  /** How much of the set the page cache held before the point's warm-up and after its measured window. */
  cacheStart: Residency;
  cacheEnd: Residency;
}

const usToMs = (us: number) => us / 1000;

/** One autocannon run over the pool: `rate` pages/s over all connections, or as fast as they go. */
async function cannon(port: number, paths: string[], connections: number, durationS: number, rate: number | null) {
  const hist = newHistogram();
  let next = 0;
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: `http://127.0.0.1:${port}`,
        connections,
        duration: durationS,
        timeout: REQUEST_TIMEOUT_MS / 1000,
        ...(rate === null ? {} : { overallRate: rate }),
        // Each request takes the next path of the pool, whatever connection sends it.
        requests: [{ method: "GET", setupRequest: (req) => ({ ...req, path: paths[next++ % paths.length] }) }],
        // A "mismatch" is a page with a stream left out; the body's tail is all it looks at.
        verifyBody: (body) => typeof body !== "string" || !body.includes(PARTIAL_KEY, body.length - PARTIAL_TAIL_CHARS),
      },
      (err: unknown, r: autocannon.Result) => (err ? reject(err as Error) : resolve(r)),
    );
    instance.on("response", (_client, status, _bytes, responseTimeMs) => {
      if (status >= 200 && status < 300) hist.recordValue(Math.max(1, Math.round(responseTimeMs * 1000)));
    });
  });
  return { result, hist };
}

/** A point's discarded warm-up and measured window, and how to ask what of the set is in the page cache. */
export interface PointTiming {
  warmupS: number;
  measureS: number;
  resident: () => Residency;
}

export interface PointSpec extends PointTiming {
  connections: number;
  rate: number | null;
}

/** A measured autocannon point after a discarded warm-up of the same shape. */
export async function cannonPoint(server: TickerProcess, pool: CursorPool, spec: PointSpec, notes: string[]): Promise<PagePoint> {
  const paths = pagePaths(pool);
  const q = await waitQuiet(QUIET_BEFORE_POINT_MS);
  if (!q.quiet)
    notes.push(
      `${pool.streams.length} streams, ${spec.connections} connections: the machine was not idle before the point (${q.busyCores.toFixed(2)} cores busy elsewhere).`,
    );
  const cacheStart = spec.resident();
  await cannon(server.port, paths, spec.connections, spec.warmupS, spec.rate);
  const mark = cpuMark(server.pid);
  const { result: r, hist } = await cannon(server.port, paths, spec.connections, spec.measureS, spec.rate);
  const cpu = cpuSince(mark, server.pid);
  const cacheEnd = spec.resident();
  if (server.exit) throw new Error(`server exited (${server.exit}) during the point:\n${server.outputTail()}`);
  return {
    kind: spec.rate === null ? "max" : "rate",
    how: spec.rate === null ? "autocannon, as fast as the connections go" : "autocannon, overallRate",
    connections: spec.connections,
    rate: spec.rate,
    pagesPerS: r["2xx"] / cpu.wallS,
    p50Ms: usToMs(hist.getValueAtPercentile(50)),
    p99Ms: usToMs(hist.getValueAtPercentile(99)),
    maxMs: usToMs(hist.maxValue),
    non2xx: r.non2xx,
    partial: r.mismatches,
    errors: r.errors,
    timeouts: r.timeouts,
    cpu,
    cacheStart,
    cacheEnd,
  };
}

/**
 * The fixed rate evenly paced: pace() sends one page request per due
 * page each millisecond, on whichever of `lanes` connections is free, and
 * records each one's time to its answer.
 */
export async function pacedPoint(server: TickerProcess, pool: CursorPool, rate: number, lanes: number, spec: PointTiming): Promise<PagePoint> {
  const paths = pagePaths(pool);
  const cacheStart = spec.resident();
  const client = await HttpRawClient.connections(server.port, lanes, { timeoutMs: REQUEST_TIMEOUT_MS });
  let next = 0;
  let non2xx = 0;
  let partial = 0;
  let errors = 0;
  const hist = newHistogram();
  const stats: PaceStats = { sent: 0, measured: 0, requests: 0, batchMax: 0, stalls: 0, backlogMax: 0, tickLateP99Ms: 0, tickLateMaxMs: 0, rtt: "" };
  const t0 = wallNow() + 100;
  const tStart = t0 + spec.warmupS * 1000;
  const tEnd = tStart + spec.measureS * 1000;
  const paced: PacedLane[] = client.map((c) => ({
    busy: false,
    async send(_n, t) {
      try {
        const r = await c.get(paths[next++ % paths.length]);
        if (r.status < 200 || r.status >= 300) non2xx++;
        else if (r.body.includes(PARTIAL_KEY, r.body.length - PARTIAL_TAIL_CHARS)) partial++;
        if (r.status >= 200 && r.status < 300 && t >= tStart && t < tEnd) hist.recordValue(Math.max(1, Math.round((wallNow() - t) * 1000)));
      } catch {
        errors++;
      }
    },
  }));
  const cpu = cpuWindow(server.pid, tStart, tEnd);
  try {
    await pace({ rate, t0, tStart, tEnd, tickMs: 1, batchEventsMax: 1, stopAtEnd: true }, paced, stats);
  } finally {
    for (const c of client) c.close();
  }
  const cacheEnd = spec.resident();
  const measured = hist.totalCount;
  return {
    kind: "even",
    how: `evenly paced (lib/pacing.ts), ${stats.stalls} ticks with every connection busy`,
    connections: lanes,
    rate,
    pagesPerS: measured / spec.measureS,
    p50Ms: usToMs(hist.getValueAtPercentile(50)),
    p99Ms: usToMs(hist.getValueAtPercentile(99)),
    maxMs: usToMs(hist.maxValue),
    non2xx,
    partial,
    errors,
    timeouts: 0,
    cpu: await cpu,
    cacheStart,
    cacheEnd,
  };
}
