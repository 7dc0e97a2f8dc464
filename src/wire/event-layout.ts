// Reading and writing the Event table of schemas/ticker.fbs straight from and
// into buffers, without the generated classes: the per-event paths (ingest of
// JSON, rendering replay pages) then allocate nothing per field. The bytes are
// ordinary FlatBuffers; the generated code reads what writeEvent writes, and
// EventFields reads any valid Event (from the generated builder or a producer).
import { readU64, writeU64 } from "../log/record.js";

// Field indexes of table Event, in schema order.
export const EVENT_FIELD = { type: 0, key: 1, producerId: 2, producerSeq: 3, producerTs: 4, idempotencyKey: 5, payloadEncoding: 6, payload: 7 } as const;
export const PAYLOAD_NONE = 0;
export const PAYLOAD_JSON = 1;
export const PAYLOAD_BINARY = 2;

/**
 * Where each field of one Event lies in a buffer (absolute positions; -1 when
 * absent). One instance is reused for every event of a page or batch.
 */
export class EventFields {
  typeAt = -1;
  typeLen = 0;
  keyAt = -1;
  keyLen = 0;
  producerIdAt = -1;
  producerIdLen = 0;
  idemAt = -1;
  idemLen = 0;
  payloadAt = -1;
  payloadLen = 0;
  encoding = PAYLOAD_NONE;
  /** -1 when absent (the values themselves are never negative). */
  producerSeq = -1;
  producerTs = -1;

  /**
   * Reads the Event whose buffer starts at `base`. The bytes must be a valid
   * Event: written by writeEvent, or checked by the ingest verifier.
   */
  read(buf: Buffer, base: number): this {
    const table = base + buf.readUInt32LE(base);
    const vt = table - buf.readInt32LE(table);
    const vtBytes = buf.readUInt16LE(vt);
    const slot = (field: number) => {
      const o = 4 + 2 * field;
      return o < vtBytes ? buf.readUInt16LE(vt + o) : 0;
    };
    let o = slot(EVENT_FIELD.type);
    if (o) {
      const s = table + o + buf.readUInt32LE(table + o);
      this.typeLen = buf.readUInt32LE(s);
      this.typeAt = s + 4;
    } else this.typeAt = -1;
    o = slot(EVENT_FIELD.key);
    if (o) {
      const s = table + o + buf.readUInt32LE(table + o);
      this.keyLen = buf.readUInt32LE(s);
      this.keyAt = s + 4;
    } else this.keyAt = -1;
    o = slot(EVENT_FIELD.producerId);
    if (o) {
      const s = table + o + buf.readUInt32LE(table + o);
      this.producerIdLen = buf.readUInt32LE(s);
      this.producerIdAt = s + 4;
    } else this.producerIdAt = -1;
    o = slot(EVENT_FIELD.idempotencyKey);
    if (o) {
      const s = table + o + buf.readUInt32LE(table + o);
      this.idemLen = buf.readUInt32LE(s);
      this.idemAt = s + 4;
    } else this.idemAt = -1;
    o = slot(EVENT_FIELD.payload);
    if (o) {
      const s = table + o + buf.readUInt32LE(table + o);
      this.payloadLen = buf.readUInt32LE(s);
      this.payloadAt = s + 4;
    } else {
      this.payloadAt = -1;
      this.payloadLen = 0;
    }
    o = slot(EVENT_FIELD.payloadEncoding);
    this.encoding = o ? buf[table + o] : PAYLOAD_NONE;
    o = slot(EVENT_FIELD.producerSeq);
    this.producerSeq = o ? readU64(buf, table + o) : -1;
    o = slot(EVENT_FIELD.producerTs);
    this.producerTs = o ? readU64(buf, table + o) : -1;
    return this;
  }
}

/** What writeEvent stores; strings are written as UTF-8. */
export interface EventInput {
  type: string;
  key: string | null;
  producerId: string | null;
  producerSeq: number; // -1: absent
  producerTs: number; // -1: absent
  idempotencyKey: string | null;
  encoding: number;
  /** JSON text (PAYLOAD_JSON) or raw bytes (PAYLOAD_BINARY); null for none. */
  payload: string | Uint8Array | null;
}

