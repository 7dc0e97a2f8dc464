import { describe, it, expect } from "vitest";
import * as flatbuffers from "flatbuffers";
import { Event } from "../../src/wire/generated/ticker/wire/event.js";
import { BatchColumns, EventFields, PAYLOAD_BINARY, PAYLOAD_JSON, eventBytesFor, writeEvent } from "../../src/wire/event-layout.js";
import { encodeEvent } from "../../src/wire/client.js";

/** Lays strings out in a source buffer and points an EventFields at them. */
function source(values: Record<string, string>): { src: Buffer; f: EventFields } {
  const src = Buffer.alloc(4096);
  const f = new EventFields();
  f.typeAt = f.keyAt = f.producerIdAt = f.idemAt = f.payloadAt = -1;
  f.producerSeq = f.producerTs = -1;
  f.encoding = 0;
  let at = 7; // deliberately unaligned
  const put = (s: string) => {
    const n = src.write(s, at);
    const r = [at, n];
    at += n + 3;
    return r;
  };
  if (values.type !== undefined) [f.typeAt, f.typeLen] = put(values.type);
  if (values.key !== undefined) [f.keyAt, f.keyLen] = put(values.key);
  if (values.producerId !== undefined) [f.producerIdAt, f.producerIdLen] = put(values.producerId);
  if (values.idem !== undefined) [f.idemAt, f.idemLen] = put(values.idem);
  if (values.payload !== undefined) {
    [f.payloadAt, f.payloadLen] = put(values.payload);
    f.encoding = PAYLOAD_JSON;
  }
  return { src, f };
}

describe("Event layout without the generated classes", () => {
  it("what writeEvent writes is a valid Event for the generated reader, field for field", () => {
    const { src, f } = source({ type: "trade", key: "BTC-USD", producerId: "feed-ä", idem: "feed-a:9001", payload: `{"px":91234.5,"note":"é\\""}` });
    f.producerSeq = 0;
    f.producerTs = 2 ** 40 + 5;
    const buf = Buffer.alloc(eventBytesFor(f)).fill(0xee);
    const bytes = writeEvent(buf, 0, src, f);
    expect(bytes).toBe(eventBytesFor(f));
    const e = Event.getRootAsEvent(new flatbuffers.ByteBuffer(buf.subarray(0, bytes)));
    expect(e.type()).toBe("trade");
    expect(e.key()).toBe("BTC-USD");
    expect(e.producerId()).toBe("feed-ä");
    expect(e.producerSeq()).toBe(0n);
    expect(e.producerTs()).toBe(BigInt(2 ** 40 + 5));
    expect(e.idempotencyKey()).toBe("feed-a:9001");
    expect(e.payloadEncoding()).toBe(PAYLOAD_JSON);
    expect(Buffer.from(e.payloadArray()!).toString()).toBe(`{"px":91234.5,"note":"é\\""}`);
    // and it passes the ingest verifier (EventFields.read with bounds)
    expect(() => new EventFields().read(buf, 0, bytes)).not.toThrow();
    // no byte of the old buffer contents survives: padding and absent slots are zeroed
    expect(buf.includes(0xee)).toBe(false);
  });

  it("absent optional fields stay absent, and nothing stale is left in the bytes", () => {
    const { src, f } = source({ type: "t" });
    const buf = Buffer.alloc(eventBytesFor(f)).fill(0xee);
    const bytes = writeEvent(buf, 0, src, f);
    const e = Event.getRootAsEvent(new flatbuffers.ByteBuffer(buf.subarray(0, bytes)));
    expect([e.key(), e.producerId(), e.producerSeq(), e.producerTs(), e.idempotencyKey(), e.payloadArray()]).toEqual([null, null, null, null, null, null]);
    const r = new EventFields().read(buf, 0);
    expect([r.keyAt, r.producerIdAt, r.idemAt, r.payloadAt, r.producerSeq, r.producerTs]).toEqual([-1, -1, -1, -1, -1, -1]);
    expect(buf.includes(0xee)).toBe(false);
  });

  it("EventFields reads an Event built by the generated builder at any offset", () => {
    const bytes = encodeEvent({ type: "x", key: "k", producer_seq: 7, idempotency_key: "i", payload_bytes: new Uint8Array([1, 2, 3]) });
    const buf = Buffer.alloc(bytes.byteLength + 12);
    buf.set(bytes, 12);
    const f = new EventFields().read(buf, 12, 12 + bytes.byteLength);
    expect(buf.toString("utf8", f.typeAt, f.typeAt + f.typeLen)).toBe("x");
    expect(buf.toString("utf8", f.keyAt, f.keyAt + f.keyLen)).toBe("k");
    expect(buf.toString("utf8", f.idemAt, f.idemAt + f.idemLen)).toBe("i");
    expect(f.producerSeq).toBe(7);
    expect(f.producerTs).toBe(-1);
    expect(f.encoding).toBe(PAYLOAD_BINARY);
    expect([...buf.subarray(f.payloadAt, f.payloadAt + f.payloadLen)]).toEqual([1, 2, 3]);
  });

  it("the batch columns point at the producer fields and key where a reader finds them, for written and for read events", () => {
    const cols = new BatchColumns();
    const cases = [
      { type: "trade", key: "BTC-USD", producerId: "feed-ä", idem: "k:1", payload: "{}" },
      { type: "t", producerId: "p" },
      { type: "t", idem: "only-a-key" },
      { type: "t", key: "k" },
    ];
    // Past the columns' first size, so they grow on the way and keep what they had.
    const events = Array.from({ length: 3001 }, (_, i) => cases[i % cases.length]);
    const bufs = events.map((values, i) => {
      const { src, f } = source(values);
      f.producerSeq = values.producerId === undefined ? -1 : i + 1;
      const buf = Buffer.alloc(8 + eventBytesFor(f));
      writeEvent(buf, 8, src, f);
      if (i % 2 === 0) cols.noteWritten(i, f);
      else cols.noteRead(i, new EventFields().read(buf, 8, buf.length), 8);
      return buf;
    });
    bufs.forEach((buf, i) => {
      const r = new EventFields().read(buf, 8);
      expect(cols.producerSeq[i]).toBe(r.producerSeq);
      expect(cols.producerIdAt[i]).toBe(r.producerIdAt < 0 ? -1 : r.producerIdAt - 8);
      if (r.producerIdAt >= 0)
        expect(buf.toString("utf8", 8 + cols.producerIdAt[i], 8 + cols.producerIdAt[i] + cols.producerIdLen[i])).toBe(events[i].producerId);
      expect(cols.idempotencyKey(i, buf, 8)).toBe(events[i].idem ?? null);
    });
  });

  it("a truncated or lying Event is refused by the bounds-checked read", () => {
    const bytes = Buffer.from(encodeEvent({ type: "hello", payload: { a: 1 } }));
    expect(() => new EventFields().read(bytes, 0, bytes.length - 6)).toThrow();
    const lying = Buffer.from(bytes);
    lying.writeUInt32LE(1 << 20, 0); // root offset far outside
    expect(() => new EventFields().read(lying, 0, lying.length)).toThrow();
  });
});

