// Hostile input over HTTP, property-based, against one real server: arbitrary
// and mutated JSON and FlatBuffers publish bodies, query strings, stream ids,
// headers and length lies, checkpoint and stream config bodies, and the
// classic killers (deep nesting, huge numbers, invalid UTF-8, a BOM).
// For every case: an answer within ANSWER_MS_MAX (or, for bytes that are not
// HTTP, a close), a status that fits with the contract's JSON error, and a
// rejected request changes nothing: at the end every stream's accepted
// publishes tile 1..head_seq, accepted events replay as sent, no stream or
// group exists that no accepted request made, and /healthz answers.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { removeDir, startServer, type TestServer } from "../helpers/server.js";
import { Client, expectContract, inBatches, Ledger, preview, rawExchange, type Answer } from "../helpers/hostile.js";
import { encodePublishBatch, type OutgoingEvent } from "../../src/wire/client.js";
import { recordResult, scaled } from "./scale.js";

const PUBLISH_EVENTS_MAX = 10;
const EVENT_BYTES_MAX = 2048;
const FIELD_BYTES_MAX = 64;
// Room for 100,000 nested brackets, closed.
const REQUEST_BYTES_MAX = 256 * 1024;
const REPLAY_PAGE_EVENTS_MAX = 50;
const STREAM_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** Cases of one fast-check run, sent at once: the server sees a burst, the test stays fast. */
const BATCH = 64;
const JSON_CT = { "content-type": "application/json" };
const FB_CT = { "content-type": "application/x-flatbuffers" };

let s: TestServer;
let client: Client;
const ledger = new Ledger();
/** Streams an accepted request may have created; any other in the list is a bug. */
const mayExist = new Set<string>();
/** Accepted events by stream and seq, as the request carried them (JSON.parse of it). */
const expectedEvents = new Map<string, Map<number, Record<string, unknown>>>();
/** Events the server acknowledged, over every class. */
let ackedEvents = 0;

/** Runs `cases` cases of `arb` through `check`, BATCH at a time, and records the class's row. */
async function fuzz<T>(
  fault: string,
  setup: string,
  cases: number,
  arb: fc.Arbitrary<T>,
  check: (c: T, i: number) => Promise<void>,
  batch = BATCH,
  bounds: Record<string, string | number> = {},
): Promise<void> {
  let tried = 0;
  let survived = 0;
  const t0 = Date.now();
  const ackedBefore = ackedEvents;
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(arb, { minLength: batch, maxLength: batch }), async (cases) => {
        await inBatches(cases, batch, async (c, i) => {
          tried++;
          await check(c, i);
          survived++;
        });
      }),
      { numRuns: Math.ceil(cases / batch), endOnFailure: true },
    );
  } finally {
    recordResult({
      fault: `hostile HTTP: ${fault}`,
      setup,
      cases: tried,
      survived,
      acked: ackedEvents - ackedBefore,
      lost: 0,
      duplicates: 0,
      gaps: 0,
      bounds: { "run s": ((Date.now() - t0) / 1000).toFixed(1), ...bounds },
    });
  }
  const health = await client.send("GET", "/healthz");
  expect(health.status, "healthz after the class").toBe(200);
}

/** Records an accepted JSON publish: its seqs in the ledger, its events for the replay check. */
function notePublish(stream: string, a: Answer, sentEvents: unknown[] | null): void {
  ledger.accepted(stream, a.json);
  ackedEvents += a.json.count;
  mayExist.add(stream);
  if (!sentEvents) return;
  const dups = new Set((a.json.duplicates as Array<{ index: number }>).map((d) => d.index));
  let m = expectedEvents.get(stream);
  if (!m) expectedEvents.set(stream, (m = new Map()));
  let seq = a.json.first_seq;
  sentEvents.forEach((e, i) => {
    if (!dups.has(i)) m!.set(seq++, e as Record<string, unknown>);
  });
  expect(seq - 1, `${stream}: seqs of an accepted batch`).toBe(a.json.count === 0 ? a.json.first_seq - 1 : a.json.last_seq);
}

const tryParse = (b: Buffer): { ok: true; v: any } | { ok: false } => {
  try {
    return { ok: true, v: JSON.parse(b.toString("utf8")) };
  } catch {
    return { ok: false };
  }
};
/** JSON.parse is lenient where JSON is not: it replaces invalid UTF-8 and keeps a BOM as a character it then rejects. */
const isStrictJson = (b: Buffer): boolean => b[0] !== 0xef && Buffer.from(b.toString("utf8")).equals(b) && tryParse(b).ok;

// ---- generators ------------------------------------------------------------

