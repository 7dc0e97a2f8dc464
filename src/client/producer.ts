// The producer: events are batched per stream (by count, bytes and linger),
// sent over the transport's pooled connections with several batches in
// flight across streams, retried on backpressure and lost connections, and
// never duplicated by a retry: every event carries an idempotency key (the
// caller's, or one the producer assigns). A stream has one batch in flight at
// a time, so its events land in the order they were sent. Events the producer
// holds (open, queued and in-flight batches) are bounded: `send` waits while
// the bound is reached, so a producer faster than the server slows down
// instead of growing.
import { randomBytes } from "node:crypto";
import { type BatchEncoder, checkEvent, encoderFor, type Format, type PublishEvent } from "./encode.js";
import { errorFromAnswer, TickerError } from "./errors.js";
import type { Transport } from "./transport.js";

export interface PublishResult {
  stream: string;
  first_seq: number;
  last_seq: number;
  count: number;
  duplicates: Array<{ index: number; seq: number }>;
  held?: Array<{ index: number }>;
}

export interface ProducerOptions {
  /** Wire format of publish bodies (default "binary", FlatBuffers). */
  format?: Format;
  /** Events per request at most (default 1,000, the server's default publish_events_max). */
  batchEventsMax?: number;
  /** Body bytes per request at most (default 1 MiB). */
  batchBytesMax?: number;
  /** How long an unfull batch waits for more events (default 5 ms; 0 sends at once). */
  lingerMs?: number;
  /** Batches in flight at most, over all streams (default 8). */
  inFlightMax?: number;
  /** Events held by the producer at most; `send` waits while it is reached (default 100,000). */
  bufferedEventsMax?: number;
  /** Give each event without an idempotency key one (default true): retries then never duplicate. */
  idempotencyKeys?: boolean;
  /** Attempts per batch before its error is final (default 10), with backoff from 50 ms doubling to 2 s, or Retry-After. */
  attemptsMax?: number;
  /** Called with each batch's answer. */
  onPublished?: (result: PublishResult) => void;
}

interface Batch {
  stream: string;
  body: Buffer;
  count: number;
  attempts: number;
}

interface Lane {
  stream: string;
  encoder: BatchEncoder;
  queue: Batch[];
  busy: boolean;
  linger: NodeJS.Timeout | null;
}

const BACKOFF_START_MS = 50;
const BACKOFF_MAX_MS = 2_000;

export class Producer {
  private readonly lanes = new Map<string, Lane>();
  private readonly o: Required<Omit<ProducerOptions, "onPublished">> & Pick<ProducerOptions, "onPublished">;
  private readonly keyPrefix = `p-${randomBytes(9).toString("base64url")}:`;
  private keyCounter = 0;
  private inFlight = 0;
  private buffered = 0;
  private failure: TickerError | null = null;
  private closed = false;
  /** Lanes with a queued batch waiting for an in-flight slot. */
  private readonly ready: Lane[] = [];
  private readonly roomWaiters: Array<() => void> = [];
  private readonly idleWaiters: Array<() => void> = [];
  /** Published and acknowledged so far. */
  published = 0;

  constructor(
    private readonly transport: Transport,
    options: ProducerOptions = {},
  ) {
    this.o = {
      format: options.format ?? "binary",
      batchEventsMax: options.batchEventsMax ?? 1000,
      batchBytesMax: options.batchBytesMax ?? 1024 * 1024,
      lingerMs: options.lingerMs ?? 5,
      inFlightMax: options.inFlightMax ?? 8,
      bufferedEventsMax: options.bufferedEventsMax ?? 100_000,
      idempotencyKeys: options.idempotencyKeys ?? true,
      attemptsMax: options.attemptsMax ?? 10,
      onPublished: options.onPublished,
    };
  }

