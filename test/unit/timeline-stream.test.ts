// One stream of a timeline read (src/shard/timeline-stream.ts) over a real
// log in a temp dir: from any boundary it walks every retained event once,
// ascending forward and descending backward, whatever the sizes of the
// frames (larger than its chunk too) and the page's limit; forward from
// before removed events it says so; each event renders as the JSON replay
// gives, and a gap tombstone is told apart. Also the answer's layout
// (src/timeline/shard-page.ts) read back as written.
import { afterEach, describe, expect, it } from "vitest";
import fc from "fast-check";
import { frameBytesFor, markBatchEnd, sealFrame, writeFrameHeader, RECORD_HEADER_BYTES } from "../../src/log/record.js";
import { Stream } from "../../src/shard/stream.js";
import { Descriptions } from "../../src/shard/descriptions.js";
import { fullConfig } from "../../src/shard/stream-config.js";
import { CHUNK_BYTES, TimelineStream } from "../../src/shard/timeline-stream.js";
import { firstChunkEvents } from "../../src/shard/timeline-read.js";
import { HEAD_BOUNDARY, type PageEvent, readShardPage, ShardPageWriter, timeCut } from "../../src/timeline/shard-page.js";
import { ByteWriter } from "../../src/wire/event-codec.js";
import { encodeEvent, type OutgoingEvent } from "../../src/wire/client.js";
import { removeTempDirs, tempDir } from "../helpers/log-frames.js";

const LOG_OPTS = { segmentBytesMax: 256 * 1024, indexIntervalBytes: 4096, frameBytesMax: 1 << 20 };
const DEFAULTS = { retention_ms: 1e12, dedup_window_ms: 0, durability: "process" as const, max_event_bytes: 1 << 19 };
const PAGE = Buffer.alloc(2 << 20);
const ORDERED = { heldEventsMax: 10_000, heldBytesMax: 64 << 20, producersMax: 10_000, entryBytesMax: 2 << 20 };

afterEach(() => removeTempDirs());

function newStream(id = "s"): Stream {
  const dir = tempDir("ticker-tl-");
  return Stream.create(dir, new Descriptions(dir), id, fullConfig({}, DEFAULTS), LOG_OPTS, 1000, ORDERED);
}

/** Appends one batch of events at ingest_ts `ts`, as the publisher frames it. */
function append(s: Stream, events: OutgoingEvent[], ts: number): void {
  const bodies = events.map((e) => encodeEvent(e));
  const buf = Buffer.alloc(bodies.reduce((n, b) => n + frameBytesFor(b.byteLength), 0));
  let at = 0;
  let lastAt = 0;
  let seq = s.log.headSeq + 1;
  for (const b of bodies) {
    const fb = frameBytesFor(b.byteLength);
    writeFrameHeader(buf, at, fb, b.byteLength, seq++, ts);
    buf.set(b, at + RECORD_HEADER_BYTES);
    sealFrame(buf, at, fb);
    lastAt = at;
    at += fb;
  }
  markBatchEnd(buf, lastAt);
  s.log.append(buf, at, events.length, false);
}

/** Every event the reader walks from `boundary`, as [seq, ts]. */
function walk(s: Stream, boundary: number, backward: boolean, limit: number, horizon = Number.MAX_SAFE_INTEGER) {
  const r = new TimelineStream();
  const info = r.start(s, 0, boundary, backward, horizon, firstChunkEvents(limit, 3), limit, PAGE);
  const seen: Array<[number, number]> = [];
  for (; r.has; r.advance(PAGE)) seen.push([r.seq, r.ts]);
  return { info, seen };
}

const range = (a: number, b: number) => (a > b ? [] : Array.from({ length: b - a + 1 }, (_, i) => a + i));

