// The producer: events are batched per stream (by count, bytes and linger)
// and handed to the stream's lane (./lane.ts), which sends them in order and
// retries them without duplicating: one batch at a time with every event
// keyed, or, for a stream's only writer (`exclusive`), several at once kept
// in order by expected_head_seq.
// Batches of all streams share `inFlightMax` slots over the transport's
// pooled connections. Events the producer holds (open, queued and in-flight
// batches) are bounded: `send` waits while the bound is reached, so a
// producer faster than the server slows its caller down instead of growing.
import { randomBytes } from "node:crypto";
import { type BatchEncoder, BodyPool, encoderFor, type Format, type PublishEvent, prepareEvent } from "./encode.js";
import { TickerError } from "./errors.js";
import { backoff, type Batch, type LaneHost, type PublishResult, sleep, StreamLane } from "./lane.js";
import type { Transport } from "./transport.js";

export type { PublishResult } from "./lane.js";

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
  /**
   * This producer is the only writer of the streams it sends to: several
   * batches of a stream in flight, kept in order by expected_head_seq
   * (default false: one batch of a stream in flight, every event keyed).
   */
  exclusive?: boolean;
  /** Exclusive mode: batches of one stream in flight at most (default 8). */
  inFlightPerStream?: number;
  /** Events held by the producer at most; `send` waits while it is reached (default 100,000). */
  bufferedEventsMax?: number;
  /** Attempts per batch before its error is final (default 10), with backoff from 50 ms doubling to 2 s, or Retry-After. */
  attemptsMax?: number;
  /** Called with each batch's answer. */
  onPublished?: (result: PublishResult) => void;
}

interface Open {
  encoder: BatchEncoder;
  /** Exclusive mode: the key given to the batch's first event without the caller's, and that event's index. */
  tag: string | undefined;
  tagIndex: number;
  /** Every event of the open batch has a key. */
  keyed: boolean;
  linger: NodeJS.Timeout | null;
  /** Set once the stream's mode (and, exclusive, its head: one GET) are known. */
  lane: StreamLane | null;
  ready: Promise<void>;
}

export class Producer implements LaneHost {
  private readonly open = new Map<string, Open>();
  private readonly o: Required<Omit<ProducerOptions, "onPublished" | "format">> & Pick<ProducerOptions, "onPublished">;
  private readonly keyPrefix = `p-${randomBytes(9).toString("base64url")}:`;
  private keyCounter = 0;
  private inFlight = 0;
  private readonly slotWaiters: Array<() => void> = [];
  private buffered = 0;
  private failure: TickerError | null = null;
  private closed = false;
  private readonly roomWaiters: Array<() => void> = [];
  private readonly idleWaiters: Array<() => void> = [];
  readonly contentType: string;
  /** Bodies of answered batches, for the next ones. */
  private readonly bodies = new BodyPool();
  /** Events published and acknowledged so far. */
  published = 0;

  constructor(
    readonly transport: Transport,
    private readonly format: Format,
    options: ProducerOptions = {},
  ) {
    this.o = {
      batchEventsMax: options.batchEventsMax ?? 1000,
      batchBytesMax: options.batchBytesMax ?? 1024 * 1024,
      lingerMs: options.lingerMs ?? 5,
      exclusive: options.exclusive ?? false,
      inFlightMax: Math.max(1, options.inFlightMax ?? 8),
      inFlightPerStream: Math.max(1, options.inFlightPerStream ?? 8),
      bufferedEventsMax: options.bufferedEventsMax ?? 100_000,
      attemptsMax: options.attemptsMax ?? 10,
      onPublished: options.onPublished,
    };
    this.contentType = encoderFor(format).contentType;
  }

  get attemptsMax(): number {
    return this.o.attemptsMax;
  }

  get inFlightPerStream(): number {
    return this.o.inFlightPerStream;
  }

