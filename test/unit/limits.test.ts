// The limits derived from the config (src/limits.ts): the bounds at the
// defaults, the relations between them for the defaults and at the ends of
// every key's range, and a config that breaks a relation refused at start
// with the key named.
import { describe, it, expect } from "vitest";
import fc from "fast-check";
import type { z } from "zod";
import { ConfigError, configSchema, loadConfig, type Config } from "../../src/config.js";
import { deriveLimits, REQUEST_META_BYTES_MAX, type LimitKeys, type Limits } from "../../src/limits.js";
import { frameBytesFor, sealFrame, writeFrameHeader, RECORD_HEADER_BYTES } from "../../src/log/record.js";
import { CAPACITY_BYTES_MAX, CAPACITY_BYTES_MIN, Ring } from "../../src/ring/ring.js";
import { requestBytes } from "../../src/shard/protocol.js";
import { eventBytesFor, EventFields, PAYLOAD_BINARY } from "../../src/wire/event-layout.js";
import { ByteWriter, EVENTS_MESSAGE_HEAD, EVENTS_MESSAGE_TAIL, JsonRenderer, renderEventsMessage } from "../../src/wire/event-codec.js";
import { encodeEvent } from "../../src/wire/client.js";

const MiB = 1024 * 1024;
const LIMIT_KEYS = [
  "ring_bytes",
  "event_bytes_max",
  "event_field_bytes_max",
  "request_bytes_max",
  "request_buffer_bytes_max",
  "replay_page_bytes_max",
  "replay_page_events_max",
  "replay_page_events_default",
  "redrive_letters_max",
  "consume_page_bytes_max",
  "consume_window_max",
  "consume_window_default",
  "consumer_buffer_bytes_max",
  "timeline_streams_max",
  "timeline_page_events_max",
] as const satisfies ReadonlyArray<keyof LimitKeys>;

/** Keys that must agree with others (a default and its maximum, a request and the budget of requests): moved together. */
const PARTNERS: Record<string, Array<keyof Config>> = {
  request_bytes_max: ["request_buffer_bytes_max"],
  request_buffer_bytes_max: ["request_bytes_max"],
  consume_window_default: ["consume_window_max"],
  consume_window_max: ["consume_window_default"],
  replay_page_events_default: ["replay_page_events_max"],
  replay_page_events_max: ["replay_page_events_default"],
};

/** A key's range as config.ts declares it. */
function range(key: keyof Config): { min: number; max: number } {
  const field = configSchema._def.schema.shape[key] as z.ZodDefault<z.ZodNumber>;
  const n = field._def.innerType;
  return { min: n.minValue!, max: n.maxValue! };
}

