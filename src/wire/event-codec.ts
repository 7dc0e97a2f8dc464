// Events in and out: JSON publish bodies become FlatBuffers Event bodies, binary
// publish batches are checked and kept byte for byte, and stored records are
// rendered as JSON pages. Per-event code here avoids decoding what it can copy.
import * as flatbuffers from "flatbuffers";
import { isUtf8 } from "node:buffer";
import { ApiError } from "../errors.js";
import { Event } from "./generated/ticker/wire/event.js";
import { PayloadEncoding } from "./generated/ticker/wire/payload-encoding.js";
import { PublishBatch } from "./generated/ticker/wire/publish-batch.js";
import { EncodedEvent } from "./generated/ticker/wire/encoded-event.js";
import { RECORD_HEADER_BYTES, frameSeq, frameTs } from "../log/record.js";
import { Verifier, VerifyError } from "./verify.js";

export { Event, PayloadEncoding, PublishBatch, EncodedEvent };

export interface EventLimits {
  /** Largest payload in bytes (JSON text, or raw bytes for binary payloads). */
  eventBytesMax: number;
  /** Largest type, key, producer_id or idempotency_key in UTF-8 bytes. */
  fieldBytesMax: number;
}

/** One event ready to append: its Event body and what dedup needs. */
export interface IncomingEvent {
  body: Uint8Array;
  idempotencyKey: string | null;
}

const ALLOWED_FIELDS = new Set([
  "type", "key", "producer_id", "producer_seq", "producer_ts", "idempotency_key", "payload", "payload_base64",
]);
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function invalid(index: number, message: string): ApiError {
  return new ApiError(400, "invalid_event", `event ${index}: ${message}`, { index });
}

function checkString(v: unknown, name: string, index: number, limits: EventLimits, required: boolean): string | null {
  if (v === undefined || v === null) {
    if (required) throw invalid(index, `"${name}" is required`);
    return null;
  }
  if (typeof v !== "string") throw invalid(index, `"${name}" must be a string`);
  if (required && v.length === 0) throw invalid(index, `"${name}" must not be empty`);
  if (Buffer.byteLength(v) > limits.fieldBytesMax) {
    throw invalid(index, `"${name}" is longer than event_field_bytes_max (${limits.fieldBytesMax} bytes)`);
  }
  return v;
}

function checkUint(v: unknown, name: string, index: number): bigint | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw invalid(index, `"${name}" must be a non-negative integer`);
  }
  return BigInt(v);
}

function tooLarge(index: number, bytes: number, max: number): ApiError {
  return new ApiError(413, "event_too_large", `event ${index}: payload of ${bytes} bytes exceeds max_event_bytes (${max})`, {
    index,
    max_event_bytes: max,
  });
}

