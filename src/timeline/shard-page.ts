// A shard's answer to a timeline read, as it crosses the out-ring: a head,
// one entry per stream it was asked about, one per event in the shard's
// merged order, then the events' JSON back to back. The front merges the
// answers of its shards by the entries and copies each event's JSON as it
// is, so no event is parsed or rendered twice.
//
//   head   (32 bytes)  0 u32 events   4 u32 streams   8 f64 horizon
//                      16 f64 held_ts (-1: none)   24 u32 flags   28 u32 JSON bytes
//   stream (32 bytes)  0 u32 set index   4 u32 flags   8 f64 boundary
//                      16 f64 head_seq   24 f64 first_seq
//   event  (24 bytes)  0 u32 set index (| EVENT_TOMBSTONE)   4 u32 JSON bytes
//                      8 f64 seq   16 f64 ingest_ts
//
// Seqs and times are safe integers, carried as f64 like the consume head's.
// The sizes are src/limits.ts's, which bounds the answer for the rings.
import {
  TIMELINE_EVENT_ENTRY_BYTES as PAGE_EVENT_BYTES,
  TIMELINE_PAGE_HEAD_BYTES as PAGE_HEAD_BYTES,
  TIMELINE_STREAM_ENTRY_BYTES as PAGE_STREAM_BYTES,
} from "../limits.js";
import type { EventKey } from "./merge.js";

/** A boundary seq that stands for a stream's head (under the horizon) as the shard finds it. */
export const HEAD_BOUNDARY = Number.MAX_SAFE_INTEGER;
/**
 * Boundary seqs from 2^52 up stand for a cut in time: "the last event below
 * ingest_ts (seq - 2^52)". A cursor keeps one for a stream whose shard did
 * not answer a page that started at the head, so that the stream resolves
 * to the same seq whenever and in whichever direction it is read next. Real
 * seqs stay below it (4.5 * 10^15 events).
 */
export const TIME_CUT_BASE = 2 ** 52;
export const timeCut = (ts: number): number => TIME_CUT_BASE + ts;

/** Whether the shard finds this boundary itself (the head, or a cut in time) rather than being given its seq. */
export const resolvedByShard = (seq: number): boolean => seq >= TIME_CUT_BASE;

/** Head flag: the shard stopped (limit, bytes) with events of its order still to come. */
const PAGE_TRUNCATED = 1;
/** Stream flag: a forward read from its boundary starts past events that retention removed. */
const STREAM_GAP = 1;
/** In an event's set index: the event is a gap tombstone (type "gap"). */
const EVENT_TOMBSTONE = 0x8000_0000;

/** The shard's word on one stream of the read. */
export interface PageStream {
  /** The stream's place in the timeline's (sorted) set. */
  index: number;
  /** A forward read from its boundary starts past events that retention removed. */
  gap: boolean;
  /** The boundary the read used: the one asked for, resolved (the head, or past removed events). */
  boundary: number;
  headSeq: number;
  firstSeq: number;
}

export interface PageHead {
  /**
   * No event the shard's streams will still commit has an ingest_ts below
   * this; a forward read shows only events below it.
   */
  horizon: number;
  /** The smallest ingest_ts of a committed event a forward read held back at the horizon (-1: none). */
  heldTs: number;
  truncated: boolean;
}

export interface PageEvent extends EventKey {
  index: number;
  tombstone: boolean;
  /** The event as JSON: bytes [jsonAt, jsonAt + jsonBytes) of the answer `body` (no view per event: a page makes dozens). */
  body: Buffer;
  jsonAt: number;
  jsonBytes: number;
}

export interface ShardPage extends PageHead {
  streams: PageStream[];
  events: AnswerEvents;
}

/**
 * The events of one answer, walked in the shard's order by the front's
 * merge: the current event's key (an EventKey itself, as the shard's stream
 * readers are), and a PageEvent made only for an event the page shows. An
 * answer holds up to a page of events per shard; making an object for each
 * was a third of what the front allocated per page.
 */
export class AnswerEvents implements EventKey {
  private i = 0;
  private entry: number;
  private json: number;
  has = false;
  ts = 0;
  seq = 0;
  stream = "";
  index = 0;
  private tombstone = false;
  private jsonBytes = 0;

  constructor(
    private readonly body: Buffer,
    readonly count: number,
    private readonly entriesAt: number,
    jsonAt: number,
    private readonly ids: readonly string[],
  ) {
    this.entry = entriesAt;
    this.json = jsonAt;
    this.load();
  }

  /** The key of the last event, or null for none. */
  lastKey(): EventKey | null {
    if (this.count === 0) return null;
    const at = this.entriesAt + (this.count - 1) * PAGE_EVENT_BYTES;
    return {
      ts: this.body.readDoubleLE(at + 16),
      stream: this.ids[(this.body.readUInt32LE(at) & ~EVENT_TOMBSTONE) >>> 0],
      seq: this.body.readDoubleLE(at + 8),
    };
  }

  /** The current event, as the page shows it (its JSON a range of the answer's bytes). */
  event(): PageEvent {
    return {
      index: this.index,
      tombstone: this.tombstone,
      stream: this.stream,
      seq: this.seq,
      ts: this.ts,
      body: this.body,
      jsonAt: this.json,
      jsonBytes: this.jsonBytes,
    };
  }

  advance(): void {
    this.i++;
    this.entry += PAGE_EVENT_BYTES;
    this.json += this.jsonBytes;
    this.load();
  }

