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
// held.log before the answer (fdatasync'd on fsync streams). The file says
// nothing of releases: a released event is dropped from it by settle() once
// the log holds it durably (at once on process streams, after the log's sync
// on fsync streams), and on start-up the entries the log already has are
// dropped by the rule itself (restoreHeld: at or below the producer's last
// appended seq). So a crash anywhere keeps every acknowledged event once.
import { ApiError } from "../errors.js";
import { frameTs, markBatchEnd, RECORD_HEADER_BYTES, sealFrame, stampFrame } from "../log/record.js";
import type { StreamLog } from "../log/log.js";
import { u32 } from "../bytes.js";
import { recordIdempotencyKey } from "../wire/event-codec.js";
import { EventFields } from "../wire/event-layout.js";
import { type ReleaseStaging, writeTombstone } from "./release-frames.js";
import { HeldStore, heldEntryBytes, type HeldEntry } from "./held-events.js";
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
  readonly duplicates: Array<{ index: number; seq?: number; producer_seq?: number }>;
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

/** A framed event of the batch being admitted: where it is, and its request index. */
interface Offered {
  at: number;
  index: number;
  producerSeq: number;
  /** Set when it is held: a copy of its frame, kept until its release. */
  entry: HeldEntry | null;
  /** The seq it got when released in its own batch, else -1. */
  newSeq: number;
  /** A repeat of an event held by an earlier request. */
  retry: boolean;
  /** Which admission offered it (OrderedStream.admissions then). */
  admission: number;
}

type Item = Offered | HeldEntry;
const isOffered = (x: Item): x is Offered => (x as Offered).at !== undefined;

export class OrderedStream {
  private ingest: OrderedIngest<Item>;
  private readonly store: HeldStore;
  /** heldEntryBytes of every held event (held_bytes_max counts these). */
  private heldBytes = 0;
  /** Released held events whose records wait for the log's sync (fsync streams): still live in held.log. */
  private pending: Array<{ seq: number; entry: HeldEntry }> = [];
  private pendingBytes = 0;
  private readonly fields = new EventFields();
  private readonly out: Release<Item>[] = [];
  // Of the admission or expiry in progress: held events to write, held events released (with their new seqs).
  private newHeld: HeldEntry[] = [];
  private releasedHeld: Array<{ seq: number; entry: HeldEntry }> = [];
  private sizeBefore = 0;
  /** Counts admit() calls: tells an event of the batch being admitted from one held by an earlier one. */
  private admissions = 0;
  /** Released at start-up (what followed a producer's last appended seq): appended by the first expire(). */
  private restored: Release<Item>[] = [];
  private lastSweepMs = 0;
  /** Damage found in held.log when it was opened (reported with the stream's recovery), or null. */
  damage: string | null = null;

  private constructor(
    dir: string,
    private readonly limits: OrderedLimits,
    private readonly gapTimeoutMs: number,
    private readonly producerIdleMs: number,
  ) {
    this.ingest = this.newIngest();
    this.store = new HeldStore(dir, limits.entryBytesMax);
  }

  /** Start-up: producers from the log's last producerIdleMs, held events from held.log. */
  static open(dir: string, log: StreamLog, limits: OrderedLimits, gapTimeoutMs: number, producerIdleMs: number, nowMs: number): OrderedStream {
    const o = new OrderedStream(dir, limits, gapTimeoutMs, producerIdleMs);
    const load = o.store.open();
    o.damage = load.damage === null ? null : `held.log: ${load.damage} (${load.cutBytes} bytes cut)`;
    o.restore(log, load.entries, nowMs);
    return o;
  }

  get held(): number {
    return this.ingest.held;
  }

  /** Bytes of the held events (held_bytes_max counts these). */
  get bytes(): number {
    return this.heldBytes;
  }

  get producers(): number {
    return this.ingest.producerCount;
  }

  private newIngest(): OrderedIngest<Item> {
    const l = this.limits;
    return new OrderedIngest<Item>({
      heldEventsMax: l.heldEventsMax,
      producersMax: l.producersMax,
      gapTimeoutMs: this.gapTimeoutMs,
      producerIdleMs: this.producerIdleMs,
    });
  }

