// The client's batch encoders against the schema's own readers: any event a
// producer may give comes back field for field through the generated
// FlatBuffers code (binary) or JSON.parse (JSON), and every record frame is
// what docs/wire.md says a publish carries (length set, 8-aligned, header
// zero, the Event verified by the server's bounds-checked reader).
import * as fc from "fast-check";
import * as flatbuffers from "flatbuffers";
import { crc32 } from "node:zlib";
import { describe, expect, it } from "vitest";
import { BinaryBatchEncoder, JsonBatchEncoder, type PublishEvent, prepareEvent } from "../../src/client/encode.js";
import { EventFields } from "../../src/wire/event-layout.js";
import { decodeRecords } from "../../src/wire/client.js";
import { PublishBatch } from "../../src/wire/generated/ticker/wire/publish-batch.js";

const text = fc.string({ unit: "binary", maxLength: 80 });
const scalar = fc.option(fc.maxSafeNat(), { nil: undefined });
const event: fc.Arbitrary<PublishEvent> = fc
  .record(
    {
      type: fc.string({ unit: "binary", minLength: 1, maxLength: 40 }),
      key: fc.option(text, { nil: undefined }),
      producer_id: fc.option(text, { nil: undefined }),
      producer_seq: scalar,
      producer_ts: scalar,
      payload: fc.oneof(
        fc.constant({}),
        fc.jsonValue().map((payload) => ({ payload })),
        fc.uint8Array({ maxLength: 300 }).map((payload_bytes) => ({ payload_bytes })),
        fc.json().map((payload_json) => ({ payload_json })),
      ),
    },
    { requiredKeys: ["type", "payload"] },
  )
  .map(({ payload, ...rest }) => {
    const e = { ...rest, ...payload } as PublishEvent;
    for (const k of Object.keys(e) as Array<keyof PublishEvent>) if (e[k] === undefined) delete e[k];
    return e;
  });

/** What replay shows for an event as given (JSON payloads as their parsed value). */
function expected(e: PublishEvent, key: string | undefined): Record<string, unknown> {
  const { payload_json, payload_bytes, payload, ...fields } = e;
  const out: Record<string, unknown> = { ...fields };
  if (key !== undefined) out.idempotency_key = key;
  if (payload_bytes !== undefined) out.payload_bytes = Buffer.from(payload_bytes);
  if (payload_json !== undefined) out.payload = JSON.parse(payload_json.toString());
  if (payload !== undefined) out.payload = JSON.parse(JSON.stringify(payload));
  return out;
}

describe("client batch encoders", () => {
  it("binary: every field survives, frames are well formed and verify", () => {
    const enc = new BinaryBatchEncoder();
    fc.assert(
      fc.property(fc.array(fc.tuple(event, fc.option(text, { nil: undefined })), { minLength: 1, maxLength: 20 }), (items) => {
        for (const [i, [e, key]] of items.entries()) enc.add(prepareEvent(e, i), key);
        const body = enc.finish();
        expect(enc.count).toBe(0);
        const batch = PublishBatch.getRootAsPublishBatch(new flatbuffers.ByteBuffer(body));
        const records = batch.recordsArray();
        if (records === null) throw new Error("no records");
        expect(records.byteOffset % 8).toBe(0);
        const buf = Buffer.from(records.buffer, records.byteOffset, records.byteLength);
        let at = 0;
        for (let i = 0; i < items.length; i++) {
          const frameBytes = buf.readUInt32LE(at);
          expect(frameBytes % 8).toBe(0);
          expect(buf.subarray(at + 4, at + 24).every((b) => b === 0)).toBe(true);
          new EventFields().read(buf, at + 24, at + frameBytes); // throws on anything out of bounds
          at += frameBytes;
        }
        expect(at).toBe(buf.length);
        // decodeRecords checks CRCs: stamp them as the server would, then compare fields.
        for (let p = 0; p < buf.length; p += buf.readUInt32LE(p)) buf.writeUInt32LE(crc32(buf.subarray(p + 8, p + buf.readUInt32LE(p))), p + 4);
        const got = decodeRecords(buf).map(({ seq, ingest_ts, ...rest }) => {
          if (rest.payload_bytes) rest.payload_bytes = Buffer.from(rest.payload_bytes);
          return rest;
        });
        expect(got).toEqual(items.map(([e, key]) => expected(e, key)));
      }),
      { numRuns: 300 },
    );
  });

  it("binary: runs of events of one shape (type and payload only, as most batches are) survive the template path", () => {
    const enc = new BinaryBatchEncoder();
    const plain = fc.record({
      type: fc.constantFrom("tick", "trade", "é"),
      payload: fc.oneof(
        fc.jsonValue().map((payload) => ({ payload })),
        fc.uint8Array({ maxLength: 64 }).map((payload_bytes) => ({ payload_bytes })),
        fc.json().map((payload_json) => ({ payload_json })),
      ),
    });
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof({ weight: 5, arbitrary: plain.map(({ type, payload }) => ({ type, ...payload }) as PublishEvent) }, { weight: 1, arbitrary: event }),
          { minLength: 1, maxLength: 30 },
        ),
        (items) => {
          for (const [i, e] of items.entries()) enc.add(prepareEvent(e, i), undefined);
          const body = enc.finish();
          const records = PublishBatch.getRootAsPublishBatch(new flatbuffers.ByteBuffer(body)).recordsArray();
          if (records === null) throw new Error("no records");
          const buf = Buffer.from(records);
          for (let p = 0; p < buf.length; p += buf.readUInt32LE(p)) {
            new EventFields().read(buf, p + 24, p + buf.readUInt32LE(p));
            buf.writeUInt32LE(crc32(buf.subarray(p + 8, p + buf.readUInt32LE(p))), p + 4);
          }
          const got = decodeRecords(buf).map(({ seq, ingest_ts, ...rest }) => {
            if (rest.payload_bytes) rest.payload_bytes = Buffer.from(rest.payload_bytes);
            return rest;
          });
          expect(got).toEqual(items.map((e) => expected(e, undefined)));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("JSON: the body parses to the events as given", () => {
    const enc = new JsonBatchEncoder();
    fc.assert(
      fc.property(fc.array(fc.tuple(event, fc.option(text, { nil: undefined })), { minLength: 1, maxLength: 20 }), (items) => {
        for (const [i, [e, key]] of items.entries()) enc.add(prepareEvent(e, i), key);
        const body = JSON.parse(enc.finish().toString("utf8"));
        const got = body.events.map((e: Record<string, unknown>) => {
          const { payload_base64, ...rest } = e;
          return payload_base64 === undefined ? rest : { ...rest, payload_bytes: Buffer.from(payload_base64 as string, "base64") };
        });
        expect(got).toEqual(items.map(([e, key]) => expected(e, key)));
      }),
      { numRuns: 300 },
    );
  });
});
