// Joining live batches: the joined message must be exactly what one render
// of all the events would have been, in both formats.
import { describe, it, expect } from "vitest";
import { joinRun, runsOf, type LiveBatch } from "../../src/front/consume/live-batch.js";
import { eventBatchHeaderBytes, writeEventBatchHeader } from "../../src/wire/event-batch.js";
import { decodeEventBatch } from "../../src/wire/client.js";

const json = (seqs: number[]) => Buffer.from(JSON.stringify({ type: "events", events: seqs.map((seq) => ({ seq, type: "t" })) }));

/** A binary batch whose "frames" are 8-byte markers: joining must only concatenate them. */
function bin(stream: string, first: number, last: number): Buffer {
  const headerBytes = eventBatchHeaderBytes(Buffer.byteLength(stream));
  const frames = Buffer.alloc(8 * (last - first + 1));
  for (let s = first; s <= last; s++) frames.writeBigUInt64LE(BigInt(s), 8 * (s - first));
  const out = Buffer.alloc(headerBytes + frames.length);
  writeEventBatchHeader(out, 0, { stream, firstSeq: 1, headSeq: last, next: last + 1, count: last - first + 1 }, frames.length);
  frames.copy(out, headerBytes);
  return out;
}

const batch = (first: number, last: number, formats = { json: true, bin: true }): LiveBatch => {
  const seqs = Array.from({ length: last - first + 1 }, (_, i) => first + i);
  return { count: seqs.length, first, last, firstSeq: 1, json: formats.json ? json(seqs) : null, bin: formats.bin ? bin("s", first, last) : null };
};

describe("live batch joining", () => {
  it("joins consecutive batches into the message one render would give", () => {
    const joined = joinRun("s", [batch(5, 6), batch(7, 7), batch(8, 10)]);
    expect(joined).toMatchObject({ count: 6, first: 5, last: 10 });
    expect(joined.json!.toString()).toBe(json([5, 6, 7, 8, 9, 10]).toString());
    const b = decodeEventBatch(joined.bin!);
    expect(b).toMatchObject({ stream: "s", count: 6, head_seq: 10, next: 11 });
    expect(Buffer.from(b.records)).toEqual(bin("s", 5, 10).subarray(eventBatchHeaderBytes(1)));
  });

  it("splits runs at a gap, at head news without frames, and where formats change", () => {
    const notice: LiveBatch = { count: 0, first: 9, last: 8, firstSeq: 1, json: null, bin: null };
    const runs = runsOf([batch(1, 2), batch(3, 4), batch(6, 7), notice, batch(9, 9), batch(10, 10, { json: true, bin: false })]);
    expect(runs.map((r) => r.map((b) => b.first))).toEqual([[1, 3], [6], [9], [9], [10]]);
  });

  it("a run of one is passed through untouched", () => {
    const b = batch(1, 3);
    expect(joinRun("s", [b])).toBe(b);
  });
});
