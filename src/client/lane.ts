// One stream's batches on their way to the server, in order. Two modes:
//
// - keyed (the default): one batch in flight, every event with an
//   idempotency key (the caller's, or one the producer assigns), so a retry
//   is answered by the server's dedup window as duplicates. Right with any
//   number of writers on the stream.
// - exclusive (the caller says this producer is the stream's only writer):
//   several batches in flight, each sent with expected_head_seq, the head
//   the one before it leaves. The server refuses (409 head_mismatch) a batch
//   that arrives before the one it follows, so batches land in the order
//   they were sent whichever connection each took; a refused one is sent
//   again alone, on the head the server reports, once those before it are
//   settled. A batch whose answer was lost may have landed: before it goes
//   again, the records where it would have landed are read for its tag (the
//   key the producer gave the first event the caller left without one); a
//   batch whose every event has the caller's key needs no tag, the server's
//   duplicates answer for it. Only one key per batch: a retry never
//   duplicates, and the server keeps no window entry per event.
//   A head the server reports that our own batches do not explain means
//   another writer after all: the lane then keeps one batch in flight
//   (depth 1 cannot be reordered) and backs off between mismatches.
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
  /** Exclusive mode: the key the producer gave the first event without the caller's, looked for after a lost answer. */
  tag: string | undefined;
  /** Every event has a key: a retry without condition cannot duplicate. */
  keyed: boolean;
}

export type LaneMode = "exclusive" | "keyed";

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
/** Head mismatches one batch may meet (another writer on an exclusive stream) before its error is final. */
const MISMATCHES_MAX = 100;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms * (0.75 + Math.random() / 2)));
const backoff = (attempt: number, e: TickerError) => Math.max(e.retryAfterMs ?? 0, Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** (attempt - 1)));
/** A stream that takes no condition (producer_ordering), or a server older than expected_head_seq (an unknown parameter). */
const isRefusedCondition = (e: TickerError) =>
  e.status === 400 &&
  (e.details.parameter === "expected_head_seq" || (Array.isArray(e.details.parameters) && e.details.parameters.includes("expected_head_seq")));

/** A batch encoded for an exclusive lane whose stream then took producer_ordering: sent without a condition, a retry could duplicate it. */
const NOT_KEYED = (stream: string) =>
  new TickerError(
    400,
    "invalid_parameter",
    `stream ${stream} took producer_ordering while an exclusive producer had batches for it; they were not sent (a retry without expected_head_seq could duplicate them)`,
    { parameter: "expected_head_seq" },
  );

