// Events in and out: JSON publish bodies become Event FlatBuffers written
// straight into the frame staging buffer; binary publish batches are verified
// and kept byte for byte; stored records are rendered as JSON pages. The
// per-event paths read and write fields by position (event-layout.ts) and
// copy bytes rather than decoding them where they can.
import { isUtf8 } from "node:buffer";
import { ApiError } from "../errors.js";
import { RECORD_HEADER_BYTES, checkFrame, frameSeq, frameTs } from "../log/record.js";
import { u32 } from "../bytes.js";
import { Verifier, VerifyError } from "./verify.js";
import { eventTooLarge, fieldTooLong, invalidEvent, noEvents, tooManyEvents } from "./event-errors.js";
import { type BatchColumns, EventFields, PAYLOAD_BINARY, PAYLOAD_JSON, PAYLOAD_NONE, copyShort } from "./event-layout.js";

export interface EventLimits {
  /** Largest payload in bytes (JSON text, or raw bytes for binary payloads). */
  eventBytesMax: number;
  /** Largest type, key, producer_id or idempotency_key in UTF-8 bytes. */
  fieldBytesMax: number;
}

/** Valid UTF-8, with a JS fast path for the common all-ASCII short string. */
function utf8Ok(buf: Buffer, at: number, len: number): boolean {
  for (let i = at; i < at + len; i++) if (buf[i] > 0x7f) return isUtf8(buf.subarray(at, at + len));
  return true;
}

function checkFbString(buf: Buffer, at: number, len: number, name: string, index: number, limits: EventLimits, required: boolean): void {
  if (at < 0) {
    if (required) throw invalidEvent(index, `"${name}" is required`);
    return;
  }
  if (required && len === 0) throw invalidEvent(index, `"${name}" must not be empty`);
  if (len > limits.fieldBytesMax) throw fieldTooLong(index, name, limits.fieldBytesMax);
  if (!utf8Ok(buf, at, len)) throw invalidEvent(index, `"${name}" is not valid UTF-8`);
}

/** Where the record frames of a binary publish lie in its body, and how many. */
export interface FlatBatch {
  start: number;
  end: number;
  count: number;
  /** Whether any event carries an idempotency_key (else dedup can skip the batch). */
  anyIdempotencyKey: boolean;
}

/**
 * Checks a FlatBuffers PublishBatch: the envelope, then every record frame in
 * it (length, alignment) and the Event inside each (structure, required
 * fields, limits, UTF-8). Nothing is copied: the caller stamps the frames in
 * place and appends them as they are. Each event's producer fields and key
 * are noted in `cols` on the way. Throws ApiError.
 */
