// ticker/client: the TypeScript client of a Ticker server (docs/client.md).
//
//   const ticker = new Ticker({ url: "http://127.0.0.1:8080" });
//   await ticker.publish("orders", [{ type: "created", payload: { id: 1 } }]);
//   for await (const e of ticker.replay("orders")) console.log(e.seq, e.payload);
//
// One Ticker holds a pool of keep-alive connections (one per node, in a
// cluster, whose redirects it follows and remembers: transport.ts);
// publish, producers, replays and the admin calls share it. Every failure is
// a TickerError.
import { BinaryBatchEncoder, type Format, JsonBatchEncoder, type PublishEvent, prepareEvent } from "./encode.js";
import { errorFromAnswer, TickerError } from "./errors.js";
import { Producer, type ProducerOptions, type PublishResult } from "./producer.js";
import { Replay, type ReplayOptions } from "./replay.js";
import { consume, type ConsumeConnection, type ConsumeOptions, type Subscription } from "./consume.js";
import { Transport, type TransportOptions } from "./transport.js";

export { TickerError } from "./errors.js";
export type { ClientErrorCode } from "./errors.js";
export { TickerEvent, type EventJson, type PayloadEncoding } from "./event.js";
export type { PublishEvent, Format } from "./encode.js";
export { Producer, type ProducerOptions, type PublishResult } from "./producer.js";
export { Replay, type ReplayOptions } from "./replay.js";
export { Subscription, type ConsumeOptions, type ConsumedEvent, type Hello, type Role } from "./consume.js";
export {
  processExactlyOnce,
  ensureSchema,
  type ExactlyOnceOptions,
  type ExactlyOnceResult,
  type CommittedBatch,
  type ErrorPolicy,
  type Handler,
  type MarkerKey,
} from "./exactly-once.js";

export interface TickerOptions extends TransportOptions {
  /** The server, e.g. "http://127.0.0.1:8080" (a path prefix is kept). */
  url: string;
  /** An API key, sent as `Authorization: Bearer <token>`. */
  token?: string;
  /** Wire format of `publish` (default "binary"). */
  format?: Format;
}

/** Stream info as `GET /v1/streams/{id}` answers it. */
export interface StreamInfo {
  id: string;
  head_seq: number;
  first_seq: number;
  events: number;
  bytes: number;
  created_at: number;
  retention_ms: number;
  [config: string]: unknown;
}

/** Stream settings for `streams.put` (API.md, "Streams"). */
export interface StreamConfig {
  retention_ms?: number;
  retention_bytes?: number | null;
  max_event_bytes?: number;
  dedup_window_ms?: number;
  durability?: "process" | "fsync";
  producer_ordering?: boolean;
  [key: string]: unknown;
}

export interface Lag {
  group: string;
  head_seq: number;
  checkpoint_seq: number;
  lag: number;
}

export interface RedriveOptions {
  from?: number;
  to?: number;
  group?: string;
}

export interface RedriveResult {
  moved: number;
  duplicates: number;
  skipped: number;
  from: number;
  to: number;
  next: number | null;
}

export interface TimelinePageOptions {
  /** Stream ids (ad hoc) — or `name` for a named timeline. */
  streams?: string[];
  name?: string;
  cursor?: string;
  limit?: number;
  direction?: "forward" | "backward";
}