  private restore(log: StreamLog, entries: HeldEntry[], nowMs: number): void {
    const last = new Map<string, { seq: number; ts: number }>();
    const f = this.fields;
    if (log.headSeq > 0) {
      log.forEach(log.seqAtTime(nowMs - this.producerIdleMs), (buf, at) => {
        f.read(buf, at + RECORD_HEADER_BYTES);
        if (f.producerIdAt < 0 || f.producerSeq < 1) return;
        // Appends are in producer_seq order: the last one seen is the highest (a tombstone carries its range's end).
        last.set(buf.toString("utf8", f.producerIdAt, f.producerIdAt + f.producerIdLen), { seq: f.producerSeq, ts: frameTs(buf, at) });
      });
    }
    for (const [id, p] of last) this.ingest.restore(id, p.seq, p.ts);
    for (const e of entries) if (this.ingest.restoreHeld(e.producerId, e.producerSeq, e, e.receivedMs)) this.heldBytes += heldEntryBytes(e);
    this.ingest.releaseRestored(this.restored);
    this.lastSweepMs = nowMs;
  }

  /**
   * After a failure outside a request (a release's append or sync failed):
   * the rule is rebuilt from what is on disk, the log and held.log, which
   * still lists every event not durably released.
   */
  reload(log: StreamLog, nowMs: number): void {
    this.ingest = this.newIngest();
    this.heldBytes = 0;
    this.pending = [];
    this.pendingBytes = 0;
    this.restored = [];
    this.restore(log, this.store.reload(), nowMs);
  }