/** Validates one JSON event and encodes it as an Event body. Throws ApiError. */
export function encodeJsonEvent(e: unknown, index: number, limits: EventLimits, builder: flatbuffers.Builder): IncomingEvent {
  if (typeof e !== "object" || e === null || Array.isArray(e)) throw invalid(index, "must be a JSON object");
  const o = e as Record<string, unknown>;
  for (const k in o) {
    if (!ALLOWED_FIELDS.has(k)) {
      throw invalid(index, k === "seq" || k === "ingest_ts" || k === "stream"
        ? `"${k}" is assigned by the server and must not be sent`
        : `unknown field "${k}"`);
    }
  }
  const type = checkString(o.type, "type", index, limits, true)!;
  const key = checkString(o.key, "key", index, limits, false);
  const producerId = checkString(o.producer_id, "producer_id", index, limits, false);
  const idempotencyKey = checkString(o.idempotency_key, "idempotency_key", index, limits, false);
  const producerSeq = checkUint(o.producer_seq, "producer_seq", index);
  const producerTs = checkUint(o.producer_ts, "producer_ts", index);

  let encoding = PayloadEncoding.None;
  let payload: Uint8Array | null = null;
  if (o.payload !== undefined && o.payload_base64 !== undefined) {
    throw invalid(index, `send "payload" or "payload_base64", not both`);
  }
  if (o.payload !== undefined) {
    encoding = PayloadEncoding.Json;
    payload = Buffer.from(JSON.stringify(o.payload));
  } else if (o.payload_base64 !== undefined) {
    if (typeof o.payload_base64 !== "string" || o.payload_base64.length % 4 !== 0 || !BASE64.test(o.payload_base64)) {
      throw invalid(index, `"payload_base64" must be a base64 string`);
    }
    encoding = PayloadEncoding.Binary;
    payload = Buffer.from(o.payload_base64, "base64");
  }
  if (payload && payload.byteLength > limits.eventBytesMax) throw tooLarge(index, payload.byteLength, limits.eventBytesMax);

  builder.clear();
  // producer_seq/producer_ts are optional scalars: 0 is a value, not "absent"
  // (flatc 2.0.8 emits a default of 0 for them, which would drop it).
  builder.forceDefaults(true);
  const typeOff = builder.createString(type);
  const keyOff = key === null ? 0 : builder.createString(key);
  const producerOff = producerId === null ? 0 : builder.createString(producerId);
  const idemOff = idempotencyKey === null ? 0 : builder.createString(idempotencyKey);
  const payloadOff = payload === null ? 0 : builder.createByteVector(payload);
  Event.startEvent(builder);
  Event.addType(builder, typeOff);
  if (keyOff) Event.addKey(builder, keyOff);
  if (producerOff) Event.addProducerId(builder, producerOff);
  if (producerSeq !== null) Event.addProducerSeq(builder, producerSeq);
  if (producerTs !== null) Event.addProducerTs(builder, producerTs);
  if (idemOff) Event.addIdempotencyKey(builder, idemOff);
  if (encoding !== PayloadEncoding.None) Event.addPayloadEncoding(builder, encoding);
  if (payloadOff) Event.addPayload(builder, payloadOff);
  builder.finish(Event.endEvent(builder));
  return { body: builder.asUint8Array(), idempotencyKey };
}

