// Publishing, end to end against real server processes: JSON and FlatBuffers
// batches round-trip through replay, duplicates are squeezed out, seqs stay
// consecutive under concurrent publishers, fsync streams lose nothing; and
// publish's input rules and limits: a rejected batch gets the contract's JSON
// error with the status that fits, appends nothing, and the server keeps serving.
import { describe, it, expect, afterAll, beforeAll } from "vitest";
import { randomBytes } from "node:crypto";
import { api, removeDir, replayAll, startServer, type TestServer } from "../helpers/server.js";
import { decodeEventBatch, decodeRecords, encodePublishBatch, type OutgoingEvent } from "../../src/wire/client.js";
import {
  EVENT_BYTES_MAX,
  FB_CT,
  FIELD_BYTES_MAX,
  JSON_CT,
  PUBLISH_EVENTS_MAX,
  REQUEST_BYTES_MAX,
  expectError,
  expectOk,
  itStaysHealthy,
  rawRequest,
  smallLimitsServer,
} from "../helpers/bad-input.js";

const FB = "application/x-flatbuffers";

async function replayAllBinary(url: string, stream: string, from = 1) {
  const events = [];
  let next = from;
  for (;;) {
    const r = await api(`${url}/v1/streams/${stream}/events?from=${next}&limit=10000`, "GET", undefined, { accept: FB });
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe(FB);
    const page = decodeEventBatch(r.raw);
    if (page.count === 0) return events;
    const decoded = decodeRecords(page.records);
    expect(decoded.length).toBe(page.count);
    events.push(...decoded);
    next = page.next;
  }
}

