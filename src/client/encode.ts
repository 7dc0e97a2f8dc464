// Publish bodies, built straight into one buffer per batch. Binary: a
// PublishBatch (schemas/ticker.fbs) whose records are the events already in
// record frames (docs/wire.md), each Event written by the server's own
// writer (src/wire/event-layout.ts): no FlatBuffers builder, no copy per
// event besides its bytes. JSON: the API's {"events": [...]} text.
import { writeU32 } from "../bytes.js";
import { copyShort, EventFields, PAYLOAD_BINARY, PAYLOAD_JSON, PAYLOAD_NONE, eventBytesFor, writeEvent } from "../wire/event-layout.js";
import type { OutgoingEvent } from "../wire/client.js";
import { TickerError } from "./errors.js";

/**
 * An event as a producer gives it (API.md, "Event"; seq, stream and
 * ingest_ts are the server's): the wire's outgoing event, and JSON text
 * sent as is.
 */
export interface PublishEvent extends OutgoingEvent {
  /** JSON text, sent as is (a string or its UTF-8 bytes). */
  payload_json?: string | Uint8Array;
}

export type Format = "binary" | "json";

const FRAME_HEADER_BYTES = 24;
/** Root offset, the vtable of table PublishBatch, the table, the records vector's length: records then start 8-aligned. */
const ENVELOPE_BYTES = 24;
const START_BYTES = 64 * 1024;

const invalid = (index: number, message: string) => new TickerError(0, "invalid_event", `event ${index}: ${message}`, { index });

/** One batch's body under construction; `add` events (prepared by prepareEvent first), then `finish`. Reused batch after batch. */
export interface BatchEncoder {
  readonly count: number;
  /** Body bytes so far. */
  readonly bytes: number;
  add(p: Prepared, idempotencyKey: string | undefined): void;
  /** The body (a copy the encoder no longer touches); the encoder starts a new batch. */
  finish(): Buffer;
  readonly contentType: string;
}

/** An event that met the rules, its payload serialised: what an encoder adds. */
export interface Prepared {
  e: PublishEvent;
  payload: Uint8Array | string | null;
  encoding: number;
}

/**
 * The rules an event must meet before it is batched, and its payload's
 * serialisation, done for a whole call before any of its events is added:
 * a call is taken whole or refused, and a refused event never reaches a
 * batch (where the server would refuse the batch, other calls' events too).
 */
export function prepareEvent(e: PublishEvent, index: number): Prepared {
  if (e === null || typeof e !== "object") throw invalid(index, "an event must be an object");
  if (typeof e.type !== "string" || e.type.length === 0) throw invalid(index, "type must be a non-empty string");
  checkText("type", e.type, index);
  for (const name of ["key", "producer_id", "idempotency_key"] as const) if (e[name] !== undefined) checkText(name, e[name], index);
  checkScalar("producer_seq", e.producer_seq, index);
  checkScalar("producer_ts", e.producer_ts, index);
  const given = (e.payload !== undefined ? 1 : 0) + (e.payload_json !== undefined ? 1 : 0) + (e.payload_bytes !== undefined ? 1 : 0);
  if (given > 1) throw invalid(index, "give at most one of payload, payload_json and payload_bytes");
  if (e.payload_bytes !== undefined) {
    if (!(e.payload_bytes instanceof Uint8Array)) throw invalid(index, "payload_bytes must be a Uint8Array (or Buffer)");
    return { e, payload: e.payload_bytes, encoding: PAYLOAD_BINARY };
  }
  if (e.payload_json !== undefined) {
    const text =
      typeof e.payload_json === "string" ? e.payload_json : e.payload_json instanceof Uint8Array ? Buffer.from(e.payload_json).toString("utf8") : null;
    if (text === null) throw invalid(index, "payload_json must be JSON text, as a string or its UTF-8 bytes");
    checkText("payload_json", text, index);
    try {
      JSON.parse(text);
    } catch {
      throw invalid(index, "payload_json is not valid JSON text");
    }
    return { e, payload: e.payload_json, encoding: PAYLOAD_JSON };
  }
  if (e.payload !== undefined) {
    let text: string | undefined;
    try {
      text = JSON.stringify(e.payload);
    } catch (err) {
      throw invalid(index, `payload cannot be serialised as JSON: ${(err as Error).message}`);
    }
    if (text === undefined) throw invalid(index, "payload is not a JSON value");
    return { e, payload: text, encoding: PAYLOAD_JSON };
  }
  return { e, payload: null, encoding: PAYLOAD_NONE };
}

/** A string field: a string, and well-formed UTF-16 (a lone surrogate has no UTF-8 form: it would be stored as U+FFFD). */
function checkText(name: string, v: unknown, index: number): void {
  if (typeof v !== "string") throw invalid(index, `${name} must be a string`);
  if (!v.isWellFormed()) throw invalid(index, `${name} holds a lone surrogate (not valid Unicode)`);
}