  private load(): void {
    this.has = this.i < this.count;
    if (!this.has) return;
    const b = this.body;
    const word = b.readUInt32LE(this.entry);
    this.index = (word & ~EVENT_TOMBSTONE) >>> 0;
    this.tombstone = (word & EVENT_TOMBSTONE) !== 0;
    this.jsonBytes = b.readUInt32LE(this.entry + 4);
    this.seq = b.readDoubleLE(this.entry + 8);
    this.ts = b.readDoubleLE(this.entry + 16);
    this.stream = this.ids[this.index];
  }
}

/** The entries of one answer, collected while the shard renders its events; then written around their JSON. */
export class ShardPageWriter {
  private index = Buffer.allocUnsafe(64 * 1024);
  private streams = 0;
  private events = 0;

  reset(): void {
    this.streams = 0;
    this.events = 0;
  }

  /** Streams are added before any event: their entries come first. */
  addStream(s: PageStream): void {
    if (this.events > 0) throw new Error("shard page invariant: a stream added after an event");
    const at = this.reserve(PAGE_STREAM_BYTES);
    this.index.writeUInt32LE(s.index, at);
    this.index.writeUInt32LE(s.gap ? STREAM_GAP : 0, at + 4);
    this.index.writeDoubleLE(s.boundary, at + 8);
    this.index.writeDoubleLE(s.headSeq, at + 16);
    this.index.writeDoubleLE(s.firstSeq, at + 24);
    this.streams++;
  }

  addEvent(index: number, tombstone: boolean, jsonBytes: number, seq: number, ts: number): void {
    const at = this.reserve(PAGE_EVENT_BYTES);
    this.index.writeUInt32LE(((tombstone ? EVENT_TOMBSTONE : 0) | index) >>> 0, at);
    this.index.writeUInt32LE(jsonBytes, at + 4);
    this.index.writeDoubleLE(seq, at + 8);
    this.index.writeDoubleLE(ts, at + 16);
    this.events++;
  }

  get eventCount(): number {
    return this.events;
  }

  /** Bytes of the whole answer around `jsonBytes` of JSON. */
  bytes(jsonBytes: number): number {
    return PAGE_HEAD_BYTES + this.indexBytes() + jsonBytes;
  }

  /** Writes the answer at data[at]: exactly bytes(json.byteLength) bytes. */
  write(data: Uint8Array, at: number, head: PageHead, json: Uint8Array): void {
    const dv = new DataView(data.buffer, data.byteOffset + at, PAGE_HEAD_BYTES);
    dv.setUint32(0, this.events, true);
    dv.setUint32(4, this.streams, true);
    dv.setFloat64(8, head.horizon, true);
    dv.setFloat64(16, head.heldTs, true);
    dv.setUint32(24, head.truncated ? PAGE_TRUNCATED : 0, true);
    dv.setUint32(28, json.byteLength, true);
    const n = this.indexBytes();
    data.set(this.index.subarray(0, n), at + PAGE_HEAD_BYTES);
    data.set(json, at + PAGE_HEAD_BYTES + n);
  }

  private indexBytes(): number {
    return this.streams * PAGE_STREAM_BYTES + this.events * PAGE_EVENT_BYTES;
  }

  private reserve(n: number): number {
    const at = this.indexBytes();
    if (at + n > this.index.length) {
      const next = Buffer.allocUnsafe(this.index.length * 2);
      this.index.copy(next, 0, 0, at);
      this.index = next;
    }
    return at;
  }
}

/**
 * Reads an answer (a copy the caller owns: the events' JSON are views of
 * it). `ids` is the timeline's set, which names each event's stream.
 */
export function readShardPage(body: Buffer, ids: readonly string[]): ShardPage {
  if (body.byteLength < PAGE_HEAD_BYTES) throw new Error(`shard page invariant: ${body.byteLength} bytes, no head`);
  const events = body.readUInt32LE(0);
  const streamCount = body.readUInt32LE(4);
  const jsonBytes = body.readUInt32LE(28);
  const jsonAt = PAGE_HEAD_BYTES + streamCount * PAGE_STREAM_BYTES + events * PAGE_EVENT_BYTES;
  // Only the shard writes these, with ShardPageWriter: sizes that do not add up are a broken invariant.
  if (jsonAt + jsonBytes !== body.byteLength) throw new Error(`shard page invariant: ${body.byteLength} bytes, entries and JSON take ${jsonAt + jsonBytes}`);
  const streams: PageStream[] = [];
  let at = PAGE_HEAD_BYTES;
  for (let i = 0; i < streamCount; i++, at += PAGE_STREAM_BYTES) {
    const index = body.readUInt32LE(at);
    if (ids[index] === undefined) throw new Error(`shard page invariant: stream entry ${i} of stream index ${index}`);
    streams.push({
      index,
      gap: (body.readUInt32LE(at + 4) & STREAM_GAP) !== 0,
      boundary: body.readDoubleLE(at + 8),
      headSeq: body.readDoubleLE(at + 16),
      firstSeq: body.readDoubleLE(at + 24),
    });
  }
  // Every entry checked once here, so that the merge reads them unchecked.
  let json = jsonAt;
  for (let i = 0, e = at; i < events; i++, e += PAGE_EVENT_BYTES) {
    const index = (body.readUInt32LE(e) & ~EVENT_TOMBSTONE) >>> 0;
    const len = body.readUInt32LE(e + 4);
    if (ids[index] === undefined || json + len > body.byteLength)
      throw new Error(`shard page invariant: event ${i} of stream index ${index}, ${len} JSON bytes`);
    json += len;
  }
  if (json !== body.byteLength) throw new Error(`shard page invariant: the events' JSON ends at ${json} of ${body.byteLength}`);
  return {
    horizon: body.readDoubleLE(8),
    heldTs: body.readDoubleLE(16),
    truncated: (body.readUInt32LE(24) & PAGE_TRUNCATED) !== 0,
    streams,
    events: new AnswerEvents(body, events, at, jsonAt, ids),
  };
}
