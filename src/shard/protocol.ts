// Everything that crosses between the front and a shard worker, typed in one
// place. Requests and responses travel through the two SharedArrayBuffer
// rings; postMessage carries only start-up, readiness and shutdown.
import { fnv1a } from "../hash.js";
import type { Config } from "../config.js";
import type { Limits } from "../limits.js";
import type { Ring, RingMessage } from "../ring/ring.js";
import { copyBytes } from "../bytes.js";
import type { CorruptionInfo } from "../log/log.js";
import type { StreamReport } from "./stream.js";
import { ContentType } from "../wire/content-type.js";

export const enum Op {
  Publish = 1,
  Replay = 2,
  PutStream = 3,
  GetStream = 4,
  DeleteStream = 5,
  ListStreams = 6,
  SetCheckpoint = 7,
  GetCheckpoint = 8,
  Lag = 9,
  Groups = 10,
  /** Resolves where a new consumer starts (from, from_time, group checkpoint). */
  ConsumeStart = 11,
  /** One log-path page for a consumer, as the message to send on its socket. */
  ConsumeRead = 12,
  /** Sets which formats of live batches the front wants for a stream (WatchMeta.watch). */
  Watch = 13,
  /** One shard's part of a timeline page: its streams' events merged (src/shard/timeline-read.ts, answer: src/timeline/shard-page.ts). */
  TimelineRead = 14,
  /** The shard's part of a `GET /metrics` scrape: its registry as prom-client JSON (src/shard/metrics.ts). */
  Metrics = 15,
  /** A page of a stream's snapshot, newest event per key (src/shard/snapshot.ts). */
  Snapshot = 16,
}

/** Bits of WatchMeta.watch: the formats live batches are rendered in. */
export const WATCH_JSON = 1;
export const WATCH_BINARY = 2;
/** A watch that wants no rendering, only pushes that say a batch was committed (timelines' long poll). */
export const WATCH_HEAD = 4;

/**
 * reqId of a message the shard sends unasked: a live batch of a watched
 * stream (status 200) or the news that a watched stream was deleted (404).
 */
export const PUSH_REQ_ID = 0;

// The body formats are the wire's (event-count.ts reads them too); every message here carries one.
export { ContentType };

/** The stream a request is about; the body (publish batch, PUT config, checkpoint) rides after the meta. */
export interface StreamMeta {
  stream: string;
}

/** ...and the route's raw query string, whose names the front has checked. */
export interface QueryMeta extends StreamMeta {
  query: string;
}

export interface PublishMeta extends StreamMeta {
  /** Content type of the body. */
  ct: ContentType;
  /**
   * `expected_head_seq`, checked by the front: the batch is appended only on
   * this head (absent: any head). Left out of the meta when not given.
   */
  expectedHeadSeq?: number;
  /** Cluster mode: the epoch of this node's lease on the stream's cluster shard, which the batch's commit in PostgreSQL is fenced by. */
  clusterEpoch?: number;
}

/** A checkpoint or a stream config: in cluster mode written to PostgreSQL first. */
/** A write of a stream's state (a config, a checkpoint, a delete) that cluster mode fences. */
export interface FencedWriteMeta extends StreamMeta {
  /** Cluster mode: the lease epoch the write to PostgreSQL is fenced by. */
  clusterEpoch?: number;
}

export interface ReplayMeta extends QueryMeta {
  /** Wanted response format. */
  accept: ContentType;
  /** Cluster mode, on a node that does not own the stream: from the archive only (past it: 307, and the front redirects). */
  archiveOnly?: true;
}

export interface SnapshotMeta extends QueryMeta {
  /** For a consumer's socket (`from=snapshot`): a JSON head, then an `events` message; else the HTTP page. */
  socket: boolean;
}

export interface ConsumeReadMeta extends StreamMeta {
  /** First seq and most events wanted, and the message format. */
  from: number;
  limit: number;
  accept: ContentType;
  /** `types` / `keys` of a filtered consumer, as query text (checked by the front). */
  filter?: string;
  /** `conflate=key`: the page keeps the newest event per key (src/wire/event-conflate.ts). */
  conflate?: true;
}

export interface WatchMeta extends StreamMeta {
  /** WATCH_* bits; 0 stops the live batches. */
  watch: number;
}

