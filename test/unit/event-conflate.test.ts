// Conflation of a consumer's log page (src/wire/event-conflate.ts) against a
// plain model, on generated pages: the newest event of each key is kept and
// every keyless one, in seq order, at most keepMax; the frames kept are
// intact; what it left out adds up with what it kept to the seqs it covers.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { frameBytesFor, RECORD_HEADER_BYTES, writeFrameHeader } from "../../src/log/record.js";
import { encodeEvent } from "../../src/wire/client.js";
import { PageConflater } from "../../src/wire/event-conflate.js";
import { EventFields } from "../../src/wire/event-layout.js";

/** A page of frames (seqs from 1) holding these events. */
function page(events: Array<{ key?: string }>): Buffer {
  const buf = Buffer.alloc(events.length * 256 + 1);
  let at = 0;
  events.forEach((e, i) => {
    const body = Buffer.from(encodeEvent({ type: "quote", key: e.key }));
    const fb = frameBytesFor(body.length);
    body.copy(buf, at + RECORD_HEADER_BYTES);
    writeFrameHeader(buf, at, fb, body.length, i + 1, 0);
    at += fb;
  });
  return buf;
}

/** The rule as docs/consume.md states it: the longest prefix that conflates to at most keepMax, newest per key in it. */
function model(keys: Array<string | undefined>, keepMax: number): { kept: number[]; covered: number } {
  const seen = new Set<string>();
  let distinct = 0;
  let n = 0;
  for (; n < keys.length; n++) {
    const k = keys[n];
    if (k === undefined || !seen.has(k)) {
      if (distinct === keepMax) break;
      distinct++;
    }
    if (k !== undefined) seen.add(k);
  }
  const prefix = keys.slice(0, n);
  const kept = prefix.flatMap((k, i) => (k === undefined || prefix.lastIndexOf(k) === i ? [i] : []));
  return { kept, covered: n };
}

describe("page conflation", () => {
  it("keeps the newest event per key and every keyless one, in seq order, at most keepMax, and counts the rest", () => {
    // Few keys, with a multi-byte one and a prefix of another: keys are compared as bytes.
    const key = fc.option(fc.constantFrom("a", "b", "ab", "é", "e"), { nil: undefined });
    const conflater = new PageConflater(40);
    const fields = new EventFields();
    fc.assert(
      fc.property(fc.array(key, { maxLength: 40 }), fc.integer({ min: 1, max: 41 }), (keys, keepMax) => {
        const frames = page(keys.map((k) => ({ key: k })));
        const want = model(keys, keepMax);
        const got = conflater.conflate(frames, keys.length, keepMax);
        const seqs: number[] = [];
        const gotKeys: Array<string | undefined> = [];
        for (let at = 0, i = 0; i < got.count; i++, at += frames.readUInt32LE(at)) {
          seqs.push(Number(frames.readBigUInt64LE(at + 8)));
          const f = fields.read(frames, at + RECORD_HEADER_BYTES);
          gotKeys.push(f.keyAt < 0 ? undefined : frames.toString("utf8", f.keyAt, f.keyAt + f.keyLen));
        }
        expect(seqs).toEqual(want.kept.map((i) => i + 1));
        expect(gotKeys).toEqual(want.kept.map((i) => keys[i]));
        expect(got.count).toBeLessThanOrEqual(keepMax);
        expect(got.count + got.conflated).toBe(want.covered);
        expect(got.stopSeq).toBe(want.covered < keys.length ? want.covered + 1 : -1);
        // A message cut after k events covers the seqs before the k-th kept one's next: k + droppedBefore[k] of them.
        for (let k = 0; k < got.count; k++) expect(k + conflater.droppedBefore[k]).toBe(want.kept[k]);
        expect(got.count + conflater.droppedBefore[got.count]).toBe(want.covered);
      }),
      { numRuns: 2000 },
    );
  });
});
