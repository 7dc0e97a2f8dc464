// The fan-out benchmark's light WebSocket client cuts the server's frames
// out of reads of any size: the same messages whatever the cut, and bytes
// that are not frames end the stream without a throw, a hang, or a carry
// past one frame's bound.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { FRAME_BYTES_MAX, FrameReader } from "../../loadtest/lib/light-ws.js";

/** A server frame (unmasked, FIN), with the header length form its size asks for. */
function frame(op: number, payload: Buffer): Buffer {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | op, n]) : n < 65536 ? Buffer.from([0x80 | op, 126, n >> 8, n & 0xff]) : Buffer.alloc(10);
  if (n >= 65536) {
    head[0] = 0x80 | op;
    head[1] = 127;
    head.writeUInt32BE(n, 6);
  }
  return Buffer.concat([head, payload]);
}

interface Seen {
  messages: string[];
  pings: number;
  closes: number[];
  failures: number;
}

function reader(): { r: FrameReader; seen: Seen } {
  const seen: Seen = { messages: [], pings: 0, closes: [], failures: 0 };
  const r = new FrameReader({
    message: (data, isBinary) => seen.messages.push(`${isBinary ? "b" : "t"}:${data.toString("latin1")}`),
    ping: () => seen.pings++,
    close: (code) => seen.closes.push(code),
    fail: () => seen.failures++,
  });
  return { r, seen };
}

/** Feeds `bytes` in pieces cut at `cuts` (offsets, any order). */
function feed(r: FrameReader, bytes: Buffer, cuts: number[]): void {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let at = 0;
  for (const p of [...points, bytes.length]) {
    if (p <= at) continue;
    // As net's onread: the piece lies at the start of a shared buffer, followed by stale bytes.
    const shared = Buffer.alloc(p - at + 7, 0xee);
    bytes.copy(shared, 0, at, p);
    if (!r.push(shared, p - at)) return;
    at = p;
  }
}

const payloadArb = fc.oneof(fc.uint8Array({ maxLength: 200 }), fc.uint8Array({ minLength: 126, maxLength: 70_000 }));

describe("light WebSocket client: FrameReader", () => {
  it("hands on every message of a stream of frames, whatever the reads' sizes", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ op: fc.constantFrom(1, 2, 9, 10), payload: payloadArb }), { maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        (frames, cuts) => {
          const { r, seen } = reader();
          // Control frames carry at most 125 bytes.
          const sent = frames.map((f) => ({ op: f.op, payload: Buffer.from(f.op >= 8 ? f.payload.subarray(0, 125) : f.payload) }));
          feed(r, Buffer.concat(sent.map((f) => frame(f.op, f.payload))), cuts);
          const data = sent.filter((f) => f.op <= 2).map((f) => `${f.op === 2 ? "b" : "t"}:${f.payload.toString("latin1")}`);
          expect(seen.messages).toEqual(data);
          expect(seen.pings).toBe(sent.filter((f) => f.op === 9).length);
          expect(seen.failures).toBe(0);
          expect(r.carried).toBe(0);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("stops at a close frame, and reads nothing after it", () => {
    const { r, seen } = reader();
    const bytes = Buffer.concat([frame(1, Buffer.from("a")), frame(8, Buffer.from([0x03, 0xe9])), frame(1, Buffer.from("b"))]);
    feed(r, bytes, []);
    expect(seen.messages).toEqual(["t:a"]);
    expect(seen.closes).toEqual([1001]);
    expect(r.push(frame(1, Buffer.from("c")), 3)).toBe(false);
  });

  it("arbitrary bytes end without a throw, and what is carried never passes one frame's bound", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4000 }), fc.array(fc.nat(), { maxLength: 20 }), (bytes, cuts) => {
        const { r, seen } = reader();
        feed(r, Buffer.from(bytes), cuts);
        expect(r.carried).toBeLessThanOrEqual(Math.min(bytes.length, FRAME_BYTES_MAX + 10));
        expect(seen.failures + seen.closes.length).toBeLessThanOrEqual(1);
      }),
      { numRuns: 500 },
    );
  });

  it("refuses a masked frame, a fragment, and a length past FRAME_BYTES_MAX", () => {
    const cases = [
      Buffer.from([0x81, 0x81, 0, 0, 0, 0, 0x61]), // masked
      Buffer.from([0x01, 0x01, 0x61]), // no FIN
      Buffer.from([0x00 | 0x80, 0x01, 0x61]), // continuation
      Buffer.from([0x82, 127, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff]), // 2 GiB
    ];
    for (const c of cases) {
      const { r, seen } = reader();
      expect(r.push(c, c.length)).toBe(false);
      expect(seen.failures).toBe(1);
      expect(seen.messages).toEqual([]);
    }
  });
});
