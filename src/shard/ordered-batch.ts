// A framed batch as ordered ingest reads it (src/shard/ordered.ts): each
// event's place in the batch and the request, its producer fields and key,
// checked before the rule is offered any of them.
import { ApiError } from "../errors.js";
import { RECORD_HEADER_BYTES } from "../log/record.js";
import { u32 } from "../bytes.js";
import type { EventFields } from "../wire/event-layout.js";
import type { HeldEntry } from "./held-events.js";
import type { OfferedBatch } from "./ordered.js";

/** A framed event of the batch being admitted: where it is, and its request index. */
export interface Offered {
  at: number;
  index: number;
  producerId: string;
  producerSeq: number;
  key: string | null;
  /** Set when it is held: a copy of its frame, kept until its release. */
  entry: HeldEntry | null;
  /** The seq it got when released in its own batch, else -1. */
  newSeq: number;
  /** A repeat of an event held by an earlier request. */
  retry: boolean;
  /** Which admission offered it (OrderedStream.admissions then). */
  admission: number;
}

export type Item = Offered | HeldEntry;
export const isOffered = (x: Item): x is Offered => (x as Offered).at !== undefined;
export const entryOf = (x: Item): HeldEntry => (isOffered(x) ? (x.entry as HeldEntry) : x);

/**
 * The events of a framed batch as the rule is offered them, each with its
 * producer fields checked first (they go together, from 1): one bad event
 * refuses the batch before anything changes. An event whose idempotency key
 * a held event has is that one's duplicate (unless it is that very event).
 */
export function offeredEvents(
  b: OfferedBatch,
  f: EventFields,
  heldKeys: ReadonlyMap<string, { producerId: string; producerSeq: number }>,
  admission: number,
): Offered[] {
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
    const producerId = hasId ? b.frames.toString("utf8", f.producerIdAt, f.producerIdAt + f.producerIdLen) : "";
    const producerSeq = hasId ? f.producerSeq : -1;
    const key = f.idemAt < 0 ? null : b.frames.toString("utf8", f.idemAt, f.idemAt + f.idemLen);
    const frameBytes = u32(b.frames, at);
    at += frameBytes;
    // A key a held event has is taken: this event is that one's duplicate (unless it is that very event again).
    const holder = key === null ? undefined : heldKeys.get(key);
    if (holder !== undefined && (holder.producerId !== producerId || holder.producerSeq !== producerSeq)) {
      b.duplicates.push({ index, producer_id: holder.producerId, producer_seq: holder.producerSeq });
      continue;
    }
    offered.push({ at: at - frameBytes, index, producerId, producerSeq, key, entry: null, newSeq: -1, retry: false, admission });
  }
  return offered;
}