const defaults = () => loadConfig({}, {});
const flags = (c: Partial<Config>) => Object.fromEntries(Object.entries(c).map(([k, v]) => [k.replaceAll("_", "-"), String(v)]));
/** The config loadConfig accepts for these values, or the ConfigError it throws. */
function tryLoad(c: Partial<Config>): Config | ConfigError {
  try {
    return loadConfig(flags(c), {});
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
}

/** The largest event publish lets through, as the JSON path lays it out. */
function largestEventBodyBytes(c: LimitKeys): number {
  const f = new EventFields();
  f.typeAt = f.keyAt = f.producerIdAt = f.idemAt = f.payloadAt = 0;
  f.typeLen = f.keyLen = f.producerIdLen = f.idemLen = c.event_field_bytes_max;
  f.payloadLen = c.event_bytes_max;
  f.encoding = PAYLOAD_BINARY;
  return eventBytesFor(f);
}

/** The metadata of a timeline read of `streams` streams of the longest id at the largest seqs and indexes, as protocol.ts writes it. */
function timelineReadMetaBytes(streams: number): number {
  const meta = {
    streams: Array.from({ length: streams }, (_, i) => ({ id: "s".repeat(127) + String(i % 10), index: 1_000_000 + i, seq: Number.MAX_SAFE_INTEGER })),
    backward: false,
    limit: 100_000,
    nowMs: Number.MAX_SAFE_INTEGER,
  };
  return Buffer.byteLength(JSON.stringify(meta));
}

/** Room an answer needs beside its page: response header, consume head, EventBatch envelope with a 128-character stream id. */
const ANSWER_ENVELOPE_BYTES = 2048;

/** Every relation the server relies on, as a list of the ones that fail (empty: all hold). */
function brokenRelations(c: LimitKeys, l: Limits): string[] {
  const broken: string[] = [];
  const check = (ok: boolean, what: string) => ok || broken.push(what);
  check(frameBytesFor(l.eventBodyBytesMax) === l.frameBytesMax, "frameBytesMax is the record format's frame of the largest event body");
  check(requestBytes(REQUEST_META_BYTES_MAX, l.requestBodyBytesMax) <= l.ringMessageBytesMax, "the largest request fits a ring message");
  check(l.requestBodyBytesMax === c.request_bytes_max, "the front takes every body up to request_bytes_max");
  check(l.pageAnswerBytesMax + ANSWER_ENVELOPE_BYTES <= l.ringMessageBytesMax, "the largest page answer fits a ring message");
  check(frameBytesFor(largestEventBodyBytes(c)) <= l.frameBytesMax, "the largest event publish accepts frames within frameBytesMax");
  check(l.socketBytesMax > c.consumer_buffer_bytes_max, "uWS's socket bound lies past the hub's");
  check(l.timelineAnswerBytesMax + ANSWER_ENVELOPE_BYTES <= l.ringMessageBytesMax, "the largest timeline answer fits a ring message");
  check(
    requestBytes(timelineReadMetaBytes(c.timeline_streams_max), 0) <= l.timelineRequestBytesMax && l.timelineRequestBytesMax <= l.ringMessageBytesMax,
    "the largest timeline read request fits a ring message",
  );
  check(l.pageAnswerBytesMax >= l.frameBytesMax, "a page answer of one frame (an EventBatch page) is within pageAnswerBytesMax");
  check(
    l.pageBufferBytes >= Math.max(c.replay_page_bytes_max, c.consume_page_bytes_max) + l.frameBytesMax,
    "the page buffer holds a replay page and a consumer's page, each with the frame that may overrun it",
  );
  return broken;
}

describe("limits derived from the config", () => {
  it("at the defaults: the frame, ring and request bounds the server has always used", () => {
    const l = deriveLimits(defaults());
    expect(l.frameBytesMax).toBe(frameBytesFor(1 * MiB + 4 * 1024 + 256));
    expect(l.ringBytesMin).toBe(2 * (16 * MiB + 64 * 1024));
    expect(l.ringMessageBytesMax).toBe(24 * MiB - 8);
    expect(l.requestBodyBytesMax).toBe(16 * MiB);
    expect(l.socketBytesMax).toBe(1 * MiB + 2 * MiB + 8 * MiB);
    expect(brokenRelations(defaults(), l)).toEqual([]);
  });

  it("ringMessageBytesMax is the bound of the ring the front allocates: the largest message it takes, and one byte more throws", () => {
    for (const ringBytes of [range("ring_bytes").min, 48 * MiB + 4]) {
      const l = deriveLimits({ ...defaults(), ring_bytes: ringBytes });
      const ring = new Ring(Ring.allocate(ringBytes));
      expect(ring.messageBytesMax).toBe(l.ringMessageBytesMax);
      expect(() => ring.reserve(l.ringMessageBytesMax + 1)).toThrow(RangeError);
      expect(ring.reserve(l.ringMessageBytesMax)).toBeGreaterThan(0);
    }
  });

  it("ring_bytes' range is one the ring can allocate", () => {
    const { min, max } = range("ring_bytes");
    expect(min).toBeGreaterThanOrEqual(CAPACITY_BYTES_MIN);
    expect(max).toBeLessThanOrEqual(CAPACITY_BYTES_MAX);
  });

  it("every relation holds at both ends of every key's range, the ring grown to its minimum where the key needs it", () => {
    for (const key of LIMIT_KEYS) {
      const { min, max } = range(key);
      for (const value of [min, max]) {
        let c = tryLoad({ [key]: value });
        // A larger limit may need a larger ring (and a smaller default an equal partner): make the
        // config legal around the value, so that the relations are checked at it.
        if (c instanceof ConfigError) {
          const around: Partial<Config> = { [key]: value, ...Object.fromEntries((PARTNERS[key as string] ?? []).map((p) => [p, value])) };
          around.ring_bytes = Math.min(range("ring_bytes").max, deriveLimits({ ...defaults(), ...around }).ringBytesMin);
          c = tryLoad(around);
        }
        if (c instanceof ConfigError) {
          // Only a key whose end needs a ring over ring_bytes' own maximum may stay refused, and for that reason.
          expect(c.message, `${key} = ${value}`).toMatch(/ring_bytes: must be at least/);
          continue;
        }
        expect(brokenRelations(c, deriveLimits(c)), `${key} = ${value}`).toEqual([]);
      }
    }
  });

  it("every relation holds for any config the server accepts (random limits within their ranges)", () => {
    const arb = fc.record(Object.fromEntries(LIMIT_KEYS.map((k) => [k, fc.integer(range(k))])) as Record<(typeof LIMIT_KEYS)[number], fc.Arbitrary<number>>);
    fc.assert(
      fc.property(arb, fc.boolean(), (values, growRing) => {
        if (growRing) values.ring_bytes = Math.min(range("ring_bytes").max, Math.max(values.ring_bytes, deriveLimits(values).ringBytesMin));
        const c = tryLoad(values);
        if (c instanceof ConfigError) return;
        expect(brokenRelations(c, deriveLimits(c))).toEqual([]);
      }),
      { numRuns: 200 },
    );
  });
});

/**
 * The largest event publish accepts, rendered as JSON by the real renderer: every string at
 * event_field_bytes_max of control characters (each written \u00XX), a binary payload at
 * event_bytes_max (written as base64), the longest stream id.
 */
function renderedLargestEventBytes(eventBytes: number, fieldBytes: number): number {
  const field = "\u0001".repeat(fieldBytes);
  const body = encodeEvent({
    type: field,
    key: field,
    producer_id: field,
    idempotency_key: field,
    producer_seq: Number.MAX_SAFE_INTEGER,
    producer_ts: Number.MAX_SAFE_INTEGER,
    payload_bytes: new Uint8Array(eventBytes).fill(0xff),
  });
  const fb = frameBytesFor(body.byteLength);
  const frame = Buffer.alloc(fb);
  writeFrameHeader(frame, 0, fb, body.byteLength, Number.MAX_SAFE_INTEGER, Date.now());
  frame.set(body, RECORD_HEADER_BYTES);
  sealFrame(frame, 0, fb);
  const w = new ByteWriter();
  renderEventsMessage(w, new JsonRenderer(), frame, 1, JSON.stringify("s".repeat(128)), Number.MAX_SAFE_INTEGER);
  return w.length - EVENTS_MESSAGE_HEAD.length - EVENTS_MESSAGE_TAIL.length;
}

describe("the largest event rendered as JSON: how far a page passes its byte bound", () => {
  it("is within renderedEventBytesMax for the defaults, for the longest strings with the smallest payload and for a large payload with the shortest strings", () => {
    for (const [eventBytes, fieldBytes] of [
      [1024 * 1024, 1024],
      [1, range("event_field_bytes_max").max],
      [4 * 1024 * 1024, range("event_field_bytes_max").min],
    ]) {
      const l = deriveLimits({ ...defaults(), event_bytes_max: eventBytes, event_field_bytes_max: fieldBytes });
      expect(renderedLargestEventBytes(eventBytes, fieldBytes), `${eventBytes} / ${fieldBytes}`).toBeLessThanOrEqual(l.renderedEventBytesMax);
    }
  });
});

describe("a config that breaks a relation is refused at start, naming the key", () => {
  it("a ring one byte under two of the largest message: ring_bytes, with the size it needs; at that size it starts", () => {
    const need = deriveLimits({ ...defaults(), request_bytes_max: 32 * MiB, request_buffer_bytes_max: 256 * MiB }).ringBytesMin;
    expect(() => loadConfig(flags({ request_bytes_max: 32 * MiB, ring_bytes: need - 1 }), {})).toThrow(`ring_bytes: must be at least ${need} bytes`);
    expect(loadConfig(flags({ request_bytes_max: 32 * MiB, ring_bytes: need }), {}).ring_bytes).toBe(need);
  });

  it("a request budget under one request, a default window or replay page over its maximum: each names its key", () => {
    expect(() => loadConfig(flags({ request_buffer_bytes_max: 16 * MiB - 1 }), {})).toThrow("request_buffer_bytes_max: must be at least request_bytes_max");
    expect(() => loadConfig(flags({ consume_window_default: 11, consume_window_max: 10 }), {})).toThrow(
      "consume_window_default: must not exceed consume_window_max",
    );
    expect(() => loadConfig(flags({ replay_page_events_default: 11, replay_page_events_max: 10 }), {})).toThrow(
      "replay_page_events_default: must not exceed replay_page_events_max",
    );
    expect(loadConfig(flags({ request_buffer_bytes_max: 16 * MiB, consume_window_default: 10, consume_window_max: 10 }), {}).consume_window_default).toBe(10);
  });
});
