// History from the archive (src/cluster/archived-history.ts): real segments
// written by StreamLog and rolled, their .log bytes put in a real file://
// archive and committed to the manifest in a real private PostgreSQL under a
// live lease, then read back page by page as a shard worker would. Damaged
// and made-up archived bytes: cluster-archived-history-damage.test.ts.
import { describe, it, expect, vi, beforeAll, afterAll } from "vitest";
import { CorruptRecordError } from "../../src/log/log.js";
import { sealFrame, writeFrameHeader } from "../../src/log/record.js";
import { archiveWorld, seqsOf, type ArchiveWorld, type Written } from "../helpers/archived-segments.js";
import { until } from "../helpers/cluster-db.js";
import { range } from "../helpers/log-frames.js";

const MAX = Number.MAX_SAFE_INTEGER;

let w: ArchiveWorld;
beforeAll(async () => {
  w = await archiveWorld();
});
afterAll(() => w?.stop());

const writeSegments = (n: number, bodyBytes = 100) => w.owner(bodyBytes)(n);
const history: ArchiveWorld["history"] = (o) => w.history(o);
const archiveSegments: ArchiveWorld["archiveSegments"] = (stream, segs) => w.archiveSegments(stream, segs);

let streams = 0;
async function archivedStream(n: number): Promise<{ stream: string; segs: Written[] }> {
  const stream = `s${++streams}`;
  const segs = writeSegments(n);
  await archiveSegments(stream, segs);
  return { stream, segs };
}

/** The bytes of seqs [from, to] as the segments hold them. */
function framesOf(segs: Written[], from: number, to: number): Buffer {
  const parts: Buffer[] = [];
  for (const s of segs) {
    for (let at = 0, seq = s.baseSeq; at < s.bytes.length; seq++) {
      const fb = s.bytes.readUInt32LE(at);
      if (seq >= from && seq <= to) parts.push(s.bytes.subarray(at, at + fb));
      at += fb;
    }
  }
  return Buffer.concat(parts);
}

const out = Buffer.alloc(1 << 20);

