// Archived bytes are untrusted (src/cluster/archived-history.ts): a real
// segment, damaged every way fast-check finds (made up, cut, bit flips,
// garbage, lengths, frames re-sealed with another seq or time), put in a real
// file:// archive under manifest rows in a real PostgreSQL that claim other
// last seqs and sizes and hold the points of its chunks as its owner wrote
// them, damaged, made up or none (segment-chunks.ts), then read page by page
// and from anywhere.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { segmentKey } from "../../src/cluster/archive.js";
import { chunkPointsOf, POINT_BYTES } from "../../src/cluster/segment-chunks.js";
import { CorruptRecordError, StreamLog, type FramePage } from "../../src/log/log.js";
import { checkFrame, frameSeq, frameTs, sealFrame } from "../../src/log/record.js";
import { archiveWorld, type ArchiveWorld } from "../helpers/archived-segments.js";
import { LOG_OPTS, appendN, tempDir } from "../helpers/log-frames.js";

const MAX = Number.MAX_SAFE_INTEGER;
const FRAME_MAX = LOG_OPTS.frameBytesMax;

let w: ArchiveWorld;
beforeAll(async () => {
  w = await archiveWorld();
});
afterAll(() => w?.stop());

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
    fc.record({ kind: fc.constant("none") }),
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
  // The row's points: none (archived before them), the owner's for chunks of some size, then damaged or not, or made up.
  const pointsArb = fc.oneof(
    fc.record({ kind: fc.constant("none") }),
    fc.record({ kind: fc.constant("owner's"), chunkBytes: fc.integer({ min: 32, max: 1 << 16 }) }),
    fc.record({
      kind: fc.constant("flipped"),
      chunkBytes: fc.integer({ min: 32, max: 1 << 14 }),
      bits: fc.array(fc.nat(1 << 16), { minLength: 1, maxLength: 4 }),
    }),
    fc.record({
      kind: fc.constant("edited"),
      chunkBytes: fc.integer({ min: 32, max: 1 << 14 }),
      point: fc.nat(1000),
      word: fc.nat(4),
      value: fc.oneof(fc.nat(F + 2), fc.nat(L + 64), fc.nat({ max: 0xffffffff })),
    }),
    fc.record({ kind: fc.constant("made up"), bytes: fc.uint8Array({ maxLength: 256 }) }),
  );
  type Points = typeof pointsArb extends fc.Arbitrary<infer T> ? T : never;

  async function pointsOf(p: Points): Promise<Buffer | null> {
    if (p.kind === "none") return null;
    if (p.kind === "made up") return Buffer.from(p.bytes);
    const b = (await chunkPointsOf(fixture.bytes, 1 << 24, p.chunkBytes)) as Buffer;
    if (p.kind === "flipped") for (const bit of p.bits) b[(bit >> 3) % b.length] ^= 1 << (bit & 7);
    if (p.kind === "edited") b.writeUInt32LE(p.value, ((p.point % (b.length / POINT_BYTES)) * POINT_BYTES + p.word * 4) % (b.length - 3));
    return b;
  }

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
      case "none":
        return b;
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

  it("random, cut, flipped, garbled, mis-sized and re-sealed segments, under any points, never hang a read, never throw but CorruptRecordError, never serve a bad frame, and lose nothing before the damage", async () => {
    let runs = 0;
    let damagedPages = 0;
    let chunked = 0;
    await fc.assert(
      fc.asyncProperty(damageArb, claimArb, pointsArb, readArb, async (d, claim, p, r) => {
        const stream = `p${++runs}`;
        const bytes = damaged(d);
        const claimedBytes = Math.max(0, bytes.length + claim.bytesDelta);
        const key = segmentKey(stream, 1, w.epoch);
        await w.archive.put(key, bytes);
        const points = await pointsOf(p);
        expect(await w.manifest.commit(0, { stream, baseSeq: 1, lastSeq: claim.lastSeq, epoch: w.epoch, key, bytes: claimedBytes, points })).toBe(true);
        const h = w.history({ cacheBytesMax: 1 << 20 });
        // A load fetches a chunk and, if the bytes disagree with the points, the whole object: never more.
        const load = async (seq: number) => {
          const gets = w.archive.gets;
          await h.load(stream, seq);
          expect(w.archive.gets - gets).toBeLessThanOrEqual(2);
          for (const [k, start] of w.archive.ranges.slice(w.archive.ranges.length - (w.archive.gets - gets))) if (k === key && start > 0) chunked++;
        };
        await load(1);
        // Frames that lie wholly before the first changed byte (and inside what the row claims) are served as written.
        const seen = Math.min(bytes.length, claimedBytes);
        let firstChanged = 0;
        while (firstChanged < seen && bytes[firstChanged] === fixture.bytes[firstChanged]) firstChanged++;
        let intact = 0;
        while (intact < Math.min(F, claim.lastSeq) && fixture.starts[intact] + fixture.bytes.readUInt32LE(fixture.starts[intact]) <= firstChanged) intact++;

        const out = Buffer.alloc(r.outBytes);
        const readPage = async (from: number): Promise<FramePage | "corrupt"> => {
          let page: FramePage | null = null;
          try {
            // Not cached yet (another chunk): once loaded, it is.
            for (let tries = 0; tries < 2 && page === null; tries++) {
              page = h.read(stream, from, MAX, r.eventsMax, r.bytesMax, out);
              if (page === null && tries === 0) await load(from);
            }
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
          const page = await readPage(seq);
          if (page === "corrupt" || page.count === 0) break;
          seq = page.next;
          if (page.corrupt) {
            damagedPages++;
            expect(await readPage(seq)).toBe("corrupt");
            break;
          }
        }
        // A read buffer too small for a frame stops the walk early; otherwise nothing intact is lost.
        if (r.outBytes === 1 << 20) expect(seq).toBeGreaterThan(intact);
        // Intact bytes under a true row are served whole, whatever its points.
        if (d.kind === "none" && claim.lastSeq === F && claim.bytesDelta === 0 && r.outBytes === 1 << 20) expect(seq).toBe(F + 1);
        for (const from of r.froms) await readPage(from);
        h.forget(stream);
      }),
      { numRuns: 300, seed: 20261204 },
    );
    expect(damagedPages).toBeGreaterThan(0);
    expect(chunked).toBeGreaterThan(0);
  });
});