export interface TimelineReadMeta {
  /**
   * The timeline's streams this shard owns: each id, its index in the
   * (sorted) set and its boundary seq (HEAD_BOUNDARY: the head; from
   * TIME_CUT_BASE: a cut in time; src/timeline/shard-page.ts).
   */
  streams: Array<{ id: string; index: number; seq: number }>;
  backward: boolean;
  /** Most events wanted. */
  limit: number;
  /** The front's clock when it sent the read: the shard's horizon never passes it. */
  nowMs: number;
  /**
   * Date.now() at which the front gives up on the answer (the threads share
   * the clock): a shard that gets to the read later answers
   * TIMELINE_READ_EXPIRED at once, reading nothing.
   */
  deadlineMs: number;
}

/**
 * Status of the answer to a TimelineRead the shard got to past its
 * deadline: no body, and the front takes it as no answer. Work on a page
 * that went out without it would only delay the next pages' reads behind it.
 */
export const TIMELINE_READ_EXPIRED = 504;

/** Small per-request facts, by operation: what the front sends and the shard reads for each. */
export interface RequestMetaOf {
  [Op.Publish]: PublishMeta;
  [Op.Replay]: ReplayMeta;
  [Op.PutStream]: FencedWriteMeta;
  [Op.GetStream]: StreamMeta;
  [Op.DeleteStream]: FencedWriteMeta;
  [Op.ListStreams]: Record<string, never>;
  [Op.SetCheckpoint]: FencedWriteMeta;
  [Op.GetCheckpoint]: QueryMeta;
  [Op.Lag]: QueryMeta;
  [Op.Groups]: StreamMeta;
  [Op.ConsumeStart]: QueryMeta;
  [Op.ConsumeRead]: ConsumeReadMeta;
  [Op.Watch]: WatchMeta;
  [Op.TimelineRead]: TimelineReadMeta;
  [Op.Metrics]: Record<string, never>;
  [Op.Snapshot]: SnapshotMeta;
}

export type RequestMeta<O extends Op = Op> = RequestMetaOf[O];

/**
 * The head of every message the front reads for its consumers: a ConsumeRead
 * answer (one log page) and each live push of a watched stream. One codec,
 * kind first, so a reader never guesses what a field means:
 *
 *   0 u32 kind   4 u32 count   8 f64 seq   16 f64 seq   24 f64 first_seq
 *   32 u32 id bytes   36 u32 binary bytes   40 u32 JSON bytes   44 (unused)
 *   (a page: 32 f64 the seq of its last event, 40 u32 events conflated)
 *
 * A page's message follows its head. A push's stream id follows its head,
 * then its binary and its JSON message (either may be empty). 48 bytes keeps
 * the message after it 8-aligned in the ring.
 */
export const CONSUME_HEAD_BYTES = 48;

export const enum ConsumeHeadKind {
  /** A ConsumeRead answer: `count` events from the asked seq, as one message. */
  Page = 1,
  /** A push: a committed batch of `count` events, `first`..`last`, rendered once per watched format. */
  Batch = 2,
  /** A push without frames (the out-ring had no room for them): the head moved; read the log. */
  HeadMoved = 3,
}

export interface ConsumePageHead {
  kind: ConsumeHeadKind.Page;
  count: number;
  /** The seq after the frames the page looked at: after its last event, or past filtered-out ones (the asked seq when it looked at none). */
  next: number;
  /** The seq of its last event (0 when count is 0); below next - 1 when a filter left out the frames after it. */
  last: number;
  /** Events of the page's range left out by conflation (0 without conflate=key). */
  conflated: number;
  headSeq: number;
  firstSeq: number;
}

export interface LiveBatchHead {
  kind: ConsumeHeadKind.Batch;
  count: number;
  first: number;
  /** Also the stream's head once the batch is committed. */
  last: number;
  firstSeq: number;
  idBytes: number;
  binBytes: number;
  jsonBytes: number;
}

export interface HeadMovedHead {
  kind: ConsumeHeadKind.HeadMoved;
  headSeq: number;
  firstSeq: number;
  idBytes: number;
}

export type ConsumeHead = ConsumePageHead | LiveBatchHead | HeadMovedHead;

export function writeConsumeHead(data: Uint8Array, at: number, h: ConsumeHead): void {
  const dv = new DataView(data.buffer, data.byteOffset + at, CONSUME_HEAD_BYTES);
  dv.setUint32(0, h.kind, true);
  dv.setFloat64(24, h.firstSeq, true);
  // A kind's unused fields are left as the ring had them: its reader never looks there.
  switch (h.kind) {
    case ConsumeHeadKind.Page:
      dv.setUint32(4, h.count, true);
      dv.setFloat64(8, h.next, true);
      dv.setFloat64(16, h.headSeq, true);
      dv.setFloat64(32, h.last, true);
      dv.setUint32(40, h.conflated, true);
      return;
    case ConsumeHeadKind.Batch:
      dv.setUint32(4, h.count, true);
      dv.setFloat64(8, h.first, true);
      dv.setFloat64(16, h.last, true);
      dv.setUint32(32, h.idBytes, true);
      dv.setUint32(36, h.binBytes, true);
      dv.setUint32(40, h.jsonBytes, true);
      return;
    case ConsumeHeadKind.HeadMoved:
      dv.setFloat64(16, h.headSeq, true);
      dv.setUint32(32, h.idBytes, true);
      return;
  }
}