export class StreamLane {
  private readonly queue: Batch[] = [];
  private running = false;
  /** The head after the last batch of ours that landed (exclusive mode). */
  private head = 0;
  /** Exclusive mode met another writer: one batch in flight from then on. */
  private shared = false;

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
    try {
      for (;;) {
        const depth = this.mode === "exclusive" && calm && !this.shared ? this.host.inFlightPerStream : 1;
        while (this.queue.length > 0 && flight.length < depth) {
          const batch = this.queue.shift() as Batch;
          if (this.mode === "keyed" && !batch.keyed) {
            this.host.settled(batch, NOT_KEYED(this.stream));
            continue;
          }
          const expected = this.mode === "exclusive" && !this.shared ? next : undefined;
          next += batch.count;
          flight.push({ batch, expected, outcome: this.attempt(batch, expected) });
        }
        const f = flight.shift();
        if (f === undefined) break;
        let outcome = await f.outcome;
        if (outcome instanceof TickerError && (outcome.retryable || outcome.code === "head_mismatch")) {
          calm = false;
          outcome = await this.alone(f, outcome);
        }
        if (!(outcome instanceof TickerError)) {
          if (this.mode === "exclusive") this.head = outcome.count > 0 ? Math.max(this.head, outcome.last_seq) : Math.max(this.head, f.expected ?? 0);
          if (outcome.count !== f.batch.count) calm = false; // duplicates: later expectations are off
        } else {
          calm = false;
          if (isRefusedCondition(outcome)) this.mode = "keyed"; // the stream became producer_ordering: nothing was appended
        }
        if (flight.length === 0 && !calm) {
          next = this.head;
          calm = true;
        }
        this.host.settled(f.batch, outcome);
      }
    } finally {
      this.running = false;
    }
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
   * the server reported, until it lands or its error is final. After an
   * attempt whose answer was lost, the stream is read for the batch first.
   */
  private async alone(f: Flight, first: TickerError): Promise<PublishResult | TickerError> {
    let e = first;
    let attempts = 1;
    let mismatches = 0;
    /** Heads after which attempts whose answer was lost would have landed (exclusive mode; keyed batches need no search). */
    const lost: number[] = [];
    let expected = f.expected;
    let known = this.head; // the newest head the server showed
    for (;;) {
      if (e.status === 0 && this.mode === "exclusive") lost.push(expected ?? known);
      if (e.code === "head_mismatch") {
        const head = Number(e.details.head_seq);
        known = Math.max(known, head);
        // Every batch before this one is settled. A head below ours was seen before they landed (a
        // refusal for arriving early); one above ours, with no lost answer of this batch, is another
        // writer's: from then on one batch in flight, sent without a condition (depth 1 keeps our order).
        if (head > this.head && lost.length === 0) this.shared = true;
        const landed = await this.landedAnywhere(f.batch, lost, attempts, known);
        if (landed) return landed;
        if (++mismatches > MISMATCHES_MAX) return e;
        expected = this.shared ? undefined : Math.max(head, this.head);
      } else {
        if (!e.retryable || attempts >= this.host.attemptsMax) {
          // The last answer lost too: it may have landed.
          const landed = e.status === 0 ? await this.landedAnywhere(f.batch, lost, attempts, Number.POSITIVE_INFINITY) : null;
          return landed ?? e;
        }
        await sleep(backoff(attempts, e));
        attempts++;
        if (lost.length > 0) {
          const landed = await this.landedAnywhere(f.batch, lost, attempts, Number.POSITIVE_INFINITY);
          if (landed) return landed;
          lost.length = 0; // looked for and not there: a later look starts from the newer head
        }
      }
      const r = await this.attempt(f.batch, expected);
      if (!(r instanceof TickerError)) return r;
      e = r;
    }
  }

  /** The batch as landed after one of the heads `lost` attempts were sent on, or null; a failed read is a final error. */
  private async landedAnywhere(batch: Batch, lost: number[], attempts: number, upTo: number): Promise<PublishResult | TickerError | null> {
    for (const at of lost) {
      for (let read = 1; ; read++) {
        try {
          const landed = await this.landedAfter(batch, at, upTo);
          if (landed) return landed;
          break;
        } catch (err) {
          const e = err instanceof TickerError ? err : new TickerError(0, "connection_failed", String(err));
          if (!e.retryable || read + attempts > this.host.attemptsMax) {
            return new TickerError(
              0,
              "connection_failed",
              `a batch's answer was lost and whether it landed cannot be read (${e.code}: ${e.message}); not sent again, so as not to duplicate it`,
            );
          }
          await sleep(backoff(read, e));
        }
      }
    }
    return null;
  }

  /**
   * Whether the batch landed after head `at`: its tag among the records
   * from at + 1 to the head (at most `upTo`). With a condition it can only
   * be at + 1 .. at + count; without one (another writer), anywhere after.
   * A batch without a tag (every event keyed by the caller) is sent again
   * and answered as duplicates.
   */
  private async landedAfter(batch: Batch, at: number, upTo: number): Promise<PublishResult | null> {
    if (batch.tag === undefined) return null;
    for (let from = at + 1; from <= upTo; ) {
      const r = await this.host.transport.send("GET", `${this.path}?from=${from}&limit=1000`, null, { Accept: "application/x-flatbuffers" });
      if (r.status >= 300) throw errorFromAnswer(r.status, r.body, r.retryAfter);
      const page = decodeEventBatch(r.body);
      const events = eventsOf(Buffer.from(page.records.buffer, page.records.byteOffset, page.records.byteLength), this.stream);
      const hit = events.find((e) => e.idempotency_key === batch.tag);
      if (hit) {
        // The tag is the batch's first event without the caller's key; how many of the caller's
        // duplicates were squeezed out is not known here: the next head mismatch sets the head right.
        return { stream: this.stream, first_seq: hit.seq, last_seq: hit.seq + batch.count - 1, count: batch.count, duplicates: [] };
      }
      if (events.length === 0 || page.next > page.head_seq) return null;
      from = page.next;
    }
    return null;
  }
}