function checkScalar(name: string, v: number | undefined, index: number): void {
  if (v !== undefined && !(Number.isSafeInteger(v) && v >= 0)) throw invalid(index, `${name} must be a non-negative integer, not ${v}`);
}

/**
 * Body buffers given back once their request is answered, for the next
 * batches: a fresh buffer of a few hundred KiB costs its page faults on
 * every first write (measured: the copy into a fresh one took a third of
 * the encoder's time). Only bodies of at least half a pooled buffer use
 * one, so a small batch never holds a large buffer while it waits; at
 * most BODY_POOL_MAX are kept.
 */
export class BodyPool {
  private readonly free: ArrayBuffer[] = [];

  take(bytes: number): Buffer | null {
    for (let i = 0; i < this.free.length; i++) {
      const ab = this.free[i];
      if (ab.byteLength >= bytes && bytes * 2 >= ab.byteLength) {
        this.free.splice(i, 1);
        return Buffer.from(ab, 0, bytes);
      }
    }
    return bytes >= POOLED_BYTES_MIN ? Buffer.from(new ArrayBuffer(bytes), 0, bytes) : null;
  }

  give(body: Buffer): void {
    if (body.byteOffset === 0 && body.buffer instanceof ArrayBuffer && body.buffer.byteLength >= POOLED_BYTES_MIN && this.free.length < BODY_POOL_MAX)
      this.free.push(body.buffer);
  }
}

const POOLED_BYTES_MIN = 64 * 1024;
const BODY_POOL_MAX = 16;

export class BinaryBatchEncoder implements BatchEncoder {
  readonly contentType = "application/x-flatbuffers";
  constructor(private readonly pool: BodyPool | null = null) {}
  count = 0;
  private out = Buffer.allocUnsafe(START_BYTES);
  private at = ENVELOPE_BYTES;
  /** Where an event's strings and payload are put before writeEvent lays them out. */
  private src = Buffer.allocUnsafe(4096);
  private readonly f = new EventFields();
  /**
   * The frame of the last event with only a type and a payload, up to its
   * payload's length: an event of the same type and encoding is that prefix,
   * its length and its payload (the shape of most events in a batch;
   * writeEvent's field-by-field work then runs once per shape, not per event).
   */
  private template: Buffer | null = null;
  private templateType = "";
  private templateEncoding = -1;

  get bytes(): number {
    return this.at;
  }

  add(prepared: Prepared, idempotencyKey: string | undefined): void {
    const { e, payload, encoding } = prepared;
    const plain =
      idempotencyKey === undefined &&
      e.key === undefined &&
      e.producer_id === undefined &&
      e.producer_seq === undefined &&
      e.producer_ts === undefined &&
      payload !== null;
    if (plain && this.template !== null && e.type === this.templateType && encoding === this.templateEncoding) return this.addLike(this.template, payload);
    const f = this.f;
    let p = this.put(e.type, 0);
    f.typeAt = 0;
    f.typeLen = p;
    f.keyAt = e.key === undefined ? -1 : p;
    p = this.put(e.key, p);
    f.keyLen = f.keyAt < 0 ? 0 : p - f.keyAt;
    f.producerIdAt = e.producer_id === undefined ? -1 : p;
    p = this.put(e.producer_id, p);
    f.producerIdLen = f.producerIdAt < 0 ? 0 : p - f.producerIdAt;
    f.idemAt = idempotencyKey === undefined ? -1 : p;
    p = this.put(idempotencyKey, p);
    f.idemLen = f.idemAt < 0 ? 0 : p - f.idemAt;
    f.producerSeq = e.producer_seq ?? -1;
    f.producerTs = e.producer_ts ?? -1;
    f.encoding = encoding;
    let payloadSrc: Uint8Array = this.src;
    if (payload === null) {
      f.payloadAt = -1;
      f.payloadLen = 0;
    } else if (typeof payload === "string") {
      f.payloadAt = p;
      p = this.put(payload, p);
      f.payloadLen = p - f.payloadAt;
    } else {
      payloadSrc = payload; // copied once, straight into the record
      f.payloadAt = 0;
      f.payloadLen = payload.byteLength;
    }
    const frameBytes = (FRAME_HEADER_BYTES + eventBytesFor(f) + 7) & ~7;
    this.grow(this.at + frameBytes);
    const out = this.out;
    const frame = this.at;
    writeU32(out, frame, frameBytes);
    for (let j = frame + 4; j < frame + FRAME_HEADER_BYTES; j++) out[j] = 0; // crc, seq, ingest_ts: the server's
    const eventBytes = writeEvent(out, frame + FRAME_HEADER_BYTES, this.src, f, payloadSrc);
    const end = frame + FRAME_HEADER_BYTES + eventBytes;
    for (let j = end; j < frame + frameBytes; j++) out[j] = 0;
    if (plain) {
      // writeEvent puts the payload vector last: the prefix ends at its u32 length.
      const vector = end - ((4 + f.payloadLen + 3) & ~3);
      this.template = Buffer.from(out.subarray(frame, vector));
      this.templateType = e.type;
      this.templateEncoding = encoding;
    }
    this.at += frameBytes;
    this.count++;
  }

