// A validating scanner for JSON publish bodies. Instead of JSON.parse (which
// builds objects) and JSON.stringify (to store each payload as text again), it
// walks the UTF-8 bytes once, checks the JSON grammar, and records where each
// event's fields lie; the Event writer then copies those bytes. A payload is
// stored as the exact JSON text the producer sent.
//
// Two passes over a batch, like JSON.parse followed by checks: scan() rejects
// any syntax error in the whole body first (invalid_json), then fields(i)
// applies the event rules to event i (invalid_event with its index).
//
// Past ~400 lines: one grammar, one class. The scanner's states, its offsets
// table and the event rules read the same bytes and the same table; split,
// each half would need the other's internals, on a loop that runs per byte.
import { ApiError } from "../errors.js";
import { jsonTextProblem } from "../validate.js";
import { type EventFields, PAYLOAD_BINARY, PAYLOAD_JSON, PAYLOAD_NONE } from "./event-layout.js";
import type { EventLimits } from "./event-codec.js";
import { eventTooLarge, fieldTooLong, invalidEvent, noEvents, tooManyEvents } from "./event-errors.js";

// Value kinds recorded per field.
const ABSENT = 0;
const STRING = 1; // no escapes: the bytes between the quotes are the value
const STRING_ESCAPED = 2;
const NUMBER = 3;
const NULL = 4;
const OTHER = 5; // object, array, true, false