const text = fc.oneof(fc.string({ maxLength: 20 }), fc.string({ unit: "grapheme", maxLength: 12 }), fc.string({ unit: "binary", maxLength: 8 }));
const shortText = fc.string({ minLength: 1, maxLength: 20 });
const validEvent: fc.Arbitrary<Record<string, unknown>> = fc.record(
  {
    type: shortText,
    key: shortText,
    producer_id: shortText,
    producer_seq: fc.nat(),
    producer_ts: fc.nat(),
    idempotency_key: shortText,
    payload: fc.jsonValue({ maxDepth: 3 }),
  },
  { requiredKeys: ["type"] },
);
/** An event whose fields are the known ones with any JSON value, plus the odd unknown one. */
const nearEvent: fc.Arbitrary<unknown> = fc.dictionary(
  fc.oneof(fc.constantFrom("type", "key", "producer_id", "producer_seq", "producer_ts", "idempotency_key", "payload", "payload_base64", "seq", "stream"), text),
  fc.oneof(fc.jsonValue({ maxDepth: 2 }), text, fc.constantFrom("", "AAAA", "QQ==", "x".repeat(65))),
  { maxKeys: 6 },
);

type Mutation =
  | { kind: "flip"; at: number; byte: number }
  | { kind: "delete"; at: number; n: number }
  | { kind: "insert"; at: number; bytes: Uint8Array }
  | { kind: "truncate"; at: number }
  | { kind: "duplicate"; at: number; n: number }
  | { kind: "u32"; at: number; value: number };
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), byte: fc.nat(255) }),
  fc.record({ kind: fc.constant("delete" as const), at: fc.nat(), n: fc.integer({ min: 1, max: 8 }) }),
  fc.record({
    kind: fc.constant("insert" as const),
    at: fc.nat(),
    bytes: fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 6 }),
      fc.constantFrom(
        ...["\uFEFF", "1e400", "9".repeat(400), "-", "\\u0000", "\\ud800", '"', ",", "[", "{", "}", "]", ":", "null"].map((t) => Buffer.from(t)),
        Buffer.from([0xff]),
        Buffer.from([0xc0, 0xaf]),
        Buffer.from([0xed, 0xa0, 0x80]),
      ),
    ),
  }),
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("duplicate" as const), at: fc.nat(), n: fc.integer({ min: 1, max: 40 }) }),
  fc.record({
    kind: fc.constant("u32" as const),
    at: fc.nat(),
    value: fc.oneof(fc.constantFrom(0, 1, 4, 7, 8, 24, 32, 0x7fffffff, 0x80000000, 0xffffffff), fc.nat()),
  }),
);

function mutate(src: Uint8Array, ms: Mutation[]): Buffer {
  let b = Buffer.from(src);
  for (const m of ms) {
    const at = b.length === 0 ? 0 : m.at % (b.length + 1);
    switch (m.kind) {
      case "flip":
        if (b.length) b[at % b.length] ^= m.byte || 1;
        break;
      case "delete":
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.n)]);
        break;
      case "insert":
        b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
        break;
      case "truncate":
        b = b.subarray(0, at);
        break;
      case "duplicate":
        b = Buffer.concat([b.subarray(0, at + m.n), b.subarray(at)]);
        break;
      case "u32": {
        // FlatBuffers lengths and offsets are little-endian u32s at 4-aligned positions.
        const p = at & ~3;
        if (p + 4 <= b.length) b.writeUInt32LE(m.value >>> 0, p);
        break;
      }
    }
  }
  return b;
}

// ---- the server --------------------------------------------------------------

beforeAll(async () => {
  s = await startServer({
    args: [
      "--shards",
      "2",
      "--publish-events-max",
      String(PUBLISH_EVENTS_MAX),
      "--event-bytes-max",
      String(EVENT_BYTES_MAX),
      "--event-field-bytes-max",
      String(FIELD_BYTES_MAX),
      "--request-bytes-max",
      String(REQUEST_BYTES_MAX),
      "--replay-page-events-max",
      String(REPLAY_PAGE_EVENTS_MAX),
      "--replay-page-events-default",
      "20",
      "--replay-page-bytes-max",
      String(1 << 20),
      "--consume-page-bytes-max",
      String(1 << 20),
      "--ring-bytes",
      String(4 << 20),
    ],
  });
  client = new Client(s.port, BATCH);
});

afterAll(async () => {
  client?.close();
  if (s) {
    await s.stop();
    removeDir(s.dataDir);
  }
});

