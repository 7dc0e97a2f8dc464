// A framed batch as ordered ingest reads it (src/shard/ordered.ts): each
// event's place in the batch and the request, its producer fields and key,
// checked before the rule is offered any of them. The fields come from the
// columns the frame check noted (no event is read again), and they live in
// arrays indexed by the frame's place in the batch, reused batch after
// batch: a batch of a thousand events makes no object per event, and one
// producer id string per run of events from the same producer.
import { ApiError } from "../errors.js";
import { RECORD_HEADER_BYTES } from "../log/record.js";
import { u32 } from "../bytes.js";
import type { BatchColumns } from "../wire/event-layout.js";
import type { HeldEntry } from "./held-events.js";
import type { OfferedBatch } from "./ordered.js";

/** What the rule holds of an event: its frame's place in the batch being admitted, or its held.log entry. */
export type Item = number | HeldEntry;
export const isOwn = (x: Item): x is number => typeof x === "number";

/** The event holding an idempotency key while it is held. */
export interface KeyHolder {
  producerId: string;
  producerSeq: number;
}

/** The events of the batch being admitted, by frame j (0 .. count-1), as the rule is offered them. */
export class OfferedEvents {
  count = 0;
  /** Where frame j starts in the batch's frames. */
  at = new Int32Array(0);
  /** -1: no producer fields (appended as it comes). */
  producerSeq = new Float64Array(0);
  /** The seq it got when released in its own batch, else -1. */
  newSeq = new Float64Array(0);
  /** 1: a repeat of an event held by an earlier request. */
  retry = new Uint8Array(0);
  // The first `count` entries are the batch's (the arrays keep their length: not grown anew per batch).
  readonly producerId: string[] = [];
  /** Set when it is held: a copy of its frame, kept until its release. */
  readonly entry: Array<HeldEntry | null> = [];
  /** Set when a held event has its idempotency key: it is that one's duplicate, never offered. */
  readonly holder: Array<KeyHolder | null> = [];

  /**
   * Reads a framed batch, each event's producer fields checked first (they
   * go together, from 1): one bad event refuses the batch before anything
   * changes. An event whose idempotency key a held event has is that one's
   * duplicate (unless it is that very event), listed in b.duplicates.
   */
  read(b: OfferedBatch, heldKeys: ReadonlyMap<string, KeyHolder>): void {
    const n = b.count;
    this.room(n);
    // Whatever a longer batch left past this one's end goes: no stale entry is kept alive.
    this.entry.fill(null, n);
    this.holder.fill(null, n);
    this.producerId.fill("", n);
    this.count = n;
    const cols = b.cols;
    const frames = b.frames;
    let idAt = -1; // the last producer id read, and its string
    let idLen = 0;
    let id = "";
    for (let j = 0, at = 0; j < n; j++) {
      const index = b.indexes[j];
      const base = at + RECORD_HEADER_BYTES;
      const seq = producerSeqOf(cols, index);
      const hasId = cols.producerIdAt[index] >= 0;
      if (hasId) {
        const from = base + cols.producerIdAt[index];
        const len = cols.producerIdLen[index];
        // Most batches are one producer's: its id is decoded once, and compared byte by byte after.
        if (len !== idLen || idAt < 0 || !sameBytes(frames, from, idAt, len)) id = frames.toString("utf8", from, from + len);
        idAt = from;
        idLen = len;
      }
      const producerId = hasId ? id : "";
      const key = b.frameKeys[j];
      this.at[j] = at;
      this.producerSeq[j] = seq;
      this.newSeq[j] = -1;
      this.retry[j] = 0;
      this.producerId[j] = producerId;
      this.entry[j] = null;
      // A key a held event has is taken: this event is that one's duplicate (unless it is that very event again).
      const holder = key === null ? undefined : heldKeys.get(key);
      const taken = holder !== undefined && (holder.producerId !== producerId || holder.producerSeq !== seq);
      this.holder[j] = taken ? holder : null;
      if (taken) b.duplicates.push({ index, producer_id: holder.producerId, producer_seq: holder.producerSeq });
      at += u32(frames, at);
    }
  }

  private room(n: number): void {
    if (n <= this.at.length) return;
    const size = Math.max(n, this.at.length * 2);
    this.at = new Int32Array(size);
    this.producerSeq = new Float64Array(size);
    this.newSeq = new Float64Array(size);
    this.retry = new Uint8Array(size);
  }
}

/** Event `index`'s producer_seq (-1 without producer fields), or a 400 if its producer fields are not a pair from 1. */
function producerSeqOf(cols: BatchColumns, index: number): number {
  const hasId = cols.producerIdAt[index] >= 0;
  const seq = cols.producerSeq[index];
  if (hasId !== seq >= 0) {
    throw new ApiError(400, "invalid_event", `event ${index}: "producer_id" and "producer_seq" go together on a stream with producer_ordering`, { index });
  }
  if (hasId && (seq < 1 || !Number.isSafeInteger(seq))) {
    throw new ApiError(400, "invalid_event", `event ${index}: "producer_seq" must be an integer from 1 to 2^53-1 on a stream with producer_ordering`, {
      index,
    });
  }
  return seq;
}

function sameBytes(buf: Buffer, a: number, b: number, len: number): boolean {
  for (let i = 0; i < len; i++) if (buf[a + i] !== buf[b + i]) return false;
  return true;
}
