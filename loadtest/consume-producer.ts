// The paced producer of bench-consume: publishes at a fixed rate to one
// Ticker stream (HTTP POST of JSON batches) or one Redis stream (pipelined
// XADDs), stamping each batch with its send time so the consumer can measure
// end-to-end latency.
//
// Pacing: a timer every `tickMs` sends the events due so far,
// floor(rate × elapsed) − sent, as one request (split at the server's
// publish_events_max), on one of `lanes` keep-alive connections that has no
// request outstanding (raw sockets: loadtest/http-raw.ts, peers/redis.ts). When every lane is busy the due events wait for the
// next tick and go out in a larger batch: counted as a stall, so a producer
// that fell behind shows in the report instead of lowering the rate quietly.
//
// It normally runs in its own worker thread (bench-consume starts this file
// with workerData), so the consumer's event loop cannot delay a send and a
// send cannot delay a receive. `runProducer` also runs inline for comparison.
import { isMainThread, workerData } from "node:worker_threads";
import { serveProducerThread } from "./producer-thread.js";
import { HttpRawConnection, type HttpRawReply } from "./http-raw.js";
import { RespConn } from "./peers/redis.js";
import { encodeHistogram, LATENCY_US_MAX, newHistogram, wallNow } from "./consume-clients.js";

export interface ProducerSpec {
  target: "ticker" | "redis";
  port: number;
  /** Ticker stream id, or Redis key. */
  stream: string;
  /** Events per second. */
  rate: number;
  /** Wall-clock ms (wallNow): sending starts at t0; events stamped in [tStart, tEnd) are measured; sending stops at tEnd. */
  t0: number;
  tStart: number;
  tEnd: number;
  tickMs: number;
  lanes: number;
  /** The payload's filler, `p`, next to the stamp `t`. */
  pad: string;
}

export interface ProducerResult {
  /** Events sent (and acknowledged, unless listed in errors), warm-up included. */
  sent: number;
  accepted: number;
  /** Events whose stamp lies in [tStart, tEnd). */
  measured: number;
  /** Ticker: highest last_seq answered; Redis: 0 (XLEN is checked by the caller). */
  lastSeq: number;
  requests: number;
  batchMax: number;
  /** Ticks that found events due and no free lane. */
  stalls: number;
  /** Most events due and unsent at the end of a tick. */
  backlogMax: number;
  /** 429 answers, retried after RETRY_MS with the same body (and the same stamp). */
  retries: number;
  /** Ticks: how late the timer fired beyond tickMs, p99 and max in ms. */
  tickLateP99Ms: number;
  tickLateMaxMs: number;
  /**
   * Round trip of each request, from its stamp to its answer (µs, an
   * encoded HDR histogram). Ticker pushes a batch to its consumers before
   * it answers the publish, so this bounds the publish leg of the latency.
   */
  rtt: string;
  errors: string[];
}

/** The server's publish_events_max; also the Redis pipeline size cap. */
const BATCH_EVENTS_MAX = 1000;
const RETRY_MS = 5;
const REQUEST_TIMEOUT_MS = 30_000;
const ERRORS_MAX = 10;

export interface Lane {
  busy: boolean;
  /** Sends n events stamped t; resolves once answered (or failed, noted in the result). */
  send(n: number, t: number): Promise<void>;
  close(): void;
}

async function tickerLanes(spec: ProducerSpec, res: ProducerResult): Promise<Lane[]> {
  const conns = await Promise.all(Array.from({ length: spec.lanes }, () => HttpRawConnection.connect(spec.port, { timeoutMs: REQUEST_TIMEOUT_MS })));
  const path = `/v1/streams/${spec.stream}/events`;
  const headers = { "Content-Type": "application/json" };
  const tail = `,"p":"${spec.pad}"}}`;
  return conns.map((first): Lane => {
    let conn = first;
    const lane: Lane = {
      busy: false,
      async send(n, t) {
        // The server closes keep-alive connections idle for 10 s; a lane that
        // sat out a quiet spell reconnects (nothing was in flight on it).
        if (conn.failed) conn = await HttpRawConnection.connect(spec.port, { timeoutMs: REQUEST_TIMEOUT_MS });
        const event = `{"type":"tick","payload":{"t":${t}${tail}`;
        const body = Buffer.from(`{"events":[${(event + ",").repeat(n - 1)}${event}]}`, "latin1");
        for (;;) {
          let r: HttpRawReply;
          try {
            r = await conn.post(path, body, headers);
          } catch (err) {
            return error(res, `POST of ${n} events: ${(err as Error).message}`);
          }
          if (r.status === 429) {
            res.retries++;
            await new Promise((ok) => setTimeout(ok, RETRY_MS));
            continue;
          }
          if (r.status !== 200) return error(res, `POST of ${n} events: HTTP ${r.status}: ${r.body.toString("utf8", 0, 200)}`);
          const a = JSON.parse(r.body.toString("utf8")) as { count: number; last_seq: number };
          if (a.count !== n) error(res, `POST of ${n} events appended ${a.count}`);
          res.accepted += a.count;
          if (a.last_seq > res.lastSeq) res.lastSeq = a.last_seq;
          return;
        }
      },
      close: () => conn.close(),
    };
    return lane;
  });
}

async function redisLanes(spec: ProducerSpec, res: ProducerResult): Promise<Lane[]> {
  return respXaddLanes(spec.port, spec.lanes, spec.stream, spec.pad, res);
}

