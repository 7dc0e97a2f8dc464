// Client-side codecs for the binary form: build a PublishBatch, read an
// EventBatch (replay page or WebSocket frame) back into events. Used by the
// tests and load tools, and a reference for clients in other languages.
import * as flatbuffers from "flatbuffers";
import { crc32 } from "node:zlib";
import { Event } from "./generated/ticker/wire/event.js";
import { EventBatch } from "./generated/ticker/wire/event-batch.js";
import { PayloadEncoding } from "./generated/ticker/wire/payload-encoding.js";
import { PublishBatch } from "./generated/ticker/wire/publish-batch.js";

export interface OutgoingEvent {
  type: string;
  key?: string;
  producer_id?: string;
  producer_seq?: number;
  producer_ts?: number;
  idempotency_key?: string;
  /** A JSON value (stored as JSON text). */
  payload?: unknown;
  /** Raw bytes (shown as payload_base64 in JSON). */
  payload_bytes?: Uint8Array;
}

export interface DecodedEvent extends Omit<OutgoingEvent, "payload_bytes"> {
  seq: number;
  ingest_ts: number;
  payload_bytes?: Uint8Array;
}

/** Serializes one Event on its own, as a PublishBatch carries it. */
export function encodeEvent(e: OutgoingEvent, b = new flatbuffers.Builder(256)): Uint8Array {
  b.clear();
  b.forceDefaults(true); // optional scalars: keep an explicit 0
  const type = b.createString(e.type);
  const key = e.key === undefined ? 0 : b.createString(e.key);
  const producer = e.producer_id === undefined ? 0 : b.createString(e.producer_id);
  const idem = e.idempotency_key === undefined ? 0 : b.createString(e.idempotency_key);
  let enc = PayloadEncoding.None;
  let payload = 0;
  if (e.payload_bytes !== undefined) {
    enc = PayloadEncoding.Binary;
    payload = b.createByteVector(e.payload_bytes);
  } else if (e.payload !== undefined) {
    enc = PayloadEncoding.Json;
    payload = b.createByteVector(Buffer.from(JSON.stringify(e.payload)));
  }
  Event.startEvent(b);
  Event.addType(b, type);
  if (key) Event.addKey(b, key);
  if (producer) Event.addProducerId(b, producer);
  if (e.producer_seq !== undefined) Event.addProducerSeq(b, BigInt(e.producer_seq));
  if (e.producer_ts !== undefined) Event.addProducerTs(b, BigInt(e.producer_ts));
  if (idem) Event.addIdempotencyKey(b, idem);
  if (enc !== PayloadEncoding.None) Event.addPayloadEncoding(b, enc);
  if (payload) Event.addPayload(b, payload);
  b.finish(Event.endEvent(b));
  return b.asUint8Array().slice();
}

/**
 * A PublishBatch body: each event (or already-encoded Event) in a record
 * frame whose header the server fills in (docs/wire.md), frames 8-aligned.
 */
export function encodePublishBatch(events: Array<OutgoingEvent | Uint8Array>): Uint8Array {
  const inner = new flatbuffers.Builder(256);
  const encoded = events.map((e) => (e instanceof Uint8Array ? e : encodeEvent(e, inner)));
  const frameBytes = (n: number) => (24 + n + 7) & ~7;
  const total = encoded.reduce((n, e) => n + frameBytes(e.byteLength), 0);
  const records = new Uint8Array(total); // zero headers and padding
  let at = 0;
  for (const e of encoded) {
    new DataView(records.buffer).setUint32(at, frameBytes(e.byteLength), true);
    records.set(e, at + 24);
    at += frameBytes(e.byteLength);
  }
  const b = new flatbuffers.Builder(total + 64);
  b.prep(8, total); // frames 8-aligned in the buffer, for readers that care
  const vec = b.createByteVector(records);
  PublishBatch.startPublishBatch(b);
  PublishBatch.addRecords(b, vec);
  b.finish(PublishBatch.endPublishBatch(b));
  return b.asUint8Array();
}

/** Reads stored record frames (docs/wire.md), checking each CRC. */
export function decodeRecords(records: Uint8Array): DecodedEvent[] {
  const buf = Buffer.from(records.buffer, records.byteOffset, records.byteLength);
  const out: DecodedEvent[] = [];
  const bb = new flatbuffers.ByteBuffer(buf);
  const ev = new Event();
  let at = 0;
  while (at < buf.length) {
    const frameBytes = buf.readUInt32LE(at);
    if (frameBytes < 32 || at + frameBytes > buf.length) throw new Error(`bad frame length ${frameBytes} at ${at}`);
    // The last record of each appended batch stores the CRC complemented (its commit mark).
    const crc = crc32(buf.subarray(at + 8, at + frameBytes));
    const stored = buf.readUInt32LE(at + 4);
    if (crc !== stored && ~crc >>> 0 !== stored) throw new Error(`bad CRC at ${at}`);
    bb.setPosition(at + 24);
    const e = Event.getRootAsEvent(bb, ev);
    const d: DecodedEvent = { seq: Number(buf.readBigUInt64LE(at + 8)), ingest_ts: Number(buf.readBigUInt64LE(at + 16)), type: e.type() ?? "" };
    const key = e.key();
    if (key !== null) d.key = key;
    const pid = e.producerId();
    if (pid !== null) d.producer_id = pid;
    const pseq = e.producerSeq();
    if (pseq !== null) d.producer_seq = Number(pseq);
    const pts = e.producerTs();
    if (pts !== null) d.producer_ts = Number(pts);
    const idem = e.idempotencyKey();
    if (idem !== null) d.idempotency_key = idem;
    const payload = e.payloadArray();
    if (e.payloadEncoding() === PayloadEncoding.Json && payload) d.payload = JSON.parse(Buffer.from(payload).toString("utf8"));
    else if (e.payloadEncoding() === PayloadEncoding.Binary) d.payload_bytes = payload ? payload.slice() : new Uint8Array(0);
    out.push(d);
    at += frameBytes;
  }
  return out;
}

export interface DecodedBatch {
  stream: string | null;
  first_seq: number;
  head_seq: number;
  next: number;
  count: number;
  /** The record frames as the server sent them. */
  records: Uint8Array;
}

export function decodeEventBatch(bytes: Uint8Array): DecodedBatch {
  const b = EventBatch.getRootAsEventBatch(new flatbuffers.ByteBuffer(bytes));
  return {
    stream: b.stream(),
    first_seq: Number(b.firstSeq()),
    head_seq: Number(b.headSeq()),
    next: Number(b.next()),
    count: b.count(),
    records: b.recordsArray() ?? new Uint8Array(0),
  };
}