export function checkFlatBatch(
  bytes: Buffer,
  publishEventsMax: number,
  limits: EventLimits,
  frameBytesMax: number,
  f: EventFields,
  cols: BatchColumns,
): FlatBatch {
  let index = -1;
  try {
    const v = new Verifier(bytes);
    const root = v.root();
    const recordsAt = v.field(root, 0, 4);
    if (!recordsAt) throw new VerifyError("PublishBatch.records is missing");
    const span = v.vectorSpan(recordsAt, 1);
    const start = span.data;
    const end = start + span.count;
    let count = 0;
    let anyIdempotencyKey = false;
    for (let at = start; at < end; ) {
      index = count;
      if (count === publishEventsMax) throw tooManyEvents(publishEventsMax);
      const frameBytes = checkFrame(bytes, at, end, frameBytesMax, false);
      if (frameBytes < 0) throw invalidEvent(index, "record frame has a bad length (see docs/wire.md)");
      f.read(bytes, at + RECORD_HEADER_BYTES, at + frameBytes);
      checkFbString(bytes, f.typeAt, f.typeLen, "type", index, limits, true);
      checkFbString(bytes, f.keyAt, f.keyLen, "key", index, limits, false);
      checkFbString(bytes, f.producerIdAt, f.producerIdLen, "producer_id", index, limits, false);
      checkFbString(bytes, f.idemAt, f.idemLen, "idempotency_key", index, limits, false);
      if (f.idemAt >= 0) anyIdempotencyKey = true;
      cols.noteRead(index, f, at + RECORD_HEADER_BYTES);
      if (f.encoding !== PAYLOAD_NONE && f.encoding !== PAYLOAD_JSON && f.encoding !== PAYLOAD_BINARY) {
        throw invalidEvent(index, `unknown payload_encoding ${f.encoding}`);
      }
      if (f.payloadLen > limits.eventBytesMax) throw eventTooLarge(index, f.payloadLen, limits.eventBytesMax);
      if (f.encoding === PAYLOAD_JSON) {
        if (f.payloadAt < 0) throw invalidEvent(index, "payload_encoding Json without payload");
        try {
          JSON.parse(bytes.toString("utf8", f.payloadAt, f.payloadAt + f.payloadLen));
        } catch {
          throw invalidEvent(index, "payload_encoding is Json but the payload is not valid JSON");
        }
      }
      at += frameBytes;
      count++;
    }
    if (count === 0) throw noEvents();
    return { start, end, count, anyIdempotencyKey };
  } catch (err) {
    if (err instanceof ApiError) throw err;
    const why = err instanceof VerifyError ? `: ${err.message}` : "";
    throw new ApiError(
      400,
      "invalid_flatbuffer",
      index < 0 ? `body is not a FlatBuffers PublishBatch${why}` : `event ${index}: not a valid FlatBuffers Event${why}`,
      index < 0 ? {} : { index },
    );
  }
}

/** The idempotency key of a stored record (used to rebuild the dedup window). */
export function recordIdempotencyKey(buf: Buffer, at: number, f: EventFields): string | null {
  f.read(buf, at + RECORD_HEADER_BYTES);
  return f.idemAt < 0 ? null : buf.toString("utf8", f.idemAt, f.idemAt + f.idemLen);
}

// ---- JSON rendering of stored records --------------------------------

