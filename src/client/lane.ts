// One stream's batches on their way to the server, in order. Two modes:
//
// - conditional (the default): several batches of the stream in flight at
//   once, each sent with expected_head_seq, the head it must land on. The
//   server refuses (409 head_mismatch) a batch that arrives before the one
//   it follows, so batches land in the order they were sent whatever
//   connection each took. A batch that failed is sent again alone, on the
//   head the server reported, once the ones before it are settled. A batch
//   whose answer was lost (the connection broke) may have landed: before it
//   is sent again, the record where it would have landed is read, and if it
//   carries the batch's first idempotency key the batch is done. Only that
//   first event needs a key: a retry never duplicates.
// - keyed: one batch in flight, every event with an idempotency key, a retry
//   answered by the server as duplicates. For streams that take no
//   expected_head_seq (producer_ordering), and for keys that may not read
//   the stream (the check of a lost answer reads it).
import { decodeEventBatch } from "../wire/client.js";
import { errorFromAnswer, TickerError } from "./errors.js";
import { eventsOf } from "./event.js";
import type { Transport } from "./transport.js";

export interface PublishResult {
  stream: string;
  first_seq: number;
  last_seq: number;
  count: number;
  duplicates: Array<{ index: number; seq: number }>;
  held?: Array<{ index: number }>;
}

export interface Batch {
  body: Buffer;
  count: number;
  /** The idempotency key of its first event (conditional mode's check of a lost answer). */
  firstKey: string | undefined;
}

export type LaneMode = "conditional" | "keyed";

export interface LaneHost {
  readonly transport: Transport;
  readonly contentType: string;
  readonly attemptsMax: number;
  readonly inFlightPerStream: number;
  /** A slot of the producer's in-flight bound: resolves when one is free. */
  slot(): Promise<void>;
  release(): void;
  /** A batch's final outcome. */
  settled(batch: Batch, outcome: PublishResult | TickerError): void;
}

interface Flight {
  batch: Batch;
  expected: number | undefined;
  outcome: Promise<PublishResult | TickerError>;
}

const BACKOFF_START_MS = 50;
const BACKOFF_MAX_MS = 2_000;
/** Head mismatches one batch may meet (other producers on the stream) before its error is final. */
const MISMATCHES_MAX = 1_000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms * (0.75 + Math.random() / 2)));
const backoff = (attempt: number, e: TickerError) => Math.max(e.retryAfterMs ?? 0, Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** (attempt - 1)));
/** A stream that takes no condition (producer_ordering), or a server older than expected_head_seq (an unknown parameter). */
const isRefusedCondition = (e: TickerError) =>
  e.status === 400 &&
  (e.details.parameter === "expected_head_seq" || (Array.isArray(e.details.parameters) && e.details.parameters.includes("expected_head_seq")));

export class StreamLane {
  private readonly queue: Batch[] = [];
  private running = false;
  /** The head after the last batch of ours that landed (conditional mode). */
  private head = 0;

  constructor(
    private readonly host: LaneHost,
    readonly stream: string,
    public mode: LaneMode,
    head: number,
  ) {
    this.head = head;
  }

  private get path(): string {
    return `/v1/streams/${encodeURIComponent(this.stream)}/events`;
  }

  push(batch: Batch): void {
    this.queue.push(batch);
    if (!this.running) void this.run();
  }

  /** Sends batches while there are any; outcomes are taken oldest first, so order holds. */
  private async run(): Promise<void> {
    this.running = true;
    const flight: Flight[] = [];
    let next = this.head; // the head the next batch sent will expect
    let calm = true; // no failure since the flight was last empty
    for (;;) {
      const depth = this.mode === "conditional" && calm ? this.host.inFlightPerStream : 1;
      while (this.queue.length > 0 && flight.length < depth) {
        const batch = this.queue.shift() as Batch;
        const expected = this.mode === "conditional" ? next : undefined;
        next += batch.count;
        flight.push({ batch, expected, outcome: this.attempt(batch, expected) });
      }
      const f = flight.shift();
      if (f === undefined) break;
      let outcome = await f.outcome;
      if (outcome instanceof TickerError && (outcome.retryable || outcome.status === 409 || isRefusedCondition(outcome))) {
        calm = false;
        outcome = await this.alone(f, outcome);
      }
      if (!(outcome instanceof TickerError)) {
        this.head = outcome.count > 0 ? outcome.last_seq : Math.max(this.head, f.expected ?? this.head);
        if (outcome.count !== f.batch.count) calm = false; // duplicates: later expectations are off
      } else calm = false;
      if (flight.length === 0 && !calm) {
        next = this.head;
        calm = true;
      }
      this.host.settled(f.batch, outcome);
    }
    this.running = false;
  }

