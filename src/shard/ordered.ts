// Ordered ingest of one stream (producer_ordering: true): the rule of
// ordered-ingest.ts, applied to framed batches, with its held events kept
// durable in held-events.ts. A publish is admitted whole or refused whole:
// the batch is offered inside a transaction of the rule, and a bound passed
// (held_events_max, held_bytes_max, producers_max) or a failed write undoes
// it. What the rule releases, in release order — the batch's own events,
// held ones they unblocked, a gap's tombstone — is framed with the stream's
// next seqs into one batch for the log (release-frames.ts); the batch's
// events are read once, from the columns the publisher's frame check noted
// (ordered-batch.ts).
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
//
// Cluster mode (src/shard/cluster-ordered.ts): PostgreSQL keeps the held
// events and producers' places, committed with each admission's tail row;
// the stream is restored from there (restoreFrom) and held.log is not used.
import { ApiError } from "../errors.js";
import { frameTs, RECORD_HEADER_BYTES, sealFrame } from "../log/record.js";
import type { StreamLog } from "../log/log.js";
import type { OpenFiles } from "../log/open-files.js";
import { u32 } from "../bytes.js";
import { recordIdempotencyKey } from "../wire/event-codec.js";
import { type BatchColumns, EventFields } from "../wire/event-layout.js";
import { frameReleases, type Released, type ReleaseStaging } from "./release-frames.js";
import { isOwn, OfferedEvents, type Item, type KeyHolder } from "./ordered-batch.js";
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

/**
 * A batch as the publisher framed it (publish.ts FramedBatch; its frames not
 * sealed), with each frame's index in the request and key, and the columns
 * of every event's producer fields.
 */
export interface OfferedBatch {
  frames: Buffer;
  bytes: number;
  count: number;
  first: number;
  readonly indexes: number[];
  readonly frameKeys: ReadonlyArray<string | null>;
  readonly cols: BatchColumns;
  readonly duplicates: Array<{ index: number; seq?: number; producer_id?: string; producer_seq?: number }>;
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
  private readonly offered = new OfferedEvents();
  private readonly out: Release<Item>[] = [];
  // Of the admission or expiry in progress: held events to write, held events released (with their new seqs).
  private newHeld: HeldEntry[] = [];
  private releasedHeld: Array<{ seq: number; entry: HeldEntry }> = [];
  /** Released at start-up (what followed a producer's last appended seq): appended by the first expire(). */
  private restored: Release<Item>[] = [];
  private restoredTaken: Release<Item>[] = [];
  private lastSweepMs = 0;
  private retryAtMs = 0;
  private failures = 0;
  /** Idempotency keys of held events, with the event holding each. */
  private readonly heldKeys = new Map<string, KeyHolder>();
  /** Damage found in held.log when it was opened (reported with the stream's recovery), or null. */
  damage: string | null = null;
  /** Cluster mode: restored from PostgreSQL, which keeps what held.log would. */
  clustered = false;
  /** Cluster mode: the producers' places came from the local log and are not in PostgreSQL yet (the next commit writes them all). */
  placesUnsaved = false;

  private constructor(
    dir: string,
    streamId: string,
    private readonly limits: OrderedLimits,
    private gapTimeoutMs: number,
    private producerIdleMs: number,
    files: OpenFiles,
  ) {
    this.ingest = this.newIngest();
    this.book = new HeldBook(dir, limits.entryBytesMax, () => this.heldEntries(), streamId, files);
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
    const o = new OrderedStream(dir, streamId, limits, gapTimeoutMs, producerIdleMs, log.files);
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
    for (const x of this.ingest.heldItems()) {
      // An event of a batch still being admitted is given its entry when the batch settles.
      if (isOwn(x)) throw new Error("ordered ingest: a held event has no held.log entry");
      yield x;
    }
  }

  /**
   * Cluster mode: the rule from what PostgreSQL holds (producers' places,
   * held events; their gap timers run from their receipt), or from the
   * places it knows now (`producers` null: a stream just made ordered by
   * its owner, whose log is the cluster's) with nothing held.
   */
  restoreFrom(producers: Array<{ producerId: string; lastSeq: number; lastSeenMs: number }> | null, held: HeldEntry[], nowMs: number): void {
    this.placesUnsaved = producers === null;
    const places = producers ?? [...this.ingest.places()];
    this.clustered = true;
    this.book.detach();
    this.ingest = this.newIngest();
    this.restored = [];
    const holders = new Set(held.map((e) => e.producerId));
    for (const p of places)
      if (p.lastSeenMs >= nowMs - this.producerIdleMs || holders.has(p.producerId)) this.ingest.restore(p.producerId, p.lastSeq, p.lastSeenMs);
    this.restoreHeldEntries(held, nowMs);
  }

  /** The admission or expiry in progress as cluster mode commits it: held events, released ones, and the releases in order. */
  pendingChanges(): { newHeld: readonly HeldEntry[]; releasedHeld: ReadonlyArray<{ entry: HeldEntry }>; out: readonly Release<Item>[] } {
    return { newHeld: this.newHeld, releasedHeld: this.releasedHeld, out: this.out };
  }

