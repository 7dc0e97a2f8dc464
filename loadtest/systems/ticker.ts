// Ticker as the benchmarks drive it: the server started as they all start it
// (with the node flags and stdout log a profiling run asks for), producer
// lanes that publish stamped events over raw HTTP, and WebSocket consumers
// that record every event's latency (receive time − the producer's stamp
// `t`) and check the seqs for gaps and duplicates.
//
// Per-event work is a byte scan, not JSON.parse: at 1,000 consumers every
// event is received 1,000 times, and parsing each ~200-byte object would be
// the benchmark's own bottleneck. Every event object the server renders
// starts with {"seq":N, and its payload (ours) with {"t":T, so the scan
// finds both; an event without them shows up as a seq gap, never silently.
import WebSocket from "ws";
import { TickerProcess, type TickerOptions } from "../../test/harness/ticker.js";
import { HttpRawClient, HttpRawConnection, type HttpRawReply } from "../../src/client/http.js";
import { LightWebSocket } from "../lib/light-ws.js";
import { newRecorder, record, wallNow, type LatencyRecorder, type Window } from "../lib/latency.js";
import { noteError, type Lane } from "../lib/pacing.js";
import { udecimalAt, uintAt } from "../lib/scan.js";

/**
 * `ticker serve --port 0` on `dataDir`, default config but for `args`.
 * TICKER_BENCH_SERVER_FLAGS adds node flags (e.g. "--cpu-prof
 * --cpu-prof-dir=.bench/prof"); TICKER_BENCH_SERVER_LOG names a file that
 * gets the server's stdout (e.g. with --trace-gc).
 */
export function startTicker(dataDir: string, opts: Pick<TickerOptions, "args" | "onListening" | "readyTimeoutMs"> = {}): Promise<TickerProcess> {
  const nodeFlags = (process.env.TICKER_BENCH_SERVER_FLAGS ?? "").split(" ").filter(Boolean);
  return TickerProcess.start(dataDir, { ...opts, nodeFlags, stdoutFile: process.env.TICKER_BENCH_SERVER_LOG || undefined });
}

/** Creates `stream` (consumers of an unknown stream are refused with 1008 stream_not_found). */
export async function createStream(server: TickerProcess, stream: string, config = "{}"): Promise<void> {
  const r = await fetch(`${server.url}/v1/streams/${stream}`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: config,
    signal: AbortSignal.timeout(30_000),
  });
  if (r.status !== 201 && r.status !== 200) throw new Error(`PUT /v1/streams/${stream}: HTTP ${r.status}: ${await r.text()}`);
}

// ---- producer lanes ------------------------------------------------------------

const RETRY_MS = 5;
const REQUEST_TIMEOUT_MS = 30_000;

/** What the Ticker lanes count beside pace()'s counters. */
export interface TickerLaneStats {
  /** Events acknowledged (unless listed in errors), warm-up included. */
  accepted: number;
  /** Highest last_seq answered. */
  lastSeq: number;
  /** 429 answers, retried after RETRY_MS with the same body (and the same stamp). */
  retries: number;
  errors: string[];
}

/**
 * Producer lanes to Ticker: one keep-alive raw HTTP connection each, a lane's
 * batch one `POST /v1/streams/<stream>/events` of n events
 * `{"type":"tick","payload":{"t":<stamp>,"p":"<pad>"}}`, retried after a 429.
 */
