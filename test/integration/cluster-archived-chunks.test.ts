// Ranged reads of archived segments (src/cluster/segment-chunks.ts,
// archived-history.ts): real segments written by StreamLog, put in a real
// file:// archive that counts the ranges it is asked for and the bytes it
// reads, their manifest rows (with the points of their chunks, or without,
// as archived before points) in a real private PostgreSQL; then read as a
// shard worker reads them.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { segmentKey } from "../../src/cluster/archive.js";
import { crc32 } from "node:zlib";
import { ARCHIVE_CHUNK_BYTES, chunkPointsOf, POINT_BYTES } from "../../src/cluster/segment-chunks.js";
import type { ArchivedHistory } from "../../src/cluster/archived-history.js";
import { archiveWorld, seqsOf, type ArchiveWorld, type Written } from "../helpers/archived-segments.js";
import { range } from "../helpers/log-frames.js";
import { CorruptRecordError } from "../../src/log/log.js";

const MAX = Number.MAX_SAFE_INTEGER;
const FRAME = 1024; // owner(1000): 1,000-byte bodies in 1 KiB frames
const out = Buffer.alloc(1 << 20);

let w: ArchiveWorld;
/** One segment of 12 MiB (12,288 frames of 1 KiB): three chunks of ARCHIVE_CHUNK_BYTES. */
let big: Written;
beforeAll(async () => {
  w = await archiveWorld();
  [big] = w.owner(1000, 16 << 20)(12 * 1024);
});
afterAll(() => w?.stop());

let streams = 0;
async function archived(seg: Written, chunkBytes?: number | null): Promise<{ stream: string; key: string }> {
  const stream = `c${++streams}`;
  await w.archiveSegments(stream, [seg], chunkBytes);
  return { stream, key: segmentKey(stream, seg.baseSeq, w.epoch) };
}

/** The ranges of `key` the archive was asked for since `from` (an index into its list). */
const rangesOf = (key: string, from: number) =>
  w.archive.ranges
    .slice(from)
    .filter(([k]) => k === key)
    .map(([, start, end]) => [start, end]);

const frameAt = (seq: number) => (seq - 1) * FRAME;

/** Pages through [from, to], loading what is not cached and reading ahead as HistoryView does; the seqs it got. */
async function replay(h: ArchivedHistory, stream: string, from: number, to: number, onPage?: () => void): Promise<number[]> {
  const seqs: number[] = [];
  for (let pages = 0; from <= to; pages++) {
    expect(pages).toBeLessThan(10_000);
    const page = h.read(stream, from, to, 500, 1 << 20, out);
    if (page === null) {
      await h.load(stream, from);
      continue;
    }
    expect(page.corrupt).toBeUndefined();
    seqs.push(...seqsOf(page));
    for (let at = 0, seq = from; at < page.bytes; seq++) {
      expect(page.buf.subarray(at, at + FRAME).equals(big.bytes.subarray(frameAt(seq), frameAt(seq) + FRAME))).toBe(true);
      at += FRAME;
    }
    h.readAhead(stream, page.next - 1);
    onPage?.();
    from = page.next;
  }
  return seqs;
}

