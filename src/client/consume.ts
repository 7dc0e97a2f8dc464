// Push consumption for the client (docs/client.md, "Consume"): a
// subscription is one async iterator over a stream's events, fed by a
// consume WebSocket that it reconnects with backoff, resuming where the
// group (or, without one, the caller) got to. Its seq rules are position.ts,
// the socket is connection.ts, the buffer between socket and caller
// queue.ts; this file holds the lifecycle around them. In a cluster the
// upgrade may be refused with the stream's owner (307): followed at once and
// remembered (routes.ts, shared with the client's HTTP requests), and a
// connection ended because the shard moved reconnects through the url given.
import { decodeEventBatch } from "../wire/client.js";
import { Connection, reconnects } from "./connection.js";
import { TickerError } from "./errors.js";
import { eventsOf, type EventJson } from "./event.js";
import { JsonEvent, type ConsumedEvent } from "./json-event.js";
import { Position } from "./position.js";
import { type Base, Routes, staleRoute } from "./routes.js";
import { EventQueue } from "./queue.js";
import { checkConsumeOptions, consumeQuery, type ConsumeOptions, type Hello, type Role, type SubscriptionEvents } from "./consume-options.js";

export type { ConsumedEvent } from "./json-event.js";
export type { ConsumeOptions, Hello, Role, SubscriptionEvents } from "./consume-options.js";

/** The server's documented default window; sent always, so the client knows the bound it buffers to. */
const WINDOW_DEFAULT = 10_000;
const RECONNECT_INITIAL_DELAY_MS = 100;
const RECONNECT_MAX_DELAY_MS = 5000;
/** The server pings every 3 s at most (every second in a group) and sends a heartbeat after 500 ms of silence: this long without either, the connection is dead. */
const SILENCE_MS_MAX = 5000;
/** A seek or nack whose barrier pong has not come this long pings again (any later pong is a barrier too). */
const BARRIER_PING_MS = 1000;
const TICK_MS = 500;
/** The server's cap on a nack reason. */
const NACK_REASON_CHARS_MAX = 1024;

/** The seqs a filtered or conflated message covers, and how many of them conflation left out. */
interface Range {
  from: number;
  to: number;
  conflated: number;
}

function rangeOf(m: Record<string, unknown>): Range {
  return { from: m.from_seq as number, to: m.to_seq as number, conflated: typeof m.conflated === "number" ? m.conflated : 0 };
}

/** Where a subscription connects: the client's url and token, and its route cache (one of its own if not given). */
export interface ConsumeConnection {
  url: string;
  token?: string;
  routes?: Routes;
}

/** Subscribes to `stream`; see Subscription. */
export function consume(conn: ConsumeConnection, stream: string, opts: ConsumeOptions = {}): Subscription {
  return new Subscription(conn, stream, opts);
}

/**
 * One async iterator over a stream's events (iterating it twice shares
 * that iterator). Delivery is at least once: after a reconnect, a nack or a
 * seek, events handed out before and not acked come again; none is skipped.
 */
export class Subscription implements AsyncIterableIterator<ConsumedEvent> {
  /** Settles on the first hello: resolves with it, or rejects with the TickerError that ended the subscription before one came. */
  readonly ready: Promise<Hello>;
  /** The role of the latest hello; null before the first. */
  role: Role | null = null;

  private readonly position: Position;
  private readonly windowEvents: number;
  private connection: Connection | null = null;
  private readonly queue = new EventQueue();
  private waiter: { resolve: (r: IteratorResult<ConsumedEvent>) => void; reject: (e: unknown) => void } | null = null;
  private failure: TickerError | null = null;
  private closed = false;
  private closedWaiters: Array<() => void> = [];
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly tick: NodeJS.Timeout;
  private lastHeardMs = Date.now();
  private lastPingMs = 0;
  private ackQueued = false;
  private settleReady: { resolve: (h: Hello) => void; reject: (e: TickerError) => void } | null = null;
  /** The range message before a filtered or conflated binary batch. */
  private range: Range | null = null;
  private readonly filtered: boolean;
  private conflatedEvents = 0;
  private readonly listeners: { [K in keyof SubscriptionEvents]: Set<SubscriptionEvents[K]> } = { role: new Set(), reset: new Set(), reconnect: new Set() };
  private readonly routes: Routes;
  /** The base the current connection went to (the url given, or the stream's owner), and its URL. */
  private base: Base = "";
  private target = "";
  /** Redirects followed since the last hello or reconnect. */
  private hops = 0;

