// Reading and writing the Event table of schemas/ticker.fbs straight from and
// into buffers, without the generated classes: the per-event paths (ingest of
// JSON, rendering replay pages) then allocate nothing per field. The bytes are
// ordinary FlatBuffers; the generated code reads what writeEvent writes, and
// EventFields reads any valid Event (from the generated builder or a producer).
import { readU64, u32, writeU32, writeU64 } from "../bytes.js";
import { VerifyError } from "./verify.js";

// Field indexes of table Event, in schema order.
export const EVENT_FIELD = { type: 0, key: 1, producerId: 2, producerSeq: 3, producerTs: 4, idempotencyKey: 5, payloadEncoding: 6, payload: 7 } as const;
export const PAYLOAD_NONE = 0;
export const PAYLOAD_JSON = 1;
export const PAYLOAD_BINARY = 2;

// Positions are checked by need() before each load when `end` is given.
const i32 = (b: Buffer, at: number) => b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24);
const u16 = (b: Buffer, at: number) => b[at] | (b[at + 1] << 8);

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
   * Reads the Event whose buffer starts at `base`. With `end` (the end of
   * that buffer), every offset is checked to stay inside [base, end) first,
   * and a malformed buffer throws VerifyError: this is the ingest verifier,
   * one pass over the vtable. Without `end` the bytes are trusted (our own
   * log, written by writeEvent or verified on the way in).
   */
  read(buf: Buffer, base: number, end = -1): this {
    this.buf = buf;
    this.base = base;
    this.end = end;
    this.need(base, 4);
    const table = base + u32(buf, base);
    this.need(table, 4);
    const vt = table - i32(buf, table);
    this.need(vt, 4);
    const vtBytes = u16(buf, vt);
    if (end >= 0) {
      if (vtBytes < 4 || (vtBytes & 1) !== 0 || ((table - base) & 3) !== 0) throw new VerifyError("bad Event vtable");
      this.need(vt, vtBytes);
      this.need(table, u16(buf, vt + 2));
    }
    this.table = table;
    this.vt = vt;
    this.vtBytes = vtBytes;
    let o = this.slot(EVENT_FIELD.type, 4);
    this.typeAt = o ? this.vector(o, 1) : -1;
    this.typeLen = o ? this.len : 0;
    o = this.slot(EVENT_FIELD.key, 4);
    this.keyAt = o ? this.vector(o, 1) : -1;
    this.keyLen = o ? this.len : 0;
    o = this.slot(EVENT_FIELD.producerId, 4);
    this.producerIdAt = o ? this.vector(o, 1) : -1;
    this.producerIdLen = o ? this.len : 0;
    o = this.slot(EVENT_FIELD.idempotencyKey, 4);
    this.idemAt = o ? this.vector(o, 1) : -1;
    this.idemLen = o ? this.len : 0;
    o = this.slot(EVENT_FIELD.payload, 4);
    this.payloadAt = o ? this.vector(o, 0) : -1;
    this.payloadLen = o ? this.len : 0;
    o = this.slot(EVENT_FIELD.payloadEncoding, 1);
    this.encoding = o ? buf[table + o] : PAYLOAD_NONE;
    o = this.slot(EVENT_FIELD.producerSeq, 8);
    this.producerSeq = o ? readU64(buf, table + o) : -1;
    o = this.slot(EVENT_FIELD.producerTs, 8);
    this.producerTs = o ? readU64(buf, table + o) : -1;
    return this;
  }

  // Scratch of the read in progress (instance fields, not closures: no
  // allocation per event, and the calls inline).
  private buf: Buffer = Buffer.alloc(0);
  private base = 0;
  private end = -1;
  private table = 0;
  private vt = 0;
  private vtBytes = 0;
  private len = 0;

  private need(pos: number, n: number): void {
    if (this.end >= 0 && (pos < this.base || pos + n > this.end)) throw new VerifyError("Event field out of bounds");
  }

  private slot(field: number, bytes: number): number {
    const o = 4 + 2 * field;
    const off = o < this.vtBytes ? u16(this.buf, this.vt + o) : 0;
    if (off) this.need(this.table + off, bytes);
    return off;
  }

  /** A string or byte vector: u32 offset to [u32 length][bytes] (+ NUL for strings). */
  private vector(off: number, nul: number): number {
    const at = this.table + off;
    const s = at + u32(this.buf, at);
    this.need(s, 4);
    this.len = u32(this.buf, s);
    this.need(s + 4, this.len + nul);
    return s + 4;
  }
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

