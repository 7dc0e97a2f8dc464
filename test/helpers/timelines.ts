// What the timeline tests share: a page request, paging a timeline to its
// end, the defined order to compare with, streams that land on chosen
// shards, and publishing to them.
import { connect, type Socket } from "node:net";
import { expect } from "vitest";
import { shardOf } from "../../src/shard/protocol.js";
import { api } from "./server.js";

export interface TimelineEvent {
  seq: number;
  stream: string;
  type: string;
  ingest_ts: number;
  payload?: unknown;
  [field: string]: unknown;
}

export interface Page {
  events: TimelineEvent[];
  next_cursor: string;
  prev_cursor: string;
  has_gap: boolean;
  partial?: string[];
}

/** GET /v1/timelines with these query parameters; the body must be a page. */
export async function timelinePage(url: string, query: Record<string, string | number | undefined>): Promise<Page> {
  const r = await timelineRequest(url, query);
  expect(r.status, JSON.stringify(r.json)).toBe(200);
  expect(Object.keys(r.json).sort()).toEqual(
    r.json.partial ? ["events", "has_gap", "next_cursor", "partial", "prev_cursor"] : ["events", "has_gap", "next_cursor", "prev_cursor"],
  );
  return r.json as Page;
}

export function timelineRequest(url: string, query: Record<string, string | number | undefined>, headers: Record<string, string> = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, String(v));
  return api(`${url}/v1/timelines?${q.toString().replaceAll("%2C", ",")}`, "GET", undefined, headers);
}

/**
 * Pages from `cursor` (or the start of `direction`) until a page comes back
 * empty; every page's events, in order, and the last (empty) page.
 */
export async function pageToEnd(
  url: string,
  streams: string[],
  opts: { cursor?: string; direction?: "forward" | "backward"; limit?: () => number } = {},
): Promise<{ events: TimelineEvent[]; pages: Page[]; last: Page }> {
  const events: TimelineEvent[] = [];
  const pages: Page[] = [];
  let cursor = opts.cursor;
  for (let i = 0; ; i++) {
    if (i > 100_000) throw new Error("a timeline that never ends");
    const p = await timelinePage(url, {
      streams: streams.join(","),
      cursor,
      direction: cursor === undefined ? opts.direction : undefined,
      limit: opts.limit?.(),
    });
    pages.push(p);
    if (p.events.length === 0) return { events, pages, last: p };
    events.push(...p.events);
    cursor = p.next_cursor;
  }
}

/** The defined order: (ingest_ts, stream id, seq). */
export function byTimelineOrder(a: TimelineEvent, b: TimelineEvent): number {
  if (a.ingest_ts !== b.ingest_ts) return a.ingest_ts - b.ingest_ts;
  if (a.stream !== b.stream) return a.stream < b.stream ? -1 : 1;
  return a.seq - b.seq;
}

export const eventId = (e: { stream: string; seq: number }) => `${e.stream}#${e.seq}`;

/** `perShard` stream ids with this prefix on each of `shards` shards (as the server routes them). */
export function streamsOnShards(prefix: string, shards: number, perShard: number): string[][] {
  const out: string[][] = Array.from({ length: shards }, () => []);
  for (let i = 0; out.some((o) => o.length < perShard); i++) {
    const id = `${prefix}${i}`;
    const o = out[shardOf(id, shards)];
    if (o.length < perShard) o.push(id);
  }
  return out;
}

/** Publishes `n` events (payload: their index from `from`, and `padBytes` of padding); returns the seqs given. */
export async function publishN(url: string, stream: string, n: number, from = 0, type = "t", padBytes = 0): Promise<number[]> {
  const pad = padBytes > 0 ? "p".repeat(padBytes) : undefined;
  const events = Array.from({ length: n }, (_, i) => ({ type, payload: pad ? { i: from + i, pad } : { i: from + i } }));
  const r = await api(`${url}/v1/streams/${stream}/events`, "POST", { events });
  expect(r.status, JSON.stringify(r.json)).toBe(200);
  return Array.from({ length: r.json.count }, (_, i) => r.json.first_seq + i);
}

