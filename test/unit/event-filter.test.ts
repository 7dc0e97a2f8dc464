// The filter rules of replay and consume (src/wire/event-filter.ts) against a
// plain model, on generated input: any query text is either a filter or a
// 400 invalid_parameter (never another error, and within the bounds), and a
// filter keeps exactly the frames the model keeps, in order, at most keepMax.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { ApiError } from "../../src/errors.js";
import { frameBytesFor, writeFrameHeader } from "../../src/log/record.js";
import { encodeEvent } from "../../src/wire/client.js";
import { parseFilter, parseMaxRate } from "../../src/wire/event-filter.js";

const LIMITS = { filter_values_max: 8, filter_bytes_max: 64 };

/** Characters that make the edge cases: separators, the prefix star, a multi-byte one. */
const text = fc.string({ unit: fc.constantFrom("a", "b", ",", "*", "é", "-"), maxLength: 40 });
const name = fc.string({ unit: fc.constantFrom("a", "b", "é", "-", "*"), minLength: 1, maxLength: 6 });

/** The rule as the docs state it, on strings. */
function modelMatches(list: string[] | null, value: string | undefined): boolean {
  if (list === null) return true;
  if (value === undefined) return false;
  return list.some((v) => (v.endsWith("*") ? value.startsWith(v.slice(0, -1)) : value === v));
}

function modelValid(raw: string | null): boolean {
  if (raw === null) return true;
  return raw.split(",").every((v) => v !== "" && v !== "*" && (v.indexOf("*") === -1 || v.indexOf("*") === v.length - 1));
}

/** A page of frames (seqs from 1) holding these events. */
function page(events: Array<{ type: string; key?: string }>): Buffer {
  const buf = Buffer.alloc(events.length * 256);
  let at = 0;
  events.forEach((e, i) => {
    const body = Buffer.from(encodeEvent({ type: e.type, key: e.key }));
    const fb = frameBytesFor(body.length);
    body.copy(buf, at + 24);
    writeFrameHeader(buf, at, fb, body.length, i + 1, 0);
    at += fb;
  });
  return buf;
}

describe("event filters", () => {
  it("any types / keys text is a filter or a 400 invalid_parameter, by the documented rules and bounds", () => {
    fc.assert(
      fc.property(fc.option(text), fc.option(text), (types, keys) => {
        const q = new URLSearchParams();
        if (types !== null) q.set("types", types);
        if (keys !== null) q.set("keys", keys);
        const bytes = Buffer.byteLength(types ?? "") + Buffer.byteLength(keys ?? "");
        const values = (types === null ? 0 : types.split(",").length) + (keys === null ? 0 : keys.split(",").length);
        const ok = modelValid(types) && modelValid(keys) && bytes <= LIMITS.filter_bytes_max && values <= LIMITS.filter_values_max;
        let got: boolean;
        try {
          parseFilter(q, LIMITS);
          got = true;
        } catch (err) {
          expect(err).toBeInstanceOf(ApiError);
          expect([(err as ApiError).status, (err as ApiError).code]).toEqual([400, "invalid_parameter"]);
          got = false;
        }
        expect(got).toBe(ok);
      }),
      { numRuns: 2000 },
    );
  });

  it("a filter keeps exactly the frames the model keeps, in seq order, at most keepMax, and says where it stopped", () => {
    const list = fc.option(fc.array(name, { minLength: 1, maxLength: 3 }).filter((l) => modelValid(l.join(","))));
    const event = fc.record({ type: name, key: fc.option(name, { nil: undefined }) }, { requiredKeys: ["type"] });
    fc.assert(
      fc.property(list, list, fc.array(event, { maxLength: 30 }), fc.integer({ min: 0, max: 31 }), (types, keys, events, keepMax) => {
        const q = new URLSearchParams();
        if (types !== null) q.set("types", types.join(","));
        if (keys !== null) q.set("keys", keys.join(","));
        const filter = parseFilter(q, { filter_values_max: 100, filter_bytes_max: 10_000 });
        if (filter === null) {
          expect(types === null && keys === null).toBe(true);
          return;
        }
        const want = events.flatMap((e, i) => (modelMatches(types, e.type) && modelMatches(keys, e.key) ? [i + 1] : []));
        const frames = page(events);
        const kept = filter.compact(frames, events.length, keepMax);
        const seqs: number[] = [];
        for (let at = 0, i = 0; i < kept.count; i++, at += frames.readUInt32LE(at)) seqs.push(Number(frames.readBigUInt64LE(at + 8)));
        expect(seqs).toEqual(want.slice(0, keepMax));
        expect(kept.stopSeq).toBe(want.length > keepMax ? want[keepMax] : -1);
      }),
      { numRuns: 1000 },
    );
  });

  it("max_rate is an integer from 1 to 10,000,000 events/s, absent by default", () => {
    expect(parseMaxRate(new URLSearchParams(""))).toBeNull();
    expect(parseMaxRate(new URLSearchParams("max_rate=1"))).toBe(1);
    expect(parseMaxRate(new URLSearchParams("max_rate=10000000"))).toBe(10_000_000);
    for (const bad of ["0", "10000001", "-5", "1.5", "1e3", ""]) expect(() => parseMaxRate(new URLSearchParams(`max_rate=${bad}`))).toThrow(ApiError);
  });
});