const w32 = (buf: Buffer, v: number, at: number) => writeU32(buf, at, v);
const w16 = (buf: Buffer, v: number, at: number) => {
  buf[at] = v;
  buf[at + 1] = v >>> 8;
};

/** Bytes writeEvent needs for `f`, padding included. */
const stringBytes = (at: number, len: number) => (at < 0 ? 0 : (4 + len + 1 + 3) & ~3);

export function eventBytesFor(f: EventFields): number {
  const str = stringBytes;
  return (
    FIXED_BYTES +
    str(f.typeAt, f.typeLen) +
    str(f.keyAt, f.keyLen) +
    str(f.producerIdAt, f.producerIdLen) +
    str(f.idemAt, f.idemLen) +
    (f.payloadAt < 0 || f.encoding === PAYLOAD_NONE ? 0 : (4 + f.payloadLen + 3) & ~3)
  );
}

/** Copies `len` bytes; a loop beats Buffer.copy's fixed cost for short strings. */
export function copyShort(src: Uint8Array, from: number, len: number, dst: Uint8Array, to: number): void {
  if (len > 32)
    dst.set(from === 0 && len === src.length ? src : src.subarray(from, from + len), to); // measured faster than Buffer.copy here
  else for (let j = 0; j < len; j++) dst[to + j] = src[from + j];
}

/**
 * One string field of writeEvent at `p`: a u32 offset in the table to
 * [u32 length][bytes][NUL][pad]; absent (`from` < 0): a zero slot. Returns
 * the next free position. A function, not a closure over `p`: writeEvent
 * runs once per published JSON event.
 */
function writeString(buf: Buffer, p: number, slot: number, table: number, field: number, tableOffset: number, src: Buffer, from: number, len: number): number {
  if (from < 0) {
    w16(buf, 0, slot + 2 * field);
    w32(buf, 0, table + tableOffset);
    return p;
  }
  w16(buf, tableOffset, slot + 2 * field);
  w32(buf, p - (table + tableOffset), table + tableOffset);
  w32(buf, len, p);
  copyShort(src, from, len, buf, p + 4);
  const end = (p + 4 + len + 1 + 3) & ~3;
  for (let j = p + 4 + len; j < end; j++) buf[j] = 0;
  return end;
}

/**
 * Writes the Event whose values `f` locates in `src` as a FlatBuffer at `at`
 * in `buf` (4-aligned, eventBytesFor(f) bytes of room). Every byte written is
 * defined (padding zeroed): records must not carry stale buffer contents.
 * The payload's bytes may lie in a buffer of their own (`payloadSrc`: a
 * client's payload, not copied to `src` first). Returns the bytes written.
 */
export function writeEvent(buf: Buffer, at: number, src: Buffer, f: EventFields, payloadSrc: Uint8Array = src): number {
  const table = at + TABLE;
  w32(buf, TABLE - ROOT, at + ROOT);
  w16(buf, VTABLE_BYTES, at + VTABLE);
  w16(buf, TABLE_BYTES, at + VTABLE + 2);
  w32(buf, TABLE - VTABLE, table);
  w32(buf, 0, table + 4); // padding before the 8-aligned scalars
  w32(buf, 0, table + T_ENCODING); // encoding byte and its padding
  const slot = at + VTABLE + 4;
  let p = at + FIXED_BYTES;
  p = writeString(buf, p, slot, table, EVENT_FIELD.type, T_TYPE, src, f.typeAt, f.typeLen);
  p = writeString(buf, p, slot, table, EVENT_FIELD.key, T_KEY, src, f.keyAt, f.keyLen);
  p = writeString(buf, p, slot, table, EVENT_FIELD.producerId, T_PRODUCER_ID, src, f.producerIdAt, f.producerIdLen);
  p = writeString(buf, p, slot, table, EVENT_FIELD.idempotencyKey, T_IDEM, src, f.idemAt, f.idemLen);
  w16(buf, f.producerSeq >= 0 ? T_PRODUCER_SEQ : 0, slot + 2 * EVENT_FIELD.producerSeq);
  writeU64(buf, table + T_PRODUCER_SEQ, Math.max(0, f.producerSeq));
  w16(buf, f.producerTs >= 0 ? T_PRODUCER_TS : 0, slot + 2 * EVENT_FIELD.producerTs);
  writeU64(buf, table + T_PRODUCER_TS, Math.max(0, f.producerTs));
  if (f.payloadAt < 0 || f.encoding === PAYLOAD_NONE) {
    w16(buf, 0, slot + 2 * EVENT_FIELD.payloadEncoding);
    w16(buf, 0, slot + 2 * EVENT_FIELD.payload);
    w32(buf, 0, table + T_PAYLOAD);
  } else {
    w16(buf, T_ENCODING, slot + 2 * EVENT_FIELD.payloadEncoding);
    buf[table + T_ENCODING] = f.encoding;
    w16(buf, T_PAYLOAD, slot + 2 * EVENT_FIELD.payload);
    w32(buf, p - (table + T_PAYLOAD), table + T_PAYLOAD);
    w32(buf, f.payloadLen, p);
    copyShort(payloadSrc, f.payloadAt, f.payloadLen, buf, p + 4);
    const end = (p + 4 + f.payloadLen + 3) & ~3;
    for (let j = p + 4 + f.payloadLen; j < end; j++) buf[j] = 0;
    p = end;
  }
  return p - at;
}

