// The frames ordered ingest releases (src/shard/ordered.ts): the shard's
// staging buffer they are framed into, in release order with the stream's
// next seqs, and the record a gap's tombstone is.
//
// Cost per released event: a frame of the batch being admitted was checked
// and stamped by the publisher but not sealed, so it is sealed here, once,
// like a plain stream's; frames that follow each other in the batch as they
// do in the release order (all of them but those around a hold) are copied
// in one go, and their keys come from the publisher's framing. Only a held
// event's frame is read again for its key.
import { u32 } from "../bytes.js";
import { frameBytesFor, markBatchEnd, RECORD_HEADER_BYTES, sealFrame, stampFrame, writeFrameHeader } from "../log/record.js";
import type { StreamLog } from "../log/log.js";
import { recordIdempotencyKey } from "../wire/event-codec.js";
import { EventFields, PAYLOAD_JSON, eventBytesFor, writeEvent } from "../wire/event-layout.js";
import type { DedupWindow } from "./dedup.js";
import type { HeldEntry } from "./held-events.js";
import { isOwn, type Item, type OfferedEvents } from "./ordered-batch.js";
import type { Release } from "./ordered-ingest.js";

/** What the log gets now, framed: the same shape the publisher commits. */
export interface Released {
  frames: Buffer;
  bytes: number;
  count: number;
  first: number;
  ts: number;
  readonly keys: Map<string, number>;
}

/** A batch whose frames are offered (its frames and their keys), as frameReleases reads it. */
interface OwnFrames {
  frames: Buffer;
  readonly frameKeys: ReadonlyArray<string | null>;
}

/** Staging for released frames, one per shard (the publisher's), grown on demand. */
export class ReleaseStaging {
  /** The frames, a view of `room` that starts at the address alignment (mod 8) of the batch's frames. */
  buf: Buffer;
  private room = Buffer.allocUnsafe(64 * 1024 + 8);
  private shift = 0;
  readonly keys = new Map<string, number>();
  readonly fields = new EventFields();
  /** Bytes framed so far, the pending run's included; the next frame's seq. */
  bytes = 0;
  seq = 0;
  ts = 0;
  /** Where the last frame starts (it gets the batch's commit mark), or -1. */
  lastAt = -1;
  // A run of frames of the batch, [runFrom, runEnd) of runSrc, bound for buf
  // at runTo with seqs from runSeq: copied, stamped and sealed when it ends.
  private runSrc: Buffer | null = null;
  private runFrom = 0;
  private runEnd = 0;
  private runTo = 0;
  private runSeq = 0;

  constructor() {
    this.buf = this.room;
  }

  ensure(bytes: number): void {
    if (bytes <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(bytes, this.buf.length * 2) + 8);
    this.room.copy(next, 0, 0, this.shift + (this.runSrc === null ? this.bytes : this.runTo));
    this.room = next;
    this.align(this.shift);
  }

  /**
   * Starts a batch whose own frames lie at addresses `alignment` (mod 8):
   * the staging frames are placed alike, since V8 copies out of shared
   * memory (a request body in the ring, at any offset) word by word only
   * between equally aligned ends, byte by byte otherwise (measured: 23 vs
   * 3 GB/s).
   */
  begin(first: number, ts: number, alignment: number): void {
    this.align((alignment - this.room.byteOffset) & 7);
    this.bytes = 0;
    this.seq = first;
    this.ts = ts;
    this.lastAt = -1;
    this.runSrc = null;
    this.keys.clear();
  }

  /** A frame of the batch being admitted, at `at` in `src`; returns its seq. */
  own(src: Buffer, at: number, key: string | null): number {
    const frameBytes = u32(src, at);
    if (this.runSrc !== src || at !== this.runEnd) {
      this.endRun();
      this.runSrc = src;
      this.runFrom = this.runEnd = at;
      this.runTo = this.bytes;
      this.runSeq = this.seq;
    }
    this.runEnd += frameBytes;
    return this.next(frameBytes, key);
  }

  /** A held event's frame (its copy in held.log); returns its seq. */
  held(frame: Buffer, key: string | null): number {
    this.endRun();
    const frameBytes = u32(frame, 0);
    this.ensure(this.bytes + frameBytes);
    frame.copy(this.buf, this.bytes, 0, frameBytes);
    stampFrame(this.buf, this.bytes, this.seq, this.ts);
    sealFrame(this.buf, this.bytes, frameBytes); // a fresh CRC: any batch mark it carried is gone
    return this.next(frameBytes, key);
  }

  /** A tombstone of `producerId`'s range [fromSeq, toSeq]. */
  tombstone(producerId: string, fromSeq: number, toSeq: number): void {
    this.endRun();
    this.next(writeTombstone(this, this.bytes, producerId, fromSeq, toSeq, this.seq, this.ts), null);
  }

