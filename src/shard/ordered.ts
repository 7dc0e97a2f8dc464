// Ordered ingest of one stream (producer_ordering: true): the rule of
// ordered-ingest.ts, applied to framed batches, with its held events kept
// durable in held-events.ts. A publish is admitted whole or refused whole:
// the batch is offered inside a transaction of the rule, and a bound passed
// (held_events_max, held_bytes_max, producers_max) or a failed write undoes
// it. What the rule releases, in release order — the batch's own events,
// held ones they unblocked, a gap's tombstone — is framed anew with the
// stream's next seqs into one batch for the log.
//
// Durability of held events: a batch of newly held events is written to
// held.log before the answer (fdatasync'd on fsync streams). A released one
// gets a release marker there once the log holds it durably (at once on
// process streams, after the log's sync on fsync streams: held-book.ts); on
// start-up an entry without a marker whose (producer_id, producer_seq) the
// log holds is dropped by the rule itself (restoreHeld: at or below the
// producer's last appended seq, read from the log back to the oldest such
// entry's receipt). So a crash anywhere keeps every acknowledged event once.
//
// A held event's idempotency key is taken while it is held: another event
// with that key is its duplicate, as it would be once the held one is
// appended.
import { ApiError } from "../errors.js";
import { frameTs, markBatchEnd, RECORD_HEADER_BYTES, sealFrame, stampFrame } from "../log/record.js";
import type { StreamLog } from "../log/log.js";
import { u32 } from "../bytes.js";
import { recordIdempotencyKey } from "../wire/event-codec.js";
import { EventFields } from "../wire/event-layout.js";
import { type ReleaseStaging, writeTombstone } from "./release-frames.js";
import { entryOf, isOffered, offeredEvents, type Item, type Offered } from "./ordered-batch.js";
import { heldEntryBytes, type HeldEntry } from "./held-events.js";
import { HeldBook } from "./held-book.js";
import { OrderedIngest, type Release } from "./ordered-ingest.js";
import type { DedupWindow } from "./dedup.js";

export interface OrderedLimits {
  heldEventsMax: number;
  heldBytesMax: number;
  producersMax: number;
  /** The largest held.log entry: the frame bound plus the longest producer id. */
  entryBytesMax: number;
}

/** A batch as the publisher framed it (publish.ts FramedBatch), with each frame's index in the request. */
export interface OfferedBatch {
  frames: Buffer;
  bytes: number;
  count: number;
  first: number;
  readonly indexes: number[];
  readonly duplicates: Array<{ index: number; seq?: number; producer_id?: string; producer_seq?: number }>;
}

/** What the log gets now, framed: the same shape the publisher commits. */
export interface Released {
  frames: Buffer;
  bytes: number;
  count: number;
  first: number;
  ts: number;
  readonly keys: Map<string, number>;
}

export interface Admission {
  released: Released;
  held: Array<{ index: number; producer_seq: number }>;
}

/** The gap timer's wait after a failed release, doubled per failure up to the cap. */
const RETRY_MS_MIN = 100;
const RETRY_MS_MAX = 5000;
/** Idle producers are looked for this often (they are forgotten after the dedup window). */
const PRODUCER_SWEEP_MS = 10_000;

export class OrderedStream {
  private ingest: OrderedIngest<Item>;
  private readonly book: HeldBook;
  private readonly fields = new EventFields();
  private readonly out: Release<Item>[] = [];
  // Of the admission or expiry in progress: held events to write, held events released (with their new seqs).
  private newHeld: HeldEntry[] = [];
  private releasedHeld: Array<{ seq: number; entry: HeldEntry }> = [];
  /** Counts admit() calls: tells an event of the batch being admitted from one held by an earlier one. */
  private admissions = 0;
  /** Released at start-up (what followed a producer's last appended seq): appended by the first expire(). */
  private restored: Release<Item>[] = [];
  private restoredTaken: Release<Item>[] = [];
  private lastSweepMs = 0;
  private retryAtMs = 0;
  private failures = 0;
  /** Idempotency keys of held events, with the event holding each. */
  private readonly heldKeys = new Map<string, { producerId: string; producerSeq: number }>();
  /** Damage found in held.log when it was opened (reported with the stream's recovery), or null. */
  damage: string | null = null;

  private constructor(
    dir: string,
    streamId: string,
    private readonly limits: OrderedLimits,
    private gapTimeoutMs: number,
    private producerIdleMs: number,
  ) {
    this.ingest = this.newIngest();
    this.book = new HeldBook(dir, limits.entryBytesMax, () => this.heldEntries(), streamId);
  }