  /** An event of the template's shape: the prefix copied, then the frame's length, the payload's length and bytes, the padding. */
  private addLike(template: Buffer, payload: Uint8Array | string | null): void {
    const len = payload === null ? 0 : typeof payload === "string" ? Buffer.byteLength(payload) : payload.byteLength;
    const frameBytes = (template.length + ((4 + len + 3) & ~3) + 7) & ~7;
    this.grow(this.at + frameBytes);
    const out = this.out;
    const frame = this.at;
    copyShort(template, 0, template.length, out, frame);
    writeU32(out, frame, frameBytes);
    const at = frame + template.length;
    writeU32(out, at, len);
    if (typeof payload === "string") out.write(payload, at + 4, len, "utf8");
    else if (payload !== null) copyShort(payload, 0, len, out, at + 4);
    for (let j = at + 4 + len; j < frame + frameBytes; j++) out[j] = 0;
    this.at += frameBytes;
    this.count++;
  }

  /** Puts `s` (if given) at `p` of the scratch buffer as UTF-8; returns the position after it. ASCII by hand: the common case, and short. */
  private put(s: string | undefined, p: number): number {
    if (s === undefined) return p;
    this.room(p + s.length * 3);
    const src = this.src;
    const n = s.length;
    if (n <= 64) {
      let j = 0;
      for (; j < n; j++) {
        const c = s.charCodeAt(j);
        if (c >= 0x80) break;
        src[p + j] = c;
      }
      if (j === n) return p + n;
    }
    return p + src.write(s, p, "utf8");
  }

  finish(): Buffer {
    const b = this.out;
    const records = this.at - ENVELOPE_BYTES;
    writeU32(b, 0, 12); // root: the table at 12
    b[4] = 6; // vtable: its bytes, the table's bytes, the records field at table + 4
    b[5] = 0;
    b[6] = 8;
    b[7] = 0;
    b[8] = 4;
    b[9] = 0;
    b[10] = 0;
    b[11] = 0;
    writeU32(b, 12, 8); // the table's soffset back to the vtable at 4
    writeU32(b, 16, 4); // records: the vector at 20
    writeU32(b, 20, records);
    const body = this.pool?.take(this.at) ?? Buffer.allocUnsafe(this.at);
    b.copy(body, 0, 0, this.at);
    this.at = ENVELOPE_BYTES;
    this.count = 0;
    return body;
  }

  private room(n: number): void {
    if (n <= this.src.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(n, this.src.length * 2));
    this.src.copy(bigger);
    this.src = bigger;
  }

  private grow(n: number): void {
    if (n <= this.out.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(n, this.out.length * 2));
    this.out.copy(bigger, 0, 0, this.at);
    this.out = bigger;
  }
}

export class JsonBatchEncoder implements BatchEncoder {
  readonly contentType = "application/json";
  count = 0;
  private parts: string[] = [];
  private length = 12;

  get bytes(): number {
    return this.length;
  }

  add(p: Prepared, idempotencyKey: string | undefined): void {
    const { e, payload, encoding } = p;
    let s = `{"type":${JSON.stringify(e.type)}`;
    if (e.key !== undefined) s += `,"key":${JSON.stringify(e.key)}`;
    if (e.producer_id !== undefined) s += `,"producer_id":${JSON.stringify(e.producer_id)}`;
    if (e.producer_seq !== undefined) s += `,"producer_seq":${e.producer_seq}`;
    if (e.producer_ts !== undefined) s += `,"producer_ts":${e.producer_ts}`;
    if (idempotencyKey !== undefined) s += `,"idempotency_key":${JSON.stringify(idempotencyKey)}`;
    if (encoding === PAYLOAD_BINARY) s += `,"payload_base64":"${Buffer.from(payload as Uint8Array).toString("base64")}"`;
    else if (encoding === PAYLOAD_JSON) s += `,"payload":${typeof payload === "string" ? payload : Buffer.from(payload as Uint8Array).toString("utf8")}`;
    s += "}";
    this.parts.push(s);
    this.length += Buffer.byteLength(s) + 1;
    this.count++;
  }

  finish(): Buffer {
    const body = Buffer.from(`{"events":[${this.parts.join(",")}]}`);
    this.parts = [];
    this.length = 12;
    this.count = 0;
    return body;
  }
}

export const encoderFor = (format: Format, pool: BodyPool | null = null): BatchEncoder =>
  format === "json" ? new JsonBatchEncoder() : new BinaryBatchEncoder(pool);
