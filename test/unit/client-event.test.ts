// TickerEvent, the client's view over record frames: every getter agrees
// with the schema's generated reader for any event the encoder writes, and
// over damaged bytes the walk ends (each frame moves it forward) with an
// error rather than a hang or a read outside the page.
import * as fc from "fast-check";
import { crc32 } from "node:zlib";
import { describe, expect, it } from "vitest";
import { BinaryBatchEncoder, prepareEvent } from "../../src/client/encode.js";
import { eventsOf } from "../../src/client/event.js";
import { TickerError } from "../../src/client/errors.js";
import { decodeRecords } from "../../src/wire/client.js";
import { VerifyError } from "../../src/wire/verify.js";

const text = fc.string({ unit: "binary", maxLength: 40 });
const events = fc.array(
  fc.record(
    {
      type: fc.string({ minLength: 1, maxLength: 20 }),
      key: text,
      producer_id: text,
      producer_seq: fc.maxSafeNat(),
      idempotency_key: text,
      payload: fc.oneof(
        fc.jsonValue().map((payload) => ({ payload })),
        fc.uint8Array({ maxLength: 200 }).map((payload_bytes) => ({ payload_bytes })),
        fc.constant({}),
      ),
    },
    { requiredKeys: ["type", "payload"] },
  ),
  { minLength: 1, maxLength: 12 },
);

/** Frames as a page carries them: seq and ingest_ts stamped (CRCs left 0: the view does not check them). */
function page(list: fc.RecordValue<Record<string, unknown>>[]): Buffer {
  const enc = new BinaryBatchEncoder();
  for (const { payload, idempotency_key, ...rest } of list as Array<Record<string, unknown>>)
    enc.add(prepareEvent({ ...(rest as { type: string }), ...(payload as object) }, 0), idempotency_key as string | undefined);
  const records = Buffer.from(enc.finish().subarray(24));
  for (let at = 0, seq = 1; at < records.length; at += records.readUInt32LE(at), seq++) {
    records.writeBigUInt64LE(BigInt(seq), at + 8);
    records.writeBigUInt64LE(BigInt(1_764_000_000_000 + seq), at + 16);
  }
  return records;
}

describe("TickerEvent", () => {
  it("reads what the schema's reader reads, payload first or fields first", () => {
    fc.assert(
      fc.property(events, fc.boolean(), (list, payloadFirst) => {
        const records = page(list);
        const views = eventsOf(records, "s");
        // decodeRecords checks CRCs: give it a copy with them stamped.
        const copy = Buffer.from(records);
        for (let at = 0; at < copy.length; at += copy.readUInt32LE(at)) copy.writeUInt32LE(crc32(copy.subarray(at + 8, at + copy.readUInt32LE(at))), at + 4);
        const want = decodeRecords(copy);
        expect(views).toHaveLength(want.length);
        views.forEach((v, i) => {
          const w = want[i];
          const bytes = payloadFirst ? v.payload_bytes : null;
          expect({
            seq: v.seq,
            ingest_ts: v.ingest_ts,
            type: v.type,
            key: v.key,
            producer_id: v.producer_id,
            producer_seq: v.producer_seq,
            idempotency_key: v.idempotency_key,
          }).toEqual({
            seq: w.seq,
            ingest_ts: w.ingest_ts,
            type: w.type,
            key: w.key,
            producer_id: w.producer_id,
            producer_seq: w.producer_seq,
            idempotency_key: w.idempotency_key,
          });
          expect(v.payload).toEqual(w.payload);
          if (w.payload_bytes) expect(Buffer.from(v.payload_bytes)).toEqual(Buffer.from(w.payload_bytes));
          if (bytes && bytes.length > 0) expect(bytes.buffer).toBe(records.buffer);
        });
      }),
      { numRuns: 200 },
    );
  });

  it("damaged pages end in an error, never a hang or a read past the page", () => {
    fc.assert(
      fc.property(events, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }), fc.nat(), (list, flips, cut) => {
        const good = page(list);
        const bad = Buffer.from(good.subarray(0, good.length - (cut % 16)));
        for (const [at, v] of flips) bad[at % bad.length] = v;
        try {
          for (const e of eventsOf(bad, "s")) {
            void e.seq;
            const p = e.payload_bytes;
            if (p.length > 0) {
              expect(p.buffer).toBe(bad.buffer);
              expect(p.byteOffset >= bad.byteOffset && p.byteOffset + p.length <= bad.byteOffset + bad.length).toBe(true);
            }
            void e.type;
            void e.key;
            void e.idempotency_key;
          }
        } catch (err) {
          // The walk's own check, the Event reader's bounds check, or a UTF-8 JSON payload that no longer parses.
          expect(err instanceof TickerError || err instanceof VerifyError || err instanceof SyntaxError).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });
});