// Event fields in the order of their slots; names as bytes for matching keys.
const FIELD_NAMES = ["type", "key", "producer_id", "producer_seq", "producer_ts", "idempotency_key", "payload", "payload_base64"];
const F_TYPE = 0;
const F_KEY = 1;
const F_PRODUCER_ID = 2;
const F_PRODUCER_SEQ = 3;
const F_PRODUCER_TS = 4;
const F_IDEM = 5;
const F_PAYLOAD = 6;
const F_PAYLOAD_BASE64 = 7;
const FIELD_BYTES = FIELD_NAMES.map((n) => Buffer.from(n));
const FIELDS = FIELD_NAMES.length;
// Per event: [isObject, unknownKeyStart, unknownKeyEnd] then (kind, start, end) per field.
const STRIDE = 3 + 3 * FIELDS;
const NESTING_DEPTH_MAX = 256;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
/** With the u flag, a surrogate class matches only surrogates that are not part of a pair. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

export class JsonBatch {
  count = 0;
  private spans = new Int32Array(STRIDE * 64);
  private b: Buffer = Buffer.alloc(0);
  private i = 0;
  private end = 0;
  /** Where decoded strings (escapes, base64) go: after the body, in the same buffer. */
  private side = 0;

  /**
   * Scans the body in `b[0, end)`. `b` must have room for `end` more bytes
   * after it: decoded values never take more bytes than their JSON text.
   */
  scan(b: Buffer, end: number, eventsMax: number): void {
    if (b.length < 2 * end) throw new Error("JsonBatch: buffer needs room for decoded values");
    this.b = b;
    this.i = 0;
    this.end = end;
    this.side = end;
    this.count = 0;
    const problem = jsonTextProblem(b.subarray(0, end));
    if (problem) throw syntax(problem);
    this.ws();
    if (this.peek() !== 0x7b) {
      this.value(0);
      this.finish();
      throw new ApiError(400, "invalid_body", `body must be {"events": [ ... ]}`);
    }
    this.i++;
    let sawEvents = false;
    let eventsNotArray = false;
    let unknownKey: string | null = null;
    let repeatedEvents = false;
    this.ws();
    if (this.peek() === 0x7d) this.i++;
    else {
      for (;;) {
        this.ws();
        const ks = this.i;
        const kind = this.string();
        const ke = this.i;
        const isEvents = kind === STRING && this.i - ks === 8 && b.toString("latin1", ks + 1, ks + 7) === "events";
        this.ws();
        this.expect(0x3a);
        this.ws();
        // Reported once the whole body is known to be JSON, as below.
        if (!isEvents) unknownKey ??= b.toString("utf8", ks + 1, Math.min(ke - 1, ks + 41));
        else if (sawEvents || eventsNotArray) repeatedEvents = true;
        if (!isEvents || repeatedEvents) this.value(0);
        else if (this.peek() === 0x5b) {
          this.events(eventsMax);
          sawEvents = true;
        } else {
          this.value(0);
          eventsNotArray = true; // reported once the whole body is known to be JSON
        }
        this.ws();
        const c = this.next();
        if (c === 0x7d) break;
        if (c !== 0x2c) throw this.unexpected(c);
      }
    }
    this.finish();
    if (unknownKey !== null)
      throw new ApiError(400, "invalid_body", `unknown field ${JSON.stringify(unknownKey)} in the body; it is {"events": [ ... ]}`, { fields: [unknownKey] });
    if (repeatedEvents) throw new ApiError(400, "invalid_body", `"events" is given more than once`);
    if (eventsNotArray) throw new ApiError(400, "invalid_body", `"events" must be an array`);
    if (!sawEvents) throw new ApiError(400, "invalid_body", `body must be {"events": [ ... ]}`);
    if (this.count === 0) throw noEvents();
  }

  private finish(): void {
    this.ws();
    if (this.i < this.end) throw this.unexpected(this.b[this.i]);
  }

  private events(eventsMax: number): void {
    this.i++; // [
    this.ws();
    if (this.peek() === 0x5d) {
      this.i++;
      return;
    }
    for (;;) {
      this.ws();
      if (this.count === eventsMax) throw tooManyEvents(eventsMax);
      const n = this.count++;
      if (this.spans.length < (n + 1) * STRIDE) {
        const grown = new Int32Array(this.spans.length * 2);
        grown.set(this.spans);
        this.spans = grown;
      }
      const base = n * STRIDE;
      this.spans.fill(0, base, base + STRIDE);
      if (this.peek() === 0x7b) this.event(base);
      else this.value(1); // a non-object element: reported by fields()
      this.ws();
      const c = this.next();
      if (c === 0x5d) return;
      if (c !== 0x2c) throw this.unexpected(c);
    }
  }

  private event(base: number): void {
    const s = this.spans;
    s[base] = 1;
    this.i++; // {
    this.ws();
    if (this.peek() === 0x7d) {
      this.i++;
      return;
    }
    for (;;) {
      this.ws();
      const ks = this.i;
      const keyKind = this.string();
      const ke = this.i;
      const field = this.fieldOf(ks, ke, keyKind);
      this.ws();
      this.expect(0x3a);
      this.ws();
      const vs = this.i;
      const kind = this.value(2);
      if (field < 0) {
        if (s[base + 1] === 0) {
          s[base + 1] = ks;
          s[base + 2] = ke;
        }
      } else {
        // A repeated key keeps the last value, as JSON.parse does.
        const at = base + 3 + 3 * field;
        s[at] = kind;
        s[at + 1] = vs;
        s[at + 2] = this.i;
      }
      this.ws();
      const c = this.next();
      if (c === 0x7d) return;
      if (c !== 0x2c) throw this.unexpected(c);
    }
  }

  /** Which event field a key (quotes included, [ks, ke)) names, or -1. */
  private fieldOf(ks: number, ke: number, kind: number): number {
    if (kind === STRING_ESCAPED) {
      const key = JSON.parse(this.b.toString("utf8", ks, ke)) as string;
      return FIELD_NAMES.indexOf(key);
    }
    const len = ke - ks - 2;
    outer: for (let f = 0; f < FIELDS; f++) {
      const name = FIELD_BYTES[f];
      if (name.length !== len) continue;
      for (let j = 0; j < len; j++) if (this.b[ks + 1 + j] !== name[j]) continue outer;
      return f;
    }
    return -1;
  }

  // ---- grammar -----------------------------------------------------------

  private peek(): number {
    return this.i < this.end ? this.b[this.i] : -1;
  }

  private next(): number {
    return this.i < this.end ? this.b[this.i++] : -1;
  }

  private expect(c: number): void {
    const got = this.next();
    if (got !== c) throw this.unexpected(got);
  }

  private ws(): void {
    const b = this.b;
    let i = this.i;
    while (i < this.end) {
      const c = b[i];
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
      i++;
    }
    this.i = i;
  }

  private unexpected(c: number): ApiError {
    const at = c === -1 ? this.end : this.i - 1;
    return syntax(c === -1 ? "unexpected end of body" : `unexpected byte '${String.fromCharCode(c)}' at position ${at}`);
  }

  /** One JSON value; returns its kind. */
  private value(depth: number): number {
    const c = this.peek();
    if (c === QUOTE) return this.string();
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      this.number();
      return NUMBER;
    }
    if (c === 0x7b || c === 0x5b) {
      if (depth >= NESTING_DEPTH_MAX) throw syntax(`nesting deeper than ${NESTING_DEPTH_MAX}`);
      this.container(depth + 1);
      return OTHER;
    }
    if (this.literal("true") || this.literal("false")) return OTHER;
    if (this.literal("null")) return NULL;
    this.i++;
    throw this.unexpected(c);
  }

  private literal(word: string): boolean {
    if (this.end - this.i < word.length) return false;
    for (let j = 0; j < word.length; j++) if (this.b[this.i + j] !== word.charCodeAt(j)) return false;
    this.i += word.length;
    return true;
  }

  private container(depth: number): void {
    const close = this.next() === 0x7b ? 0x7d : 0x5d;
    this.ws();
    if (this.peek() === close) {
      this.i++;
      return;
    }
    for (;;) {
      this.ws();
      if (close === 0x7d) {
        if (this.peek() !== QUOTE) throw this.unexpected(this.next());
        this.string();
        this.ws();
        this.expect(0x3a);
        this.ws();
      }
      this.value(depth);
      this.ws();
      const c = this.next();
      if (c === close) return;
      if (c !== 0x2c) throw this.unexpected(c);
    }
  }

  private string(): number {
    const b = this.b;
    if (this.next() !== QUOTE) throw this.unexpected(this.i <= this.end ? b[this.i - 1] : -1);
    let escaped = false;
    let i = this.i;
    for (;;) {
      if (i >= this.end) {
        this.i = i;
        throw syntax("unterminated string");
      }
      const c = b[i++];
      if (c === QUOTE) break;
      if (c < 0x20) {
        this.i = i;
        throw syntax(`control character in a string at position ${i - 1}`);
      }
      if (c === BACKSLASH) {
        escaped = true;
        const e = i < this.end ? b[i++] : -1;
        if (e === 0x75) {
          for (let k = 0; k < 4; k++) {
            const h = i < this.end ? b[i++] : -1;
            if (!((h >= 0x30 && h <= 0x39) || (h >= 0x41 && h <= 0x46) || (h >= 0x61 && h <= 0x66))) throw syntax(`bad \\u escape at position ${i - 1}`);
          }
        } else if (e !== QUOTE && e !== BACKSLASH && e !== 0x2f && e !== 0x62 && e !== 0x66 && e !== 0x6e && e !== 0x72 && e !== 0x74) {
          throw syntax(`bad escape at position ${i - 1}`);
        }
      }
    }
    this.i = i;
    return escaped ? STRING_ESCAPED : STRING;
  }

  private number(): void {
    const b = this.b;
    let i = this.i;
    if (b[i] === 0x2d) i++;
    if (!this.digit(i)) throw syntax(`bad number at position ${i}`);
    if (b[i] === 0x30) i++;
    else while (this.digit(i)) i++;
    if (i < this.end && b[i] === 0x2e) {
      i++;
      if (!this.digit(i)) throw syntax(`bad number at position ${i}`);
      while (this.digit(i)) i++;
    }
    if (i < this.end && (b[i] === 0x65 || b[i] === 0x45)) {
      i++;
      if (i < this.end && (b[i] === 0x2b || b[i] === 0x2d)) i++;
      if (!this.digit(i)) throw syntax(`bad number at position ${i}`);
      while (this.digit(i)) i++;
    }
    this.i = i;
  }

  private digit(j: number): boolean {
    return j < this.end && this.b[j] >= 0x30 && this.b[j] <= 0x39;
  }

  // ---- event rules ---------------------------------------------------------

  /**
   * Applies the event rules to event `index` and fills `f` with where its
   * values are in the scanned buffer. Throws invalid_event / event_too_large.
   */
  fields(index: number, f: EventFields, limits: EventLimits): EventFields {
    const s = this.spans;
    const base = index * STRIDE;
    if (s[base] !== 1) throw invalidEvent(index, "must be a JSON object");
    if (s[base + 1] !== 0) {
      const k = JSON.parse(this.b.toString("utf8", s[base + 1], s[base + 2])) as string;
      throw invalidEvent(
        index,
        k === "seq" || k === "ingest_ts" || k === "stream" ? `"${k}" is assigned by the server and must not be sent` : `unknown field "${k}"`,
      );
    }
    f.typeAt = this.str(index, base, F_TYPE, true, limits.fieldBytesMax);
    f.typeLen = this.len;
    f.keyAt = this.str(index, base, F_KEY, false, limits.fieldBytesMax);
    f.keyLen = this.len;
    f.producerIdAt = this.str(index, base, F_PRODUCER_ID, false, limits.fieldBytesMax);
    f.producerIdLen = this.len;
    f.idemAt = this.str(index, base, F_IDEM, false, limits.fieldBytesMax);
    f.idemLen = this.len;
    f.producerSeq = this.uint(index, base, F_PRODUCER_SEQ);
    f.producerTs = this.uint(index, base, F_PRODUCER_TS);
    const hasPayload = s[base + 3 + 3 * F_PAYLOAD] !== ABSENT;
    const b64Kind = s[base + 3 + 3 * F_PAYLOAD_BASE64];
    if (hasPayload && b64Kind !== ABSENT) throw invalidEvent(index, `send "payload" or "payload_base64", not both`);
    if (hasPayload) {
      f.encoding = PAYLOAD_JSON;
      f.payloadAt = s[base + 4 + 3 * F_PAYLOAD];
      f.payloadLen = s[base + 5 + 3 * F_PAYLOAD] - f.payloadAt;
    } else if (b64Kind !== ABSENT) {
      const at = this.str(index, base, F_PAYLOAD_BASE64, false, Infinity); // its decoded size is checked below
      const text = at < 0 ? null : this.b.toString("latin1", at, at + this.len);
      if (text === null || text.length % 4 !== 0 || !BASE64.test(text)) throw invalidEvent(index, `"payload_base64" must be a base64 string`);
      f.encoding = PAYLOAD_BINARY;
      f.payloadAt = this.side;
      f.payloadLen = this.b.write(text, this.side, "base64");
      this.side += f.payloadLen;
    } else {
      f.encoding = PAYLOAD_NONE;
      f.payloadAt = -1;
      f.payloadLen = 0;
    }
    if (f.payloadLen > limits.eventBytesMax) throw eventTooLarge(index, f.payloadLen, limits.eventBytesMax);
    return f;
  }

  // Per-field rules as methods, not closures: fields() runs once per event
  // and five closures each time were most of the JSON path's garbage.

  /** A string field's value as [at, this.len) of UTF-8 bytes; -1 when absent or null. */
  private str(index: number, base: number, field: number, required: boolean, bytesMax: number): number {
    const s = this.spans;
    const k = s[base + 3 + 3 * field];
    if (k === ABSENT || k === NULL) {
      if (required) throw invalidEvent(index, `"${FIELD_NAMES[field]}" is required`);
      this.len = 0;
      return -1;
    }
    if (k !== STRING && k !== STRING_ESCAPED) throw invalidEvent(index, `"${FIELD_NAMES[field]}" must be a string`);
    const start = s[base + 4 + 3 * field];
    const stop = s[base + 5 + 3 * field];
    let at = start + 1;
    this.len = stop - 1 - at;
    if (k === STRING_ESCAPED) {
      const value = JSON.parse(this.b.toString("utf8", start, stop)) as string;
      // An escaped lone surrogate has no UTF-8 form: writing it would store
      // U+FFFD instead, silently changing the field (the binary form refuses
      // the same string as invalid UTF-8).
      if (LONE_SURROGATE.test(value))
        throw invalidEvent(index, `"${FIELD_NAMES[field]}" holds an unpaired surrogate escape (\\uD800-\\uDFFF), which is not UTF-8`);
      at = this.side;
      this.len = this.b.write(value, at, "utf8");
      this.side += this.len;
    }
    if (required && this.len === 0) throw invalidEvent(index, `"${FIELD_NAMES[field]}" must not be empty`);
    if (this.len > bytesMax) throw fieldTooLong(index, FIELD_NAMES[field], bytesMax);
    return at;
  }

  /** A non-negative integer field, or -1 when absent or null. */
  private uint(index: number, base: number, field: number): number {
    const s = this.spans;
    const k = s[base + 3 + 3 * field];
    if (k === ABSENT || k === NULL) return -1;
    const v = k === NUMBER ? Number(this.b.toString("latin1", s[base + 4 + 3 * field], s[base + 5 + 3 * field])) : NaN;
    if (!Number.isSafeInteger(v) || v < 0) throw invalidEvent(index, `"${FIELD_NAMES[field]}" must be a non-negative integer`);
    return v;
  }

  private len = 0;
}

function syntax(message: string): ApiError {
  return new ApiError(400, "invalid_json", `request body is not valid JSON: ${message}`);
}
