// History from the archive (src/cluster/archived-history.ts): real segments
// written by StreamLog and rolled, their .log bytes put in a real file://
// archive and committed to the manifest in a real private PostgreSQL under a
// live lease, then read back page by page as a shard worker would; and, as a
// fast-check property, archived bytes that are damaged, cut short or made up.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import fc from "fast-check";
import type postgres from "postgres";
import { ArchivedHistory, type ArchivedHistoryOptions } from "../../src/cluster/archived-history.js";
import { FileArchive, Manifest, segmentKey } from "../../src/cluster/archive.js";
import { ShardLeases } from "../../src/cluster/leases.js";
import { CorruptRecordError, StreamLog, type FramePage } from "../../src/log/log.js";
import { checkFrame, frameSeq, frameTs, sealFrame, writeFrameHeader } from "../../src/log/record.js";
import { clusterDb, until, type ClusterDb } from "../helpers/cluster-db.js";
import { LOG_OPTS, appendN, range, removeTempDirs, tempDir } from "../helpers/log-frames.js";

const MAX = Number.MAX_SAFE_INTEGER;
const FRAME_MAX = LOG_OPTS.frameBytesMax;

/** Counts the gets that reach the archive's directory; `held` keeps them waiting. */
class CountingArchive extends FileArchive {
  gets = 0;
  held: Promise<void> | null = null;
  /** Set as each get's bytes come back. */
  onGot: (() => void) | null = null;
  override async get(key: string, r?: { start: number; end: number }): Promise<Buffer> {
    this.gets++;
    await this.held;
    const bytes = await super.get(key, r);
    this.onGot?.();
    return bytes;
  }
}

let db: ClusterDb;
let sql: postgres.Sql;
let manifest: Manifest;
let archive: CountingArchive;
let epoch: number;
let archiveRoot: string;
beforeAll(async () => {
  db = await clusterDb();
  const open = await db.fresh();
  const leases = new ShardLeases(open(), { nodeId: "a", leaseMs: 3_600_000, shards: 1 });
  await leases.ensureShards();
  epoch = (await leases.claim(0))!.epoch;
  sql = open();
  manifest = new Manifest(open(), "a");
  archiveRoot = mkdtempSync(join(tmpdir(), "ticker-archived-history-"));
  archive = new CountingArchive(pathToFileURL(archiveRoot).href);
});
afterAll(async () => {
  for (const log of logs) log.close();
  removeTempDirs();
  rmSync(archiveRoot, { recursive: true, force: true });
  await db?.stop();
});

interface Written {
  baseSeq: number;
  lastSeq: number;
  bytes: Buffer;
}

const logs: StreamLog[] = [];

/**
 * A stream's local log as its owner writes it (64 KiB segments, batches of
 * 64, 128-byte frames: 512 a segment): each call appends `n` records, rolls,
 * and returns the bytes of the segments that closed.
 */
function owner(bodyBytes = 100): (n: number) => Written[] {
  const log = new StreamLog(tempDir(), LOG_OPTS);
  log.open();
  logs.push(log);
  let closedThrough = 0;
  return (n) => {
    appendN(log, n, { bodyBytes, batch: 64 });
    log.roll(false);
    const closed = log.segments.filter((s) => !s.empty && s.baseSeq > closedThrough);
    closedThrough = log.headSeq;
    return closed.map((s) => ({ baseSeq: s.baseSeq, lastSeq: s.lastSeq, bytes: readFileSync(s.logPath) }));
  };
}

const writeSegments = (n: number, bodyBytes = 100) => owner(bodyBytes)(n);

/** Puts segments in the archive and commits their manifest rows, as the stream's owner does. */
async function archiveSegments(stream: string, segs: Written[]): Promise<void> {
  for (const s of segs) {
    const key = segmentKey(stream, s.baseSeq, epoch);
    await archive.put(key, s.bytes);
    expect(await manifest.commit(0, { stream, baseSeq: s.baseSeq, lastSeq: s.lastSeq, epoch, key, bytes: s.bytes.length })).toBe(true);
  }
}

let streams = 0;
async function archivedStream(n: number): Promise<{ stream: string; segs: Written[] }> {
  const stream = `s${++streams}`;
  const segs = writeSegments(n);
  await archiveSegments(stream, segs);
  return { stream, segs };
}

const history = (o: Partial<ArchivedHistoryOptions> = {}) =>
  new ArchivedHistory(archive, manifest, { cacheBytesMax: 16 << 20, frameBytesMax: FRAME_MAX, manifestTtlMs: 60_000, ...o });