  /** Start-up: producers from the log, held events from held.log. */
  static open(
    dir: string,
    streamId: string,
    log: StreamLog,
    limits: OrderedLimits,
    gapTimeoutMs: number,
    producerIdleMs: number,
    nowMs: number,
  ): OrderedStream {
    const o = new OrderedStream(dir, streamId, limits, gapTimeoutMs, producerIdleMs);
    const load = o.book.open();
    o.damage = load.damage === null ? null : `held.log: ${load.damage} (${load.cutBytes} bytes cut)`;
    o.restore(log, load.entries, nowMs);
    return o;
  }

  get held(): number {
    return this.ingest.held;
  }

  /** Bytes of the held events (held_bytes_max counts these). */
  get bytes(): number {
    return this.book.bytes;
  }

  get producers(): number {
    return this.ingest.producerCount;
  }

  /** New timings from the stream's config; nothing held is touched. */
  retime(gapTimeoutMs: number, producerIdleMs: number): void {
    this.gapTimeoutMs = gapTimeoutMs;
    this.producerIdleMs = producerIdleMs;
    this.ingest.retime(gapTimeoutMs, producerIdleMs);
  }

  private newIngest(): OrderedIngest<Item> {
    return new OrderedIngest<Item>({ producersMax: this.limits.producersMax, gapTimeoutMs: this.gapTimeoutMs, producerIdleMs: this.producerIdleMs });
  }

  private *heldEntries(): IterableIterator<HeldEntry> {
    for (const x of this.ingest.heldItems()) yield entryOf(x);
  }

  private restore(log: StreamLog, entries: HeldEntry[], nowMs: number): void {
    const idleSince = nowMs - this.producerIdleMs;
    // Back to the oldest held entry too: a released one without its marker is in the log after its receipt.
    let since = idleSince;
    const holders = new Set<string>();
    for (const e of entries) {
      if (e.receivedMs < since) since = e.receivedMs;
      holders.add(e.producerId);
    }
    const last = new Map<string, { seq: number; ts: number }>();
    const f = this.fields;
    if (log.headSeq > 0) {
      log.forEach(log.seqAtTime(since), (buf, at) => {
        f.read(buf, at + RECORD_HEADER_BYTES);
        if (f.producerIdAt < 0 || f.producerSeq < 1) return;
        // Appends are in producer_seq order: the last one seen is the highest (a tombstone carries its range's end).
        last.set(buf.toString("utf8", f.producerIdAt, f.producerIdAt + f.producerIdLen), { seq: f.producerSeq, ts: frameTs(buf, at) });
      });
    }
    for (const [id, p] of last) if (p.ts >= idleSince || holders.has(id)) this.ingest.restore(id, p.seq, p.ts);
    this.heldKeys.clear();
    for (const e of entries) {
      if (!this.ingest.restoreHeld(e.producerId, e.producerSeq, e, e.receivedMs)) continue;
      this.book.restored(e);
      this.noteKey(e, true);
    }
    this.ingest.releaseRestored(this.restored);
    this.lastSweepMs = nowMs;
  }

  /**
   * After a failed sync of released events: the rule is rebuilt from what
   * is on disk, the log (cut back by the failure) and held.log, which still
   * lists every event not durably released.
   */
  reload(log: StreamLog, nowMs: number): void {
    if (this.book.isClosed) return;
    this.ingest = this.newIngest();
    this.restored = [];
    this.restore(log, this.book.reload(), nowMs);
  }

  /**
   * Offers a framed batch and frames what the log gets now into `staging`.
   * The rule's transaction stays open: keepHeld(), then the log append, then
   * finish(); abort() if any of them fails. A refusal (bad producer fields,
   * a bound) has undone everything already when it throws.
   */
  admit(b: OfferedBatch, staging: ReleaseStaging, log: StreamLog, dedup: DedupWindow, nowMs: number): Admission {
    this.admissions++;
    const offered = offeredEvents(b, this.fields, this.heldKeys, this.admissions);
    const out = this.out;
    out.length = 0;
    this.ingest.begin();
    try {
      for (const o of offered) {
        if (o.producerSeq < 0) {
          out.push({ kind: "event", item: o, producerId: "", producerSeq: 0 }); // no producer fields: as it comes
          continue;
        }
        if (this.ingest.isHeld(o.producerId, o.producerSeq)) {
          o.retry = true; // a retry of a held event: answered as held, kept once
          continue;
        }
        const d = this.ingest.offer(o.producerId, o.producerSeq, o, nowMs, out);
        if (d === "held") {
          const frameBytes = u32(b.frames, o.at);
          o.entry = { producerId: o.producerId, producerSeq: o.producerSeq, receivedMs: nowMs, frame: Buffer.from(b.frames.subarray(o.at, o.at + frameBytes)) };
          if (heldEntryBytes(o.entry) > this.limits.heldBytesMax) throw tooLargeToHold(o.index, this.limits);
        } else if (d === "duplicate") {
          b.duplicates.push({ index: o.index, producer_seq: o.producerSeq });
        } else if (d === "producers_full") {
          throw new ApiError(
            400,
            "producers_full",
            `event ${o.index}: the stream already tracks producers_max (${this.limits.producersMax}) producers; a new one is taken once another has been idle for the dedup window`,
            { index: o.index },
          );
        }
      }
      const released = this.frameReleases(out, b, staging, log, dedup, nowMs);
      const held = this.settleBatch(b, offered);
      this.checkBounds(nowMs);
      b.duplicates.sort((x, y) => x.index - y.index);
      return { released, held };
    } catch (err) {
      this.ingest.rollback();
      throw err;
    }
  }