  /** One send of a batch, holding an in-flight slot; no answer is a TickerError with status 0. */
  private async attempt(batch: Batch, expected: number | undefined): Promise<PublishResult | TickerError> {
    await this.host.slot();
    try {
      const q = expected === undefined ? "" : `?expected_head_seq=${expected}`;
      const r = await this.host.transport.send("POST", this.path + q, batch.body, { "Content-Type": this.host.contentType });
      if (r.status < 300) return JSON.parse(r.body.toString("utf8")) as PublishResult;
      return errorFromAnswer(r.status, r.body, r.retryAfter);
    } catch (err) {
      return err instanceof TickerError ? err : new TickerError(0, "connection_failed", (err as Error).message);
    } finally {
      this.host.release();
    }
  }

  /**
   * The batch at the front failed: it goes again on its own, on the head
   * the server reported, until it lands or its error is final. Heads of
   * attempts whose answer was lost are checked for the batch first.
   */
  private async alone(f: Flight, first: TickerError): Promise<PublishResult | TickerError> {
    let e = first;
    let attempts = 1;
    let mismatches = 0;
    const lost: number[] = [];
    let expected = f.expected;
    for (;;) {
      if (e.status === 0 && expected !== undefined) lost.push(expected);
      if (isRefusedCondition(e)) {
        this.mode = "keyed"; // the stream became one that takes no condition: nothing was appended
        expected = undefined;
      } else if (e.status === 409 && e.code === "head_mismatch") {
        if (++mismatches > MISMATCHES_MAX) return e;
        const head = Number(e.details.head_seq);
        for (const at of lost) {
          let landed: PublishResult | null;
          try {
            landed = await this.landedAt(f.batch, at, head);
          } catch (err) {
            const why = err instanceof TickerError ? `${err.code}: ${err.message}` : String(err);
            return new TickerError(
              0,
              "connection_failed",
              `a batch's answer was lost and whether it landed cannot be read (${why}); not sent again, so as not to duplicate it`,
            );
          }
          if (landed) return landed;
        }
        expected = head;
      } else {
        if (!e.retryable || attempts >= this.host.attemptsMax) return e;
        await sleep(backoff(attempts, e));
        attempts++;
      }
      const r = await this.attempt(f.batch, this.mode === "conditional" ? (expected ?? this.head) : undefined);
      if (!(r instanceof TickerError)) return r;
      e = r;
    }
  }

  /** Whether the batch landed on head `at` (its first key at seq at + 1), read from the stream. */
  private async landedAt(batch: Batch, at: number, head: number): Promise<PublishResult | null> {
    if (batch.firstKey === undefined || head < at + 1) return null;
    const r = await this.host.transport.send("GET", `${this.path}?from=${at + 1}&limit=1`, null, { Accept: "application/x-flatbuffers" });
    if (r.status >= 300) throw errorFromAnswer(r.status, r.body, r.retryAfter);
    const page = decodeEventBatch(r.body);
    const [e] = eventsOf(Buffer.from(page.records.buffer, page.records.byteOffset, page.records.byteLength), this.stream);
    if (e === undefined || e.seq !== at + 1 || e.idempotency_key !== batch.firstKey) return null;
    // The answer it would have had; if the server squeezed out duplicates of the caller's keys,
    // last_seq is past the real end, and the next batch's head mismatch sets it right.
    return { stream: this.stream, first_seq: at + 1, last_seq: at + batch.count, count: batch.count, duplicates: [] };
  }
}