export async function tickerLanes(port: number, lanes: number, stream: string, pad: string, res: TickerLaneStats): Promise<Lane[]> {
  const conns = await HttpRawClient.connections(port, lanes, { timeoutMs: REQUEST_TIMEOUT_MS });
  const path = `/v1/streams/${stream}/events`;
  const headers = { "Content-Type": "application/json" };
  const tail = `,"p":"${pad}"}}`;
  return conns.map((first): Lane => {
    let conn = first;
    const lane: Lane = {
      busy: false,
      async send(n, t) {
        // The server closes keep-alive connections idle for 10 s; a lane that
        // sat out a quiet spell reconnects (nothing was in flight on it).
        if (conn.failed) conn = await HttpRawConnection.connect(port, { timeoutMs: REQUEST_TIMEOUT_MS });
        const event = `{"type":"tick","payload":{"t":${t}${tail}`;
        const body = Buffer.from(`{"events":[${(`${event},`).repeat(n - 1)}${event}]}`, "latin1");
        for (;;) {
          let r: HttpRawReply;
          try {
            r = await conn.post(path, body, headers);
          } catch (err) {
            return noteError(res, `POST of ${n} events: ${(err as Error).message}`);
          }
          if (r.status === 429) {
            res.retries++;
            await new Promise((ok) => setTimeout(ok, RETRY_MS));
            continue;
          }
          if (r.status !== 200) return noteError(res, `POST of ${n} events: HTTP ${r.status}: ${r.body.toString("utf8", 0, 200)}`);
          const a = JSON.parse(r.body.toString("utf8")) as { count: number; last_seq: number };
          if (a.count !== n) noteError(res, `POST of ${n} events appended ${a.count}`);
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

// ---- WebSocket consumers ------------------------------------------------------------

const EVENTS_HEAD = Buffer.from(`{"type":"events","events":[`);
const SEQ_KEY = Buffer.from(`{"seq":`);
const T_KEY = Buffer.from(`"payload":{"t":`);

function startsWith(buf: Buffer, head: Buffer): boolean {
  return buf.length >= head.length && buf.compare(head, 0, head.length, 0, head.length) === 0;
}

export interface WsSetSpec {
  port: number;
  stream: string;
  consumers: number;
  /** `ws` (default) or the light client of loadtest/lib/light-ws.ts (the fan-out rows: thousands of sockets in one process). */
  client?: ConsumerClient;
}

export type ConsumerClient = "ws" | "light";

export interface ConsumerSetResult extends LatencyRecorder {
  /** Fewest and most measured events one consumer got: each must equal the producer's count. */
  minPerConsumer: number;
  maxPerConsumer: number;
  /** Seq errors, unexpected messages, closes; the first few of each consumer. */
  errors: string[];
  /**
   * Heartbeats received inside the window: the server sends one when a
   * consumer has had nothing for consumer_heartbeat_interval_ms, so with
   * events flowing each one marks a consumer left waiting that long.
   */
  heartbeats: number;
  /** Events messages received inside the window, over all consumers: events per message shows how the server batched. */
  messages: number;
}

/** A consumer's errors kept for the report; more only adds noise. */
const ERRORS_PER_CONSUMER_MAX = 3;
const CONNECT_CONCURRENCY = 50;
const CONNECT_TIMEOUT_MS = 20_000;

class WsConsumer {
  socket: WebSocket | LightWebSocket | null = null;
  /** Next seq due, from hello's `from`; 0 before hello. */
  next = 0;
  measured = 0;
  readonly errors: string[] = [];
  closed = false;

  constructor(
    readonly id: number,
    private readonly set: WsConsumerSet,
  ) {}

  error(msg: string): void {
    if (this.errors.length < ERRORS_PER_CONSUMER_MAX) this.errors.push(`consumer ${this.id}: ${msg}`);
  }

  connect(): Promise<void> {
    const { port, stream } = this.set.spec;
    const path = `/v1/streams/${stream}/consume?from=latest&format=json`;
    return new Promise((resolve, reject) => {
      let hello = false;
      const message = (data: Buffer, isBinary: boolean) => {
        // Taken first: everything below is the consumer's own work on an event it already has.
        const recv = wallNow();
        if (isBinary) return this.error(`binary message of ${data.length} bytes on a JSON consumer`);
        if (startsWith(data, EVENTS_HEAD)) return this.events(data, recv);
        let m: { type?: string; from?: number; code?: string; message?: string };
        try {
          m = JSON.parse(data.toString("utf8")) as typeof m;
        } catch {
          return this.error(`unparsable message: ${data.toString("utf8", 0, 120)}`);
        }
        if (m.type === "heartbeat") {
          if (recv >= this.set.window.tStart && recv < this.set.window.tEnd) this.set.heartbeats++;
        } else if (m.type === "hello" && !hello && typeof m.from === "number") {
          hello = true;
          this.next = m.from;
          resolve();
        } else {
          this.error(`unexpected message: ${data.toString("utf8", 0, 200)}`);
        }
      };
      const closed = (code: number, reason: string) => {
        if (!this.set.closing) this.error(`closed by the server: ${code} ${reason}`);
        this.closed = true;
        if (!hello) reject(new Error(`closed before hello: ${code} ${reason}`));
      };
      if (this.set.spec.client === "light") {
        this.socket = new LightWebSocket(port, path, {
          message,
          open: () => {},
          close: (code, err) => {
            if (err) this.error(`socket error: ${err.message}`);
            closed(code, err?.message ?? "");
          },
        });
        return;
      }
      const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, {
        perMessageDeflate: false,
        // The server sends JSON it rendered itself; checking every byte is UTF-8 would be our cost, not its.
        skipUTF8Validation: true,
        handshakeTimeout: CONNECT_TIMEOUT_MS,
      });
      this.socket = ws;
      ws.on("message", message);
      ws.on("error", (err) => {
        this.error(`socket error: ${err.message}`);
        if (!hello) reject(err);
      });
      ws.on("close", (code, reason) => closed(code, reason.toString()));
    });
  }

  private events(buf: Buffer, recv: number): void {
    const { tStart, tEnd } = this.set.window;
    const rec = this.set.rec;
    if (recv >= tStart && recv < tEnd) this.set.messages++;
    let at = buf.indexOf(SEQ_KEY, EVENTS_HEAD.length);
    if (at === -1) return this.error("events message without events");
    while (at !== -1) {
      const seq = uintAt(buf, at + SEQ_KEY.length);
      if (seq !== this.next) {
        this.error(seq < this.next ? `duplicate: seq ${seq} after ${this.next - 1}` : `gap: seq ${seq} where ${this.next} was due`);
        if (seq < this.next) {
          at = buf.indexOf(SEQ_KEY, at + SEQ_KEY.length);
          continue;
        }
      }
      this.next = seq + 1;
      const tAt = buf.indexOf(T_KEY, at + SEQ_KEY.length);
      const t = tAt === -1 ? NaN : udecimalAt(buf, tAt + T_KEY.length);
      if (Number.isNaN(t)) {
        this.error(`seq ${seq}: no "payload":{"t": stamp`);
        return;
      }
      if (t >= tStart && t < tEnd) this.measured++;
      record(rec, t, recv, tStart, tEnd);
      at = buf.indexOf(SEQ_KEY, tAt + T_KEY.length);
    }
  }
}

/** `consumers` WebSocket consumers of one stream, all recording into one histogram. */
export class WsConsumerSet {
  readonly rec = newRecorder();
  heartbeats = 0;
  messages = 0;
  closing = false;
  /** Nothing is measured until the window is set (after every consumer has connected). */
  window: Window = { tStart: Infinity, tEnd: Infinity };
  private readonly consumers: WsConsumer[];

  constructor(readonly spec: WsSetSpec) {
    this.consumers = Array.from({ length: spec.consumers }, (_, i) => new WsConsumer(i, this));
  }

  /** Connects every consumer, a few at a time; resolves once all have their hello. */
  async connect(): Promise<void> {
    let next = 0;
    const lane = async () => {
      while (next < this.consumers.length) await this.consumers[next++].connect();
    };
    await Promise.all(Array.from({ length: Math.min(CONNECT_CONCURRENCY, this.consumers.length) }, lane));
  }

  /** Lowest next-due seq over the consumers: all have everything below it. */
  lowestNext(): number {
    let low = Infinity;
    for (const c of this.consumers) low = Math.min(low, c.next);
    return low;
  }

  /** Resolves once every consumer has seq `last`, or after `timeoutMs`; true if all did. */
  async waitFor(last: number, timeoutMs: number): Promise<boolean> {
    const t0 = performance.now();
    while (this.lowestNext() <= last) {
      if (performance.now() - t0 > timeoutMs || this.consumers.every((c) => c.closed)) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  }

  result(): ConsumerSetResult {
    let min = Infinity;
    let max = 0;
    const errors: string[] = [];
    for (const c of this.consumers) {
      min = Math.min(min, c.measured);
      max = Math.max(max, c.measured);
      errors.push(...c.errors);
    }
    const r = this.rec;
    return {
      hist: r.hist,
      measured: r.measured,
      total: r.total,
      negative: r.negative,
      clipped: r.clipped,
      minPerConsumer: min,
      maxPerConsumer: max,
      errors,
      heartbeats: this.heartbeats,
      messages: this.messages,
    };
  }

  close(): void {
    this.closing = true;
    for (const c of this.consumers) c.socket?.terminate();
  }
}