  /**
   * Adds events to their stream's batch. Resolves once they are held by the
   * producer (at once, unless the bound on buffered events is reached, or on
   * a stream's first use: one GET of its head); their outcome comes with
   * flush(). Rejects with the producer's first final error, or if an event
   * is invalid: then none of `events` is added.
   */
  async send(stream: string, events: PublishEvent | PublishEvent[]): Promise<void> {
    const list = Array.isArray(events) ? events : [events];
    const prepared = list.map(prepareEvent);
    let open = this.openOf(stream);
    for (;;) {
      this.check();
      if (open.lane === null) {
        await open.ready;
        open = this.openOf(stream); // a failed first GET left a fresh entry to try again
        continue;
      }
      if (this.buffered + list.length <= this.o.bufferedEventsMax || this.buffered === 0) break;
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
    }
    const lane = open.lane;
    const keyed = lane.mode === "keyed";
    for (const p of prepared) {
      if (open.encoder.count === 0) {
        open.tag = undefined;
        open.keyed = true;
      }
      let key = p.e.idempotency_key;
      if (key === undefined && (keyed || open.tag === undefined)) {
        // Keyed lanes key every event; exclusive ones the first without the caller's key (the batch's tag).
        key = this.keyPrefix + this.keyCounter++;
        if (!keyed) {
          open.tag = key;
          open.tagIndex = open.encoder.count;
        }
      }
      if (key === undefined) open.keyed = false;
      open.encoder.add(p, key);
      this.buffered++;
      if (open.encoder.count >= this.o.batchEventsMax || open.encoder.bytes >= this.o.batchBytesMax) this.seal(open);
    }
    if (open.encoder.count > 0 && open.linger === null) {
      if (this.o.lingerMs <= 0) this.seal(open);
      else open.linger = setTimeout(() => this.seal(open), this.o.lingerMs);
    }
  }

  /** Sends what is batched and resolves once every event sent so far is acknowledged; rejects with the first final error. */
  async flush(): Promise<void> {
    for (const open of this.open.values()) this.seal(open);
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

  async slot(): Promise<void> {
    while (this.inFlight >= this.o.inFlightMax) await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    this.inFlight++;
  }

  release(): void {
    this.inFlight--;
    this.slotWaiters.shift()?.();
  }

  settled(batch: Batch, outcome: PublishResult | TickerError): void {
    this.buffered -= batch.count;
    this.bodies.give(batch.body); // answered: nothing reads it any more
    if (outcome instanceof TickerError) this.failure ??= outcome;
    else {
      this.published += outcome.count;
      try {
        this.o.onPublished?.(outcome);
      } catch (err) {
        // The caller's callback: its error is the producer's, not a broken lane.
        this.failure ??= new TickerError(0, "callback_failed", `onPublished threw: ${(err as Error).message}`);
      }
    }
    for (const w of this.roomWaiters.splice(0)) w();
    if (this.buffered === 0 || this.failure) for (const w of this.idleWaiters.splice(0)) w();
  }

  private check(): void {
    if (this.failure) throw this.failure;
    if (this.closed) throw new TickerError(0, "closed", "the producer was closed");
  }

  private openOf(stream: string): Open {
    let open = this.open.get(stream);
    if (open === undefined) {
      const o: Open = {
        encoder: encoderFor(this.format, this.bodies),
        tag: undefined,
        tagIndex: 0,
        keyed: true,
        linger: null,
        lane: null,
        ready: Promise.resolve(),
      };
      if (!this.o.exclusive) o.lane = new StreamLane(this, stream, "keyed", 0);
      else
        o.ready = this.exclusiveLane(stream).then(
          (lane) => {
            o.lane = lane;
          },
          (err: unknown) => {
            this.open.delete(stream); // the next send asks again
            throw err;
          },
        );
      this.open.set(stream, o);
      open = o;
    }
    return open;
  }

  /**
   * An exclusive lane needs the stream's head, and a stream that takes
   * expected_head_seq (not producer_ordering): one GET, retried as a batch
   * is. A stream not there yet has head 0; a key that may not read the
   * stream (401, 403) gets the keyed mode, which needs no reads.
   */
  private async exclusiveLane(stream: string): Promise<StreamLane> {
    for (let attempt = 1; ; attempt++) {
      try {
        const info = await this.transport.json<{ head_seq: number; producer_ordering?: boolean }>("GET", `/v1/streams/${encodeURIComponent(stream)}`);
        return new StreamLane(this, stream, info.producer_ordering ? "keyed" : "exclusive", info.head_seq);
      } catch (err) {
        if (!(err instanceof TickerError)) throw err;
        if (err.status === 404) return new StreamLane(this, stream, "exclusive", 0);
        if (err.status === 401 || err.status === 403) return new StreamLane(this, stream, "keyed", 0);
        if (!err.retryable || attempt >= this.o.attemptsMax) throw err;
        await sleep(backoff(attempt, err));
      }
    }
  }

  /** Closes the stream's open batch and hands it to its lane. */
  private seal(open: Open): void {
    if (open.linger !== null) {
      clearTimeout(open.linger);
      open.linger = null;
    }
    if (open.encoder.count === 0 || open.lane === null) return;
    const count = open.encoder.count;
    open.lane.push({ body: open.encoder.finish(), count, tag: open.tag, tagIndex: open.tagIndex, keyed: open.keyed });
  }
}