describe("JSON page rendering", () => {
  it("renders consecutive seqs across digit carries and a gap exactly, as valid JSON", async () => {
    const { ByteWriter, JsonRenderer, renderJsonPage } = await import("../../src/wire/event-codec.js");
    const { frameBytesFor, writeFrameHeader, sealFrame } = await import("../../src/log/record.js");
    const seqs = [7, 8, 9, 10, 11, 98, 99, 100, 101, 999, 1000, 9007199254740991];
    const { src, f } = source({ type: 'q"t', payload: `{"a":[1,"é"]}` });
    const page = Buffer.alloc(64 * 1024);
    let at = 0;
    for (const [i, seq] of seqs.entries()) {
      const body = writeEvent(page, at + 24, src, f);
      const fb = frameBytesFor(body);
      writeFrameHeader(page, at, fb, body, seq, 1764000000000 + (i >> 2));
      sealFrame(page, at, fb);
      at += fb;
    }
    const w = new ByteWriter(16);
    renderJsonPage(w, new JsonRenderer(), page, seqs.length, { streamJson: `"s.1"`, firstSeq: 1, headSeq: 9, next: 7 + seqs.length }, 1 << 20);
    const json = JSON.parse(w.view().toString("utf8"));
    expect(json.events.map((e: any) => e.seq)).toEqual(seqs);
    expect(json.events.map((e: any) => e.ingest_ts)).toEqual(seqs.map((_, i) => 1764000000000 + (i >> 2)));
    expect(json.events[0]).toEqual({ seq: 7, stream: "s.1", type: 'q"t', ingest_ts: 1764000000000, payload: { a: [1, "é"] } });
    expect([json.next, json.head_seq, json.first_seq]).toEqual([7 + seqs.length, 9, 1]);
  });
});
