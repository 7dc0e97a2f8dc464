// Events as the client hands them out: a view over the record frames of a
// replay page or a consume batch (docs/wire.md), read field by field on
// access. Nothing is decoded or copied until it is asked for: `seq` is two
// loads from the frame header, `payload_bytes` a subarray of the page,
// `payload` a JSON.parse on first access. A view keeps its page's buffer
// alive; copy `payload_bytes` to keep a payload past the page.
import { readU64, u32 } from "../bytes.js";
import { EventFields, PAYLOAD_BINARY, PAYLOAD_JSON } from "../wire/event-layout.js";
import { TickerError } from "./errors.js";

const FRAME_HEADER_BYTES = 24;
const EMPTY = Buffer.alloc(0);
/** The vtable slot of Event.payload (field 7). */
const PAYLOAD_SLOT = 4 + 2 * 7;

const UNREAD = Symbol("unread");

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
    const f = this.read();
    if (f.payloadAt < 0) return "none";
    return f.encoding === PAYLOAD_JSON ? "json" : f.encoding === PAYLOAD_BINARY ? "binary" : "none";
  }

  /**
   * The stored payload bytes (JSON text for a JSON payload), a view into the
   * page; empty when there is none. Read straight from the vtable, without
   * the other fields: the one field a throughput handler reads per event.
   */
  get payload_bytes(): Buffer {
    if (this.fields !== null) {
      const f = this.fields;
      return f.payloadAt < 0 ? EMPTY : this.buf.subarray(f.payloadAt, f.payloadAt + f.payloadLen);
    }
    const b = this.buf;
    const base = this.at + FRAME_HEADER_BYTES;
    const end = this.at + u32(b, this.at);
    const table = base + u32(b, base);
    const vt = table - (b[table] | (b[table + 1] << 8) | (b[table + 2] << 16) | (b[table + 3] << 24));
    if (table + 4 > end || vt < base || vt + 4 > end) return this.read() && EMPTY; // malformed: read() throws
    const vtBytes = b[vt] | (b[vt + 1] << 8);
    const off = PAYLOAD_SLOT < vtBytes && vt + PAYLOAD_SLOT + 2 <= end ? b[vt + PAYLOAD_SLOT] | (b[vt + PAYLOAD_SLOT + 1] << 8) : 0;
    if (off === 0) return EMPTY;
    const s = table + off + u32(b, table + off);
    const len = s >= base && s + 4 <= end ? u32(b, s) : -1;
    if (len < 0 || s + 4 + len > end) return this.read() && EMPTY;
    return b.subarray(s + 4, s + 4 + len);
  }

  /** A JSON payload's value, parsed on first access; undefined for a binary payload or none. */
  get payload(): unknown {
    if (this.parsed === UNREAD) this.parsed = this.payload_encoding === "json" ? JSON.parse(this.payload_bytes.toString("utf8")) : undefined;
    return this.parsed;
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
 * The events of `records` (frames back to back) as views, checking only
 * what keeps the walk inside the buffer: each frame's length is at least a
 * header and a minimal Event, a multiple of 8, and ends inside the records.
 * A frame that breaks this is a bad_response (the walk stops, having made
 * progress of at least 32 bytes per frame).
 */
export function eventsOf(records: Buffer, stream: string): TickerEvent[] {
  const out: TickerEvent[] = [];
  const end = records.length;
  let at = 0;
  while (at < end) {
    const frameBytes = at + 4 <= end ? u32(records, at) : 0;
    if (frameBytes < 32 || (frameBytes & 7) !== 0 || at + frameBytes > end) {
      throw new TickerError(0, "bad_response", `a record frame at byte ${at} of a page is malformed (length ${frameBytes}, ${end - at} bytes left)`);
    }
    out.push(new TickerEvent(records, at, stream));
    at += frameBytes;
  }
  return out;
}