  /**
   * Adds events to their stream's batch. Resolves once they are held by the
   * producer (at once, unless the bound on buffered events is reached);
   * their outcome comes with flush(). Rejects with the producer's first
   * final error, or if an event is invalid (then none of `events` is added).
   */
  async send(stream: string, events: PublishEvent | PublishEvent[]): Promise<void> {
    const list = Array.isArray(events) ? events : [events];
    for (let i = 0; i < list.length; i++) checkEvent(list[i], i);
    while (this.buffered + list.length > this.o.bufferedEventsMax && this.buffered > 0) {
      this.check();
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
    }
    this.check();
    const lane = this.lane(stream);
    for (let i = 0; i < list.length; i++) {
      const e = list[i];
      const key = e.idempotency_key ?? (this.o.idempotencyKeys ? this.keyPrefix + this.keyCounter++ : undefined);
      lane.encoder.add(e, key);
      this.buffered++;
      if (lane.encoder.count >= this.o.batchEventsMax || lane.encoder.bytes >= this.o.batchBytesMax) this.seal(lane);
    }
    if (lane.encoder.count > 0 && lane.linger === null) {
      if (this.o.lingerMs <= 0) this.seal(lane);
      else lane.linger = setTimeout(() => this.seal(lane), this.o.lingerMs);
    }
  }

  /** Sends what is batched and resolves once every event sent so far is acknowledged; rejects with the first final error. */
  async flush(): Promise<void> {
    for (const lane of this.lanes.values()) this.seal(lane);
    while (this.buffered > 0 && this.failure === null) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    this.check();
  }

  /** flush(), then the producer takes no more events. */
  async close(): Promise<void> {
    try {
      await this.flush();
    } finally {
      this.closed = true;
    }
  }

  private check(): void {
    if (this.failure) throw this.failure;
    if (this.closed) throw new TickerError(0, "closed", "the producer was closed");
  }

  private lane(stream: string): Lane {
    let lane = this.lanes.get(stream);
    if (lane === undefined) {
      lane = { stream, encoder: encoderFor(this.o.format), queue: [], busy: false, linger: null };
      this.lanes.set(stream, lane);
    }
    return lane;
  }

  /** Closes the lane's open batch into its queue. */
  private seal(lane: Lane): void {
    if (lane.linger !== null) {
      clearTimeout(lane.linger);
      lane.linger = null;
    }
    if (lane.encoder.count === 0) return;
    const count = lane.encoder.count;
    lane.queue.push({ stream: lane.stream, body: lane.encoder.finish(), count, attempts: 0 });
    this.schedule(lane);
  }

  private schedule(lane: Lane): void {
    if (lane.busy || lane.queue.length === 0) return;
    lane.busy = true; // one batch in flight per stream: order
    this.ready.push(lane);
    this.pump();
  }

  private pump(): void {
    for (let lane = this.ready[0]; lane !== undefined && this.inFlight < this.o.inFlightMax; lane = this.ready[0]) {
      this.ready.shift();
      this.inFlight++;
      void this.sendBatch(lane, lane.queue[0]);
    }
  }

  private async sendBatch(lane: Lane, batch: Batch): Promise<void> {
    const path = `/v1/streams/${encodeURIComponent(batch.stream)}/events`;
    let outcome: PublishResult | TickerError;
    for (;;) {
      batch.attempts++;
      let wait = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** (batch.attempts - 1));
      try {
        const r = await this.transport.send("POST", path, batch.body, { "Content-Type": lane.encoder.contentType });
        if (r.status < 300) {
          outcome = JSON.parse(r.body.toString("utf8")) as PublishResult;
          break;
        }
        outcome = errorFromAnswer(r.status, r.body, r.retryAfter);
        if (outcome.retryAfterMs !== null) wait = Math.max(wait, outcome.retryAfterMs);
      } catch (err) {
        outcome = err instanceof TickerError ? err : new TickerError(0, "connection_failed", (err as Error).message);
      }
      if (!outcome.retryable || batch.attempts >= this.o.attemptsMax) break;
      await new Promise((resolve) => setTimeout(resolve, wait * (0.75 + Math.random() / 2)));
    }
    this.inFlight--;
    lane.queue.shift();
    lane.busy = false;
    this.buffered -= batch.count;
    if (outcome instanceof TickerError) this.failure ??= outcome;
    else {
      this.published += outcome.count;
      this.o.onPublished?.(outcome);
    }
    this.schedule(lane);
    this.pump();
    for (const w of this.roomWaiters.splice(0)) w();
    if (this.buffered === 0 || this.failure) for (const w of this.idleWaiters.splice(0)) w();
  }
}