// Fixed layout: root offset, vtable (8 slots), then the table with the 8-byte
// scalars first so they are 8-aligned whenever the buffer is.
const ROOT = 0;
const VTABLE = 4;
const VTABLE_BYTES = 4 + 2 * 8;
const TABLE = VTABLE + VTABLE_BYTES; // 24
const T_PRODUCER_SEQ = 8;
const T_PRODUCER_TS = 16;
const T_TYPE = 24;
const T_KEY = 28;
const T_PRODUCER_ID = 32;
const T_IDEM = 36;
const T_PAYLOAD = 40;
const T_ENCODING = 44;
const TABLE_BYTES = 48;
const FIXED_BYTES = TABLE + TABLE_BYTES; // 72

/** An upper bound of the bytes writeEvent needs for `e`. */
export function eventBytesBound(e: EventInput): number {
  const str = (s: string | null) => (s === null ? 0 : 3 * s.length + 8);
  const payload = e.payload === null ? 0 : typeof e.payload === "string" ? 3 * e.payload.length + 8 : e.payload.byteLength + 8;
  return FIXED_BYTES + str(e.type) + str(e.key) + str(e.producerId) + str(e.idempotencyKey) + payload;
}

export interface WrittenEvent {
  bytes: number;
  /** UTF-8 bytes of each string and the payload, for the caller's limits. */
  typeLen: number;
  keyLen: number;
  producerIdLen: number;
  idemLen: number;
  payloadLen: number;
}

const written: WrittenEvent = { bytes: 0, typeLen: 0, keyLen: 0, producerIdLen: 0, idemLen: 0, payloadLen: 0 };

/**
 * Writes `e` as an Event FlatBuffer at `at` (4-aligned; room for
 * eventBytesBound(e) is the caller's). Returns a shared result object.
 */
export function writeEvent(buf: Buffer, at: number, e: EventInput): WrittenEvent {
  const table = at + TABLE;
  buf.writeUInt32LE(TABLE - ROOT, at + ROOT);
  buf.writeUInt16LE(VTABLE_BYTES, at + VTABLE);
  buf.writeUInt16LE(TABLE_BYTES, at + VTABLE + 2);
  const slot = (field: number, tableOffset: number) => buf.writeUInt16LE(tableOffset, at + VTABLE + 4 + 2 * field);
  buf.writeInt32LE(TABLE - VTABLE, table);
  buf.fill(0, table + 4, table + TABLE_BYTES);
  let p = at + FIXED_BYTES;
  const str = (field: number, tableOffset: number, s: string | null): number => {
    if (s === null) {
      slot(field, 0);
      return 0;
    }
    slot(field, tableOffset);
    const n = buf.write(s, p + 4, "utf8");
    buf.writeUInt32LE(n, p);
    buf[p + 4 + n] = 0;
    buf.writeUInt32LE(p - (table + tableOffset), table + tableOffset);
    p = (p + 4 + n + 1 + 3) & ~3;
    return n;
  };
  written.typeLen = str(EVENT_FIELD.type, T_TYPE, e.type);
  written.keyLen = str(EVENT_FIELD.key, T_KEY, e.key);
  written.producerIdLen = str(EVENT_FIELD.producerId, T_PRODUCER_ID, e.producerId);
  written.idemLen = str(EVENT_FIELD.idempotencyKey, T_IDEM, e.idempotencyKey);
  if (e.producerSeq >= 0) {
    slot(EVENT_FIELD.producerSeq, T_PRODUCER_SEQ);
    writeU64(buf, table + T_PRODUCER_SEQ, e.producerSeq);
  } else slot(EVENT_FIELD.producerSeq, 0);
  if (e.producerTs >= 0) {
    slot(EVENT_FIELD.producerTs, T_PRODUCER_TS);
    writeU64(buf, table + T_PRODUCER_TS, e.producerTs);
  } else slot(EVENT_FIELD.producerTs, 0);
  if (e.payload === null || e.encoding === PAYLOAD_NONE) {
    slot(EVENT_FIELD.payloadEncoding, 0);
    slot(EVENT_FIELD.payload, 0);
    written.payloadLen = 0;
  } else {
    slot(EVENT_FIELD.payloadEncoding, T_ENCODING);
    buf[table + T_ENCODING] = e.encoding;
    slot(EVENT_FIELD.payload, T_PAYLOAD);
    let n: number;
    if (typeof e.payload === "string") n = buf.write(e.payload, p + 4, "utf8");
    else {
      buf.set(e.payload, p + 4);
      n = e.payload.byteLength;
    }
    buf.writeUInt32LE(n, p);
    buf.writeUInt32LE(p - (table + T_PAYLOAD), table + T_PAYLOAD);
    p = (p + 4 + n + 3) & ~3;
    written.payloadLen = n;
  }
  written.bytes = p - at;
  return written;
}