function seqsOf(page: FramePage): number[] {
  const seqs: number[] = [];
  for (let at = 0, i = 0; i < page.count; i++, at += page.buf.readUInt32LE(at)) seqs.push(frameSeq(page.buf, at));
  return seqs;
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
    const log = new StreamLog(tempDir(), { ...LOG_OPTS, segmentBytesMax: 4 << 20 });
    log.open();
    logs.push(log);
    appendN(log, 3072, { bodyBytes: 1000, batch: 64 }); // 1 KiB frames: 3 MiB
    log.roll(false);
    const seg = { baseSeq: 1, lastSeq: 3072, bytes: Buffer.from(readFileSync(log.segments[0].logPath)) };
    seg.bytes[3000 * 1024 + 100] ^= 1;
    const stream = `s${++streams}`;
    await archiveSegments(stream, [seg]);
    const h = history();
    let turns = 0;
    let counting = true;
    archive.onGot = () => {
      const turn = () => {
        if (!counting) return;
        turns++;
        setImmediate(turn);
      };
      setImmediate(turn);
    };
    await h.load(stream, 1);
    counting = false;
    archive.onGot = null;
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
    const before = archive.gets;
    await Promise.all([h.load(stream, 1), h.load(stream, 7), h.load(stream, 300), h.load(stream, 512)]);
    expect(archive.gets - before).toBe(1);
    await h.load(stream, 513);
    expect(archive.gets - before).toBe(2);
  });

  it("the range is trusted for manifestTtlMs, then read again: segments archived since are served after the next load", async () => {
    const stream = `s${++streams}`;
    const write = owner();
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
    archive.held = new Promise((r) => (release = r));
    const gets = archive.gets;
    loading = h.load(stream, 1);
    await until("the fetch to start", () => (archive.gets > gets ? true : null));
    h.forget(stream);
    release();
    archive.held = null;
    await loading;
    expect(h.bytes).toBe(0);
    expect(h.read(stream, 1, MAX, 1, 1 << 20, out)).toBeNull();

    // Deleted and made again: seq 1 on, the same keys (one epoch), other bytes.
    await h.load(stream, 1);
    await sql`delete from ticker_cluster_segments where stream = ${stream}`;
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

describe("archived bytes are untrusted", () => {
  // One real segment of frames from 32 bytes (the smallest) to 3 KiB.
  const fixture = (() => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open();
    for (const bodyBytes of [8, 100, 1000, 5, 3000]) appendN(log, 16, { bodyBytes, batch: 16 });
    log.roll(false);
    const bytes = readFileSync(log.segments[0].logPath);
    log.close();
    const starts: number[] = [];
    for (let at = 0; at < bytes.length; at += bytes.readUInt32LE(at)) starts.push(at);
    return { bytes, starts, lastSeq: starts.length };
  })();
  const L = fixture.bytes.length;
  const F = fixture.lastSeq;

  const damageArb = fc.oneof(
    fc.record({ kind: fc.constant("made up"), bytes: fc.uint8Array({ maxLength: 4096 }) }),
    fc.record({ kind: fc.constant("cut"), at: fc.nat(L) }),
    fc.record({ kind: fc.constant("flips"), bits: fc.array(fc.nat(L * 8 - 1), { minLength: 1, maxLength: 8 }) }),
    fc.record({ kind: fc.constant("garbage"), at: fc.nat(L - 1), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
    fc.record({
      kind: fc.constant("length"),
      frame: fc.nat(F - 1),
      value: fc.oneof(fc.constantFrom(0, 8, 24, 32, 33, 40, FRAME_MAX, FRAME_MAX + 8, 0xffffffff), fc.nat({ max: 0xffffffff })),
    }),
    // Whole frames with a CRC that checks: only the seq chain and the ingest_ts order tell.
    fc.record({ kind: fc.constant("resealed"), frame: fc.nat(F - 1), seq: fc.oneof(fc.constant(-1), fc.nat(F + 2)), ts: fc.nat(3000) }),
  );
  // What the manifest row claims: the segment's last seq or another, its size or another.
  const claimArb = fc.record({
    lastSeq: fc.oneof(fc.constant(F), fc.integer({ min: 1, max: F + 5 }), fc.integer({ min: 1, max: 1e9 })),
    bytesDelta: fc.oneof(fc.constant(0), fc.integer({ min: -1000, max: 1000 }), fc.nat(1e6)),
  });
  const readArb = fc.record({
    eventsMax: fc.integer({ min: 1, max: 100 }),
    bytesMax: fc.integer({ min: 1, max: 100_000 }),
    outBytes: fc.oneof(fc.constant(1 << 20), fc.integer({ min: 1, max: 8192 })),
    froms: fc.array(fc.integer({ min: 1, max: F + 10 }), { maxLength: 8 }),
  });
  type Damage = typeof damageArb extends fc.Arbitrary<infer T> ? T : never;

  function damaged(d: Damage): Buffer {
    const b = Buffer.from(fixture.bytes);
    switch (d.kind) {
      case "made up":
        return Buffer.from(d.bytes);
      case "cut":
        return b.subarray(0, d.at);
      case "flips":
        for (const bit of d.bits) b[bit >> 3] ^= 1 << (bit & 7);
        return b;
      case "garbage":
        b.set(d.bytes.subarray(0, L - d.at), d.at);
        return b;
      case "length":
        b.writeUInt32LE(d.value, fixture.starts[d.frame]);
        return b;
      case "resealed": {
        const at = fixture.starts[d.frame];
        const fb = b.readUInt32LE(at);
        b.writeDoubleLE(0, at + 8); // the seq and ts words, zeroed before the stamp
        b.writeDoubleLE(0, at + 16);
        b.writeUInt32LE(d.seq < 0 ? d.frame + 1 : d.seq, at + 8);
        b.writeUInt32LE(d.ts, at + 16);
        sealFrame(b, at, fb);
        return b;
      }
    }
  }

  it("random, cut, flipped, garbled, mis-sized and re-sealed segments never hang a read, never throw but CorruptRecordError, never serve a bad frame, and lose nothing before the damage", async () => {
    let runs = 0;
    let damagedPages = 0;
    await fc.assert(
      fc.asyncProperty(damageArb, claimArb, readArb, async (d, claim, r) => {
        const stream = `p${++runs}`;
        const bytes = damaged(d);
        const claimedBytes = Math.max(0, bytes.length + claim.bytesDelta);
        const key = segmentKey(stream, 1, epoch);
        await archive.put(key, bytes);
        expect(await manifest.commit(0, { stream, baseSeq: 1, lastSeq: claim.lastSeq, epoch, key, bytes: claimedBytes })).toBe(true);
        const h = history({ cacheBytesMax: 1 << 20 });
        await h.load(stream, 1);
        // Frames that lie wholly before the first changed byte (and inside what the row claims) are served as written.
        const seen = Math.min(bytes.length, claimedBytes);
        let firstChanged = 0;
        while (firstChanged < seen && bytes[firstChanged] === fixture.bytes[firstChanged]) firstChanged++;
        let intact = 0;
        while (intact < Math.min(F, claim.lastSeq) && fixture.starts[intact] + fixture.bytes.readUInt32LE(fixture.starts[intact]) <= firstChanged) intact++;

        const out = Buffer.alloc(r.outBytes);
        const readPage = (from: number): FramePage | "corrupt" => {
          let page: FramePage | null;
          try {
            page = h.read(stream, from, MAX, r.eventsMax, r.bytesMax, out);
          } catch (err) {
            expect(err).toBeInstanceOf(CorruptRecordError);
            return "corrupt";
          }
          expect(page).not.toBeNull();
          let at = 0;
          let prevTs = 0;
          for (let i = 0; i < page!.count; i++) {
            const fb = checkFrame(page!.buf, at, page!.bytes, FRAME_MAX);
            expect(fb).toBeGreaterThan(0);
            expect(frameSeq(page!.buf, at)).toBe(from + i);
            expect(frameTs(page!.buf, at)).toBeGreaterThanOrEqual(prevTs);
            prevTs = frameTs(page!.buf, at);
            if (from + i <= intact) {
              const orig = fixture.starts[from + i - 1];
              expect(page!.buf.subarray(at, at + fb).equals(fixture.bytes.subarray(orig, orig + fb))).toBe(true);
            }
            at += fb;
          }
          expect(at).toBe(page!.bytes);
          expect(page!.next).toBe(from + page!.count);
          return page!;
        };

        // Page by page from the start: every page takes a frame, or the walk ends.
        let seq = 1;
        for (let pages = 0; ; pages++) {
          expect(pages).toBeLessThanOrEqual(bytes.length / 32 + 1);
          const page = readPage(seq);
          if (page === "corrupt" || page.count === 0) break;
          seq = page.next;
          if (page.corrupt) {
            damagedPages++;
            expect(readPage(seq)).toBe("corrupt");
            break;
          }
        }
        // A read buffer too small for a frame stops the walk early; otherwise nothing intact is lost.
        if (r.outBytes === 1 << 20) expect(seq).toBeGreaterThan(intact);
        for (const from of r.froms) readPage(from);
        h.forget(stream);
      }),
      { numRuns: 300, seed: 20261204 },
    );
    expect(damagedPages).toBeGreaterThan(0);
  });
});
