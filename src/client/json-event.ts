// One event type for both consume formats: ConsumedEvent is what TickerEvent
// (a view over binary record frames) offers, and JsonEvent offers the same
// over an event of a JSON `events` message, so a handler reads either alike.
import type { EventJson, PayloadEncoding } from "./event.js";

const EMPTY = Buffer.alloc(0);

/** An event as a subscription hands it out: a TickerEvent (binary format) or a JsonEvent (JSON format). */
export interface ConsumedEvent {
  readonly seq: number;
  readonly stream: string;
  readonly type: string;
  readonly key: string | undefined;
  readonly producer_id: string | undefined;
  readonly producer_seq: number | undefined;
  readonly producer_ts: number | undefined;
  readonly ingest_ts: number;
  readonly idempotency_key: string | undefined;
  readonly payload_encoding: PayloadEncoding;
  /** A JSON payload's text or a binary payload's bytes; empty when there is none. */
  readonly payload_bytes: Buffer;
  /** A JSON payload's value; undefined for a binary payload or none. */
  readonly payload: unknown;
  /** The API's JSON form. */
  toJSON(): EventJson;
}

/** An event of a JSON `events` message, read through the same getters as TickerEvent. */
export class JsonEvent implements ConsumedEvent {
  private bytes: Buffer | null = null;

  constructor(private readonly e: EventJson) {}

  get seq(): number {
    return this.e.seq;
  }
  get stream(): string {
    return this.e.stream;
  }
  get type(): string {
    return this.e.type;
  }
  get key(): string | undefined {
    return this.e.key;
  }
  get producer_id(): string | undefined {
    return this.e.producer_id;
  }
  get producer_seq(): number | undefined {
    return this.e.producer_seq;
  }
  get producer_ts(): number | undefined {
    return this.e.producer_ts;
  }
  get ingest_ts(): number {
    return this.e.ingest_ts;
  }
  get idempotency_key(): string | undefined {
    return this.e.idempotency_key;
  }

  get payload_encoding(): PayloadEncoding {
    if (this.e.payload_base64 !== undefined) return "binary";
    return "payload" in this.e ? "json" : "none";
  }

  /**
   * Made on first access: a binary payload decoded from base64, a JSON one
   * as JSON.stringify writes its value (the same value as the stored text,
   * not always the same bytes: spacing and number forms may differ).
   */
  get payload_bytes(): Buffer {
    if (this.bytes === null) {
      const enc = this.payload_encoding;
      if (enc === "binary") this.bytes = Buffer.from(this.e.payload_base64 ?? "", "base64");
      else this.bytes = enc === "json" ? Buffer.from(JSON.stringify(this.e.payload)) : EMPTY;
    }
    return this.bytes;
  }

  get payload(): unknown {
    return this.e.payload_base64 === undefined ? this.e.payload : undefined;
  }

  toJSON(): EventJson {
    return this.e;
  }
}
