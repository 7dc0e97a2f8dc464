// Bad input, end to end against a real server: every rejected request gets the
// contract's JSON error with the status that fits, changes nothing (head_seq,
// the stream list and replay are as before), and the server keeps serving.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { request as httpRequest } from "node:http";
import { api, removeDir, startServer, type TestServer } from "../helpers/server.js";
import { encodePublishBatch } from "../../src/wire/client.js";

// Small limits keep every request small; the default ring_bytes stays valid.
const PUBLISH_EVENTS_MAX = 10;
const EVENT_BYTES_MAX = 2048;
const REQUEST_BYTES_MAX = 65536;
const REPLAY_PAGE_EVENTS_MAX = 50;
const FIELD_BYTES_MAX = 64;
const LIMIT_ARGS = [
  "--publish-events-max", String(PUBLISH_EVENTS_MAX),
  "--event-bytes-max", String(EVENT_BYTES_MAX),
  "--request-bytes-max", String(REQUEST_BYTES_MAX),
  "--replay-page-events-max", String(REPLAY_PAGE_EVENTS_MAX),
  // The default page (1000) may not exceed the page maximum.
  "--replay-page-events-default", "20",
  "--event-field-bytes-max", String(FIELD_BYTES_MAX),
];

const JSON_CT = { "content-type": "application/json" };
const FB_CT = { "content-type": "application/x-flatbuffers" };

type Res = Awaited<ReturnType<typeof api>>;

/** The contract's error shape: JSON content type, {"error": {"code", "message", ...}}. */
function expectError(res: Res, status: number, code: string): Record<string, unknown> {
  const detail = `${res.status} ${Buffer.from(res.raw).toString("utf8").slice(0, 300)}`;
  expect(res.status, detail).toBe(status);
  expect(res.headers.get("content-type"), detail).toMatch(/^application\/json\b/);
  expect(res.json, detail).toBeTypeOf("object");
  expect(res.json.error, detail).toBeTypeOf("object");
  expect(res.json.error.code, detail).toBe(code);
  expect(res.json.error.message, detail).toBeTypeOf("string");
  expect(res.json.error.message.length, detail).toBeGreaterThan(0);
  return res.json.error;
}

function expectOk(res: Res, status = 200): any {
  expect(res.status, `${res.status} ${Buffer.from(res.raw).toString("utf8").slice(0, 300)}`).toBe(status);
  if (status !== 204) expect(res.headers.get("content-type")).toMatch(/^application\/json\b/);
  return res.json;
}

/**
 * A raw HTTP request through node:http, for what fetch cannot shape: chunked
 * bodies, exact lengths, and paths sent verbatim (fetch resolves "..").
 */
function rawRequest(
  url: string,
  method: string,
  headers: Record<string, string | number> = {},
  chunks: Buffer[] = [],
): Promise<Res> {
  const m = /^http:\/\/([^/:]+):(\d+)(\/.*)$/.exec(url);
  if (!m) throw new Error(`cannot split ${url}`);
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = httpRequest({ hostname: m[1], port: Number(m[2]), path: m[3], method, headers, agent: false }, (res) => {
      answered = true;
      const parts: Buffer[] = [];
      res.on("data", (c: Buffer) => parts.push(c));
      res.on("error", reject);
      res.on("end", () => {
        const raw = new Uint8Array(Buffer.concat(parts));
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) if (typeof v === "string") h.set(k, v);
        const ct = h.get("content-type") ?? "";
        const json = ct.includes("json") && raw.byteLength > 0 ? JSON.parse(Buffer.from(raw).toString("utf8")) : null;
        resolve({ status: res.statusCode ?? 0, headers: h, json, raw });
      });
    });
    // The server may answer 413 and close before the whole body is written.
    req.on("error", (err) => {
      if (!answered) reject(err);
    });
    for (const c of chunks) req.write(c);
    req.end();
  });
}