const path = (...parts: string[]) => parts.map(encodeURIComponent).join("/");
const query = (q: Record<string, string | number | undefined>) => {
  const s = Object.entries(q)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${encodeURIComponent(String(v))}`)
    .join("&");
  return s ? `?${s}` : "";
};

export class Ticker {
  private readonly transport: Transport;
  private readonly format: Format;
  private readonly conn: ConsumeConnection;

  constructor(options: TickerOptions) {
    this.transport = new Transport(options.url, options.token, options);
    this.conn = { url: options.url, token: options.token, routes: this.transport.routes };
    this.format = options.format ?? "binary";
  }

  /**
   * Redirects this client followed so far (a cluster node sending a
   * stream's request, or a consumer's upgrade, to its owner). Each stream's
   * owner is remembered once learned, so with a settled cluster this stops
   * growing: a count that keeps rising means the route cache is missing
   * (shards moving, or more streams than routedStreamsMax).
   */
  get redirects(): number {
    return this.transport.routes.redirects;
  }

  /** Publishes one request's events (at most the server's publish_events_max) and resolves with its answer. */
  async publish(stream: string, events: PublishEvent | PublishEvent[], options: { format?: Format } = {}): Promise<PublishResult> {
    const list = Array.isArray(events) ? events : [events];
    const prepared = list.map(prepareEvent);
    const encoder = (options.format ?? this.format) === "json" ? new JsonBatchEncoder() : new BinaryBatchEncoder();
    for (const p of prepared) encoder.add(p, p.e.idempotency_key);
    const r = await this.transport.send("POST", `/v1/streams/${path(stream)}/events`, encoder.finish(), { "Content-Type": encoder.contentType });
    if (r.status >= 300) throw errorFromAnswer(r.status, r.body, r.retryAfter);
    return JSON.parse(r.body.toString("utf8")) as PublishResult;
  }

  /** A batching producer over this client's connections (docs/client.md, "Producer"). */
  producer(options: ProducerOptions = {}): Producer {
    return new Producer(this.transport, options.format ?? this.format, options);
  }

  /** The events of a stream from `from` (or `from_time`) to `to` or the head, as an async iterable. */
  replay(stream: string, options: ReplayOptions = {}): Replay {
    return new Replay(this.transport, stream, options);
  }

  /** Events pushed over a WebSocket as they are published, with a group's acks (docs/client.md, "Consume"). */
  consume(stream: string, options: ConsumeOptions = {}): Subscription {
    return consume(this.conn, stream, options);
  }

  readonly streams = {
    list: async (): Promise<StreamInfo[]> => (await this.transport.json<{ streams: StreamInfo[] }>("GET", "/v1/streams")).streams,
    get: (id: string): Promise<StreamInfo> => this.transport.json("GET", `/v1/streams/${path(id)}`),
    /** Creates or updates (fields not given keep their value). */
    put: (id: string, config: StreamConfig = {}): Promise<StreamInfo> => this.transport.json("PUT", `/v1/streams/${path(id)}`, config),
    delete: async (id: string): Promise<void> => {
      await this.transport.ok("DELETE", `/v1/streams/${path(id)}`);
    },
  };

  readonly checkpoints = {
    get: (stream: string, group: string): Promise<{ group: string; seq: number }> =>
      this.transport.json("GET", `/v1/streams/${path(stream)}/checkpoint${query({ group })}`),
    set: (stream: string, group: string, seq: number): Promise<{ group: string; seq: number }> =>
      this.transport.json("POST", `/v1/streams/${path(stream)}/checkpoint`, { group, seq }),
  };

  lag(stream: string, group: string): Promise<Lag> {
    return this.transport.json("GET", `/v1/streams/${path(stream)}/lag${query({ group })}`);
  }

  async groups(stream: string): Promise<Array<Record<string, unknown>>> {
    return (await this.transport.json<{ groups: Array<Record<string, unknown>> }>("GET", `/v1/streams/${path(stream)}/groups`)).groups;
  }

  readonly dlq = {
    /** The dead letters of `stream` (the stream `{stream}.dlq`), as replay gives them. */
    list: (stream: string, options: ReplayOptions = {}): Replay => this.replay(`${stream}.dlq`, options),
    /** Republishes dead letters to `stream`, each once however often this is called. */
    redrive: (stream: string, options: RedriveOptions = {}): Promise<RedriveResult> =>
      this.transport.json("POST", `/v1/streams/${path(stream)}/dlq/redrive`, options),
  };

  readonly timelines = {
    /** One page of a merged timeline: ad hoc over `streams`, or a named one. */
    page: (o: TimelinePageOptions): Promise<{ events: unknown[]; next_cursor: string | null; prev_cursor: string | null; has_gap: boolean }> => {
      const q = query({ cursor: o.cursor, limit: o.limit, direction: o.direction });
      if (o.name !== undefined) return this.transport.json("GET", `/v1/timelines/${path(o.name)}/events${q}`);
      if (!o.streams || o.streams.length === 0) throw new TickerError(0, "invalid_parameter", "a timeline page needs streams or name");
      return this.transport.json("GET", `/v1/timelines${query({ streams: o.streams.join(",") })}${q ? `&${q.slice(1)}` : ""}`);
    },
    list: (): Promise<{ timelines: Array<Record<string, unknown>> }> => this.transport.json("GET", "/v1/timelines"),
    get: (name: string): Promise<Record<string, unknown>> => this.transport.json("GET", `/v1/timelines/${path(name)}`),
    put: (name: string, definition: Record<string, unknown>): Promise<Record<string, unknown>> =>
      this.transport.json("PUT", `/v1/timelines/${path(name)}`, definition),
    delete: async (name: string): Promise<void> => {
      await this.transport.ok("DELETE", `/v1/timelines/${path(name)}`);
    },
  };

  /** Closes the connections: idle ones at once, busy ones when their request is answered; later requests fail with code "closed". */
  close(): void {
    this.transport.close();
  }
}