describe("hostile HTTP input against one server", () => {
  it("arbitrary JSON as a publish body is refused with 400 unless it is a batch of valid events, which is appended exactly as sent", async () => {
    const body = fc.oneof(
      fc.jsonValue({ maxDepth: 4 }),
      fc.record({ events: fc.jsonValue({ maxDepth: 3 }) }),
      fc.record({ events: fc.array(nearEvent, { minLength: 0, maxLength: 12 }) }),
      fc.record({ events: fc.array(validEvent, { minLength: 1, maxLength: 12 }) }),
    );
    await fuzz(
      "arbitrary JSON publish body",
      "fc.jsonValue, near-valid and valid batches; 4 streams",
      scaled(1500, 15_000),
      fc.tuple(body, fc.nat(3)),
      async ([v, k]) => {
        const stream = `arb-${k}`;
        const raw = JSON.stringify(v);
        const a = await client.send("POST", `/v1/streams/${stream}/events`, raw, JSON_CT);
        const isBatch =
          typeof v === "object" &&
          v !== null &&
          !Array.isArray(v) &&
          Array.isArray((v as any).events) &&
          (v as any).events.length > 0 &&
          Object.keys(v).length === 1;
        expectContract(a, isBatch ? [200, 400, 413] : [400], `publish ${raw.slice(0, 200)}`);
        if (a.status === 200) notePublish(stream, a, JSON.parse(raw).events);
      },
    );
  });

  it("a mutated valid JSON batch is refused with 400 when it is no longer JSON, and otherwise appended as JSON.parse reads it or refused whole", async () => {
    const arb = fc.tuple(fc.array(validEvent, { minLength: 1, maxLength: PUBLISH_EVENTS_MAX }), fc.array(mutation, { minLength: 0, maxLength: 3 }), fc.nat(3));
    await fuzz(
      "mutated JSON publish body",
      "valid batches, 0-3 byte mutations (BOM, 1e400, 400 digits, bad UTF-8)",
      scaled(2000, 20_000),
      arb,
      async ([events, ms, k]) => {
        const stream = `mut-${k}`;
        const body = mutate(Buffer.from(JSON.stringify({ events })), ms);
        const a = await client.send("POST", `/v1/streams/${stream}/events`, body, JSON_CT);
        const what = `publish ${preview(body)}`;
        if (ms.length === 0) expect(a.status, what).toBe(200);
        if (!isStrictJson(body)) {
          expectContract(a, [400, 413], what);
          if (a.status === 400) expect(a.json.error.code, what).toBe("invalid_json");
        } else expectContract(a, [200, 400, 413], what);
        if (a.status === 200) notePublish(stream, a, JSON.parse(body.toString("utf8")).events);
      },
    );
  });

  it("a mutated, truncated or re-offset FlatBuffers batch is refused with 400/413 or appended whole; never a crash", async () => {
    const fbEvent = validEvent.map(
      (e) => ({ ...e, payload: undefined, payload_bytes: typeof e.payload === "string" ? Buffer.from(e.payload) : undefined }) as OutgoingEvent,
    );
    const arb = fc.tuple(fc.array(fbEvent, { minLength: 1, maxLength: PUBLISH_EVENTS_MAX }), fc.array(mutation, { minLength: 0, maxLength: 3 }), fc.nat(3));
    await fuzz(
      "mutated FlatBuffers publish body",
      "encodePublishBatch, then flips, truncation, u32 length/offset rewrites",
      scaled(2000, 20_000),
      arb,
      async ([events, ms, k]) => {
        const stream = `fb-${k}`;
        const body = mutate(encodePublishBatch(events), ms);
        const a = await client.send("POST", `/v1/streams/${stream}/events`, body, FB_CT);
        const what = `flatbuffers ${body.toString("hex").slice(0, 200)}`;
        if (ms.length === 0) expect(a.status, what).toBe(200);
        expectContract(a, [200, 400, 413], what);
        if (a.status === 400) expect(["invalid_flatbuffer", "invalid_event", "invalid_body"], what).toContain(a.json.error.code);
        if (a.status === 200) notePublish(stream, a, null);
      },
    );
  });

  it("query strings: unknown or repeated names are 400 naming them; values outside their rule are 400; the rest is answered 200", async () => {
    // A stream to page through: 30 events.
    const seed = await client.send("POST", "/v1/streams/q/events", JSON.stringify({ events: Array.from({ length: 10 }, () => ({ type: "q" })) }), JSON_CT);
    notePublish("q", seed, null);
    const names = fc.oneof(fc.constantFrom("from", "to", "limit", "from_time", "group", "From", "limit ", "", "=", "from%00"), text);
    const values = fc.oneof(
      fc.constantFrom(
        "",
        "0",
        "1",
        "5",
        "10",
        "50",
        "51",
        "-1",
        "+1",
        "1e3",
        "1.0",
        "0x10",
        "earliest",
        "latest",
        "Infinity",
        "NaN",
        " 1",
        "01",
        "9".repeat(400),
        "9007199254740993",
        "12345678901234567",
        "%31",
      ),
      fc.nat().map(String),
      text,
    );
    const encode = fc.constantFrom("plain", "percent", "plus");
    const arb = fc.tuple(
      fc.array(fc.tuple(names, values), { maxLength: 4 }),
      encode,
      fc.constantFrom("events", "checkpoint", "lag", "groups", "info", "list", "healthz"),
    );
    const enc = (t: string, how: string) =>
      how === "percent"
        ? [...Buffer.from(t)].map((c) => `%${c.toString(16).padStart(2, "0")}`).join("")
        : how === "plus"
          ? encodeURIComponent(t).replace(/%20/g, "+")
          : encodeURIComponent(t).replace(/%25/g, "%");
    const routeParams: Record<string, string[]> = {
      events: ["from", "to", "limit", "from_time"],
      checkpoint: ["group"],
      lag: ["group"],
      groups: [],
      info: [],
      list: [],
      healthz: [],
    };
    const paths: Record<string, string> = {
      events: "/v1/streams/q/events",
      checkpoint: "/v1/streams/q/checkpoint",
      lag: "/v1/streams/q/lag",
      groups: "/v1/streams/q/groups",
      info: "/v1/streams/q",
      list: "/v1/streams",
      healthz: "/healthz",
    };
    await fuzz(
      "query strings",
      "names known/unknown/encoded, repeated, huge/negative/exponent/empty values, 7 routes",
      scaled(1500, 15_000),
      arb,
      async ([pairs, how, route]) => {
        const query = pairs.map(([k, v]) => `${enc(k, how)}=${enc(v, how)}`).join("&");
        const a = await client.send("GET", `${paths[route]}${query ? `?${query}` : ""}`);
        const what = `GET ${paths[route]}?${query}`;
        // What the server reads, by the same rule (URLSearchParams).
        const q = new URLSearchParams(query);
        const known = routeParams[route];
        const keys = [...q.keys()];
        const unknown = keys.filter((k2) => !known.includes(k2));
        const repeated = keys.filter((k2, i) => keys.indexOf(k2) !== i);
        if (unknown.length || repeated.length) {
          expectContract(a, [400], what);
          expect(a.json.error.code, what).toBe("invalid_parameter");
          expect(a.json.error.parameters, what).toContain((unknown.length ? unknown : repeated)[0]);
          return;
        }
        if (route !== "events") return expectContract(a, route === "checkpoint" || route === "lag" ? [400, 404] : [200], what);
        const int = (v: string | null, min: number, max = Number.MAX_SAFE_INTEGER) =>
          v === null || (/^\d{1,16}$/.test(v) && Number(v) >= min && Number(v) <= max);
        const from = q.get("from");
        const fromOk = from === null || from === "earliest" || from === "latest" || int(from, 1);
        const ok =
          fromOk &&
          int(q.get("to"), 1) &&
          int(q.get("limit"), 1, REPLAY_PAGE_EVENTS_MAX) &&
          int(q.get("from_time"), 0) &&
          !(from !== null && q.get("from_time") !== null);
        const toBelowFrom = ok && q.get("to") !== null && from !== null && from !== "latest" && from !== "earliest" && Number(q.get("to")) < Number(from);
        expectContract(a, ok && !toBelowFrom ? [200] : [400], what);
        if (a.status === 400) expect(a.json.error.code, what).toBe("invalid_parameter");
        if (a.status === 200) expect(a.json.events.length, what).toBeLessThanOrEqual(REPLAY_PAGE_EVENTS_MAX);
      },
    );
  });

  it("stream ids: anything outside the id rule is 400 invalid_stream on every stream route, and nothing reaches the disk outside the data dir", async () => {
    const id = fc.oneof(
      text,
      fc.constantFrom(
        "..",
        ".",
        "../x",
        "..%2f..%2fetc",
        "%2e%2e",
        "a%00b",
        "a/../b",
        "-a",
        "_a",
        ".a",
        "a".repeat(128),
        "b".repeat(129),
        "Z".repeat(300),
        "a.b_c-D",
        "\u0130",
        "a\u0301",
      ),
      fc.stringMatching(STREAM_ID),
    );
    const arb = fc.tuple(
      id,
      fc.boolean(),
      fc.constantFrom("GET /", "POST /events", "GET /events", "PUT /", "GET /checkpoint", "POST /checkpoint", "GET /lag", "GET /groups", "DELETE /"),
    );
    await fuzz("stream ids", "unicode, traversal, encoded, long ids on 9 route/method pairs", scaled(1000, 10_000), arb, async ([raw, encodeIt, route]) => {
      const [method, suffix] = route.split(" ");
      const seg = encodeIt ? encodeURIComponent(raw) : raw.replace(/[^\x21-\x7e]/gu, (c) => encodeURIComponent(c));
      const path = `/v1/streams/${seg}${suffix === "/" ? "" : suffix}`;
      const body =
        method === "POST"
          ? suffix === "/events"
            ? JSON.stringify({ events: [{ type: "id" }] })
            : JSON.stringify({ group: "g", seq: 0 })
          : method === "PUT"
            ? "{}"
            : undefined;
      // DELETE only of ids no other class uses.
      if (method === "DELETE" && STREAM_ID.test(seg)) return;
      const a = await client.send(method, path, body, body ? JSON_CT : {});
      const what = `${method} ${path}`;
      if (seg === "" || seg.includes("/") || seg.includes("?") || seg.includes("#")) return expectContract(a, [400, 404, 405], what);
      if (!STREAM_ID.test(seg)) {
        expectContract(a, [400], what);
        expect(a.json.error.code, what).toBe("invalid_stream");
        return;
      }
      expectContract(a, [200, 201, 204, 400, 404], what);
      if (method === "POST" && suffix === "/events" && a.status === 200) notePublish(seg, a, [{ type: "id" }]);
      if (method === "PUT" && (a.status === 201 || a.status === 200)) mayExist.add(seg);
    });
  });

  it("ids the HTTP client cannot send (raw UTF-8, spaces, NULs, dot segments) get a JSON 4xx or a closed connection", async () => {
    const id = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 40 }).map((b) => Buffer.from(b)),
      fc.constantFrom(..."../..|..\\..|/../../etc/passwd|%2e%2e/x|a b|a\u0000b|\u00ff|..|.|a\r\nx: y".split("|")).map((t) => Buffer.from(t, "latin1")),
    );
    // uWS neither answers nor closes a request line it cannot parse (a space
    // or control byte in the path): its idle timer closes it, within ~12 s.
    // All cases of a burst wait out that timer together.
    const CLOSE = "unparsed request closed after, ms max";
    const closeMs: Record<string, number> = { [CLOSE]: 0 };
    await fuzz(
      "raw stream id bytes",
      "fresh socket per case: raw bytes in the path",
      scaled(200, 1000),
      id,
      async (seg) => {
        const req = Buffer.concat([Buffer.from("GET /v1/streams/"), seg, Buffer.from("/events HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")]);
        const a = await rawExchange(s.port, req);
        const what = `raw ${preview(req)}`;
        expect(a.status === 0 || (a.status >= 400 && a.status < 500) || a.status === 200, what).toBe(true);
        if (a.status >= 400) expectContract(a, [400, 404, 405], what);
        if (a.status === 0) closeMs[CLOSE] = Math.round(Math.max(closeMs[CLOSE], a.ms));
      },
      200,
      closeMs,
    );
  });

  it("content types: JSON, FlatBuffers and nothing else; other media types are 415 and change nothing", async () => {
    const ct = fc.oneof(
      fc.constantFrom(
        "application/json",
        "APPLICATION/JSON",
        "application/json; charset=utf-8",
        " application/json ",
        "application/jsonx",
        "text/json",
        "text/plain",
        "application/x-flatbuffers",
        "application/x-flatbuffers;v=1",
        "multipart/form-data; boundary=x",
        "*/*",
        ";",
        "application/json;;;",
        "application/x-www-form-urlencoded",
      ),
      fc.stringMatching(/^[\x21-\x7e ]{0,40}$/),
    );
    const arb = fc.tuple(ct, fc.constantFrom("publish", "put", "checkpoint"));
    await fuzz(
      "content-type variants",
      "14 fixed media types and arbitrary visible strings on the 3 body routes",
      scaled(500, 5000),
      arb,
      async ([type, route]) => {
        const base = type.split(";")[0].trim().toLowerCase();
        const kind = base === "" || base === "application/json" ? "json" : base === "application/x-flatbuffers" ? "fb" : "other";
        const stream = "ct";
        const json = JSON.stringify({ events: [{ type: "ct" }] });
        const fb = encodePublishBatch([{ type: "ct" }]);
        const what = `${route} with content-type ${JSON.stringify(type)}`;
        if (route === "publish") {
          const a = await client.send("POST", `/v1/streams/${stream}/events`, kind === "fb" ? fb : json, { "content-type": type });
          expectContract(a, kind === "other" ? [415] : [200], what);
          if (a.status === 200) notePublish(stream, a, null);
        } else if (route === "put") {
          const a = await client.send("PUT", `/v1/streams/ct-put`, "{}", { "content-type": type });
          expectContract(a, kind === "json" ? [200, 201] : [415], what);
          if (a.status < 300) mayExist.add("ct-put");
        } else {
          const a = await client.send("POST", `/v1/streams/${stream}/checkpoint`, JSON.stringify({ group: "ctg", seq: 0 }), { "content-type": type });
          expectContract(a, kind === "json" ? [200, 404] : [415], what);
        }
      },
    );
  });

  it("length lies, framing tricks and huge headers on a raw socket get a fitting answer or a close, and append only what an answer acknowledged", async () => {
    const body = Buffer.from(JSON.stringify({ events: [{ type: "lie" }] }));
    const lie = fc.oneof(
      fc.record({
        cl: fc.constantFrom("abc", "-1", "1e3", "99999999999999999999", "", " 5", "0x10", `${body.length}, ${body.length}`, String(body.length - 1), "0", "3"),
        te: fc.constantFrom(null, "chunked", "gzip", "chunked, chunked"),
      }),
      fc.record({ cl: fc.constant(null), te: fc.constantFrom("chunked", "identity", "x") }),
    );
    const arb = fc.tuple(lie, fc.constantFrom(0, 0, 0, 5000, 60_000, 200_000), fc.boolean());
    await fuzz(
      "length lies and huge headers",
      "content-length non-numeric/short/duplicated/with transfer-encoding; 5 KB-200 KB header values",
      scaled(300, 3000),
      arb,
      async ([l, headerBytes, dupCl]) => {
        let head = "POST /v1/streams/lie/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\n";
        if (l.cl !== null) head += `content-length: ${l.cl}\r\n`;
        if (dupCl) head += `content-length: ${body.length}\r\n`;
        if (l.te !== null) head += `transfer-encoding: ${l.te}\r\n`;
        if (headerBytes) head += `x-big: ${"h".repeat(headerBytes)}\r\n`;
        const payload = l.te?.includes("chunked") ? Buffer.from(`${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`) : body;
        const req = Buffer.concat([Buffer.from(`${head}\r\n`), payload]);
        const a = await rawExchange(s.port, req);
        const what = `raw ${preview(req.subarray(0, 300))}`;
        if (a.status !== 0) expectContract(a, [200, 400, 413, 431], what);
        if (a.status === 200) notePublish("lie", { ...a, raw: a.body, headers: {} } as Answer, null);
      },
    );
  });

  it("checkpoint bodies: anything but {group, seq} in range is refused and moves no group", async () => {
    const seed = await client.send("POST", "/v1/streams/ck/events", JSON.stringify({ events: Array.from({ length: 10 }, () => ({ type: "ck" })) }), JSON_CT);
    notePublish("ck", seed, null);
    const accepted = new Map<string, Set<number>>();
    const good = fc.record({ group: fc.oneof(fc.constantFrom("g1", "g2"), fc.stringMatching(STREAM_ID)), seq: fc.integer({ min: 0, max: 10 }) });
    const body = fc.oneof(
      fc.jsonValue({ maxDepth: 3 }).map((v) => Buffer.from(JSON.stringify(v))),
      fc
        .record({ group: fc.oneof(text, fc.jsonValue({ maxDepth: 1 })), seq: fc.oneof(fc.jsonValue({ maxDepth: 1 }), fc.integer({ min: -5, max: 20 })) })
        .map((v) => Buffer.from(JSON.stringify(v))),
      fc.tuple(good, fc.array(mutation, { maxLength: 2 })).map(([v, ms]) => mutate(Buffer.from(JSON.stringify(v)), ms)),
      good.map((v) => Buffer.from(JSON.stringify(v))),
    );
    await fuzz("checkpoint bodies", "arbitrary JSON, wrong types, out-of-range seqs, mutated valid bodies", scaled(600, 6000), body, async (b) => {
      const a = await client.send("POST", "/v1/streams/ck/checkpoint", b, JSON_CT);
      const what = `checkpoint ${preview(b)}`;
      const p = isStrictJson(b) ? tryParse(b) : { ok: false as const };
      const v = p.ok ? p.v : null;
      const valid =
        p.ok &&
        typeof v === "object" &&
        v !== null &&
        !Array.isArray(v) &&
        Object.keys(v).every((k) => k === "group" || k === "seq") &&
        typeof v.group === "string" &&
        STREAM_ID.test(v.group) &&
        Number.isSafeInteger(v.seq) &&
        v.seq >= 0 &&
        v.seq <= 10;
      expectContract(a, valid ? [200] : [400], what);
      if (!p.ok) expect(a.json.error.code, what).toBe("invalid_json");
      if (a.status === 200) {
        let set = accepted.get(v.group);
        if (!set) accepted.set(v.group, (set = new Set()));
        set.add(v.seq);
      }
    });
    const groups = await client.send("GET", "/v1/streams/ck/groups");
    for (const g of groups.json.groups) {
      expect(accepted.has(g.group), `group ${g.group} exists though no checkpoint of it was accepted`).toBe(true);
      expect(accepted.get(g.group)!.has(g.checkpoint_seq), `group ${g.group} at ${g.checkpoint_seq}, a seq never accepted`).toBe(true);
    }
    expect(groups.json.groups.length).toBe(accepted.size);
  });

  it("PUT stream config bodies: a refused PUT creates and changes nothing; an accepted one says what it set", async () => {
    const cfg = fc.record(
      {
        retention_ms: fc.oneof(fc.integer({ min: 1, max: 10 ** 9 }), fc.jsonValue({ maxDepth: 0 })),
        retention_bytes: fc.oneof(fc.integer({ min: 1, max: 10 ** 9 }), fc.constant(null), fc.constant(-1)),
        max_event_bytes: fc.integer({ min: 0, max: 4096 }),
        dedup_window_ms: fc.oneof(fc.integer({ min: 0, max: 10 ** 9 }), fc.constant(1.5)),
        durability: fc.constantFrom("process", "fsync", "none", 1),
        producer_ordering: fc.constantFrom(false, true, "false"),
      },
      { requiredKeys: [] },
    );
    const body = fc.oneof(
      cfg.map((v) => Buffer.from(JSON.stringify(v))),
      fc.jsonValue({ maxDepth: 3 }).map((v) => Buffer.from(JSON.stringify(v))),
      fc.tuple(cfg, fc.array(mutation, { maxLength: 2 })).map(([v, ms]) => mutate(Buffer.from(JSON.stringify(v)), ms)),
      fc.constant(Buffer.alloc(0)),
    );
    let n = 0;
    let fixed: Record<string, unknown> | null = null;
    const init = await client.send("PUT", "/v1/streams/cfg-fixed", "{}", JSON_CT);
    expect(init.status).toBe(201);
    mayExist.add("cfg-fixed");
    fixed = init.json;
    await fuzz(
      "PUT stream config bodies",
      "typed fields with wrong values, arbitrary JSON, mutated valid configs, empty",
      scaled(600, 6000),
      body,
      async (b, i) => {
        // The first case of each burst goes to one existing stream, so its PUTs are ordered.
        const id = i === 0 ? "cfg-fixed" : `cfg-${n++}`;
        const a = await client.send("PUT", `/v1/streams/${id}`, b, JSON_CT);
        const what = `PUT ${id} ${preview(b)}`;
        expectContract(a, i === 0 ? [200, 400] : [201, 400], what);
        const strict = b.length === 0 || isStrictJson(b);
        if (!strict) expect(a.json.error.code, what).toBe("invalid_json");
        if (a.status >= 400) return;
        mayExist.add(id);
        const v = b.length === 0 ? {} : JSON.parse(b.toString("utf8"));
        for (const [k, val] of Object.entries(v)) expect(a.json[k], `${what}: ${k} as set`).toEqual(val);
        if (id === "cfg-fixed") fixed = a.json;
      },
    );
    const now = await client.send("GET", "/v1/streams/cfg-fixed");
    expect(now.json).toEqual(fixed);
  });

  it("the classic killers get 400 invalid_json on every JSON route, the same way: deep nesting, a BOM, invalid UTF-8; huge numbers are refused where a number must fit", async () => {
    const routes: Array<[string, string]> = [
      ["POST", "/v1/streams/ck/events"],
      ["PUT", "/v1/streams/ck"],
      ["POST", "/v1/streams/ck/checkpoint"],
    ];
    const bodies: Record<string, string[]> = {
      "POST /v1/streams/ck/events": ['{"events":[{"type":"a"}]}'],
      "PUT /v1/streams/ck": ['{"retention_ms":1000}'],
      "POST /v1/streams/ck/checkpoint": ['{"group":"g","seq":0}'],
    };
    const cases: Array<{ name: string; make: (valid: string) => Buffer; code: string }> = [
      { name: "100,000 [ unclosed", make: () => Buffer.from("[".repeat(100_000)), code: "invalid_json" },
      { name: "100,000 [ balanced", make: () => Buffer.from("[".repeat(100_000) + "]".repeat(100_000)), code: "*" },
      { name: "a UTF-8 byte-order mark", make: (v) => Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(v)]), code: "invalid_json" },
      {
        name: "a 0xff byte in a string",
        make: (v) => Buffer.from(v.replace('"g"', '"g\u00ff"').replace('"a"', '"a\u00ff"').replace("1000", '"\u00ff"'), "latin1"),
        code: "invalid_json",
      },
      {
        name: "an overlong encoding",
        make: (v) => Buffer.concat([Buffer.from(v.slice(0, -1)), Buffer.from(',"\xc0\xaf":1}', "latin1")]),
        code: "invalid_json",
      },
      {
        name: "an encoded surrogate",
        make: (v) => Buffer.concat([Buffer.from(v.slice(0, -1)), Buffer.from(',"\xed\xa0\x80":1}', "latin1")]),
        code: "invalid_json",
      },
      {
        name: "a truncated multi-byte character",
        make: (v) => Buffer.concat([Buffer.from(v.slice(0, -1)), Buffer.from(',"\xe2\x82":1}', "latin1")]),
        code: "invalid_json",
      },
    ];
    let tried = 0;
    for (const [method, path] of routes) {
      for (const c of cases) {
        for (const valid of bodies[`${method} ${path}`]) {
          tried++;
          const b = c.make(valid);
          const a = await client.send(method, path, b, JSON_CT);
          const what = `${c.name} to ${method} ${path}`;
          expectContract(a, [400], what);
          if (c.code !== "*") expect(a.json.error.code, what).toBe(c.code);
          if (c.name.includes("byte-order")) expect(a.json.error.message, what).toMatch(/byte-order mark/);
        }
      }
    }
    // Numbers that do not fit where an integer must: 400 naming the field.
    for (const n of ["1e400", "-1e400", "9".repeat(400), `-${"9".repeat(400)}`, "1.5", "1e3.5"]) {
      for (const [method, path, body] of [
        ["POST", "/v1/streams/ck/events", `{"events":[{"type":"a","producer_seq":${n}}]}`],
        ["PUT", "/v1/streams/ck", `{"retention_ms":${n}}`],
        ["POST", "/v1/streams/ck/checkpoint", `{"group":"g","seq":${n}}`],
      ]) {
        tried++;
        const a = await client.send(method, path, body, JSON_CT);
        expectContract(a, [400], `${body} to ${method} ${path}`);
      }
    }
    // An escaped lone surrogate in a string field has no UTF-8 form: refused,
    // not stored as U+FFFD (found by the long run: it came back changed).
    // A paired escape is a character like any other and comes back as sent.
    const lone = await client.send("POST", "/v1/streams/sur/events", String.raw`{"events":[{"type":"a","key":"\ud800>z"}]}`, JSON_CT);
    expectContract(lone, [400], "lone surrogate escape in key");
    expect(lone.json.error.code).toBe("invalid_event");
    const paired = await client.send("POST", "/v1/streams/sur/events", String.raw`{"events":[{"type":"\ud83d\ude00","key":"k\u00e9"}]}`, JSON_CT);
    expect(paired.status).toBe(200);
    notePublish("sur", paired, [{ type: "\u{1F600}", key: "k\u00e9" }]);
    // A JSON null is not a config object (it was once taken as "no changes").
    const nullPut = await client.send("PUT", "/v1/streams/ck", "null", JSON_CT);
    expectContract(nullPut, [400], "PUT null");
    expect(nullPut.json.error.code).toBe("invalid_config");
    // A huge number as a payload is JSON: it is stored as the producer's text.
    const big = await client.send(
      "POST",
      "/v1/streams/big/events",
      `{"events":[{"type":"a","payload":${"9".repeat(400)}},{"type":"b","payload":1e400}]}`,
      JSON_CT,
    );
    expect(big.status).toBe(200);
    notePublish("big", big, null);
    const page = await client.send("GET", "/v1/streams/big/events?from=1");
    expect(page.raw.toString()).toContain(`"payload":${"9".repeat(400)}`);
    expect(page.raw.toString()).toContain(`"payload":1e400`);
    recordResult({
      fault: "hostile HTTP: deep nesting, BOM, invalid UTF-8, huge numbers",
      setup: "fixed cases on the 3 JSON routes",
      cases: tried,
      survived: tried,
      acked: 0,
      lost: 0,
      duplicates: 0,
      gaps: 0,
    });
  });

  it("oversized bodies are 413 whether the length is declared or the chunks grow past request_bytes_max, and append nothing", async () => {
    const big = Buffer.alloc(REQUEST_BYTES_MAX + 1, 0x20);
    for (const [method, path] of [
      ["POST", "/v1/streams/ck/events"],
      ["PUT", "/v1/streams/ck"],
      ["POST", "/v1/streams/ck/checkpoint"],
    ]) {
      const declared = await rawExchange(
        s.port,
        Buffer.concat([Buffer.from(`${method} ${path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${big.length}\r\n\r\n`), big]),
      );
      expectContract(declared, [413], `declared ${method} ${path}`);
      const chunked = await rawExchange(
        s.port,
        Buffer.concat([
          Buffer.from(
            `${method} ${path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n${big.length.toString(16)}\r\n`,
          ),
          big,
          Buffer.from("\r\n0\r\n\r\n"),
        ]),
      );
      expectContract(chunked, [413], `chunked ${method} ${path}`);
    }
  });

  it("pipelining: answers given at once come back in order; a request behind one waiting for its shard closes the connection, and the server serves on", async () => {
    const healthz = "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    const info = "GET /v1/streams/q HTTP/1.1\r\nhost: x\r\n\r\n";
    const atOnce = await rawExchange(s.port, Buffer.from(`${healthz + healthz + healthz}GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`));
    expect(atOnce.status).toBe(200);
    // uWS does not pipeline asynchronous answers (README): it closes, answering nothing.
    const behind = await rawExchange(s.port, Buffer.from(info + info));
    expect(behind.status, behind.head).toBe(0);
    expect((await client.send("GET", "/v1/streams/q")).status).toBe(200);
  });

  it("after every class the server is the same healthy process: accepted publishes tile each stream, replay as sent, and no stray stream or file exists", async () => {
    expect(s.proc.exitCode).toBe(null);
    const list = await client.send("GET", "/v1/streams");
    const ids = (list.json.streams as Array<{ id: string }>).map((x) => x.id);
    for (const id of ids) expect(mayExist.has(id), `stream ${id} exists though no accepted request made it`).toBe(true);
    const onDisk = readdirSync(join(s.dataDir, "streams"));
    expect(onDisk.length, `stream dirs ${onDisk.length} against listed streams ${ids.length}`).toBe(ids.length);
    const events = await ledger.verify(client, ids);
    expect(events).toBeGreaterThan(0);
    for (const [stream, bySeq] of expectedEvents) {
      for (let from = 1; ; ) {
        const page = await client.send("GET", `/v1/streams/${stream}/events?from=${from}&limit=50`);
        if (page.json.events.length === 0) break;
        for (const e of page.json.events) {
          const sent = bySeq.get(e.seq);
          if (!sent) continue;
          for (const [k, v] of Object.entries(sent)) expect(e[k], `${stream} seq ${e.seq} field ${k}`).toEqual(v);
        }
        from = page.json.next;
      }
    }
  });
});