  /**
   * Offers a framed batch and frames what the log gets now into `staging`.
   * The rule's transaction stays open: keepHeld(), then the log append, then
   * finish(); abort() if any of them fails. A refusal (bad producer fields,
   * a bound) has undone everything already when it throws.
   */
  admit(b: OfferedBatch, staging: ReleaseStaging, log: StreamLog, dedup: DedupWindow, nowMs: number): Admission {
    this.admissions++;
    const offered = this.check(b);
    const out = this.out;
    out.length = 0;
    const held: Admission["held"] = [];
    const f = this.fields;
    let newHeldBytes = 0;
    this.ingest.begin();
    try {
      for (const o of offered) {
        if (o.producerSeq < 0) {
          out.push({ kind: "event", item: o, producerId: "", producerSeq: 0 }); // no producer fields: as it comes
          continue;
        }
        f.read(b.frames, o.at + RECORD_HEADER_BYTES);
        const id = b.frames.toString("utf8", f.producerIdAt, f.producerIdAt + f.producerIdLen);
        if (this.ingest.isHeld(id, o.producerSeq)) {
          o.retry = true; // a retry of a held event: answered as held, kept once
          continue;
        }
        const d = this.ingest.offer(id, o.producerSeq, o, nowMs, out);
        if (d === "held") {
          const frameBytes = u32(b.frames, o.at);
          o.entry = { producerId: id, producerSeq: o.producerSeq, receivedMs: nowMs, frame: Buffer.from(b.frames.subarray(o.at, o.at + frameBytes)) };
          newHeldBytes += heldEntryBytes(o.entry);
          if (this.heldBytes + newHeldBytes > this.limits.heldBytesMax) throw heldFull(this.ingest.nextDeadlineMs(), nowMs, this.limits);
        } else if (d === "duplicate") {
          b.duplicates.push({ index: o.index, producer_seq: o.producerSeq });
        } else if (d === "held_full") {
          throw heldFull(this.ingest.nextDeadlineMs(), nowMs, this.limits);
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
      // Held at the end of the batch (not released by a later event of it): what held.log gets.
      // An event held and then released by a later one of the same batch was appended: not listed as held.
      this.newHeld = [];
      for (const o of offered) {
        const stillHeld = o.entry !== null && o.newSeq < 0;
        if (stillHeld) this.newHeld.push(o.entry as HeldEntry);
        if (stillHeld || o.retry) held.push({ index: o.index, producer_seq: o.producerSeq });
      }
      this.fixDuplicates(b, offered);
      return { released, held };
    } catch (err) {
      this.ingest.rollback();
      throw err;
    }
  }

  /** Writes the admitted batch's newly held events to held.log (synced when `durable`): before the log append. */
  keepHeld(durable: boolean): void {
    this.sizeBefore = this.store.bytes;
    this.store.add(this.newHeld, durable);
  }

  /** The request failed after admit(): nothing of it stays, in memory or in held.log. */
  abort(): void {
    this.ingest.rollback();
    this.store.cutTo(this.sizeBefore);
    this.newHeld = [];
    this.releasedHeld = [];
  }

  /**
   * The log took the released batch: the admission stands. Released held
   * events leave held.log now (`logDurable`: the log's write is all the
   * stream's durability asks) or once synced() says the log's sync covers them.
   */
  finish(logDurable: boolean): void {
    this.ingest.commit();
    for (const e of this.newHeld) this.heldBytes += heldEntryBytes(e);
    this.settleReleased(logDurable);
    this.newHeld = [];
  }

  /** The log is durable up to `seq`: released held events up to it leave held.log. */
  synced(seq: number): void {
    let n = 0;
    while (n < this.pending.length && this.pending[n].seq <= seq) this.pendingBytes -= heldEntryBytes(this.pending[n++].entry);
    if (n === 0) return;
    this.pending.splice(0, n);
    this.settle();
  }

  /** Whether expire() has work now: a gap's deadline, start-up releases, or the idle-producer sweep. */
  due(nowMs: number): boolean {
    if (this.restored.length > 0) return true;
    const deadline = this.ingest.nextDeadlineMs();
    return (deadline !== null && deadline <= nowMs) || nowMs - this.lastSweepMs >= PRODUCER_SWEEP_MS;
  }

  /**
   * Gaps past gap_timeout_ms (their tombstones and held events) and start-up
   * releases, framed for the log; null when there is nothing to append.
   * finish() follows a successful append; reload() a failed one.
   */
  expire(staging: ReleaseStaging, log: StreamLog, dedup: DedupWindow, nowMs: number): Released | null {
    const out = this.out;
    out.length = 0;
    for (const r of this.restored) out.push(r);
    this.restored = [];
    this.ingest.expire(nowMs, out);
    this.lastSweepMs = nowMs;
    this.newHeld = [];
    if (out.length === 0) return null;
    const r = this.frameReleases(out, null, staging, log, dedup, nowMs);
    if (r.count > 0) return r;
    // Every release was a key the stream had taken meanwhile: nothing to append, only held.log to settle.
    this.settleReleased(true);
    return null;
  }

  /** Checks every event's producer fields, before the rule sees any: they go together, from 1. */
  private check(b: OfferedBatch): Offered[] {
    const f = this.fields;
    const offered: Offered[] = [];
    for (let i = 0, at = 0; i < b.count; i++) {
      f.read(b.frames, at + RECORD_HEADER_BYTES);
      const index = b.indexes[i];
      const hasId = f.producerIdAt >= 0;
      if (hasId !== f.producerSeq >= 0) {
        throw new ApiError(400, "invalid_event", `event ${index}: "producer_id" and "producer_seq" go together on a stream with producer_ordering`, { index });
      }
      if (hasId && (f.producerSeq < 1 || !Number.isSafeInteger(f.producerSeq))) {
        throw new ApiError(400, "invalid_event", `event ${index}: "producer_seq" must be an integer from 1 to 2^53-1 on a stream with producer_ordering`, {
          index,
        });
      }
      offered.push({ at, index, producerSeq: hasId ? f.producerSeq : -1, entry: null, newSeq: -1, retry: false, admission: this.admissions });
      at += u32(b.frames, at);
    }
    return offered;
  }

  /**
   * Frames the releases, in order, with the stream's next seqs into
   * `staging`: an event of this batch from the batch, a held one from its
   * copy, a gap as its tombstone. A held event whose idempotency key the
   * stream took meanwhile is left out (the key's rule: once).
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
      let src: Buffer;
      let from: number;
      let heldEntry: HeldEntry | null = null;
      if (r.kind === "gap") {
        const at = bytes;
        bytes += writeTombstone(staging, at, r.producerId, r.fromSeq, r.toSeq, seq, ts);
        lastAt = at;
        seq++;
        continue;
      }
      const item = r.item;
      // An event of this batch comes from the batch, even when it was held on the way (then released
      // by a later event of it): it never reached held.log, so it is no release of a held event.
      if (b !== null && isOffered(item) && item.admission === this.admissions) {
        src = b.frames;
        from = item.at;
      } else {
        heldEntry = isOffered(item) ? (item.entry as HeldEntry) : item;
        src = heldEntry.frame;
        from = 0;
      }
      const frameBytes = u32(src, from);
      const key = recordIdempotencyKey(src, from, this.fields);
      if (heldEntry !== null) this.releasedHeld.push({ seq: key !== null && (dedup.get(key) !== undefined || keys.has(key)) ? 0 : seq, entry: heldEntry });
      if (key !== null && heldEntry !== null && (dedup.get(key) !== undefined || keys.has(key))) continue;
      staging.ensure(bytes + frameBytes);
      src.copy(staging.buf, bytes, from, from + frameBytes);
      stampFrame(staging.buf, bytes, seq, ts);
      sealFrame(staging.buf, bytes, frameBytes); // a fresh CRC: any batch mark it carried is gone
      if (key !== null) keys.set(key, seq);
      if (isOffered(item)) item.newSeq = seq;
      lastAt = bytes;
      bytes += frameBytes;
      seq++;
    }
    if (lastAt >= 0) markBatchEnd(staging.buf, lastAt);
    return { frames: staging.buf, bytes, count: seq - first, first, ts, keys };
  }

  /**
   * Duplicates by idempotency key within the batch name the seq the batch
   * stamped first; ordering moved the events, so they name the seq the
   * original got, or its producer_seq when it is held or itself a duplicate.
   */
  private fixDuplicates(b: OfferedBatch, offered: Offered[]): void {
    for (const d of b.duplicates) {
      if (d.seq === undefined || d.seq < b.first) continue;
      const o = offered[d.seq - b.first];
      if (o === undefined) continue;
      if (o.newSeq >= 0) d.seq = o.newSeq;
      else {
        delete d.seq;
        d.producer_seq = o.producerSeq;
      }
    }
  }

  private settleReleased(logDurable: boolean): void {
    for (const r of this.releasedHeld) {
      this.heldBytes -= heldEntryBytes(r.entry);
      if (!logDurable && r.seq > 0) {
        this.pending.push(r);
        this.pendingBytes += heldEntryBytes(r.entry);
      }
    }
    const any = this.releasedHeld.length > 0;
    this.releasedHeld = [];
    if (any) this.settle();
  }

  private settle(): void {
    this.store.settle(this.heldBytes + this.pendingBytes, () => {
      const live: HeldEntry[] = [];
      for (const x of this.ingest.heldItems()) live.push(isOffered(x) ? (x.entry as HeldEntry) : x);
      for (const p of this.pending) live.push(p.entry);
      return live;
    });
  }

  close(): void {
    this.store.close();
  }
}

/** Idle producers are looked for this often (they are forgotten after the dedup window). */
const PRODUCER_SWEEP_MS = 10_000;

function heldFull(deadlineMs: number | null, nowMs: number, limits: OrderedLimits): ApiError {
  const retryS = Math.max(1, Math.ceil(((deadlineMs ?? nowMs + 1000) - nowMs) / 1000));
  return new ApiError(
    429,
    "held_full",
    `the stream holds held_events_max (${limits.heldEventsMax}) events or held_bytes_max (${limits.heldBytesMax}) bytes waiting for missing producer_seqs; retry once a gap closes or times out`,
    { retry_after_s: retryS },
  );
}
