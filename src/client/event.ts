// Events as the client hands them out: a view over the record frames of a
// replay page or a consume batch (docs/wire.md), read field by field on
// access. Nothing is decoded or copied until it is asked for: `seq` is two
// loads from the frame header, `payload_bytes` a subarray of the page,
// `payload` a JSON.parse on first access. A view keeps its page's buffer
// alive; copy `payload_bytes` to keep a payload past the page.
import { readU64, u32 } from "../bytes.js";
import { EventFields, PAYLOAD_BINARY, PAYLOAD_JSON, PAYLOAD_NONE } from "../wire/event-layout.js";
import { TickerError } from "./errors.js";

const FRAME_HEADER_BYTES = 24;
const EMPTY = Buffer.alloc(0);
/** The vtable slot of Event.payload (field 7). */
const PAYLOAD_SLOT = 4 + 2 * 7;

const UNREAD = Symbol("unread");
const UNLOCATED = -2;
/** The vtable slot of Event.payload_encoding (field 6). */
const ENCODING_SLOT = 4 + 2 * 6;

export type PayloadEncoding = "none" | "json" | "binary";

/** The API's JSON form of an event (API.md, "Event"). */
export interface EventJson {
  seq: number;
  stream: string;
  type: string;
  key?: string;
  producer_id?: string;
  producer_seq?: number;
  producer_ts?: number;
  ingest_ts: number;
  idempotency_key?: string;
  payload?: unknown;
  payload_base64?: string;
}

export class TickerEvent {
  private fields: EventFields | null = null;
  private parsed: unknown = UNREAD;
  /** The payload's place in `buf` (-1: none), found on first access. */
  private payloadAt = UNLOCATED;
  private payloadLen = 0;
  private encoding = PAYLOAD_NONE;

  constructor(
    /** The page (or batch) the frame lies in. */
    private readonly buf: Buffer,
    /** Where the frame starts in `buf`. */
    private readonly at: number,
    readonly stream: string,
  ) {}

  get seq(): number {
    return readU64(this.buf, this.at + 8);
  }

  get ingest_ts(): number {
    return readU64(this.buf, this.at + 16);
  }

  get type(): string {
    const f = this.read();
    return this.buf.toString("utf8", f.typeAt, f.typeAt + f.typeLen);
  }

  get key(): string | undefined {
    const f = this.read();
    return f.keyAt < 0 ? undefined : this.buf.toString("utf8", f.keyAt, f.keyAt + f.keyLen);
  }

  get producer_id(): string | undefined {
    const f = this.read();
    return f.producerIdAt < 0 ? undefined : this.buf.toString("utf8", f.producerIdAt, f.producerIdAt + f.producerIdLen);
  }

  get producer_seq(): number | undefined {
    const v = this.read().producerSeq;
    return v < 0 ? undefined : v;
  }

  get producer_ts(): number | undefined {
    const v = this.read().producerTs;
    return v < 0 ? undefined : v;
  }

  get idempotency_key(): string | undefined {
    const f = this.read();
    return f.idemAt < 0 ? undefined : this.buf.toString("utf8", f.idemAt, f.idemAt + f.idemLen);
  }

  get payload_encoding(): PayloadEncoding {
    if (this.payloadAt === UNLOCATED) this.locatePayload();
    return this.payloadAt < 0 ? "none" : this.encoding === PAYLOAD_JSON ? "json" : this.encoding === PAYLOAD_BINARY ? "binary" : "none";
  }

  /** The stored payload bytes (JSON text for a JSON payload), a view into the page; empty when there is none. */
  get payload_bytes(): Buffer {
    if (this.payloadAt === UNLOCATED) this.locatePayload();
    return this.payloadAt < 0 ? EMPTY : this.buf.subarray(this.payloadAt, this.payloadAt + this.payloadLen);
  }

  /** A JSON payload's value, parsed on first access; undefined for a binary payload or none. */
  get payload(): unknown {
    if (this.parsed === UNREAD) {
      if (this.payloadAt === UNLOCATED) this.locatePayload();
      const json = this.payloadAt >= 0 && this.encoding === PAYLOAD_JSON;
      this.parsed = json ? JSON.parse(this.buf.toString("utf8", this.payloadAt, this.payloadAt + this.payloadLen)) : undefined;
    }
    return this.parsed;
  }

