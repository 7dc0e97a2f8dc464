// The frames ordered ingest releases (src/shard/ordered.ts): the shard's
// staging buffer they are framed into, and the record a gap's tombstone is.
import { frameBytesFor, RECORD_HEADER_BYTES, sealFrame, writeFrameHeader } from "../log/record.js";
import { EventFields, PAYLOAD_JSON, eventBytesFor, writeEvent } from "../wire/event-layout.js";

/** Staging for released frames, one per shard (the publisher's), grown on demand. */
export class ReleaseStaging {
  buf = Buffer.allocUnsafe(64 * 1024);
  readonly keys = new Map<string, number>();

  ensure(bytes: number): void {
    if (bytes <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(bytes, this.buf.length * 2));
    this.buf.copy(next);
    this.buf = next;
  }
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