export function readConsumeHead(data: Uint8Array): ConsumeHead {
  const dv = new DataView(data.buffer, data.byteOffset, CONSUME_HEAD_BYTES);
  const kind = dv.getUint32(0, true);
  const firstSeq = dv.getFloat64(24, true);
  switch (kind) {
    case ConsumeHeadKind.Page:
      return {
        kind,
        count: dv.getUint32(4, true),
        next: dv.getFloat64(8, true),
        last: dv.getFloat64(32, true),
        conflated: dv.getUint32(40, true),
        headSeq: dv.getFloat64(16, true),
        firstSeq,
      };
    case ConsumeHeadKind.Batch:
      return {
        kind,
        count: dv.getUint32(4, true),
        first: dv.getFloat64(8, true),
        last: dv.getFloat64(16, true),
        firstSeq,
        idBytes: dv.getUint32(32, true),
        binBytes: dv.getUint32(36, true),
        jsonBytes: dv.getUint32(40, true),
      };
    case ConsumeHeadKind.HeadMoved:
      return { kind, headSeq: dv.getFloat64(16, true), firstSeq, idBytes: dv.getUint32(32, true) };
  }
  // Only the shard writes these heads, with this codec: anything else is a broken invariant.
  throw new Error(`consume head of unknown kind ${kind}`);
}

export interface WorkerInit {
  shard: number;
  shards: number;
  config: Config;
  /** Derived once by the front (src/limits.ts), for rings of config.ring_bytes: these. */
  limits: Limits;
  inRing: SharedArrayBuffer;
  outRing: SharedArrayBuffer;
}

/** A closed segment recovery trusted by its index: verified later by the scrub. */
export interface ScrubItem {
  stream: string;
  path: string;
  baseSeq: number;
  lastSeq: number;
  frameBytesMax: number;
}

export type WorkerEvent =
  | {
      type: "ready";
      streams: number;
      recovery: Array<{ stream: string; report: StreamReport }>;
      scrub: ScrubItem[];
      /** Stream dirs whose stream.json and copy are both damaged and whose id the dir name cannot give. */
      unreadable: string[];
    }
  | { type: "closed" }
  | { type: "fatal"; message: string }
  /** Cluster mode: the shard's streams of a cluster shard caught up after a clusterGain (or it was lost meanwhile). */
  | { type: "clusterGained"; shard: number; epoch: number };

export type FrontCommand =
  | { type: "shutdown" }
  | { type: "corruption"; stream: string; info: CorruptionInfo }
  | { type: "verified"; stream: string; baseSeq: number }
  /** Cluster mode: this node holds a cluster shard under `epoch` now (src/shard/cluster.ts), or no longer. */
  | { type: "clusterGain"; shard: number; epoch: number }
  | { type: "clusterLose"; shard: number };

const REQUEST_HEADER_BYTES = 8;
const RESPONSE_HEADER_BYTES = 8;
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/** Bytes a request takes in the ring, to check against messageBytesMax. */
export const requestBytes = (metaBytes: number, bodyBytes: number) => REQUEST_HEADER_BYTES + metaBytes + bodyBytes;

/** Writes one request; false when the ring is too full (caller answers 429). */
export function writeRequest<O extends Op>(ring: Ring, op: O, reqId: number, meta: RequestMeta<O>, body: Uint8Array | null): boolean {
  // Encoded straight into the ring: no buffer per request.
  const json = JSON.stringify(meta);
  const metaBytes = Buffer.byteLength(json);
  const total = requestBytes(metaBytes, body ? body.byteLength : 0);
  const at = ring.reserve(total);
  if (at === -1) return false;
  const dv = new DataView(ring.data.buffer, ring.data.byteOffset + at, REQUEST_HEADER_BYTES);
  dv.setUint32(0, reqId, true);
  dv.setUint32(4, metaBytes, true);
  const metaAt = at + REQUEST_HEADER_BYTES;
  const { written } = textEncoder.encodeInto(json, ring.data.subarray(metaAt, metaAt + metaBytes));
  if (written !== metaBytes) throw new Error(`protocol invariant: ${written} bytes of meta encoded, ${metaBytes} reserved`);
  if (body) copyBytes(body, ring.data, metaAt + metaBytes);
  ring.commit(op, total);
  return true;
}