describe("bad input against one server with small limits", () => {
  let s: TestServer;
  const u = (path: string) => `${s.url}${path}`;
  const streamUrl = (id: string) => u(`/v1/streams/${id}`);
  const eventsUrl = (id: string, query = "") => u(`/v1/streams/${id}/events${query}`);

  const publish = (id: string, body: unknown, headers: Record<string, string> = JSON_CT) =>
    api(eventsUrl(id), "POST", typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body), headers);

  const streamIds = async (): Promise<string[]> => {
    const r = await api(u("/v1/streams"), "GET");
    return (expectOk(r).streams as Array<{ id: string }>).map((x) => x.id);
  };

  /** Publishes `n` good events and checks they land at `expectedFirst`. */
  const publishGood = async (id: string, n: number, expectedFirst: number) => {
    const events = Array.from({ length: n }, (_, i) => ({ type: "good", payload: { i } }));
    const body = expectOk(await publish(id, { events }));
    expect(body).toMatchObject({ stream: id, first_seq: expectedFirst, last_seq: expectedFirst + n - 1, count: n });
  };

  /** A stream holding `n` good events (seqs 1..n). */
  const seeded = async (id: string, n = 2): Promise<string> => {
    await publishGood(id, n, 1);
    return id;
  };

  /**
   * Nothing changed: the stream still holds exactly seqs 1..head, all of the
   * "good" type; then the server keeps serving and the next seq is head + 1.
   */
  const expectUnchangedThenServes = async (id: string, head: number) => {
    const info = expectOk(await api(streamUrl(id), "GET"));
    expect(info).toMatchObject({ id, head_seq: head, first_seq: 1, events: head });
    const page = expectOk(await api(eventsUrl(id, "?from=earliest&limit=50"), "GET"));
    expect(page.head_seq).toBe(head);
    expect(page.events.map((e: { seq: number }) => e.seq)).toEqual(Array.from({ length: head }, (_, i) => i + 1));
    for (const e of page.events) expect(e.type).toBe("good");
    await publishGood(id, 1, head + 1);
  };

  /** A rejected request to a stream that did not exist left no stream behind. */
  const expectAbsentThenServes = async (id: string) => {
    expectError(await api(streamUrl(id), "GET"), 404, "stream_not_found");
    expect(await streamIds()).not.toContain(id);
    await publishGood(id, 1, 1);
  };

  beforeAll(async () => {
    s = await startServer({ args: LIMIT_ARGS });
  });

  afterAll(async () => {
    if (!s) return;
    await s.stop();
    removeDir(s.dataDir);
  });

  describe("stream ids", () => {
    const BAD_IDS: Array<[string, string]> = [
      ["a space (url-encoded)", encodeURIComponent("a b")],
      ["only a space", encodeURIComponent(" ")],
      ["a slash (url-encoded)", encodeURIComponent("a/b")],
      ["a leading dot", ".hidden"],
      ["a leading dash", "-x"],
      ["a leading underscore", "_x"],
      ["dot-dot", ".."],
      ["a single dot", "."],
      ["a colon", encodeURIComponent("a:b")],
      ["a non-ASCII letter", encodeURIComponent("café")],
      ["129 characters", "a".repeat(129)],
    ];

    for (const [what, id] of BAD_IDS) {
      it(`rejects a stream id with ${what} on every stream route with 400 invalid_stream`, async () => {
        const before = await streamIds();
        // Sent verbatim: fetch would resolve "." and ".." segments before sending.
        const publishBody = Buffer.from(JSON.stringify({ events: [{ type: "t" }] }));
        expectError(await rawRequest(eventsUrl(id), "POST", { ...JSON_CT, "content-length": publishBody.length }, [publishBody]), 400, "invalid_stream");
        expectError(await rawRequest(streamUrl(id), "PUT", { ...JSON_CT, "content-length": 2 }, [Buffer.from("{}")]), 400, "invalid_stream");
        expectError(await rawRequest(streamUrl(id), "GET"), 400, "invalid_stream");
        expectError(await rawRequest(streamUrl(id), "DELETE"), 400, "invalid_stream");
        expectError(await rawRequest(eventsUrl(id), "GET"), 400, "invalid_stream");
        expect(await streamIds()).toEqual(before);
      });
    }

    it("answers an empty stream id segment with a JSON 4xx and creates nothing", async () => {
      const before = await streamIds();
      const r = await publish("", { events: [{ type: "t" }] });
      expect([400, 404]).toContain(r.status);
      expectError(r, r.status, r.status === 400 ? "invalid_stream" : "not_found");
      expect(await streamIds()).toEqual(before);
    });

    it("accepts a 128-character lower-case stream id (129 is the first too long)", async () => {
      const id = "a".repeat(127) + "z";
      await publishGood(id, 1, 1);
      expect(await streamIds()).toContain(id);
      expect(expectOk(await api(streamUrl(id), "GET")).head_seq).toBe(1);
      expectError(await api(streamUrl(id + "z"), "GET"), 400, "invalid_stream");
    });

    it("accepts a 128-character stream id of upper-case letters, digits, dots and underscores", async () => {
      // Valid per the id pattern; the on-disk name must not outgrow the filesystem's name limit.
      const id = "A" + "B._-".repeat(31) + "C.D";
      expect(id).toHaveLength(128);
      const created = await api(streamUrl(id), "PUT", {});
      expectOk(created, 201);
      await publishGood(id, 1, 1);
      expect(await streamIds()).toContain(id);
    });
  });

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
        const overBytes = "é".repeat(FIELD_BYTES_MAX / 2) + "x";
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
      const batch = encodePublishBatch([{ type: "good", payload: { a: 1 } }, { type: "good", payload: { b: 2 } }]);
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

  describe("streams", () => {
    const BAD_CONFIGS: Array<[string, unknown]> = [
      ["an unknown field", { retention_ms: 1000, colour: "red" }],
      ["a negative retention_ms", { retention_ms: -1 }],
      ["a zero retention_ms", { retention_ms: 0 }],
      ["a string retention_ms", { retention_ms: "1000" }],
      ["a fractional dedup_window_ms", { dedup_window_ms: 1.5 }],
      ['durability "maybe"', { durability: "maybe" }],
      ["a non-boolean producer_ordering", { producer_ordering: "yes" }],
      ["max_event_bytes above the server's event_bytes_max", { max_event_bytes: EVENT_BYTES_MAX + 1 }],
      ["a zero retention_bytes", { retention_bytes: 0 }],
      ["a body that is an array", [1]],
      ["a body that is a string", "retention"],
    ];

    for (const [what, body] of BAD_CONFIGS) {
      it(`rejects a PUT with ${what} with 400 invalid_config, creating and changing nothing`, async () => {
        const n = BAD_CONFIGS.findIndex(([w]) => w === what);
        const fresh = `cfg-new-${n}`;
        expectError(await api(streamUrl(fresh), "PUT", JSON.stringify(body), JSON_CT), 400, "invalid_config");
        expectError(await api(streamUrl(fresh), "GET"), 404, "stream_not_found");
        expect(await streamIds()).not.toContain(fresh);

        const existing = `cfg-old-${n}`;
        expectOk(await api(streamUrl(existing), "PUT", { retention_ms: 60_000 }), 201);
        await publishGood(existing, 2, 1);
        const before = expectOk(await api(streamUrl(existing), "GET"));
        expectError(await api(streamUrl(existing), "PUT", JSON.stringify(body), JSON_CT), 400, "invalid_config");
        expect(expectOk(await api(streamUrl(existing), "GET"))).toEqual(before);
        await expectUnchangedThenServes(existing, 2);
      });
    }

    it("rejects a PUT whose body is not JSON with 400 invalid_json", async () => {
      expectError(await api(streamUrl("cfg-json"), "PUT", "{retention_ms: 1}", JSON_CT), 400, "invalid_json");
      expect(await streamIds()).not.toContain("cfg-json");
    });

    it("rejects a PUT with a non-JSON content type with 415", async () => {
      const r = await api(streamUrl("cfg-ct"), "PUT", "{}", { "content-type": "text/plain" });
      expectError(r, 415, "unsupported_media_type");
      expect(await streamIds()).not.toContain("cfg-ct");
    });

    it("creates with PUT (201), updates with PUT again (200) and merges fields", async () => {
      const id = "cfg-put";
      const created = expectOk(await api(streamUrl(id), "PUT", { retention_ms: 5000, durability: "fsync" }), 201);
      expect(created).toMatchObject({ id, head_seq: 0, first_seq: 1, retention_ms: 5000, durability: "fsync" });
      const updated = expectOk(await api(streamUrl(id), "PUT", { dedup_window_ms: 1000 }), 200);
      expect(updated).toMatchObject({ id, retention_ms: 5000, durability: "fsync", dedup_window_ms: 1000 });
      expectOk(await api(streamUrl(id), "PUT", { max_event_bytes: EVENT_BYTES_MAX }), 200);
      await publishGood(id, 1, 1);
    });

    it("answers GET and DELETE of an unknown stream with 404 stream_not_found", async () => {
      const before = await streamIds();
      expectError(await api(streamUrl("no-such-stream"), "GET"), 404, "stream_not_found");
      expectError(await api(streamUrl("no-such-stream"), "DELETE"), 404, "stream_not_found");
      expect(await streamIds()).toEqual(before);
    });

    it("deletes with 204, after which the stream is 404 everywhere and a new publish starts at seq 1", async () => {
      const id = await seeded("cfg-delete", 3);
      const del = await api(streamUrl(id), "DELETE");
      expect(del.status).toBe(204);
      expect(del.raw.byteLength).toBe(0);
      expectError(await api(streamUrl(id), "GET"), 404, "stream_not_found");
      expectError(await api(eventsUrl(id), "GET"), 404, "stream_not_found");
      expectError(await api(streamUrl(id), "DELETE"), 404, "stream_not_found");
      expect(await streamIds()).not.toContain(id);
      await publishGood(id, 1, 1);
    });
  });

  describe("replay", () => {
    let id: string;
    beforeAll(async () => {
      id = await seeded("replay", 5);
    });

    it("answers replay of an unknown stream with 404 stream_not_found, in JSON even when binary is asked for", async () => {
      expectError(await api(eventsUrl("replay-missing", "?from=1"), "GET"), 404, "stream_not_found");
      const bin = await api(eventsUrl("replay-missing"), "GET", undefined, { accept: "application/x-flatbuffers" });
      expectError(bin, 404, "stream_not_found");
      expect(await streamIds()).not.toContain("replay-missing");
    });

    const BAD_QUERIES: Array<[string, string]> = [
      ["a non-numeric from", "?from=abc"],
      ["from=0", "?from=0"],
      ["a negative from", "?from=-1"],
      ["a fractional from", "?from=1.5"],
      ["limit=0", "?from=1&limit=0"],
      ["a non-numeric limit", "?limit=ten"],
      ["limit one above replay_page_events_max", `?from=1&limit=${REPLAY_PAGE_EVENTS_MAX + 1}`],
      ["to below from", "?from=3&to=2"],
      ["to=0", "?to=0"],
      ["a non-numeric to", "?from=1&to=x"],
      ["both from and from_time", "?from=1&from_time=0"],
      ["a non-numeric from_time", "?from_time=yesterday"],
      ["an unknown query parameter", "?from=1&colour=red"],
    ];
    for (const [what, query] of BAD_QUERIES) {
      it(`rejects replay with ${what} with 400 invalid_parameter`, async () => {
        expectError(await api(eventsUrl(id, query), "GET"), 400, "invalid_parameter");
        const bin = await api(eventsUrl(id, query), "GET", undefined, { accept: "application/x-flatbuffers" });
        expectError(bin, 400, "invalid_parameter");
      });
    }

    it("takes limit equal to replay_page_events_max", async () => {
      const page = expectOk(await api(eventsUrl(id, `?from=1&limit=${REPLAY_PAGE_EVENTS_MAX}`), "GET"));
      expect(page.events.map((e: { seq: number }) => e.seq)).toEqual([1, 2, 3, 4, 5]);
      expect(page).toMatchObject({ next: 6, head_seq: 5, first_seq: 1 });
    });

    it("leaves the stream untouched after rejected replays and keeps serving", async () => {
      await expectUnchangedThenServes(id, 5);
    });
  });

  describe("routes", () => {
    it("answers an unknown path with 404 not_found", async () => {
      for (const [method, path] of [
        ["GET", "/"],
        ["GET", "/v2/streams"],
        ["GET", "/v1/nothing"],
        ["GET", "/v1/streams/x/nothing"],
        ["POST", "/v1/streams/x/events/extra"],
        ["DELETE", "/nope"],
      ] as const) {
        expectError(await api(u(path), method), 404, "not_found");
      }
    });

    it("answers a wrong method on a known route with 405 method_not_allowed", async () => {
      for (const [method, path] of [
        ["POST", "/v1/streams"],
        ["DELETE", "/v1/streams"],
        ["PATCH", "/v1/streams/route-x"],
        ["POST", "/v1/streams/route-x"],
        ["PUT", "/v1/streams/route-x/events"],
        ["DELETE", "/v1/streams/route-x/events"],
      ] as const) {
        expectError(await api(u(path), method), 405, "method_not_allowed");
      }
      expect(await streamIds()).not.toContain("route-x");
    });
  });

  it("is still the same healthy process after all the bad input", async () => {
    expect(s.proc.exitCode).toBeNull();
    expectOk(await api(u("/healthz"), "GET"));
    expectOk(await api(u("/readyz"), "GET"));
    await publishGood("after-everything", 2, 1);
    expect(s.output()).not.toMatch(/fatal/i);
  });
});

