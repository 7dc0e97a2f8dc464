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

/**
 * Where locate() found the payload: module state rather than a result
 * object or fields of every event, since an event is made per delivery and
 * a throughput handler reads only its seq and payload once (JS runs one
 * locate() at a time).
 */
let foundAt = -1;
let foundLen = 0;
let foundEncoding = PAYLOAD_NONE;

/** What an event keeps once more than its seq and payload is read. */
interface EventCache {
  fields: EventFields | null;
  parsed: unknown;
}

export class TickerEvent {
  /** Made on the first read of a field or of the parsed payload (four fields an event, not eight: less to collect). */
  private cache: EventCache | null = null;

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
    this.locate();
    return foundAt < 0 ? "none" : foundEncoding === PAYLOAD_JSON ? "json" : foundEncoding === PAYLOAD_BINARY ? "binary" : "none";
  }

  /** The stored payload bytes (JSON text for a JSON payload), a view into the page; empty when there is none. */
  get payload_bytes(): Buffer {
    this.locate();
    return foundAt < 0 ? EMPTY : this.buf.subarray(foundAt, foundAt + foundLen);
  }

  /** A JSON payload's value, parsed on first access; undefined for a binary payload or none. */
  get payload(): unknown {
    const c = this.cached();
    if (c.parsed === UNREAD) {
      this.locate();
      c.parsed = foundAt >= 0 && foundEncoding === PAYLOAD_JSON ? JSON.parse(this.buf.toString("utf8", foundAt, foundAt + foundLen)) : undefined;
    }
    return c.parsed;
  }

  /**
   * Finds the payload and its encoding straight from the vtable, without
   * reading the other fields: what a throughput handler reads per event.
   * Every load is bounded by the frame; a malformed one goes to read(),
   * which throws. Sets foundAt (-1: no payload), foundLen, foundEncoding.
   */
  private locate(): void {
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
      foundAt = -1;
      return;
    }
    const s = table + off + 4 <= end ? table + off + u32(b, table + off) : -1;
    const len = s >= base && s + 4 <= end ? u32(b, s) : -1;
    if (len < 0 || s + 4 + len > end || (encOff !== 0 && table + encOff >= end)) return this.readPayload();
    foundAt = s + 4;
    foundLen = len;
    foundEncoding = encOff === 0 ? PAYLOAD_NONE : b[table + encOff];
  }

  private readPayload(): void {
    const f = this.read();
    foundAt = f.payloadAt;
    foundLen = f.payloadLen;
    foundEncoding = f.encoding;
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

  private cached(): EventCache {
    this.cache ??= { fields: null, parsed: UNREAD };
    return this.cache;
  }

  private read(): EventFields {
    const c = this.cached();
    if (c.fields === null) {
      const frameBytes = u32(this.buf, this.at);
      c.fields = new EventFields().read(this.buf, this.at + FRAME_HEADER_BYTES, this.at + frameBytes);
    }
    return c.fields;
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
 * The frames of `records` (back to back) as events, made one at a time as
 * they are taken: a page fetched ahead holds no object per event for every
 * young-generation collection to copy while it waits, and each frame is
 * touched once, when its event is handed out. Each frame is checked for what
 * keeps the walk inside the buffer: its length is at least a header and a
 * minimal Event, a multiple of 8, and ends inside the records. A frame that
 * breaks this is a bad_response (the walk stops there, having made progress
 * of at least 32 bytes a frame; the events before it were good).
 */
export class EventPage {
  /** Where the next frame starts. */
  private pos = 0;
  /** Events past this seq are not handed out (seqs rise through a page). */
  private last = Number.POSITIVE_INFINITY;

  constructor(
    private readonly records: Buffer,
    readonly stream: string,
  ) {}

  /** Whether the page holds no frame at all. */
  get empty(): boolean {
    return this.records.length === 0;
  }

  /** Ends the page after the event with this seq. */
  endAt(seq: number): this {
    this.last = seq;
    return this;
  }

  /** The next event, or null at the page's end. */
  take(): TickerEvent | null {
    const b = this.records;
    const at = this.pos;
    const end = b.length;
    if (at >= end) return null;
    const frameBytes = at + 4 <= end ? u32(b, at) : 0;
    if (frameBytes < 32 || (frameBytes & 7) !== 0 || at + frameBytes > end) {
      this.pos = end;
      throw new TickerError(0, "bad_response", `a record frame at byte ${at} of a page is malformed (length ${frameBytes}, ${end - at} bytes left)`);
    }
    if (readU64(b, at + 8) > this.last) {
      this.pos = end;
      return null;
    }
    this.pos = at + frameBytes;
    return new TickerEvent(b, at, this.stream);
  }

  /** The events not taken yet, as an array. */
  list(): TickerEvent[] {
    const out: TickerEvent[] = [];
    for (let e = this.take(); e !== null; e = this.take()) out.push(e);
    return out;
  }
}

/** The events of `records` as views, all checked before any is handed out. */
export function eventsOf(records: Buffer, stream: string): TickerEvent[] {
  return new EventPage(records, stream).list();
}