  /**
   * Finds the payload and its encoding straight from the vtable, without
   * reading the other fields: what a throughput handler reads per event.
   * Every load is bounded by the frame; a malformed one goes to read(),
   * which throws.
   */
  private locatePayload(): void {
    const b = this.buf;
    const base = this.at + FRAME_HEADER_BYTES;
    const end = this.at + u32(b, this.at);
    const table = base + u32(b, base);
    const vt = table + 4 <= end ? table - (b[table] | (b[table + 1] << 8) | (b[table + 2] << 16) | (b[table + 3] << 24)) : -1;
    if (vt < base || vt + 4 > end) return this.readPayload();
    const vtBytes = b[vt] | (b[vt + 1] << 8);
    if (vt + vtBytes > end) return this.readPayload();
    const slot = (o: number) => (o < vtBytes ? b[vt + o] | (b[vt + o + 1] << 8) : 0);
    const off = slot(PAYLOAD_SLOT);
    const encOff = slot(ENCODING_SLOT);
    if (off === 0) {
      this.payloadAt = -1;
      return;
    }
    const s = table + off + 4 <= end ? table + off + u32(b, table + off) : -1;
    const len = s >= base && s + 4 <= end ? u32(b, s) : -1;
    if (len < 0 || s + 4 + len > end || (encOff !== 0 && table + encOff >= end)) return this.readPayload();
    this.payloadAt = s + 4;
    this.payloadLen = len;
    this.encoding = encOff === 0 ? PAYLOAD_NONE : b[table + encOff];
  }

  private readPayload(): void {
    const f = this.read();
    this.payloadAt = f.payloadAt;
    this.payloadLen = f.payloadLen;
    this.encoding = f.encoding;
  }

  /** The API's JSON form (what a JSON replay page shows for this event). */
  toJSON(): EventJson {
    const out: EventJson = { seq: this.seq, stream: this.stream, type: this.type, ingest_ts: this.ingest_ts };
    const optional = { key: this.key, producer_id: this.producer_id, producer_seq: this.producer_seq, producer_ts: this.producer_ts };
    for (const [k, v] of Object.entries(optional)) if (v !== undefined) (out as unknown as Record<string, unknown>)[k] = v;
    if (this.idempotency_key !== undefined) out.idempotency_key = this.idempotency_key;
    const enc = this.payload_encoding;
    if (enc === "json") out.payload = this.payload;
    else if (enc === "binary") out.payload_base64 = this.payload_bytes.toString("base64");
    // Key order as the server renders it: seq, stream, type, key, producer fields, ingest_ts, ...
    return reorder(out);
  }

  private read(): EventFields {
    if (this.fields === null) {
      const frameBytes = u32(this.buf, this.at);
      this.fields = new EventFields().read(this.buf, this.at + FRAME_HEADER_BYTES, this.at + frameBytes);
    }
    return this.fields;
  }
}

const KEY_ORDER = ["seq", "stream", "type", "key", "producer_id", "producer_seq", "producer_ts", "ingest_ts", "idempotency_key", "payload", "payload_base64"];
function reorder(e: EventJson): EventJson {
  const src = e as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of KEY_ORDER) if (src[k] !== undefined) out[k] = src[k];
  return out as unknown as EventJson;
}

/**
 * The frames of `records` (back to back), walked once for their offsets:
 * each frame's length is at least a header and a minimal Event, a multiple
 * of 8, and ends inside the records. A frame that breaks this is a
 * bad_response (the walk stops, having made progress of at least 32 bytes
 * per frame). The events themselves are made on demand (`at`), so a page
 * fetched ahead holds one small array of offsets, not an object per event
 * that every young-generation collection would copy while it waits.
 */
/** The frame offsets of the page being walked, before they are cut to size. */
let scratch = new Uint32Array(0);

export class EventPage {
  /** Where each frame starts in `records`. */
  private readonly offsets: Uint32Array;
  /** Events in the page (fewer after endAt). */
  length: number;

  constructor(
    private readonly records: Buffer,
    readonly stream: string,
  ) {
    const end = records.length;
    if (scratch.length < end >>> 5) scratch = new Uint32Array(end >>> 5); // at most one frame per 32 bytes
    const offsets = scratch;
    let n = 0;
    for (let at = 0; at < end; n++) {
      const frameBytes = at + 4 <= end ? u32(records, at) : 0;
      if (frameBytes < 32 || (frameBytes & 7) !== 0 || at + frameBytes > end) {
        throw new TickerError(0, "bad_response", `a record frame at byte ${at} of a page is malformed (length ${frameBytes}, ${end - at} bytes left)`);
      }
      offsets[n] = at;
      at += frameBytes;
    }
    this.offsets = offsets.slice(0, n);
    this.length = n;
  }

  /** The i-th event's seq, read from its frame header without making the event. */
  seqAt(i: number): number {
    return readU64(this.records, this.offsets[i] + 8);
  }

  /** Drops the events after `seq` (seqs rise through a page). */
  endAt(seq: number): this {
    while (this.length > 0 && this.seqAt(this.length - 1) > seq) this.length--;
    return this;
  }

  at(i: number): TickerEvent {
    return new TickerEvent(this.records, this.offsets[i], this.stream);
  }

  /** The events from `from` (an index) to the end, as an array. */
  list(from = 0): TickerEvent[] {
    const out = new Array<TickerEvent>(Math.max(0, this.length - from));
    for (let i = from; i < this.length; i++) out[i - from] = this.at(i);
    return out;
  }
}

/** The events of `records` as views (an EventPage made whole). */
export function eventsOf(records: Buffer, stream: string): TickerEvent[] {
  return new EventPage(records, stream).list();
}