/**
 * Redis lanes over raw sockets: `XADD key * t <stamp> p <pad>` × n as one
 * pipeline, RESP encoded here (everything but the stamp is fixed).
 */
export async function respXaddLanes(port: number, lanes: number, key: string, pad: string, res: { accepted: number; errors: string[] }): Promise<Lane[]> {
  const conns = await Promise.all(Array.from({ length: lanes }, () => RespConn.connect(port)));
  const head = `*7\r\n$4\r\nXADD\r\n$${key.length}\r\n${key}\r\n$1\r\n*\r\n$1\r\nt\r\n`;
  const tail = `\r\n$1\r\np\r\n$${pad.length}\r\n${pad}\r\n`;
  return conns.map((conn): Lane => ({
    busy: false,
    async send(n, t) {
      const ts = String(t);
      const cmd = `${head}$${ts.length}\r\n${ts}${tail}`;
      try {
        await conn.send(Buffer.from(cmd.repeat(n), "latin1"), n);
        res.accepted += n;
      } catch (err) {
        error(res, `pipeline of ${n} XADDs: ${(err as Error).message}`);
      }
    },
    close: () => conn.close(),
  }));
}

/** Keeps the first ERRORS_MAX failures of a producer. */
export function error(res: { errors: string[] }, msg: string): void {
  if (res.errors.length < ERRORS_MAX) res.errors.push(msg);
}

export async function runProducer(spec: ProducerSpec): Promise<ProducerResult> {
  const res: ProducerResult = {
    sent: 0,
    accepted: 0,
    measured: 0,
    lastSeq: 0,
    requests: 0,
    batchMax: 0,
    stalls: 0,
    backlogMax: 0,
    retries: 0,
    tickLateP99Ms: 0,
    tickLateMaxMs: 0,
    rtt: "",
    errors: [],
  };
  const lanes = spec.target === "ticker" ? await tickerLanes(spec, res) : await redisLanes(spec, res);
  try {
    await pace({ ...spec, batchEventsMax: BATCH_EVENTS_MAX, stopAtEnd: false }, lanes, res);
  } finally {
    for (const lane of lanes) lane.close();
  }
  return res;
}

/** What pace() needs of a lane: one request at a time. */
export interface PacedLane {
  busy: boolean;
  /** Sends n events stamped t; resolves once answered (failures are the lane's to record). */
  send(n: number, t: number): Promise<void>;
}

export interface PaceOptions {
  rate: number;
  t0: number;
  tStart: number;
  tEnd: number;
  tickMs: number;
  batchEventsMax: number;
  /** Stop sending at tEnd even if behind (what is still due would be stamped after the window). */
  stopAtEnd: boolean;
}

/** The counters pace() fills in (ProducerResult and the peers' results have them). */
export interface PaceStats {
  sent: number;
  measured: number;
  requests: number;
  batchMax: number;
  stalls: number;
  backlogMax: number;
  tickLateP99Ms: number;
  tickLateMaxMs: number;
  rtt: string;
}

/**
 * The pacing loop described at the top of this file, over any lanes (Ticker,
 * Redis, NATS): resolves once every batch sent has been answered.
 */
export async function pace(o: PaceOptions, lanes: PacedLane[], res: PaceStats): Promise<void> {
  const rtt = newHistogram();
  const total = Math.floor(((o.tEnd - o.t0) * o.rate) / 1000);
  const late: number[] = [];
  let inFlight = 0;
  await new Promise((r) => setTimeout(r, Math.max(0, o.t0 - wallNow())));
  await new Promise<void>((resolve) => {
    let lastTick = wallNow();
    let stopped = false;
    const tick = () => {
      const now = wallNow();
      late.push(now - lastTick - o.tickMs);
      lastTick = now;
      if (o.stopAtEnd && now >= o.tEnd) {
        clearInterval(timer);
        stopped = true;
        if (inFlight === 0) resolve();
        return;
      }
      let due = Math.min(total, Math.floor(((Math.min(now, o.tEnd) - o.t0) * o.rate) / 1000)) - res.sent;
      for (const lane of lanes) {
        if (due <= 0) break;
        if (lane.busy) continue;
        const n = Math.min(due, o.batchEventsMax);
        // One stamp per batch, taken right before its body is built and written.
        const t = wallNow();
        const inWindow = t >= o.tStart && t < o.tEnd;
        if (inWindow) res.measured += n;
        res.sent += n;
        res.requests++;
        res.batchMax = Math.max(res.batchMax, n);
        due -= n;
        lane.busy = true;
        inFlight++;
        void lane.send(n, t).then(() => {
          if (inWindow) rtt.recordValue(Math.min(LATENCY_US_MAX, Math.max(0, Math.round((wallNow() - t) * 1000))));
          lane.busy = false;
          inFlight--;
          if ((stopped || res.sent === total) && inFlight === 0) resolve();
        });
      }
      if (due > 0) {
        res.stalls++;
        res.backlogMax = Math.max(res.backlogMax, due);
      }
      if (res.sent === total) clearInterval(timer);
    };
    const timer = setInterval(tick, o.tickMs);
  });
  late.sort((a, b) => a - b);
  res.tickLateP99Ms = late[Math.floor(late.length * 0.99)] ?? 0;
  res.tickLateMaxMs = late.at(-1) ?? 0;
  res.rtt = encodeHistogram(rtt);
}

// As a worker: answer clock probes until told the spec, then produce and report.
if (!isMainThread && (workerData as { role?: string } | null)?.role === "consume-producer") serveProducerThread(runProducer);
