// Ordered ingest's rule (issue 12), as a pure step: for each producer of a
// stream with producer_ordering, which events go to the log now, which wait
// for a missing producer_seq, which are duplicates, and when a gap has waited
// gap_timeout_ms, the tombstone and the held events that follow it. It owns
// no bytes and no file: the publisher frames what it releases, in the order
// released, and keeps held events durable (not wired in yet: until it is,
// `producer_ordering: true` stays a 400).
//
// producer_seq is an integer from 1 (the wire check refuses anything else;
// offer() asserts it). A producer the stream does not know (new, or
// forgotten after its idle time) starts at 1: a first event above 1 waits,
// in case the ones before it are late. When that wait times out nothing is tombstoned —
// the stream cannot tell a gap from a producer that resumed after it was
// forgotten — and the producer continues from its lowest held seq. Once a
// producer is known, a missing producer_seq that waits gap_timeout_ms gets a
// `gap` tombstone for exactly the missing range.

export interface OrderedIngestLimits {
  /** Events held across all producers of the stream; past it an event is refused (429). */
  heldEventsMax: number;
  /** Producers the stream tracks at once; past it a new producer is refused (429). */
  producersMax: number;
  /** How long a missing producer_seq is waited for. */
  gapTimeoutMs: number;
  /** A producer with nothing held and nothing new for this long is forgotten (the dedup window). */
  producerIdleMs: number;
}

/** What happens to one offered event. */
export type Decision = "append" | "held" | "duplicate" | "held_full" | "producers_full";

/** What to append, in this order: an event given to offer() (now or earlier), or a gap's tombstone. */
export type Release<T> =
  | { kind: "event"; item: T; producerId: string; producerSeq: number }
  | { kind: "gap"; producerId: string; fromSeq: number; toSeq: number };

interface Held<T> {
  item: T;
  receivedMs: number;
}

interface Producer<T> {
  /** The producer_seq it appends next. */
  next: number;
  /** False until its first seq is settled (see the top of this file). */
  started: boolean;
  held: Map<number, Held<T>>;
  /** When the oldest wait of this producer began (the gap timer), or -1 with nothing held. */
  waitingSinceMs: number;
  lastSeenMs: number;
}

export class OrderedIngest<T> {
  private readonly producers = new Map<string, Producer<T>>();
  private heldEvents = 0;

  constructor(private readonly limits: OrderedIngestLimits) {}

  get held(): number {
    return this.heldEvents;
  }

  get producerCount(): number {
    return this.producers.size;
  }

  /**
   * Decides one event; what may be appended now (it, and held events it
   * unblocks) is pushed onto `out` in append order.
   */
  offer(producerId: string, producerSeq: number, item: T, nowMs: number, out: Release<T>[]): Decision {
    // NaN would never be the lowest held seq and a fraction would skew every
    // later comparison: expire() could not make progress. One base (1): with
    // two, a swapped 0 and 1 would lose 0 as a "duplicate".
    if (!Number.isSafeInteger(producerSeq) || producerSeq < 1) throw new RangeError(`ordered ingest: producer_seq ${producerSeq} is not an integer from 1`);
    let p = this.producers.get(producerId);
    if (p === undefined) {
      if (this.producers.size >= this.limits.producersMax) return "producers_full";
      p = { next: 1, started: producerSeq === 1, held: new Map(), waitingSinceMs: -1, lastSeenMs: nowMs };
      this.producers.set(producerId, p);
    }
    p.lastSeenMs = nowMs;
    if (producerSeq < p.next || p.held.has(producerSeq)) return "duplicate";
    if (producerSeq === p.next) {
      p.started = true;
      out.push({ kind: "event", item, producerId, producerSeq });
      p.next++;
      this.releaseRun(producerId, p, out);
      return "append";
    }
    if (this.heldEvents >= this.limits.heldEventsMax) return "held_full";
    p.held.set(producerSeq, { item, receivedMs: nowMs });
    this.heldEvents++;
    if (p.waitingSinceMs < 0) p.waitingSinceMs = nowMs;
    return "held";
  }

  /**
   * Gaps that have waited gap_timeout_ms: for each, its tombstone (none for
   * a producer's unsettled start) and the held events after it, pushed onto
   * `out`; and producers idle past producerIdleMs are forgotten.
   */
  expire(nowMs: number, out: Release<T>[]): void {
    for (const [id, p] of this.producers) {
      // The next gap may have waited as long already (its oldest event came
      // before the one that just closed a gap): each is settled in this call.
      while (p.held.size > 0 && nowMs - p.waitingSinceMs >= this.limits.gapTimeoutMs) {
        let lowest = Number.POSITIVE_INFINITY;
        for (const seq of p.held.keys()) if (seq < lowest) lowest = seq;
        if (p.started) out.push({ kind: "gap", producerId: id, fromSeq: p.next, toSeq: lowest - 1 });
        p.started = true;
        p.next = lowest;
        this.releaseRun(id, p, out);
      }
      if (p.held.size === 0 && nowMs - p.lastSeenMs >= this.limits.producerIdleMs) {
        this.producers.delete(id);
      }
    }
  }

  /** When expire() next has work: the earliest gap deadline, or null with nothing held. */
  nextDeadlineMs(): number | null {
    let at: number | null = null;
    for (const p of this.producers.values()) {
      if (p.held.size === 0) continue;
      const due = p.waitingSinceMs + this.limits.gapTimeoutMs;
      if (at === null || due < at) at = due;
    }
    return at;
  }

  /** Appends the held events that now follow without a gap; the next gap's timer starts at its oldest event. */
  private releaseRun(producerId: string, p: Producer<T>, out: Release<T>[]): void {
    for (let h = p.held.get(p.next); h !== undefined; h = p.held.get(p.next)) {
      out.push({ kind: "event", item: h.item, producerId, producerSeq: p.next });
      p.held.delete(p.next);
      this.heldEvents--;
      p.next++;
    }
    if (p.held.size === 0) {
      p.waitingSinceMs = -1;
      return;
    }
    let oldest = Number.POSITIVE_INFINITY;
    for (const h of p.held.values()) if (h.receivedMs < oldest) oldest = h.receivedMs;
    p.waitingSinceMs = oldest;
  }
}