/** Every retained event of a stream, through replay. */
export async function streamEvents(url: string, stream: string): Promise<TimelineEvent[]> {
  const out: TimelineEvent[] = [];
  let from = 1;
  for (;;) {
    const r = await api(`${url}/v1/streams/${stream}/events?from=${from}&limit=10000`, "GET");
    if (r.status === 410) {
      from = r.json.error.first_seq;
      continue;
    }
    expect(r.status).toBe(200);
    if (r.json.events.length === 0) return out;
    out.push(...r.json.events);
    from = r.json.next;
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Events of a large stream: each replay of all of them is a full replay page (8 MiB of JSON) to render. */
export const LARGE_STREAM_EVENTS = 10_000;

/** Fills a stream with LARGE_STREAM_EVENTS events of ~800 bytes. */
export async function publishLarge(url: string, stream: string): Promise<void> {
  const payload = "x".repeat(800);
  for (let i = 0; i < LARGE_STREAM_EVENTS / 1000; i++) {
    const r = await api(`${url}/v1/streams/${stream}/events`, "POST", { events: Array.from({ length: 1000 }, () => ({ type: "h", payload })) });
    expect(r.status).toBe(200);
  }
}

/**
 * Sends `count` replays of a large stream at once and leaves without
 * reading them: its shard renders each in turn (a shard serves its requests
 * in order), the front drops the answers, and nothing here competes with the
 * server for the cores. Resolves once all of them are in the server's
 * socket queues: a request sent after it waits on the shard behind them.
 */
export async function queueReplays(url: string, stream: string, count: number): Promise<void> {
  const { hostname, port } = new URL(url);
  const head = (path: string) => `GET ${path} HTTP/1.1\r\nhost: ${hostname}\r\n\r\n`;
  const sockets = await Promise.all(Array.from({ length: count }, () => answeredConnection(hostname, Number(port), head(`/v1/streams/${stream}`))));
  await Promise.all(
    sockets.map(
      (socket) =>
        new Promise<void>((resolve) =>
          socket.write(head(`/v1/streams/${stream}/events?from=1&limit=${LARGE_STREAM_EVENTS}`), () => {
            socket.destroy();
            resolve();
          }),
        ),
    ),
  );
}

/**
 * A connection the server has taken and answered once (`request`, whose
 * answer has a content-length): what is written on it next is read in the
 * order it arrives, not after the accept of a new connection.
 */
function answeredConnection(host: string, port: number, request: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port }, () => socket.write(request));
    let got = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      const end = got.indexOf("\r\n\r\n");
      if (end < 0) return;
      const length = Number(/content-length: *(\d+)/i.exec(got.subarray(0, end).toString("latin1"))?.[1]);
      if (got.length < end + 4 + length) return;
      socket.off("data", onData);
      resolve(socket);
    };
    socket.on("data", onData);
    socket.on("error", reject);
  });
}

/**
 * Resolves once the stream's shard served everything queued on it before
 * this call, with how long that took (ms): the stream's info, which reads
 * nothing, answered.
 */
export async function shardCaughtUp(url: string, stream: string): Promise<number> {
  const t0 = Date.now();
  const r = await api(`${url}/v1/streams/${stream}`, "GET");
  expect(r.status).toBe(200);
  return Date.now() - t0;
}

/**
 * Most replays replaysLasting queues in one round. A replay renders a page
 * of up to replay_page_bytes_max (1 MiB) of JSON: ~2 ms of an idle VM's
 * shard, 10 on a loaded one; so 1,024 is 2 to 10 s of rendering, the most a
 * round can leave for the test's end (a clean stop answers what it took) to
 * wait out.
 */
const BUSY_REPLAYS_MAX = 1024;
/** A round queues at most this many times the last one: a probe answered before the server read the round's requests (a loaded machine) must not make the next round huge. */
const BUSY_GROWTH_MAX = 4;

/**
 * How many replays of a large stream queued at once keep its shard busy for
 * `busyMs` at least on this machine, however fast it is: from 4, each round
 * sized for twice `busyMs` at the cost per replay the last one showed (at
 * most BUSY_GROWTH_MAX times it), until a request queued behind them waits
 * that long.
 */
export async function replaysLasting(url: string, stream: string, busyMs: number): Promise<number> {
  let count = 4;
  for (;;) {
    await queueReplays(url, stream, count);
    const waitedMs = await shardCaughtUp(url, stream);
    if (waitedMs >= busyMs) return count;
    if (count >= BUSY_REPLAYS_MAX) break;
    const perReplayMs = Math.max(waitedMs, 1) / count;
    count = Math.min(BUSY_REPLAYS_MAX, count * BUSY_GROWTH_MAX, Math.max(count * 2, Math.ceil((2 * busyMs) / perReplayMs)));
  }
  throw new Error(`the shard of ${stream} served ${BUSY_REPLAYS_MAX} replays in less than ${busyMs} ms`);
}