describe("one stream of a timeline read", () => {
  it("walks every event from any boundary, forward ascending and backward descending, whatever the frame sizes and the limit", () => {
    fc.assert(
      fc.property(
        // Payload sizes: mostly small, some larger than the reader's chunk.
        fc.array(
          fc.oneof(
            { weight: 8, arbitrary: fc.integer({ min: 0, max: 3000 }) },
            { weight: 1, arbitrary: fc.integer({ min: CHUNK_BYTES, max: 3 * CHUNK_BYTES }) },
          ),
          {
            minLength: 0,
            maxLength: 60,
          },
        ),
        fc.integer({ min: 1, max: 80 }),
        fc.integer({ min: 1, max: 40 }),
        (sizes, limit, batch) => {
          const s = newStream();
          let ts = 1000;
          for (let i = 0; i < sizes.length; i += batch) {
            append(
              s,
              sizes.slice(i, i + batch).map((n) => ({ type: "t", payload_bytes: new Uint8Array(n) })),
              ts++,
            );
          }
          const head = s.log.committedSeq;
          for (const b of [0, 1, Math.floor(head / 2), head - 1, head, head + 3]) {
            if (b < 0) continue;
            const fwd = walk(s, b, false, limit);
            expect(fwd.seen.map((e) => e[0])).toEqual(range(b + 1, head));
            expect(fwd.info).toMatchObject({ boundary: b, gap: false, headSeq: head, firstSeq: 1 });
            const bwd = walk(s, b, true, limit);
            expect(bwd.seen.map((e) => e[0])).toEqual(range(1, Math.min(b, head)).reverse());
          }
          // ingest_ts never decreases along a stream.
          const all = walk(s, 0, false, limit).seen;
          for (let i = 1; i < all.length; i++) expect(all[i][1]).toBeGreaterThanOrEqual(all[i - 1][1]);
          s.close();
        },
      ),
      { numRuns: 40 },
    );
  });

  it("from the head it starts at the last event below the horizon", () => {
    const s = newStream();
    append(s, [{ type: "a" }, { type: "b" }], 100);
    append(s, [{ type: "c" }], 200);
    append(s, [{ type: "d" }], 300);
    expect(walk(s, HEAD_BOUNDARY, true, 10, 250).seen.map((e) => e[0])).toEqual([3, 2, 1]);
    expect(walk(s, HEAD_BOUNDARY, true, 10, 250).info.boundary).toBe(3);
    expect(walk(s, HEAD_BOUNDARY, true, 10, 301).info.boundary).toBe(4);
    expect(walk(s, HEAD_BOUNDARY, true, 10, 100).info.boundary).toBe(0);
    // Forward from the head: what comes after it.
    expect(walk(s, HEAD_BOUNDARY, false, 10, 250).seen.map((e) => e[0])).toEqual([4]);
    // A cut in time resolves to the same seq whenever it is read, both ways; the horizon still bounds it.
    for (const horizon of [Number.MAX_SAFE_INTEGER, 1e15]) {
      expect(walk(s, timeCut(250), true, 10, horizon).seen.map((e) => e[0])).toEqual([3, 2, 1]);
      expect(walk(s, timeCut(250), false, 10, horizon).seen.map((e) => e[0])).toEqual([4]);
      expect(walk(s, timeCut(250), false, 10, horizon).info.boundary).toBe(3);
    }
    append(s, [{ type: "e" }], 400);
    expect(walk(s, timeCut(250), false, 10, 1e15).seen.map((e) => e[0])).toEqual([4, 5]);
    expect(walk(s, timeCut(250), true, 10, 150).info.boundary).toBe(2);
    s.close();
  });

  it("forward from before events retention removed starts at first_seq and says so; backward does not", () => {
    const s = newStream();
    // 256 KiB segments: each batch of 100 events of 3 KB fills more than one.
    for (let i = 0; i < 4; i++)
      append(
        s,
        Array.from({ length: 100 }, () => ({ type: "t", payload_bytes: new Uint8Array(3000) })),
        1000 + i,
      );
    const removed = s.log.applyRetention(1_000_000, 1e12, 400 * 1024, false);
    expect(removed).toBeGreaterThan(0);
    const first = s.log.firstSeq;
    expect(first).toBeGreaterThan(1);
    const fwd = walk(s, 5, false, 10);
    expect(fwd.info).toMatchObject({ gap: true, boundary: first - 1, firstSeq: first });
    expect(fwd.seen[0][0]).toBe(first);
    // From right before first_seq: nothing was removed past the boundary.
    expect(walk(s, first - 1, false, 10).info.gap).toBe(false);
    const bwd = walk(s, first + 2, true, 10);
    expect(bwd.info.gap).toBe(false);
    expect(bwd.seen.map((e) => e[0])).toEqual([first + 2, first + 1, first]);
    s.close();
  });

  it("renders each event as its JSON and tells a gap tombstone apart", () => {
    const s = newStream("md.x");
    append(s, [{ type: "trade", key: "k", payload: { px: 1 } }, { type: "gap", producer_id: "p" }, { type: "gaps" }], 42);
    append(s, [{ type: "big", payload_bytes: new Uint8Array(CHUNK_BYTES + 10).fill(7) }], 43);
    const r = new TimelineStream();
    r.start(s, 2, 0, false, Number.MAX_SAFE_INTEGER, 8, 10, PAGE);
    const out: Array<{ json: unknown; tombstone: boolean }> = [];
    for (; r.has; r.advance(PAGE)) {
      const w = new ByteWriter();
      const tombstone = r.render(w, PAGE);
      out.push({ json: JSON.parse(w.view().toString("utf8")), tombstone });
    }
    expect(out.map((o) => o.tombstone)).toEqual([false, true, false, false]);
    expect(out[0].json).toEqual({ seq: 1, stream: "md.x", type: "trade", key: "k", ingest_ts: 42, payload: { px: 1 } });
    expect(out[1].json).toEqual({ seq: 2, stream: "md.x", type: "gap", producer_id: "p", ingest_ts: 42 });
    const big = out[3].json as { seq: number; payload_base64: string };
    expect(big.seq).toBe(4);
    expect(Buffer.from(big.payload_base64, "base64")).toEqual(Buffer.alloc(CHUNK_BYTES + 10, 7));
    s.close();
  });
});