describe("ranged reads of archived segments", () => {
  it("a read of a seq in the middle of a large archived segment fetches only the chunk holding it, from the frame its point names", async () => {
    expect(big.bytes.length).toBe(12 << 20);
    const { stream, key } = await archived(big);
    const h = w.history({ cacheBytesMax: 64 << 20 });
    const asked = w.archive.ranges.length;
    const read = w.archive.bytesRead;
    await h.load(stream, 6000);
    const [[start, end], ...more] = rangesOf(key, asked);
    expect(more).toEqual([]);
    expect(start).toBeLessThanOrEqual(frameAt(6000));
    expect(end).toBeGreaterThan(frameAt(6000));
    expect(end - start).toBeLessThanOrEqual(ARCHIVE_CHUNK_BYTES + FRAME);
    expect(w.archive.bytesRead - read).toBe(end - start);
    expect(h.bytes).toBe(end - start);
    const page = h.read(stream, 6000, MAX, 10, 1 << 20, out)!;
    expect(seqsOf(page)).toEqual(range(6000, 6009));
    expect(page.buf.subarray(0, page.bytes).equals(big.bytes.subarray(frameAt(6000), frameAt(6010)))).toBe(true);
    // Another seq of the same chunk: nothing more is fetched.
    await h.load(stream, start / FRAME + 1);
    expect(rangesOf(key, asked)).toHaveLength(1);
  });

  it("a replay from seq 1 reads each byte of the object once, chunk after chunk, the next ones fetched ahead while it reads", async () => {
    const { stream, key } = await archived(big, 1 << 20);
    const h = w.history({ cacheBytesMax: 64 << 20 });
    const asked = w.archive.ranges.length;
    expect(await replay(h, stream, 1, 12 * 1024)).toEqual(range(1, 12 * 1024));
    const ranges = rangesOf(key, asked).sort((a, b) => a[0] - b[0]);
    expect(ranges).toHaveLength(12);
    for (let i = 0; i < ranges.length; i++) expect(ranges[i]).toEqual([i << 20, (i + 1) << 20]);
  });

  it("the cache bound holds over chunks: a replay through a cache of four chunks keeps at most that, and read-ahead never evicts the chunk being read", async () => {
    const { stream } = await archived(big, 1 << 20);
    const h = w.history({ cacheBytesMax: 4 << 20 });
    const asked = w.archive.ranges.length;
    let most = 0;
    expect(await replay(h, stream, 1, 12 * 1024, () => (most = Math.max(most, h.bytes)))).toEqual(range(1, 12 * 1024));
    expect(most).toBeLessThanOrEqual(4 << 20);
    expect(w.archive.ranges.length - asked).toBe(12);

    // Room for the chunk being read and half another: nothing is fetched ahead.
    const small = w.history({ cacheBytesMax: 1.5 * (1 << 20) });
    await small.load(stream, 1);
    const before = w.archive.ranges.length;
    small.readAhead(stream, 10);
    await new Promise((r) => setTimeout(r, 50));
    expect(w.archive.ranges.length).toBe(before);
    expect(small.read(stream, 10, MAX, 1, 1 << 20, out)!.count).toBe(1);
  });

  it("read-ahead fetches the two chunks after the one being read, once, also across into the next segment", async () => {
    const stream = `c${++streams}`;
    const segs = w.owner(1000, 2 << 20)(4 * 1024); // two 2 MiB segments
    expect(segs).toHaveLength(2);
    await w.archiveSegments(stream, segs, 1 << 20);
    const h = w.history();
    await h.load(stream, 1);
    const asked = w.archive.ranges.length;
    h.readAhead(stream, 5);
    h.readAhead(stream, 6);
    await new Promise((r) => setTimeout(r, 100));
    // The second chunk of the first segment and, once its row is read, the first of the second.
    h.readAhead(stream, 7);
    await new Promise((r) => setTimeout(r, 100));
    const got = w.archive.ranges.slice(asked).map(([k, s, e]) => [k.endsWith(`${String(segs[0].baseSeq).padStart(20, "0")}-${w.epoch}.seg`) ? 0 : 1, s, e]);
    expect(got).toEqual([
      [0, 1 << 20, 2 << 20],
      [1, 0, 1 << 20],
    ]);
    for (const from of [1025, segs[1].baseSeq]) expect(h.read(stream, from, MAX, 1, 1 << 20, out)!.count).toBe(1);
  });

  it("the owner checks every frame's CRC as it makes the points: each point carries its chunk's CRC, and a segment with a bad frame gets none", async () => {
    const points = (await chunkPointsOf(big.bytes, 1 << 24, 1 << 20)) as Buffer;
    for (let i = 0; i < points.length / POINT_BYTES; i++) {
      const start = points.readUInt32LE(i * POINT_BYTES + 4);
      const end = i + 1 < points.length / POINT_BYTES ? points.readUInt32LE((i + 1) * POINT_BYTES + 4) : big.bytes.length;
      expect(points.readUInt32LE(i * POINT_BYTES + 16)).toBe(crc32(big.bytes.subarray(start, end)));
    }
    const rotten = Buffer.from(big.bytes);
    rotten[frameAt(7000) + 100] ^= 0x40;
    expect(await chunkPointsOf(rotten, 1 << 24, 1 << 20)).toBeNull();
    // Archived so, with no points, the reader checks the whole object frame by frame and finds it.
    const { stream } = await archived({ ...big, bytes: rotten }, null);
    const h = w.history({ cacheBytesMax: 64 << 20 });
    await h.load(stream, 6990);
    expect(seqsOf(h.read(stream, 6990, MAX, 100, 1 << 20, out)!)).toEqual(range(6990, 6999));
    expect(() => h.read(stream, 7000, MAX, 1, 1 << 20, out)).toThrow(CorruptRecordError);
  });

  it("a stream deleted and made again is read afresh by a node that had it cached: its first segment is another object now", async () => {
    let nowMs = 1_000_000;
    const h = w.history({ cacheBytesMax: 64 << 20, manifestTtlMs: 1000, now: () => nowMs });
    const stream = `c${++streams}`;
    const life = async (seg: Written, key: string) => {
      await w.archive.put(key, seg.bytes);
      const points = await chunkPointsOf(seg.bytes, 1 << 24, 1 << 20);
      expect(await w.manifest.commit(0, { stream, baseSeq: 1, lastSeq: seg.lastSeq, epoch: w.epoch, key, bytes: seg.bytes.length, points })).toBe(true);
    };
    const frameOf = async (seq: number) => {
      for (let tries = 0; tries < 5; tries++) {
        const page = h.read(stream, seq, seq, 1, 1 << 20, out);
        if (page !== null) return Buffer.from(page.buf.subarray(0, page.bytes));
        await h.load(stream, seq);
      }
      throw new Error(`seq ${seq} was never served`);
    };
    const [first] = w.owner(1000, 2 << 20)(1024);
    const [second] = w.owner(600, 2 << 20)(1024);
    await life(first, `${stream}/first.seg`);
    expect((await frameOf(5)).equals(first.bytes.subarray(frameAt(5), frameAt(5) + FRAME))).toBe(true);
    // Deleted (its rows gone, as the owner's removal does) and made again under another key, past this node's manifest TTL.
    await w.sql`delete from ticker_cluster_segments where stream = ${stream}`;
    await life(second, `${stream}/second.seg`);
    nowMs += 2000;
    const again = await frameOf(5);
    expect(again.equals(first.bytes.subarray(frameAt(5), frameAt(5) + FRAME))).toBe(false);
    expect(again.readUInt32LE(0)).toBe(second.bytes.readUInt32LE(0));
    expect(again.equals(second.bytes.subarray(4 * again.length, 5 * again.length))).toBe(true);
  });

  it("a segment archived before points (no points in its row) is fetched whole and served", async () => {
    const { stream, key } = await archived(big, null);
    const h = w.history({ cacheBytesMax: 64 << 20 });
    const asked = w.archive.ranges.length;
    await h.load(stream, 6000);
    expect(rangesOf(key, asked)).toEqual([[0, 12 << 20]]);
    expect(seqsOf(h.read(stream, 6000, MAX, 5, 1 << 20, out)!)).toEqual(range(6000, 6004));
    expect(seqsOf(h.read(stream, 12 * 1024 - 1, MAX, 5, 1 << 20, out)!)).toEqual([12 * 1024 - 1, 12 * 1024]);
  });

  it("points that cannot be an owner's are not used, and points the bytes disagree with fall back to the whole object: every seq is still served", async () => {
    const good = (await chunkPointsOf(big.bytes, 1 << 24, 1 << 20)) as Buffer;
    expect(good.length).toBe(12 * POINT_BYTES);
    const variants: Array<[string, Buffer, "whole" | "chunk then whole"]> = [];
    const edit = (name: string, how: "whole" | "chunk then whole", f: (p: Buffer) => void) => {
      const p = Buffer.from(good);
      f(p);
      variants.push([name, p, how]);
    };
    edit("not whole points", "whole", () => undefined);
    variants[0][1] = good.subarray(0, POINT_BYTES + 4);
    edit("the first point not at the segment's start", "whole", (p) => p.writeUInt32LE(8, 4));
    edit("positions going back", "whole", (p) => p.writeUInt32LE(100, 5 * POINT_BYTES + 4));
    edit("a position past the object", "whole", (p) => p.writeUInt32LE(0xffff0000, 11 * POINT_BYTES + 4));
    edit("a seq past the row's last", "whole", (p) => p.writeUInt32LE(1e6, 11 * POINT_BYTES));
    edit("ingest_ts going back", "whole", (p) => p.writeUInt32LE(0, 6 * POINT_BYTES + 8));
    // Plausible, but not where the frames are: a chunk's check disagrees.
    edit("a point one frame late", "chunk then whole", (p) => p.writeUInt32LE(p.readUInt32LE(5 * POINT_BYTES + 4) + FRAME, 5 * POINT_BYTES + 4));
    edit("a point's seq one off", "chunk then whole", (p) => p.writeUInt32LE(p.readUInt32LE(5 * POINT_BYTES) + 1, 5 * POINT_BYTES));
    edit("a point's ingest_ts not its frame's", "chunk then whole", (p) => p.writeUInt32LE(p.readUInt32LE(5 * POINT_BYTES + 8) - 1, 5 * POINT_BYTES + 8));
    for (const [name, points, how] of variants) {
      const stream = `c${++streams}`;
      const key = segmentKey(stream, 1, w.epoch);
      await w.archive.put(key, big.bytes);
      expect(await w.manifest.commit(0, { stream, baseSeq: 1, lastSeq: big.lastSeq, epoch: w.epoch, key, bytes: big.bytes.length, points })).toBe(true);
      const h = w.history({ cacheBytesMax: 64 << 20 });
      const asked = w.archive.ranges.length;
      await h.load(stream, 5 * 1024 + 10);
      const ranges = rangesOf(key, asked);
      expect(ranges.at(-1), name).toEqual([0, 12 << 20]);
      expect(ranges.length, name).toBe(how === "whole" ? 1 : 2);
      expect(await replay(h, stream, 1, big.lastSeq), name).toEqual(range(1, big.lastSeq));
      expect(rangesOf(key, asked), name).toHaveLength(ranges.length);
    }
  });
});