describe("archived history, page by page", () => {
  it("a page within one segment is the frames the log wrote, byte for byte; read answers null until load() fetched the segment", async () => {
    const { stream, segs } = await archivedStream(2000);
    expect(segs.length).toBe(4);
    const h = history();
    expect(h.range(stream)).toBeNull();
    expect(h.read(stream, 10, MAX, 20, 1 << 20, out)).toBeNull();
    await h.load(stream, 10);
    expect(h.range(stream)).toEqual({ firstSeq: 1, lastSeq: 2000 });
    const page = h.read(stream, 10, MAX, 20, 1 << 20, out)!;
    expect(seqsOf(page)).toEqual(range(10, 29));
    expect(page.next).toBe(30);
    expect(page.corrupt).toBeUndefined();
    expect(page.buf.subarray(0, page.bytes).equals(framesOf(segs, 10, 29))).toBe(true);
  });

  it("a page crosses into the next segment when it is cached and ends at the first one that is not, saying where to go on", async () => {
    const { stream, segs } = await archivedStream(2000);
    const [a, b, c] = segs;
    const h = history();
    await h.load(stream, a.baseSeq);
    let page = h.read(stream, a.lastSeq - 4, MAX, 1000, 1 << 20, out)!;
    expect(page.next).toBe(b.baseSeq); // b is not cached: the page ends with a
    expect(page.corrupt).toBeUndefined();
    await h.load(stream, b.baseSeq);
    page = h.read(stream, a.lastSeq - 4, MAX, 10_000, 1 << 20, out)!;
    expect(seqsOf(page)).toEqual(range(a.lastSeq - 4, b.lastSeq));
    expect(page.buf.subarray(0, page.bytes).equals(framesOf(segs, a.lastSeq - 4, b.lastSeq))).toBe(true);
    expect(page.next).toBe(c.baseSeq);
    expect(h.read(stream, c.baseSeq, MAX, 10, 1 << 20, out)).toBeNull();
  });

  it("read-ahead fetches the two segments (one chunk each) after the one a seq is in, once each, and nothing past the archive's end", async () => {
    const { stream, segs } = await archivedStream(2000);
    const [a, b, c] = segs;
    const last = segs[segs.length - 1];
    const h = history();
    await h.load(stream, a.baseSeq);
    const before = w.archive.gets;
    h.readAhead(stream, a.baseSeq + 3);
    h.readAhead(stream, a.baseSeq + 4);
    await vi.waitFor(() => expect(h.read(stream, b.baseSeq, MAX, 10, 1 << 20, out)).not.toBeNull());
    await vi.waitFor(() => expect(h.read(stream, c.baseSeq, MAX, 10, 1 << 20, out)).not.toBeNull());
    h.readAhead(stream, a.baseSeq + 5);
    await new Promise((r) => setTimeout(r, 50));
    expect(w.archive.gets - before).toBe(2);
    // Not cached, or nothing after it: no fetch.
    h.readAhead(stream, last.baseSeq);
    await h.load(stream, last.baseSeq);
    const atEnd = w.archive.gets;
    h.readAhead(stream, last.lastSeq);
    await new Promise((r) => setTimeout(r, 50));
    expect(w.archive.gets).toBe(atEnd);
  });

  it("any seq inside a segment is found (through the sparse index), and each one starts its page", async () => {
    const { stream, segs } = await archivedStream(1100);
    const h = history();
    for (const s of segs) await h.load(stream, s.baseSeq);
    for (let from = 1; from <= 1100; from++) {
      const page = h.read(stream, from, MAX, 2, 1 << 20, out)!;
      expect(seqsOf(page)).toEqual(range(from, Math.min(from + 1, 1100)));
      expect(page.buf.subarray(0, page.bytes).equals(framesOf(segs, from, from + 1))).toBe(true);
    }
  });

  it("a segment of several MiB is checked in slices, the worker's event loop running between them, and damage in its last MiB is found", async () => {
    // 1 KiB frames: 3 MiB in one segment.
    const [seg] = w.owner(1000, 4 << 20)(3072);
    seg.bytes[3000 * 1024 + 100] ^= 1;
    const stream = `s${++streams}`;
    await archiveSegments(stream, [seg]);
    const h = history();
    let turns = 0;
    let counting = true;
    w.archive.onGot = () => {
      const turn = () => {
        if (!counting) return;
        turns++;
        setImmediate(turn);
      };
      setImmediate(turn);
    };
    await h.load(stream, 1);
    counting = false;
    w.archive.onGot = null;
    expect(turns).toBeGreaterThanOrEqual(2);
    const page = h.read(stream, 2990, MAX, 100, 1 << 20, out)!;
    expect(seqsOf(page)).toEqual(range(2990, 3000));
    expect(page.corrupt).toMatchObject({ seq: 3001, position: 3000 * 1024, reason: "crc" });
    expect(
      h
        .read(stream, 1500, MAX, 1, 1 << 20, out)!
        .buf.subarray(0, 1024)
        .equals(seg.bytes.subarray(1499 * 1024, 1500 * 1024)),
    ).toBe(true);
  });

  it("a page stops at `to`, at eventsMax, at bytesMax (the first frame always), at the last archived seq; past it a page is empty; a frame larger than the buffer is an error", async () => {
    const { stream } = await archivedStream(1000);
    const h = history();
    await h.load(stream, 1);
    expect(seqsOf(h.read(stream, 5, 9, 100, 1 << 20, out)!)).toEqual(range(5, 9));
    expect(h.read(stream, 5, MAX, 7, 1 << 20, out)!.count).toBe(7);
    // 128-byte frames: 1,000 bytes hold seven of them.
    expect(h.read(stream, 5, MAX, 100, 1000, out)!).toMatchObject({ count: 7, bytes: 896, next: 12 });
    expect(h.read(stream, 5, MAX, 100, 1024, out)!.count).toBe(8);
    expect(h.read(stream, 5, MAX, 100, 10, out)!).toMatchObject({ count: 1, bytes: 128 });
    // A buffer with room for 3.5 frames takes three.
    expect(h.read(stream, 5, MAX, 100, 1 << 20, Buffer.alloc(448))!.count).toBe(3);
    expect(() => h.read(stream, 5, MAX, 100, 1 << 20, Buffer.alloc(100))).toThrow(CorruptRecordError);
    await h.load(stream, 1000);
    expect(seqsOf(h.read(stream, 995, MAX, 100, 1 << 20, out)!)).toEqual(range(995, 1000));
    expect(h.read(stream, 1001, MAX, 100, 1 << 20, out)!).toMatchObject({ count: 0, bytes: 0, next: 1001 });
  });

  it("the cache holds at most cacheBytesMax, evicting the segment read longest ago; a segment larger than the bound is still served, alone", async () => {
    const { stream, segs } = await archivedStream(2000);
    const size = segs[0].bytes.length;
    const h = history({ cacheBytesMax: Math.floor(2.5 * size) });
    await h.load(stream, segs[0].baseSeq);
    await h.load(stream, segs[1].baseSeq);
    h.read(stream, segs[0].baseSeq, MAX, 1, 1 << 20, out); // segs[0] is now the one read last
    await h.load(stream, segs[2].baseSeq);
    expect(h.bytes).toBeLessThanOrEqual(2.5 * size);
    expect(h.read(stream, segs[1].baseSeq, MAX, 1, 1 << 20, out)).toBeNull();
    expect(h.read(stream, segs[0].baseSeq, MAX, 1, 1 << 20, out)!.count).toBe(1);
    expect(h.read(stream, segs[2].baseSeq, MAX, 1, 1 << 20, out)!.count).toBe(1);

    const tiny = history({ cacheBytesMax: 1000 });
    await tiny.load(stream, 1);
    expect(tiny.read(stream, 1, MAX, 1000, 1 << 20, out)!.count).toBe(segs[0].lastSeq);
    await tiny.load(stream, segs[1].baseSeq);
    expect(tiny.bytes).toBe(segs[1].bytes.length);
    expect(tiny.read(stream, 1, MAX, 1, 1 << 20, out)).toBeNull();
    expect(tiny.read(stream, segs[1].baseSeq, MAX, 1, 1 << 20, out)!.count).toBe(1);
  });

  it("concurrent loads of one segment share one fetch", async () => {
    const { stream } = await archivedStream(600);
    const h = history();
    const before = w.archive.gets;
    await Promise.all([h.load(stream, 1), h.load(stream, 7), h.load(stream, 300), h.load(stream, 512)]);
    expect(w.archive.gets - before).toBe(1);
    await h.load(stream, 513);
    expect(w.archive.gets - before).toBe(2);
  });

  it("the range is trusted for manifestTtlMs, then read again: segments archived since are served after the next load", async () => {
    const stream = `s${++streams}`;
    const write = w.owner();
    await archiveSegments(stream, write(1024));
    let nowMs = 1_000_000;
    const h = history({ manifestTtlMs: 5000, now: () => nowMs });
    await h.load(stream, 1);
    await h.load(stream, 1020);
    await archiveSegments(stream, write(512));
    nowMs += 4999;
    expect(h.range(stream)).toEqual({ firstSeq: 1, lastSeq: 1024 });
    expect(h.read(stream, 1020, MAX, 100, 1 << 20, out)!.next).toBe(1025);
    nowMs += 1;
    expect(h.range(stream)).toBeNull();
    expect(h.read(stream, 1, MAX, 1, 1 << 20, out)).toBeNull();
    await h.load(stream, 1025);
    expect(h.range(stream)).toEqual({ firstSeq: 1, lastSeq: 1536 });
    expect(seqsOf(h.read(stream, 1530, MAX, 100, 1 << 20, out)!)).toEqual(range(1530, 1536));
    // What was cached before stays cached: an archived segment never changes.
    expect(h.read(stream, 1, MAX, 1, 1 << 20, out)!.count).toBe(1);
  });

  it("forget() drops a stream's range and segments, also a fetch in flight; a stream archived again under the same keys is then read anew", async () => {
    const { stream } = await archivedStream(600);
    const h = history();
    await h.load(stream, 1);
    await h.load(stream, 513);
    expect(h.read(stream, 1, MAX, 600, 1 << 20, out)!.count).toBe(600);
    h.forget(stream);
    expect(h.range(stream)).toBeNull();
    expect(h.read(stream, 1, MAX, 1, 1 << 20, out)).toBeNull();
    expect(h.bytes).toBe(0);
    // Forgotten while its manifest is read, and while its bytes are fetched.
    let loading = h.load(stream, 1);
    h.forget(stream);
    await loading;
    expect(h.bytes).toBe(0);
    let release = () => {};
    w.archive.held = new Promise((r) => (release = r));
    const gets = w.archive.gets;
    loading = h.load(stream, 1);
    await until("the fetch to start", () => (w.archive.gets > gets ? true : null));
    h.forget(stream);
    release();
    w.archive.held = null;
    await loading;
    expect(h.bytes).toBe(0);
    expect(h.read(stream, 1, MAX, 1, 1 << 20, out)).toBeNull();

    // Deleted and made again: seq 1 on, the same keys (one epoch), other bytes.
    await h.load(stream, 1);
    await w.sql`delete from ticker_cluster_segments where stream = ${stream}`;
    const again = writeSegments(300, 40);
    await archiveSegments(stream, again);
    h.forget(stream);
    await h.load(stream, 1);
    expect(h.range(stream)).toEqual({ firstSeq: 1, lastSeq: 300 });
    const page = h.read(stream, 1, MAX, 10, 1 << 20, out)!;
    expect(page.buf.subarray(0, page.bytes).equals(framesOf(again, 1, 10))).toBe(true);
  });

  it("the states of streams read once and not since are dropped as other streams are loaded, so a worker does not keep every stream it ever read", async () => {
    let nowMs = 0;
    const h = history({ manifestTtlMs: 1000, now: () => nowMs });
    for (let i = 0; i < 20; i++) await h.load(`once-${i}`, 1); // nothing archived: a range, no segment
    expect(h.range("once-3")).toEqual({ firstSeq: 1, lastSeq: 0 });
    nowMs += 1000;
    for (let i = 0; i < 11; i++) await h.load("hot", 1);
    // Not observable through the API (a stale range reads as null either way): what it holds is.
    expect((h as unknown as { streams: Map<string, unknown> }).streams.size).toBe(1);
  });

  it("a segment damaged mid-way is served up to the damage, the page carries it, and a read from it or past it throws", async () => {
    const stream = `s${++streams}`;
    const [seg] = writeSegments(500);
    const crc = Buffer.from(seg.bytes);
    crc[200 * 128 + 60] ^= 0x10; // in the body of seq 201
    await archiveSegments(stream, [{ ...seg, bytes: crc }]);
    const h = history();
    await h.load(stream, 1);
    const page = h.read(stream, 150, MAX, 1000, 1 << 20, out)!;
    expect(seqsOf(page)).toEqual(range(150, 200));
    expect(page.corrupt).toMatchObject({ segment: 1, position: 200 * 128, seq: 201, reason: "crc" });
    for (const from of [201, 202, 400]) expect(() => h.read(stream, from, MAX, 10, 1 << 20, out)).toThrow(/record 201 is damaged \(crc\)/);

    // A frame sealed whole but with another seq breaks the chain; an object cut short ends there.
    const chain = Buffer.from(seg.bytes);
    writeFrameHeader(chain, 300 * 128, 128, 100, 777, 5000);
    sealFrame(chain, 300 * 128, 128);
    const broken = `s${++streams}`;
    await archiveSegments(broken, [{ ...seg, bytes: chain }]);
    await h.load(broken, 1);
    expect(h.read(broken, 290, MAX, 1000, 1 << 20, out)!.corrupt).toMatchObject({ seq: 301, reason: "found seq 777" });
    const back = Buffer.from(seg.bytes);
    writeFrameHeader(back, 350 * 128, 128, 100, 351, 5);
    sealFrame(back, 350 * 128, 128);
    const early = `s${++streams}`;
    await archiveSegments(early, [{ ...seg, bytes: back }]);
    await h.load(early, 1);
    expect(h.read(early, 340, MAX, 1000, 1 << 20, out)!.corrupt).toMatchObject({ seq: 351, reason: "ingest_ts went back" });
    const cut = `s${++streams}`;
    await archiveSegments(cut, [{ ...seg, bytes: seg.bytes.subarray(0, 100 * 128 + 50) }]);
    await h.load(cut, 1);
    expect(h.read(cut, 90, MAX, 1000, 1 << 20, out)!.corrupt).toMatchObject({ seq: 101, position: 100 * 128, reason: "short" });
  });

  it("a seq in a hole of the manifest, or before the first archived one, is an error, not a read that never succeeds", async () => {
    const stream = `s${++streams}`;
    const segs = writeSegments(1536);
    await archiveSegments(stream, [segs[1], segs[2]]); // seqs 513..1536
    const h = history();
    await h.load(stream, 600);
    expect(h.range(stream)).toEqual({ firstSeq: 513, lastSeq: 1536 });
    expect(() => h.read(stream, 100, MAX, 10, 1 << 20, out)).toThrow(/no archived segment holds this seq/);
    const holed = `s${++streams}`;
    await archiveSegments(holed, [segs[0], segs[2]]);
    await expect(h.load(holed, 700)).rejects.toThrow(CorruptRecordError);
  });
});
