// The consuming side of bench-consume: WebSocket consumers of one Ticker
// stream and one Redis XREAD reader, each recording every event's latency
// (receive time − the producer's send stamp `t`) into an HDR histogram and
// checking the seqs (ids) for gaps and duplicates.
//
// Per-event work is a byte scan, not JSON.parse: at 1,000 consumers every
// event is received 1,000 times, and parsing each ~200-byte object would be
// the benchmark's own bottleneck. Every event object the server renders
// starts with {"seq":N, and its payload (ours) with {"t":T, so the scan
// finds both; an event without them shows up as a seq gap, never silently.
import hdr from "hdr-histogram-js";
import WebSocket from "ws";
import type { Histogram } from "hdr-histogram-js";
import type { ReplyReader, RespConn } from "./peers/redis.js";
import { encodeCommand, ReplyCounter, RespProtocolError } from "./peers/resp.js";

/** Latencies are recorded in microseconds, 1 µs to 60 s, 3 significant digits. */
export const LATENCY_US_MAX = 60_000_000;

export function newHistogram(): Histogram {
  return hdr.build({
    bitBucketSize: 32, // counts per bucket up to 2^31: far above the ~10^7 deliveries of a row
    autoResize: false,
    lowestDiscernibleValue: 1,
    highestTrackableValue: LATENCY_US_MAX,
    numberOfSignificantValueDigits: 3,
  });
}

export const encodeHistogram = (h: Histogram): string => hdr.encodeIntoCompressedBase64(h);
export const decodeHistogram = (s: string): Histogram => hdr.decodeFromCompressedBase64(s, 32, false);

/** The same wall clock in every thread and process of the run (ms, fractional); see bench-consume's clock note. */
export const wallNow = (): number => performance.timeOrigin + performance.now();

/** What one side measured; the parts the producer's count is checked against. */
export interface LatencyRecorder {
  hist: Histogram;
  /** Events with tStart <= t < tEnd received, over all consumers. */
  measured: number;
  /** Every event received, warm-up included, over all consumers. */
  total: number;
  /** Latencies below zero (a clock step, or thread clocks apart): recorded as 0. */
  negative: number;
  /** Above LATENCY_US_MAX: recorded as the max. */
  clipped: number;
}

export function newRecorder(): LatencyRecorder {
  return { hist: newHistogram(), measured: 0, total: 0, negative: 0, clipped: 0 };
}

/** Records one latency of an event sent at `t` and received at `recv` (ms), if `t` is in the window. */
export function record(r: LatencyRecorder, t: number, recv: number, tStart: number, tEnd: number): void {
  r.total++;
  if (t < tStart || t >= tEnd) return;
  r.measured++;
  let us = Math.round((recv - t) * 1000);
  if (us < 0) {
    r.negative++;
    us = 0;
  } else if (us > LATENCY_US_MAX) {
    r.clipped++;
    us = LATENCY_US_MAX;
  }
  r.hist.recordValue(us);
}

// ---- byte scanning -----------------------------------------------------------

const ZERO = 48;
const NINE = 57;
const DOT = 46;

/** An unsigned decimal integer at `at`; NaN if there is no digit. */
export function uintAt(buf: Uint8Array, at: number): number {
  let v = 0;
  let c = buf[at];
  if (!(c >= ZERO && c <= NINE)) return NaN;
  for (; c >= ZERO && c <= NINE; c = buf[++at]) v = v * 10 + (c - ZERO);
  return v;
}

/** An unsigned decimal with an optional fraction (what String(ms) writes for our stamps); NaN if none. */
export function udecimalAt(buf: Uint8Array, at: number): number {
  let c = buf[at];
  if (!(c >= ZERO && c <= NINE)) return NaN;
  let v = 0;
  for (; c >= ZERO && c <= NINE; c = buf[++at]) v = v * 10 + (c - ZERO);
  if (c !== DOT) return v;
  let frac = 0;
  let scale = 1;
  for (c = buf[++at]; c >= ZERO && c <= NINE; c = buf[++at]) {
    frac = frac * 10 + (c - ZERO);
    scale *= 10;
  }
  return v + frac / scale;
}