const COLUMNS_START_EVENTS = 1024;

/**
 * The fields later steps need of every event of a batch (the producer's and
 * the idempotency key), noted by the pass that reads each event anyway —
 * checkFlatBatch, or the framing of a JSON event — so that nothing walks an
 * event's vtable twice. Positions count from the start of the event (the
 * record's body), since frames move when duplicates are squeezed out; -1
 * when the field is absent. Indexed by the event's index in the request,
 * grown on demand up to the batch bound.
 */
export class BatchColumns {
  producerSeq = new Float64Array(COLUMNS_START_EVENTS);
  producerIdAt = new Int32Array(COLUMNS_START_EVENTS);
  producerIdLen = new Int32Array(COLUMNS_START_EVENTS);
  idemAt = new Int32Array(COLUMNS_START_EVENTS);
  idemLen = new Int32Array(COLUMNS_START_EVENTS);

  /** Event `i` as `f` read it from an event starting at `base`. */
  noteRead(i: number, f: EventFields, base: number): void {
    this.room(i);
    this.producerSeq[i] = f.producerSeq;
    this.producerIdAt[i] = f.producerIdAt < 0 ? -1 : f.producerIdAt - base;
    this.producerIdLen[i] = f.producerIdLen;
    this.idemAt[i] = f.idemAt < 0 ? -1 : f.idemAt - base;
    this.idemLen[i] = f.idemLen;
  }

  /** Event `i` as writeEvent lays out the values `f` locates. */
  noteWritten(i: number, f: EventFields): void {
    this.room(i);
    const str = stringBytes;
    const idAt = FIXED_BYTES + str(f.typeAt, f.typeLen) + str(f.keyAt, f.keyLen);
    const idemAt = idAt + str(f.producerIdAt, f.producerIdLen);
    this.producerSeq[i] = f.producerSeq;
    this.producerIdAt[i] = f.producerIdAt < 0 ? -1 : idAt + 4; // past the string's length
    this.producerIdLen[i] = f.producerIdLen;
    this.idemAt[i] = f.idemAt < 0 ? -1 : idemAt + 4;
    this.idemLen[i] = f.idemLen;
  }

  /** Event `i`'s idempotency key, or null; its event starts at `base` in `buf`. */
  idempotencyKey(i: number, buf: Buffer, base: number): string | null {
    const at = this.idemAt[i];
    return at < 0 ? null : buf.toString("utf8", base + at, base + at + this.idemLen[i]);
  }

  private room(i: number): void {
    if (i < this.producerSeq.length) return;
    const n = Math.max(i + 1, this.producerSeq.length * 2);
    this.producerSeq = grown(this.producerSeq, new Float64Array(n));
    this.producerIdAt = grown(this.producerIdAt, new Int32Array(n));
    this.producerIdLen = grown(this.producerIdLen, new Int32Array(n));
    this.idemAt = grown(this.idemAt, new Int32Array(n));
    this.idemLen = grown(this.idemLen, new Int32Array(n));
  }
}

function grown<A extends Float64Array | Int32Array>(from: A, to: A): A {
  to.set(from);
  return to;
}