  constructor(
    private readonly conn: ConsumeConnection,
    readonly stream: string,
    private readonly opts: ConsumeOptions,
  ) {
    checkConsumeOptions(opts);
    this.routes = conn.routes ?? new Routes(new URL(conn.url));
    this.windowEvents = opts.window ?? WINDOW_DEFAULT;
    this.filtered = opts.types !== undefined || opts.keys !== undefined;
    this.position = new Position(opts.group !== undefined, this.windowEvents);
    this.ready = new Promise((resolve, reject) => (this.settleReady = { resolve, reject }));
    this.ready.catch(() => {}); // also thrown by the iterator: a caller that never awaits `ready` is not an unhandled rejection
    this.tick = setInterval(() => this.onTick(), TICK_MS);
    this.connect();
  }

  /** The consumer group; undefined for a plain tail. */
  get group(): string | undefined {
    return this.opts.group;
  }

  /**
   * With `conflate: "key"`, how many events the server has left out of the
   * messages this subscription took so far (the newest of their key came
   * instead). A stretch sent again after a reconnect is counted again.
   */
  get conflated(): number {
    return this.conflatedEvents;
  }

  /** Events received and not yet pulled. At most `window` plus the messages already read from the socket when it paused (docs/client.md). */
  get buffered(): number {
    return this.queue.count;
  }

  /** Listens for a role change, a reset or a reconnect; returns a function that stops listening. */
  on<K extends keyof SubscriptionEvents>(name: K, cb: SubscriptionEvents[K]): () => void {
    this.listeners[name].add(cb);
    return () => this.listeners[name].delete(cb);
  }

  /**
   * Acks every event up to `seq` (cumulative; becomes the group's
   * checkpoint). Acks are sent once the current turn of the event loop
   * ends, coalesced. False when `seq` was not handed out since the position
   * last moved (it will come again) or is acked already.
   */
  ack(seq: number): boolean {
    this.needGroup("ack");
    if (this.closed || this.failure || !this.position.ack(seq)) return false;
    if (!this.ackQueued) {
      this.ackQueued = true;
      setImmediate(() => this.flushAck());
    }
    return true;
  }

  /**
   * Redelivery from `seq` (acks what is below it): events after it that were
   * buffered are dropped and come again; the max_attempts-th nack of one seq
   * dead-letters it to `{stream}.dlq` and delivery goes on after it. False
   * when `seq` is not a delivered, unacked event of this connection.
   */
  nack(seq: number, reason = ""): boolean {
    this.needGroup("nack");
    if (reason.length > NACK_REASON_CHARS_MAX) throw new TickerError(400, "invalid_message", `a nack reason is at most ${NACK_REASON_CHARS_MAX} characters`);
    if (this.connection === null || this.position.expected === null || !this.position.canNack(seq)) return false;
    this.restart({ type: "nack", seq, reason }, this.position.nack(seq));
    return true;
  }

  /** Moves delivery to `seq` (at most head_seq + 1). The checkpoint stays until the next ack. */
  seek(seq: number): void {
    if (!Number.isSafeInteger(seq) || seq < 1) throw new TickerError(400, "invalid_message", "a seek's seq is an integer >= 1");
    if (this.closed || this.failure) throw new TickerError(0, "closed", "the subscription is closed");
    if (this.connection === null || this.position.expected === null)
      throw new TickerError(409, "not_active", "only an active, connected subscription can seek");
    this.seekTo(seq);
  }

