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
//   another writer after all: the lane is fenced (409 not_exclusive, as a
//   Kafka producer fenced by another) and sends nothing more, rather than
//   risk its order.
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
  /** The tagged event's index in the batch. */
  tagIndex: number;
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
/** How long a look for a batch waits for the synced head to reach the head a 409 reported. */
const SYNC_WAIT_MS = 10_000;

/** Waits about `ms` (jittered by ±25%, so that retries of several batches spread out). */
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms * (0.75 + Math.random() / 2)));
/** The wait before attempt `attempt` + 1 after error `e`: 50 ms doubling to 2 s, or the server's Retry-After. */
export const backoff = (attempt: number, e: TickerError) => Math.max(e.retryAfterMs ?? 0, Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** (attempt - 1)));
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
  /** Exclusive mode met another writer: the lane is fenced, its batches are not sent (as a Kafka producer fenced by another). */
  private fenced: TickerError | null = null;

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
        const depth = this.mode === "exclusive" && calm ? this.host.inFlightPerStream : 1;
        while (this.queue.length > 0 && flight.length < depth) {
          const batch = this.queue.shift() as Batch;
          if (this.mode === "keyed" && !batch.keyed) {
            this.host.settled(batch, NOT_KEYED(this.stream));
            continue;
          }
          if (this.fenced !== null) {
            this.host.settled(batch, this.fenced);
            continue;
          }
          const expected = this.mode === "exclusive" ? next : undefined;
          next += batch.count;
          flight.push({ batch, expected, outcome: this.attempt(batch, expected) });
        }
        const f = flight.shift();
        if (f === undefined) break;
        let outcome = await f.outcome;
        let sentOn = f.expected;
        if (outcome instanceof TickerError && (outcome.retryable || outcome.code === "head_mismatch")) {
          calm = false;
          ({ outcome, sentOn } = await this.alone(f, outcome));
        }
        if (!(outcome instanceof TickerError)) {
          // All duplicates (count 0): the head is the one the landing attempt was sent on.
          if (this.mode === "exclusive") this.head = outcome.count > 0 ? outcome.last_seq : (sentOn ?? this.head);
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
   * The batch at the front failed: it goes again on its own until it lands
   * or its error is final. Keyed: the same request again (the server's
   * dedup window answers a retry). Exclusive: always with the condition, so
   * at most one copy can land. After a lost answer on head `at`, the batch
   * is sent again on `at`; only a 409 saying the head is now above `at`
   * means it may have landed, and then it is looked for (its tag) among the
   * records after `at` up to that head. An attempt on `at` can never land
   * once the head has passed `at`, so a batch not found there is sent again
   * on the new head.
   */
  private async alone(f: Flight, first: TickerError): Promise<{ outcome: PublishResult | TickerError; sentOn: number | undefined }> {
    let e = first;
    let attempts = 1;
    let mismatches = 0;
    let expected = f.expected;
    /** The lowest head an attempt with a lost answer was sent on, not yet ruled out. */
    let lostOn: number | null = null;
    let fresh = false; // whether `e` answered an attempt made after every earlier batch was settled
    for (;;) {
      if (e.status === 0 && expected !== undefined) lostOn = Math.min(lostOn ?? expected, expected);
      if (e.code === "head_mismatch" && expected !== undefined) {
        const head = Number(e.details.head_seq);
        if (lostOn !== null && head > lostOn) {
          const found = await this.lookFor(f.batch, lostOn, head, attempts);
          if (found !== null) return { outcome: found, sentOn: lostOn };
          lostOn = null; // not there, and an attempt on a passed head can no longer land
        }
        // The first refusal may be from before the batches ahead of this one landed (it arrived
        // early); a later one is the head as it is. Above ours with no lost answer of a tagged
        // batch: another writer, so the promise of exclusive mode is broken; stop before the order is.
        const now = fresh ? head : Math.max(head, this.head);
        if (now > this.head && lostOn === null && f.batch.tag !== undefined) {
          this.fenced = new TickerError(
            409,
            "not_exclusive",
            `another writer appended to stream ${this.stream} (head ${now}, this producer's ${this.head}); a producer with exclusive: true stops rather than risk its order`,
            { head_seq: now },
          );
          return { outcome: this.fenced, sentOn: expected };
        }
        this.head = now;
        expected = now;
        if (++mismatches > MISMATCHES_MAX) return { outcome: e, sentOn: expected };
        if (mismatches > 3) await sleep(Math.min(500, 10 * mismatches)); // contention with another writer
      } else {
        if (!e.retryable || attempts >= this.host.attemptsMax) {
          // The last answer was lost too: look where it could have landed before giving up.
          if (lostOn !== null && e.status === 0) {
            const found = await this.lookFor(f.batch, lostOn, Number.POSITIVE_INFINITY, attempts);
            if (found !== null) return { outcome: found, sentOn: lostOn };
          }
          return { outcome: e, sentOn: expected };
        }
        await sleep(backoff(attempts, e));
        attempts++;
      }
      const r = await this.attempt(f.batch, expected);
      fresh = true;
      if (!(r instanceof TickerError)) return { outcome: r, sentOn: expected };
      e = r;
    }
  }

  /**
   * The batch sent on head `at` and found after it (up to `upTo`), as its
   * answer would have been; null when it is not there; a final error when
   * the stream cannot be read. A batch without a tag (every event keyed by
   * the caller) is never looked for: sent again, the server answers it as
   * duplicates.
   */
  private async lookFor(batch: Batch, at: number, upTo: number, attempts: number): Promise<PublishResult | TickerError | null> {
    if (batch.tag === undefined) return null;
    for (let read = 1; ; read++) {
      try {
        return await this.landedAfter(batch, at, upTo);
      } catch (err) {
        const e = err instanceof TickerError ? err : new TickerError(0, "connection_failed", String(err));
        if (e.status === 404) return null; // no stream: nothing landed
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

  /**
   * Reads the records from at + 1 up to `upTo` (or the head) for the
   * batch's tag. Reads stop at the synced head, which on an fsync stream can
   * be behind the head a 409 reported: they are repeated until they reach
   * it (bounded by SYNC_WAIT_MS).
   */
  private async landedAfter(batch: Batch, at: number, upTo: number): Promise<PublishResult | null> {
    const since = Date.now();
    for (let from = at + 1; from <= upTo; ) {
      // No limit: the server's default page size, which any server takes.
      const to = Number.isFinite(upTo) ? `&to=${upTo}` : "";
      const r = await this.host.transport.send("GET", `${this.path}?from=${from}${to}`, null, { Accept: "application/x-flatbuffers" });
      if (r.status >= 300) throw errorFromAnswer(r.status, r.body, r.retryAfter);
      const page = decodeEventBatch(r.body);
      const events = eventsOf(Buffer.from(page.records.buffer, page.records.byteOffset, page.records.byteLength), this.stream);
      const hit = events.find((e) => e.idempotency_key === batch.tag);
      if (hit) {
        // The batch went in whole from hit.seq - tagIndex; how many of the caller's duplicates the
        // server squeezed out before the tag is not known here, so first_seq may be a little low.
        const first = hit.seq - batch.tagIndex;
        const last = Math.min(first + batch.count - 1, Number.isFinite(upTo) ? upTo : page.head_seq);
        return { stream: this.stream, first_seq: first, last_seq: last, count: last - first + 1, duplicates: [] };
      }
      if (events.length > 0) from = page.next;
      else if (!Number.isFinite(upTo) || page.head_seq >= upTo) return null;
      else if (Date.now() - since > SYNC_WAIT_MS) throw new TickerError(0, "timeout", `the stream's synced head stayed below ${upTo} for ${SYNC_WAIT_MS} ms`);
      else await sleep(20);
    }
    return null;
  }
}