  /** The framed batch, its last frame marked as the batch's end. */
  end(first: number): Released {
    this.endRun();
    if (this.lastAt >= 0) markBatchEnd(this.buf, this.lastAt);
    return { frames: this.buf, bytes: this.bytes, count: this.seq - first, first, ts: this.ts, keys: this.keys };
  }

  private align(shift: number): void {
    this.shift = shift;
    this.buf = this.room.subarray(shift);
  }

  private next(frameBytes: number, key: string | null): number {
    if (key !== null) this.keys.set(key, this.seq);
    this.lastAt = this.bytes;
    this.bytes += frameBytes;
    return this.seq++;
  }

  private endRun(): void {
    const src = this.runSrc;
    if (src === null) return;
    const to = this.runTo;
    const end = to + (this.runEnd - this.runFrom);
    this.ensure(end);
    this.runSrc = null;
    src.copy(this.buf, to, this.runFrom, this.runEnd);
    for (let at = to, seq = this.runSeq; at < end; seq++) {
      const frameBytes = u32(this.buf, at);
      stampFrame(this.buf, at, seq, this.ts);
      sealFrame(this.buf, at, frameBytes);
      at += frameBytes;
    }
  }
}

/**
 * Frames the releases, in order, with the stream's next seqs into
 * `staging`: an event of this batch from the batch (`b`, read as
 * `offered`; null for the gap timer's releases), a held one from its copy,
 * a gap as its tombstone. A held event whose idempotency key the stream
 * took meanwhile (past the dedup window's reach when it arrived) goes out
 * as a tombstone of its own producer_seq: the key's rule holds, and the
 * producer's order still shows the hole. The held events released are
 * pushed onto `releasedHeld` with their seqs; an event of this batch gets
 * its seq in offered.newSeq.
 */
export function frameReleases(
  out: readonly Release<Item>[],
  b: OwnFrames | null,
  offered: OfferedEvents | null,
  staging: ReleaseStaging,
  log: StreamLog,
  dedup: DedupWindow,
  nowMs: number,
  releasedHeld: Array<{ seq: number; entry: HeldEntry }>,
): Released {
  const first = log.headSeq + 1;
  staging.begin(first, Math.max(nowMs, log.lastTs), b === null ? 0 : b.frames.byteOffset & 7);
  const keys = staging.keys;
  for (const r of out) {
    if (r.kind === "gap") {
      staging.tombstone(r.producerId, r.fromSeq, r.toSeq);
      continue;
    }
    const item = r.item;
    // An event of this batch comes from the batch, even when it was held on the way (then released
    // by a later event of it): it never reached held.log, so it is no release of a held event.
    if (isOwn(item)) {
      if (b === null || offered === null) throw new Error("ordered ingest: a batch's event released without its batch");
      offered.newSeq[item] = staging.own(b.frames, offered.at[item], b.frameKeys[item]);
      continue;
    }
    releasedHeld.push({ seq: staging.seq, entry: item });
    const key = recordIdempotencyKey(item.frame, 0, staging.fields);
    if (key !== null && (dedup.get(key) !== undefined || keys.has(key))) staging.tombstone(r.producerId, r.producerSeq, r.producerSeq);
    else staging.held(item.frame, key);
  }
  return staging.end(first);
}

/**
 * A gap's tombstone as a record at staging[at]: type "gap", the producer's
 * id, producer_seq the range's end (so the log shows where the producer
 * stands), and the payload {"producer_id","from_producer_seq","to_producer_seq"}.
 */
export function writeTombstone(staging: ReleaseStaging, at: number, producerId: string, fromSeq: number, toSeq: number, seq: number, ts: number): number {
  const payload = JSON.stringify({ producer_id: producerId, from_producer_seq: fromSeq, to_producer_seq: toSeq });
  const src = Buffer.from(`gap${producerId}${payload}`, "utf8");
  const f = new EventFields();
  f.typeAt = 0;
  f.typeLen = 3;
  f.producerIdAt = 3;
  f.producerIdLen = Buffer.byteLength(producerId);
  f.payloadAt = 3 + f.producerIdLen;
  f.payloadLen = src.length - f.payloadAt;
  f.encoding = PAYLOAD_JSON;
  f.producerSeq = toSeq;
  staging.ensure(at + RECORD_HEADER_BYTES + eventBytesFor(f) + 8);
  const bodyBytes = writeEvent(staging.buf, at + RECORD_HEADER_BYTES, src, f);
  const frameBytes = frameBytesFor(bodyBytes);
  writeFrameHeader(staging.buf, at, frameBytes, bodyBytes, seq, ts);
  sealFrame(staging.buf, at, frameBytes);
  return frameBytes;
}