/** Parses a JSON publish body into its events array. Throws ApiError. */
export function parseJsonBatch(text: string, publishEventsMax: number): unknown[] {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new ApiError(400, "invalid_json", `request body is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof body !== "object" || body === null || !Array.isArray((body as { events?: unknown }).events)) {
    throw new ApiError(400, "invalid_body", `body must be {"events": [ ... ]}`);
  }
  const events = (body as { events: unknown[] }).events;
  checkBatchSize(events.length, publishEventsMax);
  return events;
}

function checkBatchSize(count: number, publishEventsMax: number): void {
  if (count === 0) throw new ApiError(400, "invalid_body", "a publish request needs at least one event");
  if (count > publishEventsMax) {
    throw new ApiError(413, "batch_too_large", `${count} events exceed publish_events_max (${publishEventsMax})`, {
      publish_events_max: publishEventsMax,
    });
  }
}

function checkFbString(v: Uint8Array | null, name: string, index: number, limits: EventLimits, required: boolean): void {
  if (v === null) {
    if (required) throw invalid(index, `"${name}" is required`);
    return;
  }
  if (required && v.byteLength === 0) throw invalid(index, `"${name}" must not be empty`);
  if (v.byteLength > limits.fieldBytesMax) {
    throw invalid(index, `"${name}" is longer than event_field_bytes_max (${limits.fieldBytesMax} bytes)`);
  }
  if (!isUtf8(v)) throw invalid(index, `"${name}" is not valid UTF-8`);
}

// Field indexes in schemas/ticker.fbs, for the verifier.
const EVENT_STRING_FIELDS = [0, 1, 2, 5]; // type, key, producer_id, idempotency_key
const EVENT_FIELD_PRODUCER_SEQ = 3;
const EVENT_FIELD_PRODUCER_TS = 4;
const EVENT_FIELD_ENCODING = 6;
const EVENT_FIELD_PAYLOAD = 7;

/** Structural check of one Event: every field it has lies inside `bytes`. */
function verifyEvent(bytes: Uint8Array): void {
  const v = new Verifier(bytes);
  const root = v.root();
  for (const f of EVENT_STRING_FIELDS) {
    const at = v.field(root, f, 4);
    if (at) v.vector(at, 1, true);
  }
  v.field(root, EVENT_FIELD_PRODUCER_SEQ, 8);
  v.field(root, EVENT_FIELD_PRODUCER_TS, 8);
  v.field(root, EVENT_FIELD_ENCODING, 1);
  const payload = v.field(root, EVENT_FIELD_PAYLOAD, 4);
  if (payload) v.vector(payload, 1);
}

/**
 * Checks a FlatBuffers PublishBatch and returns each Event's bytes as sent:
 * the stored body is the producer's own serialization, never re-encoded.
 */
export function parseFlatBatch(bytes: Uint8Array, publishEventsMax: number, limits: EventLimits): IncomingEvent[] {
  const out: IncomingEvent[] = [];
  let index = -1;
  try {
    const v = new Verifier(bytes);
    const root = v.root();
    const eventsAt = v.field(root, 0, 4);
    if (!eventsAt) throw new VerifyError("PublishBatch.events is missing");
    const count = v.vector(eventsAt, 4);
    checkBatchSize(count, publishEventsMax);
    for (let i = 0; i < count; i++) {
      const holderAt = v.vectorTable(eventsAt, i);
      const eventAt = v.field(holderAt, 0, 4);
      if (eventAt) v.vector(eventAt, 1);
    }
    const batch = PublishBatch.getRootAsPublishBatch(new flatbuffers.ByteBuffer(bytes));
    const holder = new EncodedEvent();
    const ev = new Event();
    for (index = 0; index < count; index++) {
      const body = batch.events(index, holder)?.eventArray();
      if (!body || body.byteLength < 8) throw invalid(index, "missing nested Event bytes");
      // Copy: the request buffer is released once the batch is appended.
      const own = Uint8Array.prototype.slice.call(body) as Uint8Array;
      verifyEvent(own);
      const e = Event.getRootAsEvent(new flatbuffers.ByteBuffer(own), ev);
      const utf8 = flatbuffers.Encoding.UTF8_BYTES;
      checkFbString(e.type(utf8) as Uint8Array | null, "type", index, limits, true);
      checkFbString(e.key(utf8) as Uint8Array | null, "key", index, limits, false);
      checkFbString(e.producerId(utf8) as Uint8Array | null, "producer_id", index, limits, false);
      const idem = e.idempotencyKey(utf8) as Uint8Array | null;
      checkFbString(idem, "idempotency_key", index, limits, false);
      const enc = e.payloadEncoding();
      const payload = e.payloadArray();
      const payloadBytes = payload ? payload.byteLength : 0;
      if (enc !== PayloadEncoding.None && enc !== PayloadEncoding.Json && enc !== PayloadEncoding.Binary) {
        throw invalid(index, `unknown payload_encoding ${enc}`);
      }
      if (payloadBytes > limits.eventBytesMax) throw tooLarge(index, payloadBytes, limits.eventBytesMax);
      if (enc === PayloadEncoding.Json) {
        if (!payload) throw invalid(index, "payload_encoding Json without payload");
        try {
          JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString("utf8"));
        } catch {
          throw invalid(index, "payload_encoding is Json but the payload is not valid JSON");
        }
      }
      out.push({ body: own, idempotencyKey: idem ? Buffer.from(idem).toString("utf8") : null });
    }
  } catch (err) {
    if (err instanceof ApiError) throw err;
    const why = err instanceof VerifyError ? `: ${err.message}` : "";
    throw new ApiError(400, "invalid_flatbuffer", index < 0
      ? `body is not a FlatBuffers PublishBatch${why}`
      : `event ${index}: not a valid FlatBuffers Event${why}`, index < 0 ? {} : { index });
  }
  return out;
}

/** The idempotency key of a stored record (used to rebuild the dedup window). */
export function recordIdempotencyKey(buf: Buffer, at: number, ev: Event, bb: flatbuffers.ByteBuffer): string | null {
  bb.setPosition(at + RECORD_HEADER_BYTES);
  return Event.getRootAsEvent(bb, ev).idempotencyKey();
}

// ---- JSON rendering of stored records --------------------------------

/** Growable output buffer for a JSON page; the page bytes limit keeps it bounded. */
export class ByteWriter {
  buf: Buffer;
  length = 0;
  constructor(initialBytes = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(initialBytes);
  }
  reset(): void {
    this.length = 0;
  }
  private ensure(extra: number): void {
    if (this.length + extra <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + extra) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  ascii(s: string): void {
    this.ensure(s.length);
    this.length += this.buf.write(s, this.length, "latin1");
  }
  utf8(s: string): void {
    this.ensure(s.length * 3);
    this.length += this.buf.write(s, this.length, "utf8");
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.byteLength);
    this.buf.set(b, this.length);
    this.length += b.byteLength;
  }
  /** A JSON string literal from UTF-8 bytes, copied as is unless it needs escaping. */
  jsonString(b: Uint8Array): void {
    for (let i = 0; i < b.byteLength; i++) {
      const c = b[i];
      if (c < 0x20 || c === 0x22 || c === 0x5c) {
        this.utf8(JSON.stringify(Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("utf8")));
        return;
      }
    }
    this.ensure(b.byteLength + 2);
    this.buf[this.length++] = 0x22;
    this.buf.set(b, this.length);
    this.length += b.byteLength;
    this.buf[this.length++] = 0x22;
  }
  view(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

/**
 * Renders the record at `at` as one JSON event object. `streamJson` is the
 * stream id already as a JSON string literal.
 */
export function renderJsonEvent(w: ByteWriter, buf: Buffer, at: number, streamJson: string, bb: flatbuffers.ByteBuffer, ev: Event): void {
  bb.setPosition(at + RECORD_HEADER_BYTES);
  const e = Event.getRootAsEvent(bb, ev);
  const utf8 = flatbuffers.Encoding.UTF8_BYTES;
  w.ascii(`{"seq":${frameSeq(buf, at)},"stream":${streamJson},"type":`);
  w.jsonString(e.type(utf8) as Uint8Array);
  const key = e.key(utf8) as Uint8Array | null;
  if (key) {
    w.ascii(`,"key":`);
    w.jsonString(key);
  }
  const producerId = e.producerId(utf8) as Uint8Array | null;
  if (producerId) {
    w.ascii(`,"producer_id":`);
    w.jsonString(producerId);
  }
  const producerSeq = e.producerSeq();
  if (producerSeq !== null) w.ascii(`,"producer_seq":${producerSeq}`);
  const producerTs = e.producerTs();
  if (producerTs !== null) w.ascii(`,"producer_ts":${producerTs}`);
  w.ascii(`,"ingest_ts":${frameTs(buf, at)}`);
  const idem = e.idempotencyKey(utf8) as Uint8Array | null;
  if (idem) {
    w.ascii(`,"idempotency_key":`);
    w.jsonString(idem);
  }
  const enc = e.payloadEncoding();
  if (enc !== PayloadEncoding.None) {
    const payload = e.payloadArray() ?? new Uint8Array(0);
    if (enc === PayloadEncoding.Json) {
      w.ascii(`,"payload":`);
      w.bytes(payload);
    } else {
      w.ascii(`,"payload_base64":"`);
      w.ascii(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString("base64"));
      w.ascii(`"`);
    }
  }
  w.ascii("}");
}
