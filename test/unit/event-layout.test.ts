import { describe, it, expect } from "vitest";
import * as flatbuffers from "flatbuffers";
import { Event } from "../../src/wire/generated/ticker/wire/event.js";
import { EventFields, PAYLOAD_BINARY, PAYLOAD_JSON, eventBytesBound, writeEvent, type EventInput } from "../../src/wire/event-layout.js";
import { encodeEvent } from "../../src/wire/client.js";
import { Verifier } from "../../src/wire/verify.js";

const full: EventInput = {
  type: "trade",
  key: "BTC-USD",
  producerId: "feed-ä",
  producerSeq: 0,
  producerTs: 2 ** 40 + 5,
  idempotencyKey: "feed-a:9001",
  encoding: PAYLOAD_JSON,
  payload: `{"px":91234.5,"note":"é\\""}`,
};

describe("Event layout without the generated classes", () => {
  it("what writeEvent writes is a valid Event for the generated reader, field for field", () => {
    const buf = Buffer.alloc(eventBytesBound(full));
    const w = writeEvent(buf, 0, full);
    expect(w.bytes % 4).toBe(0);
    expect(w.payloadLen).toBe(Buffer.byteLength(full.payload as string));
    const e = Event.getRootAsEvent(new flatbuffers.ByteBuffer(buf.subarray(0, w.bytes)));
    expect(e.type()).toBe("trade");
    expect(e.key()).toBe("BTC-USD");
    expect(e.producerId()).toBe("feed-ä");
    expect(e.producerSeq()).toBe(0n);
    expect(e.producerTs()).toBe(BigInt(2 ** 40 + 5));
    expect(e.idempotencyKey()).toBe("feed-a:9001");
    expect(e.payloadEncoding()).toBe(PAYLOAD_JSON);
    expect(Buffer.from(e.payloadArray()!).toString()).toBe(full.payload);
    // and it passes the ingest verifier
    expect(() => new Verifier(buf.subarray(0, w.bytes)).root()).not.toThrow();
  });

  it("absent optional fields stay absent", () => {
    const bare: EventInput = { type: "t", key: null, producerId: null, producerSeq: -1, producerTs: -1, idempotencyKey: null, encoding: 0, payload: null };
    const buf = Buffer.alloc(eventBytesBound(bare));
    const w = writeEvent(buf, 0, bare);
    const e = Event.getRootAsEvent(new flatbuffers.ByteBuffer(buf.subarray(0, w.bytes)));
    expect([e.key(), e.producerId(), e.producerSeq(), e.producerTs(), e.idempotencyKey(), e.payloadArray()]).toEqual([null, null, null, null, null, null]);
    const f = new EventFields().read(buf, 0);
    expect([f.keyAt, f.producerIdAt, f.idemAt, f.payloadAt, f.producerSeq, f.producerTs]).toEqual([-1, -1, -1, -1, -1, -1]);
  });

  it("EventFields reads an Event built by the generated builder at any offset", () => {
    const bytes = encodeEvent({ type: "x", key: "k", producer_seq: 7, idempotency_key: "i", payload_bytes: new Uint8Array([1, 2, 3]) });
    const buf = Buffer.alloc(bytes.byteLength + 12);
    buf.set(bytes, 12);
    const f = new EventFields().read(buf, 12);
    expect(buf.toString("utf8", f.typeAt, f.typeAt + f.typeLen)).toBe("x");
    expect(buf.toString("utf8", f.keyAt, f.keyAt + f.keyLen)).toBe("k");
    expect(buf.toString("utf8", f.idemAt, f.idemAt + f.idemLen)).toBe("i");
    expect(f.producerSeq).toBe(7);
    expect(f.producerTs).toBe(-1);
    expect(f.encoding).toBe(PAYLOAD_BINARY);
    expect([...buf.subarray(f.payloadAt, f.payloadAt + f.payloadLen)]).toEqual([1, 2, 3]);
  });
});