  /** Ends the iteration and the connection (pending acks are sent first). */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.flushAck();
      this.stop();
      this.settleReady?.reject(new TickerError(0, "closed", "the subscription was closed before the server's hello"));
      this.settleReady = null;
      this.waiter?.resolve({ value: undefined, done: true });
      this.waiter = null;
      this.connection?.close(new TickerError(0, "closed", "the subscription was closed"));
    }
    if (this.connection === null) return Promise.resolve();
    return new Promise((resolve) => this.closedWaiters.push(resolve));
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<ConsumedEvent>> {
    if (this.failure) return Promise.reject(this.failure);
    const e = this.take();
    if (e !== null) return Promise.resolve({ value: e, done: false });
    if (this.closed) return Promise.resolve({ value: undefined, done: true });
    if (this.waiter) return Promise.reject(new TickerError(0, "closed", "next() called again before the previous one settled"));
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  async return(): Promise<IteratorResult<ConsumedEvent>> {
    await this.close();
    return { value: undefined, done: true };
  }

  // ---- the connection ------------------------------------------------------

  /** Opens a connection to `to` (an http(s) URL), or to the stream's owner as remembered, else the url given. */
  private connect(to: string | null = null): void {
    this.retryTimer = null;
    this.lastHeardMs = Date.now();
    if (to === null) this.base = this.routes.baseFor(this.stream);
    this.target = to ?? this.base + this.path();
    this.connection = new Connection(this.target.replace(/^http/, "ws"), this.conn.token, {
      message: (data, isBinary) => this.onMessage(data, isBinary),
      pong: (id) => this.position.onPong(id),
      heard: () => (this.lastHeardMs = Date.now()),
      ended: (cause) => this.onEnded(cause),
    });
  }

  private path(): string {
    return `/v1/streams/${encodeURIComponent(this.stream)}/consume?${consumeQuery(this.opts, this.position.resumeFrom(), this.windowEvents)}`;
  }

  /** An upgrade refused with the stream's owner (a cluster's 307): connect there at once, a redirect and not a reconnect. */
  private follow(cause: TickerError): boolean {
    const location = cause.details.location;
    if ((cause.status !== 307 && cause.status !== 308) || typeof location !== "string") return false;
    try {
      const next = this.routes.redirect(cause.status, location, this.target, this.stream, this.path(), this.hops++);
      this.base = next.base;
      this.connect(next.url);
    } catch (err) {
      this.fail(err as TickerError);
    }
    return true;
  }

  private onEnded(cause: TickerError): void {
    this.connection = null;
    this.position.lost();
    // Buffered events come again from where the next connection resumes.
    this.purge();
    if (this.closed) {
      for (const w of this.closedWaiters.splice(0)) w();
      return;
    }
    if (this.failure || this.follow(cause)) return;
    // The owner remembered is gone, or says the shard left it: reconnect through the url given, which knows the new one.
    if (this.base !== this.routes.origin && staleRoute(cause)) this.routes.forget(this.stream, this.base);
    this.hops = 0;
    const r = this.opts.reconnect ?? {};
    if (!reconnects(cause) || this.attempt >= (r.attemptsMax ?? Number.POSITIVE_INFINITY)) return this.fail(cause);
    this.attempt++;
    const maxMs = r.maxDelayMs ?? RECONNECT_MAX_DELAY_MS;
    const ms = Math.min(maxMs, (r.initialDelayMs ?? RECONNECT_INITIAL_DELAY_MS) * 2 ** (this.attempt - 1));
    // Jittered, so that consumers dropped together do not come back together.
    const delayMs = Math.max(Math.round(ms / 2 + (Math.random() * ms) / 2), cause.retryAfterMs ?? 0);
    this.emit("reconnect", { attempt: this.attempt, delayMs, error: cause });
    if (!this.closed) this.retryTimer = setTimeout(() => this.connect(), delayMs);
  }

  private fail(e: TickerError): void {
    this.failure = e;
    this.stop();
    this.settleReady?.reject(e);
    this.settleReady = null;
    this.waiter?.reject(e);
    this.waiter = null;
    this.connection?.terminate(e);
  }

  private stop(): void {
    clearInterval(this.tick);
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.purge();
  }

  private onTick(): void {
    const c = this.connection;
    if (c === null) return;
    const now = Date.now();
    // A paused socket is not read: the server's pings wait in it.
    if (c.paused) this.lastHeardMs = now;
    else if (now - this.lastHeardMs > SILENCE_MS_MAX)
      return c.terminate(new TickerError(0, "timeout", `nothing came from the server for ${SILENCE_MS_MAX} ms`));
    if (this.position.awaitingBarrier && now - this.lastPingMs >= BARRIER_PING_MS) {
      this.lastPingMs = now;
      c.ping(this.position.nextPing());
    }
  }

  // ---- what the server sends -------------------------------------------

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (this.closed || this.failure) return;
    try {
      if (isBinary) this.onBinaryBatch(data);
      else this.onControl(JSON.parse(data.toString("utf8")));
    } catch (err) {
      const e = err instanceof TickerError ? err : new TickerError(0, "bad_response", `a consume message could not be read: ${(err as Error).message}`);
      this.fail(e);
    }
  }

  private onControl(m: Record<string, unknown>): void {
    switch (m.type) {
      case "hello":
        return this.onHello(m as unknown as Hello);
      case "events": {
        const events = (m.events as EventJson[]).map((e) => new JsonEvent(e));
        // A filtered or conflated message from the log covers from_seq..to_seq, the seqs passed over included.
        return this.onEvents(events, typeof m.from_seq === "number" ? rangeOf(m) : null);
      }
      case "range":
        // Before a filtered or conflated binary batch: the seqs it covers.
        this.range = rangeOf(m);
        return;
      case "heartbeat": {
        if (typeof m.next_seq === "number") this.position.onPassed(m.next_seq);
        const refill = this.position.onHeartbeat(m.head_seq as number, Date.now());
        if (refill !== null) this.seekTo(refill);
        return;
      }
      case "reset":
        if (this.position.onReset(m.from as number)) this.emit("reset", { from: m.from as number, reason: String(m.reason) });
        return;
      case "error":
        return this.connection?.serverError(String(m.code), String(m.message));
    }
  }

  private onHello(h: Hello): void {
    this.position.hello(h.role === "active" ? h.from : null);
    this.attempt = 0;
    this.hops = 0;
    this.settleReady?.resolve({ from: h.from, head_seq: h.head_seq, first_seq: h.first_seq, role: h.role });
    this.settleReady = null;
    if (h.role !== this.role) {
      this.role = h.role;
      this.emit("role", h.role);
    }
  }

  private onBinaryBatch(data: Buffer): void {
    const batch = decodeEventBatch(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    const records = Buffer.from(batch.records.buffer, batch.records.byteOffset, batch.records.byteLength);
    const events = eventsOf(records, this.stream);
    if (events.length !== batch.count) throw new TickerError(0, "bad_response", `an EventBatch says ${batch.count} events and holds ${events.length}`);
    const range = this.range;
    this.range = null;
    if (this.filtered && range === null) throw new TickerError(0, "bad_response", "a filtered consumer's batch came without its range message");
    this.onEvents(events, range);
  }

  /** Events in seq order; `range` (filtered or conflated messages) is the seqs they cover, else they run without a gap. */
  private onEvents(events: ConsumedEvent[], range: Range | null): void {
    const n = events.length;
    if (n === 0) return;
    const first = events[0].seq;
    const last = events[n - 1].seq;
    if (range === null) {
      if (last - first + 1 !== n) throw new TickerError(0, "bad_response", `a batch of ${n} events runs from seq ${first} to ${last}`);
    } else {
      for (let i = 1; i < n; i++) if (events[i].seq <= events[i - 1].seq) throw new TickerError(0, "bad_response", "a filtered batch is not in seq order");
      if (first < range.from || last > range.to)
        throw new TickerError(0, "bad_response", `a batch of seqs ${first}..${last} says it covers ${range.from}..${range.to}`);
    }
    const from = range?.from ?? first;
    const v = this.position.onBatch(from, range?.to ?? last);
    if (v.kind === "refill") return this.seekTo(v.from);
    if (v.kind !== "deliver") return;
    if (range !== null) this.conflatedEvents += range.conflated;
    if (v.skip === 0) this.enqueue(events);
    else this.enqueue(range === null ? events.slice(v.skip) : events.filter((e) => e.seq >= from + v.skip));
  }

  // ---- the buffer ----------------------------------------------------------

  private enqueue(events: ConsumedEvent[]): void {
    this.queue.push(events);
    const w = this.waiter;
    if (w) {
      this.waiter = null;
      w.resolve({ value: this.take() as ConsumedEvent, done: false });
    }
    // The caller is not keeping up: stop reading, the server keeps the rest in its log.
    if (this.queue.count >= this.windowEvents && this.connection && !this.connection.paused) this.connection.pause();
  }

  private take(): ConsumedEvent | null {
    const e = this.queue.shift();
    if (e === null) return null;
    this.position.pull(e.seq);
    if (this.connection?.paused && this.queue.count <= this.windowEvents / 2) this.connection.resume();
    return e;
  }

  private purge(): void {
    this.queue.clear();
    if (this.connection?.paused) this.connection.resume();
  }

  // ---- what the client sends -------------------------------------------

  private flushAck(): void {
    this.ackQueued = false;
    if (this.connection === null || this.position.expected === null) return; // the next connection resumes after it
    const seq = this.position.takeAck();
    if (seq !== null) this.connection.send({ type: "ack", seq });
  }

  private seekTo(seq: number): void {
    this.flushAck();
    this.restart({ type: "seek", seq }, this.position.seek(seq));
  }

  /** Sends a seek or nack and its barrier ping; what was buffered belongs to the old position. */
  private restart(msg: object, ping: number): void {
    this.purge();
    this.lastPingMs = Date.now();
    this.connection?.sendThenPing(msg, ping);
  }

  private needGroup(what: string): void {
    if (this.opts.group === undefined) throw new TickerError(400, "no_group", `"${what}" needs a consumer group: subscribe with a group`);
  }

  /** A listener's exception is thrown on its own, as an EventEmitter's would be, not taken for a bad message. */
  private emit<K extends keyof SubscriptionEvents>(name: K, arg: Parameters<SubscriptionEvents[K]>[0]): void {
    for (const cb of this.listeners[name]) {
      try {
        (cb as (a: typeof arg) => void)(arg);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