  /** Every producer's place now (after an admission: what a commit of all of them writes). */
  places(): IterableIterator<{ producerId: string; lastSeq: number; lastSeenMs: number }> {
    return this.ingest.places();
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
    this.restoreHeldEntries(entries, nowMs);
  }

  private restoreHeldEntries(entries: HeldEntry[], nowMs: number): void {
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
    // Cluster mode: PostgreSQL holds the releases; the log's lag fails the next commit, and the catch-up restores both.
    if (this.book.isClosed || this.clustered) return;
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
    const offered = this.offered;
    offered.read(b, this.heldKeys);
    const out = this.out;
    out.length = 0;
    this.ingest.begin();
    try {
      for (let j = 0; j < offered.count; j++) this.offer(b, j, nowMs);
      this.releasedHeld = [];
      const released = frameReleases(out, b, offered, staging, log, dedup, nowMs, this.releasedHeld);
      const held = this.settleBatch(b);
      this.checkBounds(nowMs);
      b.duplicates.sort((x, y) => x.index - y.index);
      return { released, held };
    } catch (err) {
      this.ingest.rollback();
      throw err;
    }
  }

  /** Offers frame j of the batch being admitted to the rule (inside its transaction). */
  private offer(b: OfferedBatch, j: number, nowMs: number): void {
    const o = this.offered;
    if (o.holder[j] !== null) return; // a held event's key: its duplicate
    const producerSeq = o.producerSeq[j];
    const producerId = o.producerId[j];
    if (producerSeq < 0) {
      this.out.push({ kind: "event", item: j, producerId: "", producerSeq: 0 }); // no producer fields: as it comes
      return;
    }
    if (this.ingest.isHeld(producerId, producerSeq)) {
      o.retry[j] = 1; // a retry of a held event: answered as held, kept once
      return;
    }
    const d = this.ingest.offer(producerId, producerSeq, j, nowMs, this.out);
    const index = b.indexes[j];
    if (d === "held") {
      const at = o.at[j];
      const frameBytes = u32(b.frames, at);
      const frame = Buffer.from(b.frames.subarray(at, at + frameBytes));
      sealFrame(frame, 0, frameBytes); // held.log keeps a whole record frame; the batch's were left unsealed
      const entry: HeldEntry = { producerId, producerSeq, receivedMs: nowMs, frame };
      o.entry[j] = entry;
      if (heldEntryBytes(entry) > this.limits.heldBytesMax) throw tooLargeToHold(index, this.limits);
    } else if (d === "duplicate") {
      b.duplicates.push({ index, producer_seq: producerSeq });
    } else if (d === "producers_full") {
      throw new ApiError(
        400,
        "producers_full",
        `event ${index}: the stream already tracks producers_max (${this.limits.producersMax}) producers; a new one is taken once another has been idle for the dedup window`,
        { index },
      );
    }
  }

  /**
   * What the batch leaves held (its held list, and newHeld for held.log;
   * the rule gets their entries in place of their frames' places), with the
   * duplicates it named renamed now that ordering moved events.
   */
  private settleBatch(b: OfferedBatch): Admission["held"] {
    const o = this.offered;
    const held: Admission["held"] = [];
    this.newHeld = [];
    for (let j = 0; j < o.count; j++) {
      const entry = o.entry[j];
      const index = b.indexes[j];
      // An event held and then released by a later one of the same batch was appended: not held.
      const stillHeld = entry !== null && o.newSeq[j] < 0;
      if (stillHeld) {
        this.newHeld.push(entry);
        this.ingest.rehold(entry.producerId, entry.producerSeq, entry);
      }
      const retryHeld = o.retry[j] === 1 && this.ingest.isHeld(o.producerId[j], o.producerSeq[j]);
      if (stillHeld || retryHeld) held.push({ index, producer_seq: o.producerSeq[j] });
      else if (o.retry[j] === 1) b.duplicates.push({ index, producer_seq: o.producerSeq[j] }); // released by this very batch
    }
    // Duplicates by idempotency key within the batch name the seq the batch stamped first (b.first + j
    // for frame j); ordering moved the events, so they name the seq the original got, or the producer
    // of the held event that has it (the original's own while it is held, or the one holding its key).
    for (const d of b.duplicates) {
      if (d.seq === undefined || d.seq < b.first || d.seq - b.first >= o.count) continue;
      const j = d.seq - b.first;
      const holder = o.holder[j];
      if (o.newSeq[j] >= 0) d.seq = o.newSeq[j];
      else {
        delete d.seq;
        d.producer_id = holder === null ? o.producerId[j] : holder.producerId;
        d.producer_seq = holder === null ? o.producerSeq[j] : holder.producerSeq;
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
    this.releasedHeld = [];
    return frameReleases(out, null, null, staging, log, dedup, nowMs, this.releasedHeld);
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

  close(): void {
    this.book.close();
  }
}

function tooLargeToHold(index: number, limits: OrderedLimits): ApiError {
  return new ApiError(413, "event_too_large", `event ${index} would be held, and it alone is larger than held_bytes_max (${limits.heldBytesMax} bytes)`, {
    index,
  });
}
