// Ordered ingest's rule (issue 12), as a pure step: for each producer of a
// stream with producer_ordering, which events go to the log now, which wait
// for a missing producer_seq, which are duplicates, and when a gap has waited
// gap_timeout_ms, the tombstone and the held events that follow it. It owns
// no bytes and no file: src/shard/ordered.ts frames what it releases, in the
// order released, and keeps held events durable. A batch is offered inside
// begin() .. commit(): rollback() undoes every offer (and expire()) since
// begin(), so a batch refused part way (a bound, a failed write) changes
// nothing.
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
  /** Producers the stream tracks at once; past it a new producer is refused (429). */
  producersMax: number;
  /** How long a missing producer_seq is waited for. */
  gapTimeoutMs: number;
  /** A producer with nothing held and nothing new for this long is forgotten (the dedup window). */
  producerIdleMs: number;
}

/** What happens to one offered event. */
export type Decision = "append" | "held" | "duplicate" | "producers_full";

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
  /** Undo steps since begin(), run last first by rollback(); null outside a batch. */
  private undo: Array<() => void> | null = null;
  /** Producers whose scalars are saved in `undo` already. */
  private readonly saved = new Set<Producer<T>>();

  /** The bound on held events is the caller's, checked once a whole batch is offered (its later events may release earlier ones). */
  constructor(private limits: OrderedIngestLimits) {}

  /** New timings (a stream's gap_timeout_ms or dedup window changed): what is held stays held. */
  retime(gapTimeoutMs: number, producerIdleMs: number): void {
    this.limits = { ...this.limits, gapTimeoutMs, producerIdleMs };
  }

  get held(): number {
    return this.heldEvents;
  }

  get producerCount(): number {
    return this.producers.size;
  }

  /** Starts a batch: what is offered from here on can be undone by rollback(). */
  begin(): void {
    this.undo = [];
    this.saved.clear();
  }

  commit(): void {
    this.undo = null;
    this.saved.clear();
  }

  /** Undoes every offer since begin(): producers, held events and timers are as they were. */
  rollback(): void {
    const undo = this.undo;
    this.commit();
    if (undo) for (let i = undo.length - 1; i >= 0; i--) undo[i]();
  }

  /** Whether this producer_seq is held now (a retry of a held event is answered as held again). */
  isHeld(producerId: string, producerSeq: number): boolean {
    return this.producers.get(producerId)?.held.has(producerSeq) ?? false;
  }

  /**
   * Gives a held event another item (the caller's lasting copy of it, once
   * the batch that offered it stands). No undo of its own: a rollback drops
   * the event held in the batch altogether.
   */
  rehold(producerId: string, producerSeq: number, item: T): void {
    const h = this.producers.get(producerId)?.held.get(producerSeq);
    if (h === undefined) throw new RangeError(`ordered ingest: ${producerId} ${producerSeq} is not held`);
    h.item = item;
  }

  /** Every held item, in no particular order. */
  *heldItems(): IterableIterator<T> {
    for (const p of this.producers.values()) for (const h of p.held.values()) yield h.item;
  }

  /** Each producer that has appended: its last producer_seq (a tombstone's end counts) and when it was last seen. */
  *places(): IterableIterator<{ producerId: string; lastSeq: number; lastSeenMs: number }> {
    for (const [producerId, p] of this.producers) if (p.started && p.next > 1) yield { producerId, lastSeq: p.next - 1, lastSeenMs: p.lastSeenMs };
  }

  /**
   * Start-up: a producer the log shows, with the last producer_seq it
   * appended (a tombstone counts for the end of its range) and when.
   */
  restore(producerId: string, lastSeq: number, lastSeenMs: number): void {
    this.producers.set(producerId, { next: lastSeq + 1, started: true, held: new Map(), waitingSinceMs: -1, lastSeenMs });
  }

  /**
   * Start-up, after restore(): an event held when the server stopped. False
   * when the log already holds its producer_seq (it was released): the
   * caller drops it. Call releaseRestored() once all are back.
   */
  restoreHeld(producerId: string, producerSeq: number, item: T, receivedMs: number): boolean {
    let p = this.producers.get(producerId);
    if (p === undefined) {
      p = { next: 1, started: false, held: new Map(), waitingSinceMs: -1, lastSeenMs: receivedMs };
      this.producers.set(producerId, p);
    }
    if (producerSeq < p.next || p.held.has(producerSeq)) return false;
    p.held.set(producerSeq, { item, receivedMs });
    this.heldEvents++;
    if (receivedMs > p.lastSeenMs) p.lastSeenMs = receivedMs;
    return true;
  }

  /** Start-up: releases what follows a producer's last appended seq without a gap, and restarts every gap timer. */
  releaseRestored(out: Release<T>[]): void {
    for (const [id, p] of this.producers) if (p.held.size > 0) this.releaseRun(id, p, out);
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
      this.undo?.push(this.forgetUndo(producerId));
    }
    this.save(p);
    p.lastSeenMs = nowMs;
    if (producerSeq < p.next || p.held.has(producerSeq)) return "duplicate";
    if (producerSeq === p.next) {
      p.started = true;
      out.push({ kind: "event", item, producerId, producerSeq });
      p.next++;
      this.releaseRun(producerId, p, out);
      return "append";
    }
    p.held.set(producerSeq, { item, receivedMs: nowMs });
    this.heldEvents++;
    this.undo?.push(this.unholdUndo(p, producerSeq));
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
      if (p.held.size > 0 && nowMs - p.waitingSinceMs >= this.limits.gapTimeoutMs) this.save(p);
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
        this.undo?.push(() => this.producers.set(id, p));
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

  /** Saves a producer's scalars once per batch, before its first change (their undo runs after every other). */
  private save(p: Producer<T>): void {
    if (this.undo === null || this.saved.has(p)) return;
    this.saved.add(p);
    this.undo.push(scalarsUndo(p));
  }

  // The undo steps are made by functions of their own: a closure written
  // inside offer(), save() or releaseRun() costs them a context object on
  // every call (they run once per event), also on the calls that make none.

  private forgetUndo(producerId: string): () => void {
    return () => this.producers.delete(producerId);
  }

  private unholdUndo(p: Producer<T>, producerSeq: number): () => void {
    return () => {
      p.held.delete(producerSeq);
      this.heldEvents--;
    };
  }

  private reholdUndo(p: Producer<T>, producerSeq: number, h: Held<T>): () => void {
    return () => {
      p.held.set(producerSeq, h);
      this.heldEvents++;
    };
  }

  /** Appends the held events that now follow without a gap; the next gap's timer starts at its oldest event. */
  private releaseRun(producerId: string, p: Producer<T>, out: Release<T>[]): void {
    for (let h = p.held.get(p.next); h !== undefined; h = p.held.get(p.next)) {
      const seq = p.next;
      out.push({ kind: "event", item: h.item, producerId, producerSeq: seq });
      p.held.delete(seq);
      this.heldEvents--;
      this.undo?.push(this.reholdUndo(p, seq, h));
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

/** An undo step that puts a producer's scalars back as they are now. */
function scalarsUndo<T>(p: Producer<T>): () => void {
  const { next, started, waitingSinceMs, lastSeenMs } = p;
  return () => {
    p.next = next;
    p.started = started;
    p.waitingSinceMs = waitingSinceMs;
    p.lastSeenMs = lastSeenMs;
  };
}