/** One request as the shard reads it: `op` says which meta it carries. */
export type Request = {
  [O in Op]: {
    op: O;
    reqId: number;
    meta: RequestMeta<O>;
    /** A view into the ring: valid until the message is released. */
    body: Buffer;
  };
}[Op];

/** The request of one operation. */
export type RequestOf<O extends Op> = Extract<Request, { op: O }>;

export function readRequest(ring: Ring, msg: RingMessage): Request {
  const d = ring.data;
  const base = d.byteOffset + msg.offset;
  const dv = new DataView(d.buffer, base, REQUEST_HEADER_BYTES);
  const reqId = dv.getUint32(0, true);
  const metaBytes = dv.getUint32(4, true);
  // writeRequest sized the message as header + meta + body: a meta length past it is a broken ring, not a request.
  if (msg.length < REQUEST_HEADER_BYTES || metaBytes > msg.length - REQUEST_HEADER_BYTES) {
    throw new Error(`protocol invariant: a ${msg.length}-byte request claims ${metaBytes} bytes of meta`);
  }
  const meta = JSON.parse(textDecoder.decode(d.subarray(msg.offset + REQUEST_HEADER_BYTES, msg.offset + REQUEST_HEADER_BYTES + metaBytes)));
  const bodyAt = base + REQUEST_HEADER_BYTES + metaBytes;
  // The meta is what writeRequest wrote for this op (the front is this
  // process's own main thread): trusted as its type, not checked again.
  return { op: msg.kind as Op, reqId, meta, body: Buffer.from(d.buffer, bodyAt, msg.length - REQUEST_HEADER_BYTES - metaBytes) } as Request;
}

/**
 * Writes one response whose body `fill` writes in place (no staging copy):
 * `fill(data, at)` must write exactly `bodyBytes` at data[at]. False when full.
 */
export function writeResponseWith(
  ring: Ring,
  reqId: number,
  status: number,
  ct: ContentType,
  bodyBytes: number,
  fill: (data: Uint8Array, at: number) => void,
): boolean {
  const at = ring.reserve(RESPONSE_HEADER_BYTES + bodyBytes);
  if (at === -1) return false;
  const dv = new DataView(ring.data.buffer, ring.data.byteOffset + at, RESPONSE_HEADER_BYTES);
  dv.setUint32(0, reqId, true);
  dv.setUint32(4, ct, true);
  fill(ring.data, at + RESPONSE_HEADER_BYTES);
  ring.commit(status, RESPONSE_HEADER_BYTES + bodyBytes);
  return true;
}

/** Writes one response (kind = HTTP status); false when the ring is full. */
export function writeResponse(ring: Ring, reqId: number, status: number, ct: ContentType, body: Uint8Array | string | null): boolean {
  const bytes = typeof body === "string" ? textEncoder.encode(body) : body;
  return writeResponseWith(ring, reqId, status, ct, bytes ? bytes.byteLength : 0, (data, at) => {
    if (bytes) copyBytes(bytes, data, at);
  });
}

export interface Response {
  status: number;
  reqId: number;
  ct: ContentType;
  /** A view into the ring: valid until the message is released. */
  body: Uint8Array;
}

export function readResponse(ring: Ring, msg: RingMessage): Response {
  const d = ring.data;
  // writeResponseWith always writes the header: a message shorter than it is a broken ring, not an answer.
  if (msg.length < RESPONSE_HEADER_BYTES) throw new Error(`protocol invariant: a ${msg.length}-byte response has no header`);
  const dv = new DataView(d.buffer, d.byteOffset + msg.offset, RESPONSE_HEADER_BYTES);
  return {
    status: msg.kind,
    reqId: dv.getUint32(0, true),
    ct: dv.getUint32(4, true) as ContentType,
    body: d.subarray(msg.offset + RESPONSE_HEADER_BYTES, msg.offset + msg.length),
  };
}

/** A JSON answer's body, parsed (null when it is not JSON). */
export function responseJson(r: Response): unknown {
  try {
    return JSON.parse(Buffer.from(r.body).toString("utf8"));
  } catch {
    return null;
  }
}

/** Stable stream -> shard routing (FNV-1a of the id). */
export function shardOf(streamId: string, shards: number): number {
  return fnv1a(streamId) % shards;
}
