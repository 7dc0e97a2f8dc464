// A key's events_per_s is charged with countPublishEvents before its shard
// sees the body: the count must be exact for every body the shard accepts,
// whatever the payloads hold (braces, brackets and escaped quotes in strings).
import { describe, it, expect } from "vitest";
import fc from "fast-check";
import { countPublishEvents } from "../../src/wire/event-count.js";
import { encodePublishBatch } from "../../src/wire/client.js";
import { ContentType } from "../../src/shard/protocol.js";
import { TokenBucket } from "../../src/front/auth.js";

const event = fc.record(
  {
    type: fc.string({ maxLength: 20 }),
    key: fc.string({ maxLength: 20 }),
    idempotency_key: fc.string({ maxLength: 20 }),
    payload: fc.jsonValue({ maxDepth: 4 }),
  },
  { requiredKeys: ["type"] },
);

describe("counting the events of a publish body", () => {
  it("a JSON body holding any payloads counts exactly its events", () => {
    fc.assert(
      fc.property(fc.array(event, { minLength: 1, maxLength: 30 }), fc.boolean(), (events, pretty) => {
        const body = Buffer.from(JSON.stringify({ events }, null, pretty ? 2 : undefined));
        expect(countPublishEvents(body, ContentType.Json)).toBe(events.length);
      }),
      { numRuns: 300 },
    );
  });

  it("strings full of brackets, quotes and backslashes do not change the count", () => {
    const tricky = ['{"', "}]", '\\"{[', "\\\\", '\\\\"]}', "\u007b\u005b"];
    const events = tricky.map((s) => ({ type: s, payload: { [s]: [s, { s }] } }));
    expect(countPublishEvents(Buffer.from(JSON.stringify({ events })), ContentType.Json)).toBe(events.length);
  });

  it("a FlatBuffers batch counts its record frames", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ type: fc.string({ minLength: 1, maxLength: 10 }), payload_bytes: fc.uint8Array({ maxLength: 100 }) }), {
          minLength: 1,
          maxLength: 30,
        }),
        (events) => {
          const body = Buffer.from(encodePublishBatch(events));
          expect(countPublishEvents(body, ContentType.FlatBuffers)).toBe(events.length);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("bytes that are not a batch count as at most what they could hold, without throwing", () => {
    expect(countPublishEvents(Buffer.from("not flatbuffers"), ContentType.FlatBuffers)).toBe(0);
    expect(countPublishEvents(Buffer.from("{{{"), ContentType.Json)).toBe(1);
  });
});

describe("a key's token bucket", () => {
  it("holds one second's worth, refuses past it with the whole seconds to wait, and refills at its rate", () => {
    const b = new TokenBucket(10, 0);
    expect(b.take(10, 0)).toBe(0); // the burst, at the limit
    expect(b.take(1, 0)).toBe(1); // nothing left: 0.1 s would do, said as 1 s (Retry-After is whole seconds)
    expect(b.take(5, 400)).toBe(1); // 4 there after 0.4 s: refused, nothing taken
    expect(b.take(4, 400)).toBe(0);
    expect(b.take(10, 100_000)).toBe(0); // a long idle refills only to the burst
    expect(b.take(1, 100_000)).toBe(1);
    const slow = new TokenBucket(1, 0);
    expect(slow.take(1, 0)).toBe(0);
    expect(slow.take(1, 10)).toBe(1);
    expect(slow.take(1, 1000)).toBe(0);
  });
});