  /**
   * What the batch leaves held (its held list, and newHeld for held.log),
   * with the duplicates it named renamed now that ordering moved events.
   */
  private settleBatch(b: OfferedBatch, offered: Offered[]): Admission["held"] {
    const held: Admission["held"] = [];
    this.newHeld = [];
    for (const o of offered) {
      // An event held and then released by a later one of the same batch was appended: not held.
      const stillHeld = o.entry !== null && o.newSeq < 0;
      if (stillHeld) this.newHeld.push(o.entry as HeldEntry);
      if (stillHeld || (o.retry && this.ingest.isHeld(o.producerId, o.producerSeq))) held.push({ index: o.index, producer_seq: o.producerSeq });
      else if (o.retry) b.duplicates.push({ index: o.index, producer_seq: o.producerSeq }); // released by this very batch
    }
    // Duplicates by idempotency key within the batch name the seq the batch stamped first; ordering
    // moved the events, so they name the seq the original got, or its producer while it is held.
    for (const d of b.duplicates) {
      if (d.seq === undefined || d.seq < b.first) continue;
      const o = offered[d.seq - b.first];
      if (o === undefined) continue;
      if (o.newSeq >= 0) d.seq = o.newSeq;
      else {
        delete d.seq;
        d.producer_id = o.producerId;
        d.producer_seq = o.producerSeq;
      }
    }
    return held;
  }

  /** held_events_max and held_bytes_max, for what the whole batch leaves held (a later event may release an earlier one). */
  private checkBounds(nowMs: number): void {
    let bytes = this.book.bytes;
    for (const e of this.newHeld) bytes += heldEntryBytes(e);
    for (const r of this.releasedHeld) bytes -= heldEntryBytes(r.entry);
    if (this.ingest.held <= this.limits.heldEventsMax && bytes <= this.limits.heldBytesMax) return;
    const deadline = this.ingest.nextDeadlineMs();
    const retryS = Math.max(1, Math.ceil(((deadline ?? nowMs + 1000) - nowMs) / 1000));
    throw new ApiError(
      429,
      "held_full",
      `the stream would hold more than held_events_max (${this.limits.heldEventsMax}) events or held_bytes_max (${this.limits.heldBytesMax}) bytes waiting for missing producer_seqs; retry once a gap closes or times out`,
      { retry_after_s: retryS },
    );
  }

  /** Writes the admitted batch's newly held events to held.log (synced when `durable`): before the log append. */
  keepHeld(durable: boolean): void {
    this.book.add(this.newHeld, durable);
  }

  /** The request (or expiry) failed after admit() / expire(): nothing of it stays, in memory or in held.log. */
  abort(): void {
    this.ingest.rollback();
    this.book.undoAdd();
    this.newHeld = [];
    this.releasedHeld = [];
    for (const r of this.restoredTaken) this.restored.push(r);
    this.restoredTaken = [];
  }

  /**
   * The log took the released batch: it stands. Released held events leave
   * held.log now (`logDurable`: the log's write is all the stream's
   * durability asks) or once synced() says the log's sync covers them.
   */
  finish(logDurable: boolean): void {
    this.ingest.commit();
    for (const e of this.newHeld) this.noteKey(e, true);
    for (const r of this.releasedHeld) this.noteKey(r.entry, false);
    this.book.commit(this.newHeld, this.releasedHeld, logDurable);
    this.newHeld = [];
    this.releasedHeld = [];
    this.restoredTaken = [];
    this.failures = 0;
  }