describe("publish and replay", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer();
  });
  afterAll(async () => {
    expect(await s.stop()).toBe(0);
    removeDir(s.dataDir);
  });

  it("100,000 JSON events round-trip in order with payloads intact, as JSON and as binary", async () => {
    const total = 100_000;
    const batch = 1000;
    for (let b = 0; b < total / batch; b++) {
      const events = Array.from({ length: batch }, (_, i) => {
        const n = b * batch + i;
        return { type: "tick", key: `k${n % 7}`, producer_id: "p", producer_seq: n, payload: { n, s: `é"\\\n${n}`, a: [n, null, true] } };
      });
      const r = await api(`${s.url}/v1/streams/rt-json/events`, "POST", { events });
      expect(r.status).toBe(200);
      expect(r.json).toEqual({ stream: "rt-json", first_seq: b * batch + 1, last_seq: (b + 1) * batch, count: batch, duplicates: [] });
    }
    const json = await replayAll(s.url, "rt-json");
    expect(json.length).toBe(total);
    // One comparison per property over the whole stream (per-event expects are slow).
    expect(json.map((e) => e.seq)).toEqual(json.map((_, n) => n + 1));
    expect(json.every((e) => e.stream === "rt-json")).toBe(true);
    expect(json.map((e) => e.payload)).toEqual(json.map((_, n) => ({ n, s: `é"\\\n${n}`, a: [n, null, true] })));
    expect(json.map((e) => e.producer_seq)).toEqual(json.map((_, n) => n));
    expect(json.map((e) => e.key)).toEqual(json.map((_, n) => `k${n % 7}`));
    expect(json.every((e, n) => n === 0 || e.ingest_ts >= json[n - 1].ingest_ts)).toBe(true);
    const bin = await replayAllBinary(s.url, "rt-json");
    expect(bin.map((e) => [e.seq, e.ingest_ts, e.payload])).toEqual(json.map((e) => [e.seq, e.ingest_ts, e.payload]));
  });

  it("100,000 FlatBuffers events round-trip with binary payloads byte for byte, as binary and as JSON", async () => {
    const total = 100_000;
    const batch = 1000;
    const payloads: Buffer[] = [];
    for (let b = 0; b < total / batch; b++) {
      const events: OutgoingEvent[] = [];
      for (let i = 0; i < batch; i++) {
        const p = randomBytes(1 + ((b * batch + i) % 200));
        payloads.push(p);
        events.push({ type: "bin", idempotency_key: `id-${b * batch + i}`, producer_ts: 1_700_000_000_000 + i, payload_bytes: p });
      }
      const r = await api(`${s.url}/v1/streams/rt-bin/events`, "POST", encodePublishBatch(events), { "content-type": FB });
      expect(r.status).toBe(200);
      expect(r.json.first_seq).toBe(b * batch + 1);
      expect(r.json.count).toBe(batch);
    }
    const bin = await replayAllBinary(s.url, "rt-bin");
    expect(bin.length).toBe(total);
    expect(bin.map((e) => e.seq)).toEqual(bin.map((_, n) => n + 1));
    expect(bin.map((e) => e.idempotency_key)).toEqual(bin.map((_, n) => `id-${n}`));
    expect(bin.every((e, n) => Buffer.from(e.payload_bytes!).equals(payloads[n]))).toBe(true);
    const json = await replayAll(s.url, "rt-bin");
    expect(json.map((e) => e.payload_base64)).toEqual(payloads.map((p) => p.toString("base64")));
    expect(json.map((e) => e.producer_ts)).toEqual(json.map((_, n) => 1_700_000_000_000 + (n % batch)));
  });

  it("binary duplicates are squeezed out of a batch and the rest keep consecutive seqs", async () => {
    const ev = (k: string, n: number): OutgoingEvent => ({ type: "t", idempotency_key: k, payload_bytes: Buffer.from([n]) });
    const first = await api(`${s.url}/v1/streams/bin-dup/events`, "POST", encodePublishBatch([ev("a", 1), ev("b", 2)]), { "content-type": FB });
    expect(first.json).toMatchObject({ first_seq: 1, last_seq: 2, count: 2 });
    const second = await api(`${s.url}/v1/streams/bin-dup/events`, "POST", encodePublishBatch([ev("a", 3), ev("c", 4), ev("c", 5), ev("d", 6), ev("b", 7)]), {
      "content-type": FB,
    });
    expect(second.json).toEqual({
      stream: "bin-dup",
      first_seq: 3,
      last_seq: 4,
      count: 2,
      duplicates: [
        { index: 0, seq: 1 },
        { index: 2, seq: 3 },
        { index: 4, seq: 2 },
      ],
    });
    const r = await api(`${s.url}/v1/streams/bin-dup/events?from=1`, "GET", undefined, { accept: FB });
    const events = decodeRecords(decodeEventBatch(r.raw).records);
    expect(events.map((e) => [e.seq, e.idempotency_key, e.payload_bytes![0]])).toEqual([
      [1, "a", 1],
      [2, "b", 2],
      [3, "c", 4],
      [4, "d", 6],
    ]);
  });

  it("events of one request get consecutive seqs even with concurrent publishers", async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, c) =>
        api(`${s.url}/v1/streams/concurrent/events`, "POST", { events: Array.from({ length: 50 }, (_, i) => ({ type: "t", payload: { c, i } })) }),
      ),
    );
    const ranges = results.map((r) => [r.json.first_seq, r.json.last_seq]).sort((a, b) => a[0] - b[0]);
    ranges.forEach(([f, l], i) => {
      expect(f).toBe(i * 50 + 1);
      expect(l).toBe(f + 49);
    });
    const events = await replayAll(s.url, "concurrent");
    for (const r of results) {
      const c = events[r.json.first_seq - 1].payload.c;
      for (let i = 0; i < 50; i++) expect(events[r.json.first_seq - 1 + i].payload).toEqual({ c, i });
    }
  });

  it("replays by time, by range, from latest, and reports stream info", async () => {
    const t0 = Date.now();
    await api(`${s.url}/v1/streams/timed/events`, "POST", { events: [{ type: "a" }, { type: "b" }] });
    await new Promise((r) => setTimeout(r, 30));
    const t1 = Date.now();
    await api(`${s.url}/v1/streams/timed/events`, "POST", { events: [{ type: "c" }, { type: "d" }] });
    const byTime = await api(`${s.url}/v1/streams/timed/events?from_time=${t1}`, "GET");
    expect(byTime.json.events.map((e: any) => e.type)).toEqual(["c", "d"]);
    const early = await api(`${s.url}/v1/streams/timed/events?from_time=${t0 - 1000}`, "GET");
    expect(early.json.events.length).toBe(4);
    const range = await api(`${s.url}/v1/streams/timed/events?from=2&to=3`, "GET");
    expect(range.json.events.map((e: any) => e.seq)).toEqual([2, 3]);
    expect(range.json.next).toBe(4);
    const latest = await api(`${s.url}/v1/streams/timed/events?from=latest`, "GET");
    expect(latest.json).toEqual({ events: [], next: 5, head_seq: 4, first_seq: 1 });
    const info = await api(`${s.url}/v1/streams/timed`, "GET");
    expect(info.json).toMatchObject({ id: "timed", head_seq: 4, first_seq: 1, events: 4, retention_ms: 604800000, durability: "process" });
    expect(info.json.bytes).toBeGreaterThan(0);
    const list = await api(`${s.url}/v1/streams`, "GET");
    expect(list.json.streams.map((x: any) => x.id)).toEqual(expect.arrayContaining(["timed", "rt-json", "rt-bin", "concurrent"]));
  });

  it("a durability fsync stream acknowledges only synced events and loses none", async () => {
    expect((await api(`${s.url}/v1/streams/durable`, "PUT", { durability: "fsync" })).status).toBe(201);
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, c) =>
        api(`${s.url}/v1/streams/durable/events`, "POST", {
          events: [
            { type: "t", payload: c },
            { type: "t", payload: c },
          ],
        }),
      ),
    );
    for (const r of results) expect(r.status).toBe(200);
    expect((await replayAll(s.url, "durable")).length).toBe(60);
  });
});

