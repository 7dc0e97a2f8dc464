// Everything that crosses between the front and a shard worker, typed in one
// place. Requests and responses travel through the two SharedArrayBuffer
// rings; postMessage carries only start-up, readiness and shutdown.
import type { Config } from "../config.js";
import { copyBytes, type Ring, type RingMessage } from "../ring/ring.js";
import type { CorruptionInfo, RecoveryReport } from "../log/log.js";

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
}

export const enum ContentType {
  Json = 0,
  FlatBuffers = 1,
  None = 2,
}

/** Small per-request facts; the body (publish batch, PUT config) rides after. */
export interface RequestMeta {
  stream?: string;
  /** Content type of the body, for publish and PUT. */
  ct?: ContentType;
  /** Wanted response format, for replay. */
  accept?: ContentType;
  /** Raw query string, for replay. */
  query?: string;
}

export interface WorkerInit {
  shard: number;
  shards: number;
  config: Config;
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
  | { type: "ready"; streams: number; recovery: Array<{ stream: string; report: RecoveryReport }>; scrub: ScrubItem[] }
  | { type: "closed" }
  | { type: "fatal"; message: string };

export type FrontCommand =
  | { type: "shutdown" }
  | { type: "corruption"; stream: string; info: CorruptionInfo }
  | { type: "verified"; stream: string; baseSeq: number };

const REQUEST_HEADER_BYTES = 8;
const RESPONSE_HEADER_BYTES = 8;
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/** Bytes a request takes in the ring, to check against messageBytesMax. */
export const requestBytes = (metaBytes: number, bodyBytes: number) => REQUEST_HEADER_BYTES + metaBytes + bodyBytes;

/** Writes one request; false when the ring is too full (caller answers 429). */
export function writeRequest(ring: Ring, op: Op, reqId: number, meta: RequestMeta, body: Uint8Array | null): boolean {
  const metaBytes = textEncoder.encode(JSON.stringify(meta));
  const total = requestBytes(metaBytes.byteLength, body ? body.byteLength : 0);
  const at = ring.reserve(total);
  if (at === -1) return false;
  const dv = new DataView(ring.data.buffer, ring.data.byteOffset + at, REQUEST_HEADER_BYTES);
  dv.setUint32(0, reqId, true);
  dv.setUint32(4, metaBytes.byteLength, true);
  copyBytes(metaBytes, ring.data, at + REQUEST_HEADER_BYTES);
  if (body) copyBytes(body, ring.data, at + REQUEST_HEADER_BYTES + metaBytes.byteLength);
  ring.commit(op, total);
  return true;
}

export interface Request {
  op: Op;
  reqId: number;
  meta: RequestMeta;
  /** A view into the ring: valid until the message is released. */
  body: Buffer;
}

export function readRequest(ring: Ring, msg: RingMessage): Request {
  const d = ring.data;
  const base = d.byteOffset + msg.offset;
  const dv = new DataView(d.buffer, base, REQUEST_HEADER_BYTES);
  const reqId = dv.getUint32(0, true);
  const metaBytes = dv.getUint32(4, true);
  const meta = JSON.parse(textDecoder.decode(d.subarray(msg.offset + REQUEST_HEADER_BYTES, msg.offset + REQUEST_HEADER_BYTES + metaBytes)));
  const bodyAt = base + REQUEST_HEADER_BYTES + metaBytes;
  return { op: msg.kind as Op, reqId, meta, body: Buffer.from(d.buffer, bodyAt, msg.length - REQUEST_HEADER_BYTES - metaBytes) };
}

/**
 * Writes one response whose body `fill` writes in place (no staging copy):
 * `fill(data, at)` must write exactly `bodyBytes` at data[at]. False when full.
 */
export function writeResponseWith(ring: Ring, reqId: number, status: number, ct: ContentType, bodyBytes: number, fill: (data: Uint8Array, at: number) => void): boolean {
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
  const dv = new DataView(d.buffer, d.byteOffset + msg.offset, RESPONSE_HEADER_BYTES);
  return {
    status: msg.kind,
    reqId: dv.getUint32(0, true),
    ct: dv.getUint32(4, true) as ContentType,
    body: d.subarray(msg.offset + RESPONSE_HEADER_BYTES, msg.offset + msg.length),
  };
}

/** Stable stream -> shard routing (FNV-1a of the id). */
export function shardOf(streamId: string, shards: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < streamId.length; i++) {
    h ^= streamId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % shards;
}