/**
 * Growable output buffer for a JSON page; the page bytes limit keeps it
 * bounded. Short pieces are stored with byte loops: for the few-byte writes a
 * JSON event is made of, Buffer.write's fixed cost dominates.
 */
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
  /** A string of code points below 256 (JSON punctuation, names, digits). */
  ascii(s: string): void {
    const n = s.length;
    this.ensure(n);
    if (n > 64) {
      this.length += this.buf.write(s, this.length, "latin1");
      return;
    }
    const b = this.buf;
    let at = this.length;
    for (let i = 0; i < n; i++) b[at++] = s.charCodeAt(i);
    this.length = at;
  }
  utf8(s: string): void {
    this.ensure(s.length * 3);
    this.length += this.buf.write(s, this.length, "utf8");
  }
  base64(src: Buffer, at: number, len: number): void {
    if (at < 0) return;
    this.ensure(((len + 2) / 3) * 4 + 4);
    this.length += this.buf.write(src.toString("base64", at, at + len), this.length, "latin1");
  }
  /** A non-negative integer below 2^53, in decimal. */
  uint(v: number): void {
    this.ascii(String(v)); // V8's number-to-string beats a digit loop in JS
  }
  /** Pre-encoded bytes (constant JSON pieces), the first `n` of them. */
  raw(bytes: Uint8Array, n = bytes.length): void {
    this.ensure(n);
    const b = this.buf;
    let at = this.length;
    for (let i = 0; i < n; i++) b[at++] = bytes[i];
    this.length = at;
  }
  /** Copies `len` bytes of `src` from `at`. */
  copy(src: Buffer, at: number, len: number): void {
    this.ensure(len);
    copyShort(src, at, len, this.buf, this.length);
    this.length += len;
  }
  /** A JSON string literal from UTF-8 bytes, copied as they are unless they need escaping. */
  jsonString(src: Buffer, at: number, len: number): void {
    for (let i = at; i < at + len; i++) {
      const c = src[i];
      if (c < 0x20 || c === 0x22 || c === 0x5c) {
        this.utf8(JSON.stringify(src.toString("utf8", at, at + len)));
        return;
      }
    }
    this.ensure(len + 2);
    this.buf[this.length++] = 0x22;
    this.copy(src, at, len);
    this.buf[this.length++] = 0x22;
  }
  view(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

/** An ASCII string's bytes, in one native call (Uint8Array.from(s, fn) iterated it char by char). */
const ascii = (s: string): Uint8Array => Buffer.from(s, "latin1");
const COMMA = ascii(",");
const J_SEQ = ascii(`{"seq":`);
const J_KEY = ascii(`,"key":`);
const J_PRODUCER_ID = ascii(`,"producer_id":`);
const J_PRODUCER_SEQ = ascii(`,"producer_seq":`);
const J_PRODUCER_TS = ascii(`,"producer_ts":`);
const J_IDEM = ascii(`,"idempotency_key":`);
const J_PAYLOAD = ascii(`,"payload":`);
const J_PAYLOAD_B64 = ascii(`,"payload_base64":"`);

/** Per-page rendering state: the stream literal and the last ingest_ts text. */
export class JsonRenderer {
  readonly fields = new EventFields();
  /** `,"stream":"<id>","type":` for the page's stream, as one piece. */
  private streamAndType: Uint8Array = new Uint8Array(0);
  private streamJson = "";
  /** `,"ingest_ts":<ts>` of the last record: records of one batch share it. */
  private lastTs = -1;
  private lastTsText: Uint8Array = new Uint8Array(0);
  /** Decimal digits of the last seq, counted up in place for the next one. */
  private readonly seqDigits = new Uint8Array(20);
  private seqDigitsLen = 0;
  private lastSeq = -2;

  forStream(streamJson: string): this {
    if (streamJson !== this.streamJson) {
      this.streamJson = streamJson;
      this.streamAndType = ascii(`,"stream":${streamJson},"type":`); // ASCII by the stream id rules
    }
    this.lastSeq = -2;
    return this;
  }

  /** Seqs in a page are consecutive: add one to the digits instead of formatting a number. */
  private seq(w: ByteWriter, seq: number): void {
    const d = this.seqDigits;
    if (seq === this.lastSeq + 1) {
      let i = this.seqDigitsLen - 1;
      while (i >= 0 && d[i] === 0x39) d[i--] = 0x30;
      if (i >= 0) d[i]++;
      else {
        d.copyWithin(1, 0, this.seqDigitsLen);
        d[0] = 0x31;
        this.seqDigitsLen++;
      }
    } else {
      const text = String(seq);
      for (let i = 0; i < text.length; i++) d[i] = text.charCodeAt(i);
      this.seqDigitsLen = text.length;
    }
    this.lastSeq = seq;
    w.raw(d, this.seqDigitsLen);
  }

  /** Renders the record at `at` as one JSON event object. */
  event(w: ByteWriter, buf: Buffer, at: number): void {
    const f = this.fields.read(buf, at + RECORD_HEADER_BYTES);
    w.raw(J_SEQ);
    this.seq(w, frameSeq(buf, at));
    w.raw(this.streamAndType);
    w.jsonString(buf, f.typeAt, f.typeLen);
    if (f.keyAt >= 0) {
      w.raw(J_KEY);
      w.jsonString(buf, f.keyAt, f.keyLen);
    }
    if (f.producerIdAt >= 0) {
      w.raw(J_PRODUCER_ID);
      w.jsonString(buf, f.producerIdAt, f.producerIdLen);
    }
    if (f.producerSeq >= 0) {
      w.raw(J_PRODUCER_SEQ);
      w.uint(f.producerSeq);
    }
    if (f.producerTs >= 0) {
      w.raw(J_PRODUCER_TS);
      w.uint(f.producerTs);
    }
    const ts = frameTs(buf, at);
    if (ts !== this.lastTs) {
      this.lastTs = ts;
      this.lastTsText = ascii(`,"ingest_ts":${ts}`);
    }
    w.raw(this.lastTsText);
    if (f.idemAt >= 0) {
      w.raw(J_IDEM);
      w.jsonString(buf, f.idemAt, f.idemLen);
    }
    if (f.encoding === PAYLOAD_JSON) {
      w.raw(J_PAYLOAD);
      w.copy(buf, f.payloadAt, f.payloadLen);
    } else if (f.encoding === PAYLOAD_BINARY) {
      w.raw(J_PAYLOAD_B64);
      w.base64(buf, f.payloadAt, f.payloadLen);
      w.ascii(`"`);
    }
    w.ascii("}");
  }
}

export interface JsonPageInfo {
  streamJson: string;
  firstSeq: number;
  headSeq: number;
  /** The seq after the last frame the page looked at (filtered-out ones included). */
  next: number;
}

/**
 * Renders up to `count` frames as comma-separated JSON events into `w`,
 * stopping early (after at least one) once `w` reaches `bytesMax`; returns
 * how many it rendered.
 */
export function renderEvents(w: ByteWriter, r: JsonRenderer, frames: Buffer, count: number, streamJson: string, bytesMax: number): number {
  r.forStream(streamJson);
  let at = 0;
  let rendered = 0;
  while (rendered < count && (rendered === 0 || w.length < bytesMax)) {
    if (rendered > 0) w.raw(COMMA);
    r.event(w, frames, at);
    at += u32(frames, at);
    rendered++;
  }
  return rendered;
}

/**
 * Renders `count` frames as a JSON replay page into `w`. Stops early (after
 * at least one event) once the page reaches `bytesMax`; `next` says where.
 */
export function renderJsonPage(w: ByteWriter, r: JsonRenderer, frames: Buffer, count: number, info: JsonPageInfo, bytesMax: number): number {
  w.reset();
  w.ascii(`{"events":[`);
  const rendered = renderEvents(w, r, frames, count, info.streamJson, bytesMax);
  // Cut at the byte bound: the next page starts at the first frame left out.
  const next = rendered < count ? frameSeqAt(frames, rendered) : info.next;
  w.ascii(`],"next":${next},"head_seq":${info.headSeq},"first_seq":${info.firstSeq}}`);
  return rendered;
}

/** A consumer's `events` message is EVENTS_MESSAGE_HEAD, the events joined by commas, EVENTS_MESSAGE_TAIL. */
export const EVENTS_MESSAGE_HEAD = `{"type":"events","events":[`;
export const EVENTS_MESSAGE_TAIL = `]}`;

/**
 * Renders frames as a consumer's `events` message; same early stop as a
 * replay page. Returns how many events the message holds.
 */
export function renderEventsMessage(
  w: ByteWriter,
  r: JsonRenderer,
  frames: Buffer,
  count: number,
  streamJson: string,
  bytesMax: number,
  range?: { from: number; next: number; droppedBefore?: Uint32Array },
): number {
  w.reset();
  w.ascii(EVENTS_MESSAGE_HEAD);
  const rendered = renderEvents(w, r, frames, count, streamJson, bytesMax);
  if (!range) w.ascii(EVENTS_MESSAGE_TAIL);
  else {
    // A filtered consumer's message says which seqs it covers, filtered-out ones included (docs/consume.md, "Filters").
    const next = rendered < count ? frameSeqAt(frames, rendered) : range.next;
    // A conflated one also says how many events of that range it left out (docs/consume.md, "Conflation").
    const conflated = range.droppedBefore ? `,"conflated":${range.droppedBefore[rendered]}` : "";
    w.ascii(`],"from_seq":${range.from},"to_seq":${next - 1}${conflated}}`);
  }
  return rendered;
}

/** The seq of the frame at `index` of a page (a message cut at its byte bound resumes there). */
export function frameSeqAt(frames: Buffer, index: number): number {
  let at = 0;
  for (let i = 0; i < index; i++) at += u32(frames, at);
  return frameSeq(frames, at);
}
