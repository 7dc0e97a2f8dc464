import { describe, it, expect } from "vitest";
import fc from "fast-check";
import { CONSUME_HEAD_BYTES, ConsumeHeadKind, readConsumeHead, writeConsumeHead, type ConsumeHead } from "../../src/shard/protocol.js";

const seq = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const u32 = fc.integer({ min: 0, max: 0xffffffff });

const head: fc.Arbitrary<ConsumeHead> = fc.oneof(
  fc.record({ kind: fc.constant(ConsumeHeadKind.Page as const), count: u32, next: seq, last: seq, headSeq: seq, firstSeq: seq, conflated: u32 }),
  fc.record({
    kind: fc.constant(ConsumeHeadKind.Batch as const),
    count: u32,
    first: seq,
    last: seq,
    firstSeq: seq,
    idBytes: u32,
    binBytes: u32,
    jsonBytes: u32,
  }),
  fc.record({ kind: fc.constant(ConsumeHeadKind.HeadMoved as const), headSeq: seq, firstSeq: seq, idBytes: u32 }),
);

describe("the head of a consumer message", () => {
  it("reads back as written, kind and fields, whatever the ring held at that place before", () => {
    fc.assert(
      fc.property(head, head, fc.integer({ min: 0, max: 16 }), (before, h, at) => {
        const ring = new Uint8Array(at + CONSUME_HEAD_BYTES);
        writeConsumeHead(ring, at, before);
        writeConsumeHead(ring, at, h);
        expect(readConsumeHead(ring.subarray(at))).toEqual(h);
      }),
    );
  });

  it("a head of unknown kind is refused, not read as some other kind", () => {
    const bytes = new Uint8Array(CONSUME_HEAD_BYTES);
    new DataView(bytes.buffer).setUint32(0, 9, true);
    expect(() => readConsumeHead(bytes)).toThrow(/unknown kind 9/);
  });
});