  synced(seq: number): void {
    this.book.synced(seq);
  }

  /** Whether expire() has work now: a gap's deadline, start-up releases, or the idle-producer sweep. */
  due(nowMs: number): boolean {
    if (this.book.isClosed || nowMs < this.retryAtMs) return false;
    if (this.restored.length > 0) return true;
    const deadline = this.ingest.nextDeadlineMs();
    return (deadline !== null && deadline <= nowMs) || nowMs - this.lastSweepMs >= PRODUCER_SWEEP_MS;
  }

  /**
   * Gaps past gap_timeout_ms (their tombstones and held events) and start-up
   * releases, framed for the log (count 0: nothing to append). In a
   * transaction like admit(): finish() or expireFailed() follows.
   */
  expire(staging: ReleaseStaging, log: StreamLog, dedup: DedupWindow, nowMs: number): Released {
    const out = this.out;
    out.length = 0;
    this.newHeld = [];
    this.restoredTaken = this.restored;
    this.restored = [];
    for (const r of this.restoredTaken) out.push(r);
    this.ingest.begin();
    this.ingest.expire(nowMs, out);
    this.lastSweepMs = nowMs;
    return this.frameReleases(out, null, staging, log, dedup, nowMs);
  }

  /** A release of the gap timer failed: undone, and the timer waits before it tries again. */
  expireFailed(nowMs: number): void {
    this.abort();
    this.retryAtMs = nowMs + Math.min(RETRY_MS_MAX, RETRY_MS_MIN * 2 ** this.failures);
    this.failures++;
  }

  private noteKey(e: HeldEntry, held: boolean): void {
    const key = recordIdempotencyKey(e.frame, 0, this.fields);
    if (key === null) return;
    if (held) this.heldKeys.set(key, { producerId: e.producerId, producerSeq: e.producerSeq });
    else this.heldKeys.delete(key);
  }

  /**
   * Frames the releases, in order, with the stream's next seqs into
   * `staging`: an event of this batch from the batch, a held one from its
   * copy, a gap as its tombstone. A held event whose idempotency key the
   * stream took meanwhile (past the dedup window's reach when it arrived)
   * goes out as a tombstone of its own producer_seq: the key's rule holds,
   * and the producer's order still shows the hole.
   */
  private frameReleases(out: Release<Item>[], b: OfferedBatch | null, staging: ReleaseStaging, log: StreamLog, dedup: DedupWindow, nowMs: number): Released {
    const ts = Math.max(nowMs, log.lastTs);
    const first = log.headSeq + 1;
    let seq = first;
    let bytes = 0;
    let lastAt = -1;
    const keys = staging.keys;
    keys.clear();
    this.releasedHeld = [];
    for (const r of out) {
      const at = bytes;
      if (r.kind === "gap") {
        bytes += writeTombstone(staging, at, r.producerId, r.fromSeq, r.toSeq, seq, ts);
      } else {
        const item = r.item;
        // An event of this batch comes from the batch, even when it was held on the way (then released
        // by a later event of it): it never reached held.log, so it is no release of a held event.
        const own = b !== null && isOffered(item) && item.admission === this.admissions;
        const src = own ? b.frames : entryOf(item).frame;
        const from = own ? (item as Offered).at : 0;
        const frameBytes = u32(src, from);
        const key = recordIdempotencyKey(src, from, this.fields);
        if (!own) this.releasedHeld.push({ seq, entry: entryOf(item) });
        if (key !== null && !own && (dedup.get(key) !== undefined || keys.has(key))) {
          bytes += writeTombstone(staging, at, r.producerId, r.producerSeq, r.producerSeq, seq, ts);
        } else {
          staging.ensure(bytes + frameBytes);
          src.copy(staging.buf, bytes, from, from + frameBytes);
          stampFrame(staging.buf, bytes, seq, ts);
          sealFrame(staging.buf, bytes, frameBytes); // a fresh CRC: any batch mark it carried is gone
          if (key !== null) keys.set(key, seq);
          if (isOffered(item)) item.newSeq = seq;
          bytes += frameBytes;
        }
      }
      lastAt = at;
      seq++;
    }
    if (lastAt >= 0) markBatchEnd(staging.buf, lastAt);
    return { frames: staging.buf, bytes, count: seq - first, first, ts, keys };
  }

  close(): void {
    this.book.close();
  }
}

function tooLargeToHold(index: number, limits: OrderedLimits): ApiError {
  return new ApiError(413, "event_too_large", `event ${index} would be held, and it alone is larger than held_bytes_max (${limits.heldBytesMax} bytes)`, {
    index,
  });
}
