// Replay as an async iterable: binary pages (EventBatch) fetched ahead of
// the caller, events handed out as views over them (./event.ts). Seqs are
// gap-free, so after the first page the next ones are asked for by seq
// range, `prefetch` at a time; a page that stops short of its range (the
// server's bytes bound) is followed by one for the rest before anything
// later is read. The iteration ends at `to`, or at the head as the first
// page saw it. With `types` / `keys` the server sends only matching events
// and a page's `next` passes over the others.
import { decodeEventBatch } from "../wire/client.js";
import { errorFromAnswer, TickerError } from "./errors.js";
import { EventPage, type TickerEvent } from "./event.js";
import type { Transport } from "./transport.js";

export interface ReplayOptions {
  /** First seq, or "earliest" (default) or "latest". */
  from?: number | "earliest" | "latest";
  /** Last seq, inclusive (default: the head when the replay starts). */
  to?: number;
  /** Start at the first event at or after this time (ms since the epoch) instead of `from`. */
  from_time?: number;
  /** Events per page (default 10,000, the server's default replay_page_events_max). */
  pageEvents?: number;
  /** Pages asked for ahead of the one being read (default 4; 1 with maxRate, which paces each page). */
  prefetch?: number;
  /** Only events of these types (exact, or a prefix ending in "*"): the server filters. */
  types?: string[];
  /** Only events with these keys (exact, or a prefix ending in "*"). */
  keys?: string[];
  /** At most this many events a second: the server holds each page for its share (docs/consume.md, "Rate-limited reads"). */
  maxRate?: number;
}

/** The filter and rate of a read, as query parameters (also for consume). */
export function readQuery(o: { types?: string[]; keys?: string[]; maxRate?: number }): string {
  const q = new URLSearchParams();
  if (o.types !== undefined) q.set("types", o.types.join(","));
  if (o.keys !== undefined) q.set("keys", o.keys.join(","));
  if (o.maxRate !== undefined) q.set("max_rate", String(o.maxRate));
  const text = q.toString();
  return text === "" ? "" : `&${text}`;
}

interface Page {
  stream: string;
  head: number;
  next: number;
  events: EventPage;
}

interface Ask {
  from: number;
  to: number;
  page: Promise<Page>;
}

export class Replay implements AsyncIterable<TickerEvent> {
  private started = false;
  private closed = false;

  constructor(
    private readonly transport: Transport,
    private readonly stream: string,
    private readonly o: ReplayOptions,
  ) {
    if (o.from !== undefined && o.from_time !== undefined) throw new TickerError(0, "invalid_parameter", "give from or from_time, not both");
  }

  /** Stops a replay in progress: the iteration ends after the event being handled. */
  close(): void {
    this.closed = true;
  }

  /**
   * A hand-written iterator rather than an async generator: an event already
   * fetched is handed out with one resolved promise, without the
   * generator's resume machinery (a third of the per-event cost).
   */
  [Symbol.asyncIterator](): AsyncIterator<TickerEvent> {
    if (this.started) throw new TickerError(0, "invalid_parameter", "a replay is iterated once; start another for a second pass");
    this.started = true;
    let events: EventPage | null = null;
    const more = this.pages();
    const done: IteratorResult<TickerEvent> = { done: true, value: undefined };
    const refill = async (): Promise<IteratorResult<TickerEvent>> => {
      for (;;) {
        const r = await more.next();
        if (r.done || this.closed) return done;
        events = r.value;
        const e = events.take();
        if (e !== null) return { done: false, value: e };
      }
    };
    const next = (): Promise<IteratorResult<TickerEvent>> => {
      if (this.closed) return Promise.resolve(done);
      const e = events === null ? null : events.take();
      return e === null ? refill() : Promise.resolve({ done: false, value: e });
    };
    return {
      next,
      return: async () => {
        this.closed = true;
        await more.return(undefined);
        return done;
      },
    };
  }