describe("bad input when auto_create_streams is off", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer({ args: ["--auto-create-streams", "false"] });
  });
  afterAll(async () => {
    if (!s) return;
    await s.stop();
    removeDir(s.dataDir);
  });

  it("answers a publish to an unknown stream with 404 stream_not_found and creates nothing", async () => {
    const json = await api(`${s.url}/v1/streams/nope/events`, "POST", { events: [{ type: "t" }] });
    expectError(json, 404, "stream_not_found");
    const bin = await api(`${s.url}/v1/streams/nope/events`, "POST", encodePublishBatch([{ type: "t" }]), FB_CT);
    expectError(bin, 404, "stream_not_found");
    expectError(await api(`${s.url}/v1/streams/nope`, "GET"), 404, "stream_not_found");
    expect(expectOk(await api(`${s.url}/v1/streams`, "GET")).streams).toEqual([]);
  });

  it("publishes to a stream once it has been created with PUT", async () => {
    expectOk(await api(`${s.url}/v1/streams/made`, "PUT", {}), 201);
    const r = expectOk(await api(`${s.url}/v1/streams/made/events`, "POST", { events: [{ type: "t" }] }));
    expect(r).toMatchObject({ stream: "made", first_seq: 1, last_seq: 1, count: 1 });
  });
});