describe("publish's bad input and limits, on one server with small limits", () => {
  const { server, streamUrl, eventsUrl, publish, publishGood, seeded, expectUnchangedThenServes, expectAbsentThenServes } = smallLimitsServer();

  describe("publish: body shape", () => {
    it("rejects a body that is not JSON with 400 invalid_json and appends nothing", async () => {
      const id = await seeded("pub-json");
      expectError(await publish(id, '{"events": [ {"type": "x"} '), 400, "invalid_json");
      expectError(await publish(id, ""), 400, "invalid_json");
      await expectUnchangedThenServes(id, 2);
    });

    it("rejects JSON of the wrong shape with 400 invalid_body", async () => {
      const id = await seeded("pub-shape");
      for (const body of ["null", "[]", '"events"', "42", "{}", '{"events": {}}', '{"events": "x"}', '{"event": []}']) {
        expectError(await publish(id, body), 400, "invalid_body");
      }
      await expectUnchangedThenServes(id, 2);
    });

    it("rejects an empty events array with 400 invalid_body", async () => {
      const id = await seeded("pub-empty");
      expectError(await publish(id, { events: [] }), 400, "invalid_body");
      await expectUnchangedThenServes(id, 2);
    });

    it("rejects a body of the wrong shape to an unknown stream without creating it", async () => {
      expectError(await publish("pub-shape-new", { events: [] }), 400, "invalid_body");
      expectError(await publish("pub-shape-new", "{"), 400, "invalid_json");
      await expectAbsentThenServes("pub-shape-new");
    });

    it("takes exactly publish_events_max events and rejects one more with 413 batch_too_large", async () => {
      const id = await seeded("pub-count");
      const over = Array.from({ length: PUBLISH_EVENTS_MAX + 1 }, () => ({ type: "good" }));
      const err = expectError(await publish(id, { events: over }), 413, "batch_too_large");
      expect(err.publish_events_max).toBe(PUBLISH_EVENTS_MAX);
      await expectUnchangedThenServes(id, 2);
      await publishGood(id, PUBLISH_EVENTS_MAX, 4);
    });

    it("rejects an unsupported content type with 415 and appends nothing", async () => {
      const id = await seeded("pub-ct");
      const body = JSON.stringify({ events: [{ type: "x" }] });
      expectError(await publish(id, body, { "content-type": "text/plain" }), 415, "unsupported_media_type");
      expectError(await publish(id, body, { "content-type": "application/xml" }), 415, "unsupported_media_type");
      expectError(await publish("pub-ct-new", body, { "content-type": "text/plain" }), 415, "unsupported_media_type");
      await expectUnchangedThenServes(id, 2);
      await expectAbsentThenServes("pub-ct-new");
    });
  });

  describe("publish: one bad event rejects the whole batch", () => {
    const BAD_EVENTS: Array<[string, unknown]> = [
      ["a missing type", { payload: 1 }],
      ["an empty type", { type: "" }],
      ["a non-string type", { type: 7 }],
      ["a non-string key", { type: "t", key: 5 }],
      ["a non-string producer_id", { type: "t", producer_id: ["a"] }],
      ["a non-string idempotency_key", { type: "t", idempotency_key: 1 }],
      ["a negative producer_seq", { type: "t", producer_seq: -1 }],
      ["a fractional producer_seq", { type: "t", producer_seq: 1.5 }],
      ["a string producer_ts", { type: "t", producer_ts: "now" }],
      ["an unknown field", { type: "t", colour: "red" }],
      ["a seq field", { type: "t", seq: 3 }],
      ["an ingest_ts field", { type: "t", ingest_ts: 1 }],
      ["a stream field", { type: "t", stream: "other" }],
      ["both payload and payload_base64", { type: "t", payload: 1, payload_base64: "AAAA" }],
      ["bad base64 characters", { type: "t", payload_base64: "@@@@" }],
      ["base64 of a wrong length", { type: "t", payload_base64: "abc" }],
      ["a non-string payload_base64", { type: "t", payload_base64: 12 }],
      ["an event that is not an object", "just a string"],
      ["an event that is an array", [{ type: "t" }]],
      ["an event that is null", null],
    ];

    for (const [what, bad] of BAD_EVENTS) {
      it(`rejects a batch with ${what} in the middle with 400 invalid_event and its index`, async () => {
        const id = await seeded(`pub-bad-${BAD_EVENTS.findIndex(([w]) => w === what)}`);
        const events = [{ type: "good" }, { type: "good", idempotency_key: `k-${what}` }, bad, { type: "good" }];
        const err = expectError(await publish(id, { events }), 400, "invalid_event");
        expect(err.index).toBe(2);
        await expectUnchangedThenServes(id, 2);
        // The rejected batch did not enter the dedup window either.
        const again = expectOk(await publish(id, { events: [{ type: "good", idempotency_key: `k-${what}` }] }));
        expect(again).toMatchObject({ first_seq: 4, count: 1, duplicates: [] });
      });
    }

    it("rejects a batch with a bad event to an unknown stream without creating the stream", async () => {
      const id = "pub-bad-new-stream";
      const err = expectError(await publish(id, { events: [{ type: "good" }, { type: "t", seq: 1 }] }), 400, "invalid_event");
      expect(err.index).toBe(1);
      await expectAbsentThenServes(id);
    });
  });

  describe("publish: size limits", () => {
    it("takes a JSON payload of exactly event_bytes_max bytes and rejects one byte more with 413 event_too_large", async () => {
      const id = await seeded("size-json");
      // A JSON string payload is stored as its JSON text: the quotes count.
      const over = { type: "good", payload: "x".repeat(EVENT_BYTES_MAX - 1) };
      const err = expectError(await publish(id, { events: [{ type: "good" }, over] }), 413, "event_too_large");
      expect(err.index).toBe(1);
      await expectUnchangedThenServes(id, 2);
      const atMax = { type: "good", payload: "x".repeat(EVENT_BYTES_MAX - 2) };
      expect(expectOk(await publish(id, { events: [atMax] })).first_seq).toBe(4);
      const page = expectOk(await api(eventsUrl(id, "?from=4"), "GET"));
      expect(page.events[0].payload).toBe(atMax.payload);
    });

    it("takes a base64 payload of exactly event_bytes_max bytes and rejects one byte more with 413 event_too_large", async () => {
      const id = await seeded("size-b64");
      const over = { type: "good", payload_base64: Buffer.alloc(EVENT_BYTES_MAX + 1, 7).toString("base64") };
      const err = expectError(await publish(id, { events: [over] }), 413, "event_too_large");
      expect(err.index).toBe(0);
      await expectUnchangedThenServes(id, 2);
      const atMax = Buffer.alloc(EVENT_BYTES_MAX, 7).toString("base64");
      expect(expectOk(await publish(id, { events: [{ type: "good", payload_base64: atMax }] })).first_seq).toBe(4);
    });

    for (const field of ["type", "key", "producer_id", "idempotency_key"] as const) {
      it(`takes a ${field} of exactly event_field_bytes_max UTF-8 bytes and rejects one byte more with 400 invalid_event`, async () => {
        const id = await seeded(`size-field-${field.replaceAll("_", "-")}`);
        const withField = (v: string) => (field === "type" ? { type: v } : { type: "good", [field]: v });
        // "é" is two bytes: the limit is in bytes, not characters.
        const overBytes = `${"é".repeat(FIELD_BYTES_MAX / 2)}x`;
        const err = expectError(await publish(id, { events: [{ type: "good" }, withField(overBytes)] }), 400, "invalid_event");
        expect(err.index).toBe(1);
        await expectUnchangedThenServes(id, 2);
        expect(expectOk(await publish(id, { events: [withField("é".repeat(FIELD_BYTES_MAX / 2))] })).first_seq).toBe(4);
        expect(expectOk(await publish(id, { events: [withField("y".repeat(FIELD_BYTES_MAX))] })).first_seq).toBe(5);
      });
    }

    /** A valid publish body padded with trailing spaces to exactly `bytes`. */
    const paddedBody = (bytes: number) => {
      const json = JSON.stringify({ events: [{ type: "good" }] });
      return Buffer.from(json + " ".repeat(bytes - json.length));
    };

    it("takes a body of exactly request_bytes_max and rejects one byte more (content-length) with 413 request_too_large", async () => {
      const id = await seeded("size-req");
      const over = paddedBody(REQUEST_BYTES_MAX + 1);
      const r = await rawRequest(eventsUrl(id), "POST", { ...JSON_CT, "content-length": over.length }, [over]);
      const err = expectError(r, 413, "request_too_large");
      expect(err.request_bytes_max).toBe(REQUEST_BYTES_MAX);
      await expectUnchangedThenServes(id, 2);
      const atMax = paddedBody(REQUEST_BYTES_MAX);
      const ok = await rawRequest(eventsUrl(id), "POST", { ...JSON_CT, "content-length": atMax.length }, [atMax]);
      expect(expectOk(ok).first_seq).toBe(4);
    });

    it("rejects a chunked body that grows past request_bytes_max with 413 request_too_large", async () => {
      const id = await seeded("size-chunked");
      const body = paddedBody(REQUEST_BYTES_MAX + 4096);
      const chunks: Buffer[] = [];
      for (let at = 0; at < body.length; at += 8192) chunks.push(body.subarray(at, at + 8192));
      const r = await rawRequest(eventsUrl(id), "POST", { ...JSON_CT, "transfer-encoding": "chunked" }, chunks);
      expectError(r, 413, "request_too_large");
      await expectUnchangedThenServes(id, 2);
      // A chunked body under the limit is fine.
      const small = paddedBody(20_000);
      const ok = await rawRequest(eventsUrl(id), "POST", { ...JSON_CT, "transfer-encoding": "chunked" }, [small.subarray(0, 10), small.subarray(10)]);
      expect(expectOk(ok).first_seq).toBe(4);
    });

    it("rejects an oversized body to an unknown stream without creating it", async () => {
      const over = paddedBody(REQUEST_BYTES_MAX + 1);
      const r = await rawRequest(eventsUrl("size-req-new"), "POST", { ...JSON_CT, "content-length": over.length }, [over]);
      expectError(r, 413, "request_too_large");
      await expectAbsentThenServes("size-req-new");
    });

    it("applies a stream's lower max_event_bytes to publishes", async () => {
      const id = "size-stream-limit";
      expectOk(await api(streamUrl(id), "PUT", { max_event_bytes: 100 }), 201);
      await publishGood(id, 2, 1);
      const err = expectError(await publish(id, { events: [{ type: "good", payload: "x".repeat(99) }] }), 413, "event_too_large");
      expect(err.max_event_bytes).toBe(100);
      await expectUnchangedThenServes(id, 2);
      expect(expectOk(await publish(id, { events: [{ type: "good", payload: "x".repeat(98) }] })).first_seq).toBe(4);
    });
  });

  describe("publish: binary (FlatBuffers)", () => {
    it("accepts a valid binary batch and serves it back", async () => {
      const id = await seeded("bin-ok");
      const batch = encodePublishBatch([
        { type: "good", key: "k", payload: { a: 1 } },
        { type: "good", payload_bytes: new Uint8Array([1, 2, 3]) },
      ]);
      expect(expectOk(await publish(id, batch, FB_CT))).toMatchObject({ first_seq: 3, last_seq: 4, count: 2 });
      const page = expectOk(await api(eventsUrl(id, "?from=3"), "GET"));
      expect(page.events).toMatchObject([
        { seq: 3, type: "good", key: "k", payload: { a: 1 } },
        { seq: 4, type: "good", payload_base64: "AQID" },
      ]);
    });

    const GARBAGE: Array<[string, Uint8Array]> = [
      ["a few bytes", new Uint8Array([1, 2, 3])],
      ["ASCII text", new Uint8Array(Buffer.from("this is not a flatbuffer at all, just words"))],
      ["JSON text", new Uint8Array(Buffer.from(JSON.stringify({ events: [{ type: "t" }] })))],
      ["all 0xff bytes", new Uint8Array(64).fill(0xff)],
      ["pseudo-random bytes", new Uint8Array(Array.from({ length: 200 }, (_, i) => (i * 2654435761) >>> 24))],
    ];
    for (const [what, bytes] of GARBAGE) {
      it(`rejects ${what} sent as application/x-flatbuffers with 400 invalid_flatbuffer`, async () => {
        const id = await seeded(`bin-garbage-${GARBAGE.findIndex(([w]) => w === what)}`);
        expectError(await publish(id, bytes, FB_CT), 400, "invalid_flatbuffer");
        await expectUnchangedThenServes(id, 2);
      });
    }

    it("rejects a truncated binary batch whole", async () => {
      const id = await seeded("bin-truncated");
      const batch = encodePublishBatch([
        { type: "good", payload: { a: 1 } },
        { type: "good", payload: { b: 2 } },
      ]);
      const r = await publish(id, batch.subarray(0, batch.length - 12), FB_CT);
      expect(r.status).toBe(400);
      expectError(r, 400, r.json?.error?.code === "invalid_event" ? "invalid_event" : "invalid_flatbuffer");
      await expectUnchangedThenServes(id, 2);
    });

    it("rejects a binary batch with one bad event with 400 invalid_event and its index, appending nothing", async () => {
      const id = await seeded("bin-bad-event");
      const batch = encodePublishBatch([{ type: "good" }, { type: "good" }, { type: "" }, { type: "good" }]);
      expect(expectError(await publish(id, batch, FB_CT), 400, "invalid_event").index).toBe(2);
      const longKey = encodePublishBatch([{ type: "good" }, { type: "good", key: "k".repeat(FIELD_BYTES_MAX + 1) }]);
      expect(expectError(await publish(id, longKey, FB_CT), 400, "invalid_event").index).toBe(1);
      await expectUnchangedThenServes(id, 2);
    });

    it("takes a binary payload of exactly event_bytes_max and rejects one byte more with 413 event_too_large", async () => {
      const id = await seeded("bin-size");
      const over = encodePublishBatch([{ type: "good" }, { type: "good", payload_bytes: new Uint8Array(EVENT_BYTES_MAX + 1) }]);
      expect(expectError(await publish(id, over, FB_CT), 413, "event_too_large").index).toBe(1);
      await expectUnchangedThenServes(id, 2);
      const atMax = encodePublishBatch([{ type: "good", payload_bytes: new Uint8Array(EVENT_BYTES_MAX) }]);
      expect(expectOk(await publish(id, atMax, FB_CT)).first_seq).toBe(4);
    });

    it("rejects a binary batch over publish_events_max with 413 batch_too_large", async () => {
      const id = await seeded("bin-count");
      const over = encodePublishBatch(Array.from({ length: PUBLISH_EVENTS_MAX + 1 }, () => ({ type: "good" })));
      expectError(await publish(id, over, FB_CT), 413, "batch_too_large");
      await expectUnchangedThenServes(id, 2);
    });

    it("rejects a bad binary batch to an unknown stream without creating it", async () => {
      expectError(await publish("bin-new", new Uint8Array([1, 2, 3]), FB_CT), 400, "invalid_flatbuffer");
      expectError(await publish("bin-new", encodePublishBatch([{ type: "" }]), FB_CT), 400, "invalid_event");
      await expectAbsentThenServes("bin-new");
    });
  });

  itStaysHealthy(server);
});