  /**
   * The same events a page at a time (arrays of up to `pageEvents`), for a
   * handler that takes a batch, as kafkajs's eachBatch: no promise per
   * event. Instead of iterating the replay itself, not as well.
   */
  batches(): AsyncIterable<TickerEvent[]> {
    if (this.started) throw new TickerError(0, "invalid_parameter", "a replay is iterated once; start another for a second pass");
    this.started = true;
    const pages = this.pages();
    const next = async (): Promise<IteratorResult<TickerEvent[]>> => {
      for (;;) {
        const r = await pages.next();
        if (r.done) return r;
        const events = r.value.list();
        if (events.length > 0) return { done: false, value: events };
      }
    };
    const done = async (): Promise<IteratorResult<TickerEvent[]>> => {
      await pages.return(undefined);
      return { done: true, value: undefined };
    };
    return { [Symbol.asyncIterator]: () => ({ next, return: done }) };
  }

  /** The pages' events in order, from the first page to `to` or the head it showed. */
  private async *pages(): AsyncGenerator<EventPage> {
    const maxRate = this.o.maxRate;
    // Parallel pages would each be held for their own share: with a rate, one at a time.
    const limit = maxRate === undefined ? (this.o.pageEvents ?? 10_000) : Math.min(this.o.pageEvents ?? 10_000, maxRate);
    const depth = maxRate === undefined ? Math.max(1, this.o.prefetch ?? 4) : 1;
    const start = this.o.from_time !== undefined ? `from_time=${this.o.from_time}` : `from=${this.o.from ?? "earliest"}`;
    const first = await this.page(this.o.to === undefined ? start : `${start}&to=${this.o.to}`, limit);
    // Up to `to`, but never past the head the first page saw: a replay does not wait for events.
    const end = Math.min(this.o.to ?? first.head, first.head);
    if (!first.events.empty) yield first.events.endAt(end);
    const asks: Ask[] = [];
    let asked = first.next; // the first seq not yet asked for
    const ask = (from: number, to: number): Ask => {
      const page = this.page(`from=${from}&to=${to}`, to - from + 1);
      page.catch(() => undefined); // read (and its error thrown) in turn; never an unhandled rejection meanwhile
      return { from, to, page };
    };
    const fill = () => {
      while (asks.length < depth && asked <= end) {
        const to = Math.min(end, asked + limit - 1);
        asks.push(ask(asked, to));
        asked = to + 1;
      }
    };
    fill();
    for (let a = asks.shift(); a !== undefined && !this.closed; a = asks.shift()) {
      const page = await a.page;
      if (page.next <= a.to) {
        // Short of its range (the server's bounds; with a filter, maybe holding nothing) but never without moving on.
        if (page.next <= a.from) throw new TickerError(0, "bad_response", `a page for seqs ${a.from}..${a.to} did not move past ${a.from}`);
        asks.unshift(ask(page.next, a.to));
      }
      fill();
      if (!page.events.empty) yield page.events;
    }
  }

  private async page(position: string, limit: number): Promise<Page> {
    const path = `/v1/streams/${encodeURIComponent(this.stream)}/events?${position}&limit=${limit}${readQuery(this.o)}`;
    const r = await this.transport.send("GET", path, null, { Accept: "application/x-flatbuffers" });
    if (r.status >= 300) throw errorFromAnswer(r.status, r.body, r.retryAfter);
    if (!r.contentType.startsWith("application/x-flatbuffers"))
      throw new TickerError(r.status, "bad_response", `a replay page came as ${r.contentType || "no content type"}`);
    let batch: ReturnType<typeof decodeEventBatch>;
    try {
      batch = decodeEventBatch(r.body);
    } catch (err) {
      throw new TickerError(r.status, "bad_response", `a replay page is not an EventBatch: ${(err as Error).message}`);
    }
    const records = Buffer.from(batch.records.buffer, batch.records.byteOffset, batch.records.byteLength);
    const stream = batch.stream ?? this.stream;
    return { stream, head: batch.head_seq, next: batch.next, events: new EventPage(records, stream) };
  }
}