describe("replay past retention", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer({ args: ["--segment-bytes-max", "4096", "--retention-check-interval-ms", "50"] });
  });
  afterAll(async () => {
    if (!s) return;
    await s.stop();
    removeDir(s.dataDir);
  });

  it("answers a replay from below first_seq with 410 expired and the current first_seq", async () => {
    const id = "expiring";
    expectOk(await api(`${s.url}/v1/streams/${id}`, "PUT", { retention_ms: 1 }), 201);
    const events = [{ type: "a" }, { type: "b" }, { type: "c" }];
    expect(expectOk(await api(`${s.url}/v1/streams/${id}/events`, "POST", { events }))).toMatchObject({ first_seq: 1, last_seq: 3 });

    let info: any;
    const deadline = Date.now() + 10_000;
    do {
      await new Promise((r) => setTimeout(r, 50));
      info = expectOk(await api(`${s.url}/v1/streams/${id}`, "GET"));
    } while (info.first_seq === 1 && Date.now() < deadline);
    expect(info.first_seq).toBeGreaterThan(1);
    expect(info.head_seq).toBe(3);

    for (const from of [1, info.first_seq - 1]) {
      const err = expectError(await api(`${s.url}/v1/streams/${id}/events?from=${from}`, "GET"), 410, "expired");
      expect(err.first_seq).toBe(info.first_seq);
      const bin = await api(`${s.url}/v1/streams/${id}/events?from=${from}`, "GET", undefined, { accept: "application/x-flatbuffers" });
      expect(expectError(bin, 410, "expired").first_seq).toBe(info.first_seq);
    }

    // earliest starts at first_seq rather than failing; seqs go on from the head.
    const page = expectOk(await api(`${s.url}/v1/streams/${id}/events?from=earliest`, "GET"));
    expect(page).toMatchObject({ first_seq: info.first_seq, head_seq: 3 });
    const next = expectOk(await api(`${s.url}/v1/streams/${id}/events`, "POST", { events: [{ type: "d" }] }));
    expect(next).toMatchObject({ first_seq: 4, last_seq: 4, count: 1 });
  });
});
