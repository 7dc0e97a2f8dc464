// How many events a publish body holds, without decoding it: what a key's
// events_per_s bucket is charged before the body goes to its shard. Exact for
// every body the shard accepts; for any other body the count may be off, and
// the charge is refunded when the shard refuses it.
import { ContentType } from "./content-type.js";
import { RECORD_BYTES_MIN } from "../log/record.js";
import { Verifier } from "./verify.js";

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_OBJECT = 0x7b;
const OPEN_ARRAY = 0x5b;
const CLOSE_OBJECT = 0x7d;
const CLOSE_ARRAY = 0x5d;
/** `{"events": [ <here> ]}`: an event opens at depth 3. */
const EVENT_DEPTH = 3;

export function countPublishEvents(body: Buffer, ct: ContentType): number {
  return ct === ContentType.FlatBuffers ? countFlatEvents(body) : countJsonEvents(body);
}

/**
 * Counts the objects and arrays that open at depth 3: in an accepted body
 * (one "events" array of objects) those are exactly its events. Strings are
 * skipped with indexOf, so the cost is the brackets, not the payload bytes.
 */
function countJsonEvents(b: Buffer): number {
  let depth = 0;
  let count = 0;
  for (let i = 0; i < b.length; i++) {
    const c = b[i];
    if (c === QUOTE) {
      // The closing quote is the next one not escaped by an odd run of backslashes.
      for (;;) {
        const q = b.indexOf(QUOTE, i + 1);
        if (q < 0) return count;
        let slashes = 0;
        while (b[q - 1 - slashes] === BACKSLASH) slashes++;
        i = q;
        if (slashes % 2 === 0) break;
      }
    } else if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
      if (++depth === EVENT_DEPTH) count++;
    } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) depth--;
  }
  return count;
}

/** Walks the record frames of a PublishBatch by their lengths (no CRC, no fields). */
function countFlatEvents(b: Buffer): number {
  let count = 0;
  try {
    const v = new Verifier(b);
    const recordsAt = v.field(v.root(), 0, 4);
    if (!recordsAt) return 0;
    const span = v.vectorSpan(recordsAt, 1);
    const end = span.data + span.count;
    for (let at = span.data; at + 4 <= end; count++) {
      const frameBytes = b.readUInt32LE(at);
      if (frameBytes < RECORD_BYTES_MIN || (frameBytes & 7) !== 0 || at + frameBytes > end) return count + 1;
      at += frameBytes;
    }
  } catch {
    // Not a PublishBatch: the shard refuses it, and the charge comes back.
  }
  return count;
}