describe("a shard's timeline answer", () => {
  it("reads back as written: streams, events with their JSON, horizon, held_ts and truncation", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ gap: fc.boolean(), boundary: fc.nat(), headSeq: fc.nat(), firstSeq: fc.nat() }), { maxLength: 8 }),
        fc.array(fc.record({ tombstone: fc.boolean(), json: fc.string({ maxLength: 30 }), seq: fc.nat(), ts: fc.nat() }), { maxLength: 3000 }),
        fc.nat(),
        fc.integer({ min: -1, max: 1e6 }),
        fc.boolean(),
        (streams, events, horizon, heldTs, truncated) => {
          const ids = ["a", "b", "c", "d", "e", "f", "g", "h"];
          const w = new ShardPageWriter();
          w.reset();
          streams.forEach((s, index) => w.addStream({ index, ...s }));
          const json = Buffer.from(events.map((e) => e.json).join(""));
          events.forEach((e, i) => w.addEvent(i % ids.length, e.tombstone, Buffer.byteLength(e.json), e.seq, e.ts));
          const body = Buffer.alloc(w.bytes(json.byteLength) + 16);
          w.write(body, 16, { horizon, heldTs, truncated }, json);
          const page = readShardPage(body.subarray(16), ids);
          expect(page).toMatchObject({ horizon, heldTs, truncated });
          expect(page.streams).toEqual(streams.map((s, index) => ({ index, ...s })));
          const read: PageEvent[] = [];
          for (const c = page.events; c.has; c.advance()) read.push(c.event());
          expect(read.map((e) => ({ tombstone: e.tombstone, json: e.body.toString("utf8", e.jsonAt, e.jsonAt + e.jsonBytes), seq: e.seq, ts: e.ts }))).toEqual(
            events,
          );
          expect(read.map((e) => e.stream)).toEqual(events.map((_, i) => ids[i % ids.length]));
          expect(page.events.count).toBe(events.length);
        },
      ),
      { numRuns: 50 },
    );
  });

  it("refuses an answer whose sizes do not add up (a broken invariant, not input)", () => {
    const w = new ShardPageWriter();
    w.addEvent(0, false, 5, 1, 1);
    const body = Buffer.alloc(w.bytes(5));
    w.write(body, 0, { horizon: 1, heldTs: -1, truncated: false }, Buffer.from("12345"));
    expect(() => readShardPage(body.subarray(0, body.length - 1), ["a"])).toThrow(/shard page invariant/);
    expect(() => readShardPage(body, [])).toThrow(/shard page invariant/);
  });
});
