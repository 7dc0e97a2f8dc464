// Conflation of a consumer's log page (`conflate=key`): within the page, only
// the newest event of each key is kept, in seq order; events without a key
// are always kept. The page still covers its whole seq range, and the count
// of what was left out travels with it (docs/consume.md, "Conflation").
import { u32 } from "../bytes.js";
import { RECORD_HEADER_BYTES, frameSeq } from "../log/record.js";
import { EventFields } from "./event-layout.js";

export interface ConflatedPage {
  /** Frames kept, moved to the front of the buffer. */
  count: number;
  bytes: number;
  /** Frames left out among those looked at. */
  conflated: number;
  /** The seq of the first frame not looked at (the page's new `next`), or -1 when it looked at all. */
  stopSeq: number;
}

export class PageConflater {
  private readonly fields = new EventFields();
  /** Key (its UTF-8 bytes as latin1, one char per byte, so distinct keys stay distinct) -> index of its newest frame. */
  private readonly newest = new Map<string, number>();
  /** Each looked-at frame's key; null: no key. */
  private readonly keys: Array<string | null>;
  /**
   * droppedBefore[k]: frames left out before the k-th kept one; [count]:
   * all of them. A message cut at its byte bound after k events reports
   * droppedBefore[k] (event-codec.ts renderEventsMessage).
   */
  readonly droppedBefore: Uint32Array;

  /** Bound: the map, keys and counts hold at most `eventsMax` entries, the largest page (consume_page_events_max). */
  constructor(readonly eventsMax: number) {
    this.keys = new Array<string | null>(eventsMax).fill(null);
    this.droppedBefore = new Uint32Array(eventsMax + 1);
  }

  /**
   * Conflates the first frames of a page (at most `eventsMax`) so that at
   * most `keepMax` remain: it looks at the longest prefix whose conflation
   * keeps no more than that (one frame per distinct key plus every keyless
   * one never shrinks as the prefix grows), then keeps the newest per key.
   */
  conflate(frames: Buffer, count: number, keepMax: number): ConflatedPage {
    if (count > this.eventsMax) throw new Error(`a page of ${count} frames is over the conflation bound ${this.eventsMax}`);
    const newest = this.newest;
    let distinct = 0;
    let at = 0;
    let n = 0;
    for (; n < count; n++) {
      const f = this.fields.read(frames, at + RECORD_HEADER_BYTES);
      const key = f.keyAt < 0 ? null : frames.toString("latin1", f.keyAt, f.keyAt + f.keyLen);
      const known = key !== null && newest.has(key);
      if (!known) {
        if (distinct === keepMax) break;
        distinct++;
      }
      if (key !== null) newest.set(key, n);
      this.keys[n] = key;
      at += u32(frames, at);
    }
    const stopSeq = n < count ? frameSeq(frames, at) : -1;
    let kept = 0;
    let out = 0;
    at = 0;
    for (let i = 0; i < n; i++) {
      const len = u32(frames, at);
      const key = this.keys[i];
      if (key === null || newest.get(key) === i) {
        this.droppedBefore[kept] = i - kept;
        if (out !== at) frames.copyWithin(out, at, at + len);
        out += len;
        kept++;
      }
      at += len;
    }
    this.droppedBefore[kept] = n - kept;
    newest.clear();
    this.keys.fill(null, 0, n);
    if (kept !== distinct || kept > keepMax) throw new Error(`conflation kept ${kept} frames for ${distinct} keys (at most ${keepMax})`);
    return { count: kept, bytes: out, conflated: n - kept, stopSeq };
  }
}