const EVENTS_HEAD = Buffer.from(`{"type":"events","events":[`);
const SEQ_KEY = Buffer.from(`{"seq":`);
const T_KEY = Buffer.from(`"payload":{"t":`);

function startsWith(buf: Buffer, head: Buffer): boolean {
  return buf.length >= head.length && buf.compare(head, 0, head.length, 0, head.length) === 0;
}

// ---- Ticker: WebSocket consumers --------------------------------------------

export interface WsSetSpec {
  port: number;
  stream: string;
  consumers: number;
}

/** Wall-clock window (ms, wallNow) whose events are measured: stamps in [tStart, tEnd). */
export interface Window {
  tStart: number;
  tEnd: number;
}

export interface ConsumerSetResult {
  hist: Histogram;
  measured: number;
  total: number;
  negative: number;
  clipped: number;
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
  ws: WebSocket | null = null;
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
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/streams/${stream}/consume?from=latest&format=json`, {
        perMessageDeflate: false,
        // The server sends JSON it rendered itself; checking every byte is UTF-8 would be our cost, not its.
        skipUTF8Validation: true,
        handshakeTimeout: CONNECT_TIMEOUT_MS,
      });
      this.ws = ws;
      let hello = false;
      ws.on("message", (data: Buffer, isBinary: boolean) => {
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
      });
      ws.on("error", (err) => {
        this.error(`socket error: ${err.message}`);
        if (!hello) reject(err);
      });
      ws.on("close", (code, reason) => {
        if (!this.set.closing) this.error(`closed by the server: ${code} ${reason.toString()}`);
        this.closed = true;
        if (!hello) reject(new Error(`closed before hello: ${code} ${reason.toString()}`));
      });
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
    return { hist: r.hist, measured: r.measured, total: r.total, negative: r.negative, clipped: r.clipped, minPerConsumer: min, maxPerConsumer: max, errors, heartbeats: this.heartbeats, messages: this.messages };
  }

  close(): void {
    this.closing = true;
    for (const c of this.consumers) c.ws?.terminate();
  }
}

// ---- Redis: one XREAD BLOCK reader ------------------------------------------

const CR = 13;
const LF = 10;
const MINUS = 45;
const STAR = 42;
const DOLLAR = 36;

/** Collects the bytes of one RESP reply and notes the instant its last byte arrived. */
class WholeReply implements ReplyReader<Buffer> {
  private readonly counter = new ReplyCounter();
  private chunks: Buffer[] = [];
  private due = 0;
  /** wallNow() when the reply completed: the moment the client has its events. */
  doneAt = 0;

  start(): this {
    this.chunks = [];
    this.due = this.counter.replies + 1;
    return this;
  }

  feed(chunk: Buffer): boolean {
    this.chunks.push(chunk);
    this.counter.feed(chunk);
    if (this.counter.replies < this.due) return false;
    this.doneAt = wallNow();
    if (this.counter.replies > this.due || !this.counter.idle) throw new RespProtocolError("bytes past the XREAD reply");
    return true;
  }

  result(): Buffer {
    return this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
  }
}

/** A cursor over one complete reply: `XREAD` answers `*1 *2 [$key, *N [*2 [$id, *2k [$f, $v]…]]]`. */
class RespCursor {
  at = 0;
  constructor(readonly buf: Buffer) {}

  /** `<type><n>CRLF` at the cursor: n (-1 for a null). Throws on an error reply or another type. */
  header(type: number): number {
    const b = this.buf;
    const t = b[this.at];
    if (t === MINUS) throw new RespProtocolError(`error reply: ${b.toString("utf8", this.at + 1, b.indexOf(CR, this.at))}`);
    if (t !== type) throw new RespProtocolError(`"${String.fromCharCode(t)}" where "${String.fromCharCode(type)}" was due at byte ${this.at}`);
    let at = this.at + 1;
    const neg = b[at] === MINUS;
    if (neg) at++;
    const n = uintAt(b, at);
    while (b[at] !== CR) at++;
    if (b[at + 1] !== LF || Number.isNaN(n)) throw new RespProtocolError(`bad header at byte ${this.at}`);
    this.at = at + 2;
    return neg ? -n : n;
  }

  /** A bulk string: its start; the cursor moves past it. */
  bulk(): { at: number; len: number } {
    const len = this.header(DOLLAR);
    const at = this.at;
    this.at += len + 2;
    return { at, len };
  }
}

const T_FIELD = Buffer.from("t");

/**
 * One reader looping `XREAD BLOCK 0 STREAMS key <last id>` on its own
 * connection. The first read asks for `$` (entries added after it); each
 * next one for entries after the last id it got. Re-asking for `$` every
 * time, as a naive loop does, would lose whatever was added between two
 * reads, and the count check below would say so.
 */
export class XreadConsumer {
  readonly rec = newRecorder();
  readonly errors: string[] = [];
  private lastId = "$";
  private prevMs = -1;
  private prevSeq = -1;
  reads = 0;
  private stopped = false;
  private loop: Promise<void> | null = null;

  constructor(
    private readonly conn: RespConn,
    private readonly key: string,
    private readonly tStart: number,
    private readonly tEnd: number,
  ) {}

  /** Writes the first XREAD before returning, so every entry added from now on is seen. */
  start(): void {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    const reader = new WholeReply();
    while (!this.stopped) {
      let buf: Buffer;
      try {
        buf = await this.conn.request(encodeCommand(["XREAD", "BLOCK", "0", "STREAMS", this.key, this.lastId]), reader.start());
      } catch (err) {
        if (!this.stopped) this.errors.push(`XREAD: ${(err as Error).message}`);
        return;
      }
      this.reads++;
      try {
        this.walk(buf, reader.doneAt);
      } catch (err) {
        this.errors.push(`XREAD reply: ${(err as Error).message}`);
        return;
      }
    }
  }

  private walk(buf: Buffer, recv: number): void {
    const c = new RespCursor(buf);
    if (c.header(STAR) !== 1) throw new RespProtocolError("expected one stream in the reply");
    if (c.header(STAR) !== 2) throw new RespProtocolError("expected [key, entries]");
    c.bulk();
    const n = c.header(STAR);
    let lastAt = 0;
    let lastLen = 0;
    for (let e = 0; e < n; e++) {
      if (c.header(STAR) !== 2) throw new RespProtocolError(`entry ${e} is not [id, fields]`);
      const id = c.bulk();
      const dash = buf.indexOf(MINUS, id.at);
      const ms = uintAt(buf, id.at);
      const seq = uintAt(buf, dash + 1);
      if (ms < this.prevMs || (ms === this.prevMs && seq <= this.prevSeq)) {
        this.errors.push(`id ${buf.toString("latin1", id.at, id.at + id.len)} does not rise past ${this.prevMs}-${this.prevSeq}`);
      }
      this.prevMs = ms;
      this.prevSeq = seq;
      lastAt = id.at;
      lastLen = id.len;
      const items = c.header(STAR);
      let t = NaN;
      for (let f = 0; f < items; f += 2) {
        const name = c.bulk();
        const value = c.bulk();
        if (name.len === 1 && buf[name.at] === T_FIELD[0]) t = udecimalAt(buf, value.at);
      }
      if (Number.isNaN(t)) throw new RespProtocolError(`entry ${e}: no field t`);
      record(this.rec, t, recv, this.tStart, this.tEnd);
    }
    if (n > 0) this.lastId = buf.toString("latin1", lastAt, lastAt + lastLen);
  }

  /** Entries read so far, warm-up included. */
  get total(): number {
    return this.rec.total;
  }

  /** Stops after the read in flight: closes the connection, whose blocked XREAD then fails unreported. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.conn.close();
    await this.loop;
  }
}
