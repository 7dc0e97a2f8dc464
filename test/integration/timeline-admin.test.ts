// Named timelines, reader positions and the cursor secret over HTTP, against
// real server processes (src/front/timeline-admin.ts): CRUD, persistence
// across kill -9, readers round trips, the limits at their numbers, bad input
// that changes nothing (names, bodies, unknown streams, cursors), scopes and
// prefixes, and a rotation after which an old cursor still verifies.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CursorSigner, SECRETS_FILE } from "../../src/timeline/cursor.js";
import { expectError, expectOk, itStaysHealthy, JSON_CT, rawRequest } from "../helpers/bad-input.js";
import { api, perTestServers, removeDir, serveExpectingExit, startServer, tempDataDir, type TestServer } from "../helpers/server.js";
import { checkAnswersAgainstOpenApi } from "../helpers/openapi-check.js";

// Every answer `api` gets here is also checked against /openapi.json.
checkAnswersAgainstOpenApi();

const STREAMS_MAX = 3;
const TIMELINES_MAX = 6;
const READERS_MAX = 2;
const LIMIT_ARGS = ["--timeline-streams-max", `${STREAMS_MAX}`, "--timelines-max", `${TIMELINES_MAX}`, "--timeline-readers-max", `${READERS_MAX}`];
const REQUEST_BYTES_MAX = 4096;

/** A cursor the server will verify: signed with the secret its data dir keeps (read, not written, by the test). */
const signerOf = (s: TestServer) => CursorSigner.open(s.dataDir, { secret: null, previousSecret: null, graceMs: 86_400_000 });
const cursorOf = (s: TestServer, streams: string[], seqs = streams.map(() => 0)) => signerOf(s).encode(streams, { direction: "forward", seqs });

describe("named timelines and reader positions", () => {
  let s: TestServer;
  const u = (path: string) => `${s.url}${path}`;
  const putTimeline = (name: string, body: unknown, headers: Record<string, string> = JSON_CT) =>
    api(u(`/v1/timelines/${name}`), "PUT", typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body), headers);
  const putReader = (name: string, reader: string, body: unknown) =>
    api(u(`/v1/timelines/${name}/readers/${reader}`), "PUT", typeof body === "string" ? body : JSON.stringify(body), JSON_CT);
  const names = async () => (expectOk(await api(u("/v1/timelines"), "GET")).timelines as Array<{ name: string }>).map((t) => t.name);
  /** Creates and empties the timelines of a test: each test starts at none. */
  const clearTimelines = async () => {
    for (const n of await names()) expectOk(await api(u(`/v1/timelines/${n}`), "DELETE"), 204);
  };

  beforeAll(async () => {
    s = await startServer({ args: [...LIMIT_ARGS, "--request-bytes-max", `${REQUEST_BYTES_MAX}`, "--request-buffer-bytes-max", "65536"] });
    for (const id of ["a", "b", "c", "d"]) expectOk(await api(u(`/v1/streams/${id}`), "PUT", "{}", JSON_CT), 201);
  });
  afterAll(async () => {
    if (!s) return;
    await s.stop();
    removeDir(s.dataDir);
  });

  it("a timeline is created (201), read, listed, changed (200) and deleted (204); its streams are a sorted set", async () => {
    await clearTimelines();
    const created = expectOk(await putTimeline("feed", { streams: ["b", "a", "b"] }), 201);
    expect(created).toEqual({ name: "feed", streams: ["a", "b"], created_at: expect.any(Number), updated_at: created.created_at });
    expect(expectOk(await api(u("/v1/timelines/feed"), "GET"))).toEqual(created);
    const same = expectOk(await putTimeline("feed", { streams: ["a", "b"] }), 200);
    expect(same).toEqual(created);
    const changed = expectOk(await putTimeline("feed", { streams: ["c", "a"] }), 200);
    expect(changed).toMatchObject({ streams: ["a", "c"], created_at: created.created_at });
    expect(changed.updated_at).toBeGreaterThan(created.updated_at);
    expectOk(await putTimeline("Feed", { streams: ["d"] }), 201);
    expect(expectOk(await api(u("/v1/timelines"), "GET")).timelines).toEqual([
      { name: "Feed", streams: ["d"], created_at: expect.any(Number), updated_at: expect.any(Number) },
      changed,
    ]);
    expectOk(await api(u("/v1/timelines/feed"), "DELETE"), 204);
    expectError(await api(u("/v1/timelines/feed"), "GET"), 404, "timeline_not_found");
    expectError(await api(u("/v1/timelines/feed"), "DELETE"), 404, "timeline_not_found");
    expect(await names()).toEqual(["Feed"]);
  });

  it("bad timeline names and reader ids are 400 and create nothing", async () => {
    await clearTimelines();
    expectOk(await putTimeline("ok", { streams: ["a"] }), 201);
    for (const bad of ["_x", ".x", "-x", "a%20b", "x".repeat(129), "%C3%A9"]) {
      expectError(await putTimeline(bad, { streams: ["a"] }), 400, "invalid_timeline");
      expectError(await api(u(`/v1/timelines/${bad}`), "GET"), 400, "invalid_timeline");
      expectError(await api(u(`/v1/timelines/${bad}`), "DELETE"), 400, "invalid_timeline");
      expectError(await putReader(bad, "r", { cursor: "AAAA" }), 400, "invalid_timeline");
      expectError(await putReader("ok", bad, { cursor: cursorOf(s, ["a"]) }), 400, "invalid_reader");
      expectError(await api(u(`/v1/timelines/ok/readers/${bad}`), "GET"), 400, "invalid_reader");
    }
    expect(await names()).toEqual(["ok"]);
  });

  it("bad bodies are 400 (415 for another media type, 413 past request_bytes_max) and change nothing", async () => {
    await clearTimelines();
    const before = expectOk(await putTimeline("kept", { streams: ["a"] }), 201);
    const cases: Array<[unknown, number, string, Record<string, string>?]> = [
      ["{not json", 400, "invalid_json"],
      [Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"streams":["b"]}')]), 400, "invalid_json"],
      [Buffer.from([0x7b, 0xff, 0x7d]), 400, "invalid_json"],
      ["[]", 400, "invalid_body"],
      ["null", 400, "invalid_body"],
      [{}, 400, "invalid_body"],
      [{ streams: "a" }, 400, "invalid_body"],
      [{ streams: [1] }, 400, "invalid_body"],
      [{ streams: [] }, 400, "invalid_body"],
      [{ streams: ["b"], extra: true }, 400, "invalid_body"],
      [{ streams: ["b", "no/slash"] }, 400, "invalid_stream"],
      [{ streams: ["b"] }, 415, "unsupported_media_type", { "content-type": "text/plain" }],
      [{ streams: Array.from({ length: 1000 }, (_, i) => `s${i}`) }, 413, "request_too_large"],
    ];
    for (const [body, status, code, headers] of cases) {
      for (const name of ["kept", "fresh"]) expectError(await putTimeline(name, body, headers ?? JSON_CT), status, code);
    }
    expect(expectOk(await api(u("/v1/timelines/kept"), "GET"))).toEqual(before);
    expectError(await api(u("/v1/timelines/fresh"), "GET"), 404, "timeline_not_found");
    expect(await names()).toEqual(["kept"]);
  });

  it("an unknown stream is 404 stream_not_found naming it, on create and on change, and changes nothing", async () => {
    await clearTimelines();
    const before = expectOk(await putTimeline("kept", { streams: ["a"] }), 201);
    for (const name of ["kept", "fresh"]) {
      const e = expectError(await putTimeline(name, { streams: ["a", "nope", "zzz"] }), 404, "stream_not_found");
      expect(e.stream).toBe("nope");
      expect(e.message).toContain("nope");
    }
    expect(expectOk(await api(u("/v1/timelines/kept"), "GET"))).toEqual(before);
    expect(await names()).toEqual(["kept"]);
    expectError(await api(u("/v1/streams/nope"), "GET"), 404, "stream_not_found");
  });

  it(`timeline_streams_max (${STREAMS_MAX}): ${STREAMS_MAX} streams fit, ${STREAMS_MAX + 1} are 400 naming the key`, async () => {
    await clearTimelines();
    expectOk(await putTimeline("wide", { streams: ["a", "b", "c"] }), 201);
    const e = expectError(await putTimeline("wide", { streams: ["a", "b", "c", "d"] }), 400, "invalid_body");
    expect(e.timeline_streams_max).toBe(STREAMS_MAX);
    expect(expectOk(await api(u("/v1/timelines/wide"), "GET")).streams).toEqual(["a", "b", "c"]);
  });

  it(`timelines_max (${TIMELINES_MAX}): the last one fits, one more is 409, a change still works, a delete makes room`, async () => {
    await clearTimelines();
    for (let i = 0; i < TIMELINES_MAX; i++) expectOk(await putTimeline(`t${i}`, { streams: ["a"] }), 201);
    const e = expectError(await putTimeline("one-more", { streams: ["a"] }), 409, "limit_reached");
    expect(e.timelines_max).toBe(TIMELINES_MAX);
    expectOk(await putTimeline("t0", { streams: ["b"] }), 200);
    expectOk(await api(u("/v1/timelines/t1"), "DELETE"), 204);
    expectOk(await putTimeline("one-more", { streams: ["a"] }), 201);
    expect(await names()).toHaveLength(TIMELINES_MAX);
  });

  it("a reader position is stored (201, then 200) and read back; unknown readers and timelines are 404", async () => {
    await clearTimelines();
    expectOk(await putTimeline("feed", { streams: ["a", "b"] }), 201);
    const first = cursorOf(s, ["a", "b"], [1, 0]);
    const created = expectOk(await putReader("feed", "phone", { cursor: first }), 201);
    expect(created).toEqual({ timeline: "feed", reader: "phone", cursor: first, updated_at: expect.any(Number) });
    const second = cursorOf(s, ["a", "b"], [5, 7]);
    const moved = expectOk(await putReader("feed", "phone", { cursor: second }), 200);
    expect(moved.updated_at).toBeGreaterThanOrEqual(created.updated_at);
    expect(expectOk(await api(u("/v1/timelines/feed/readers/phone"), "GET"))).toEqual(moved);
    const e = expectError(await api(u("/v1/timelines/feed/readers/tablet"), "GET"), 404, "reader_not_found");
    expect(e).toMatchObject({ timeline: "feed", reader: "tablet" });
    expectError(await api(u("/v1/timelines/nope/readers/phone"), "GET"), 404, "timeline_not_found");
    expectError(await putReader("nope", "phone", { cursor: second }), 404, "timeline_not_found");
  });

  it(`timeline_readers_max (${READERS_MAX}): the last reader fits, one more is 409, an existing one still moves`, async () => {
    await clearTimelines();
    expectOk(await putTimeline("feed", { streams: ["a"] }), 201);
    const c = cursorOf(s, ["a"]);
    for (let i = 0; i < READERS_MAX; i++) expectOk(await putReader("feed", `r${i}`, { cursor: c }), 201);
    const e = expectError(await putReader("feed", "one-more", { cursor: c }), 409, "limit_reached");
    expect(e.timeline_readers_max).toBe(READERS_MAX);
    expectError(await api(u("/v1/timelines/feed/readers/one-more"), "GET"), 404, "reader_not_found");
    expectOk(await putReader("feed", "r0", { cursor: cursorOf(s, ["a"], [9]) }), 200);
  });

  it("bad cursors are 400 invalid_cursor and store nothing: garbage, tampered, truncated, another set's, another server's, a foreign one after the streams changed", async () => {
    await clearTimelines();
    expectOk(await putTimeline("feed", { streams: ["a", "b"] }), 201);
    const good = cursorOf(s, ["a", "b"], [3, 4]);
    expectOk(await putReader("feed", "phone", { cursor: good }), 201);
    const stored = expectOk(await api(u("/v1/timelines/feed/readers/phone"), "GET"));
    const flipped = Buffer.from(good, "base64url");
    flipped[flipped.length - 3] ^= 0x10;
    const otherServer = CursorSigner.open(tempDataDir(), { secret: null, previousSecret: null, graceMs: 0 });
    const bad = [
      "",
      "not a cursor",
      "A".repeat(3000),
      good.slice(0, -1),
      `${good}A`,
      flipped.toString("base64url"),
      cursorOf(s, ["a"]),
      cursorOf(s, ["a", "b", "c"]),
      otherServer.encode(["a", "b"], { direction: "forward", seqs: [3, 4] }),
    ];
    for (const cursor of bad) {
      for (const reader of ["phone", "fresh"]) expectError(await putReader("feed", reader, { cursor }), 400, "invalid_cursor");
    }
    expectError(await putReader("feed", "phone", { cursor: 42 }), 400, "invalid_body");
    expectError(await putReader("feed", "phone", {}), 400, "invalid_body");
    expectError(await putReader("feed", "phone", { cursor: good, extra: 1 }), 400, "invalid_body");
    expect(expectOk(await api(u("/v1/timelines/feed/readers/phone"), "GET"))).toEqual(stored);
    expectError(await api(u("/v1/timelines/feed/readers/fresh"), "GET"), 404, "reader_not_found");
    // Another stream set: the old set's cursors are foreign, and its readers' positions are gone.
    expectOk(await putTimeline("feed", { streams: ["a", "c"] }), 200);
    expectError(await api(u("/v1/timelines/feed/readers/phone"), "GET"), 404, "reader_not_found");
    expectError(await putReader("feed", "phone", { cursor: good }), 400, "invalid_cursor");
    expectOk(await putReader("feed", "phone", { cursor: cursorOf(s, ["a", "c"]) }), 201);
  });

  it("a deleted and re-created timeline starts without reader positions", async () => {
    await clearTimelines();
    expectOk(await putTimeline("feed", { streams: ["a"] }), 201);
    expectOk(await putReader("feed", "phone", { cursor: cursorOf(s, ["a"], [2]) }), 201);
    expectOk(await api(u("/v1/timelines/feed"), "DELETE"), 204);
    expectOk(await putTimeline("feed", { streams: ["a"] }), 201);
    expectError(await api(u("/v1/timelines/feed/readers/phone"), "GET"), 404, "reader_not_found");
  });

  it("after a rotation the old cursor still verifies and a new one is signed with the new secret", async () => {
    await clearTimelines();
    expectOk(await putTimeline("feed", { streams: ["a"] }), 201);
    const old = cursorOf(s, ["a"], [1]);
    const keyBefore = signerOf(s).keyId;
    const rotated = expectOk(await api(u("/v1/timelines/_secret/rotate"), "POST"));
    expect(rotated.key_id).not.toBe(keyBefore);
    expect(rotated.previous_valid_until).toBeGreaterThan(Date.now() + 86_000_000);
    expect(signerOf(s).keyId).toBe(rotated.key_id);
    expect(JSON.parse(readFileSync(join(s.dataDir, SECRETS_FILE), "utf8")).previous).toHaveLength(1);
    expectOk(await putReader("feed", "old", { cursor: old }), 201);
    expectOk(await putReader("feed", "new", { cursor: cursorOf(s, ["a"], [2]) }), 201);
    expectError(await api(u("/v1/timelines/_secret/rotate"), "POST", JSON.stringify({ now: 1 }), JSON_CT), 400, "invalid_body");
    expectError(await api(u("/v1/timelines/_secret/rotate"), "POST", "{", JSON_CT), 400, "invalid_json");
    expect(signerOf(s).keyId).toBe(rotated.key_id);
  });

  it("the rotate route and the name routes do not swallow each other", async () => {
    const get = expectError(await api(u("/v1/timelines/_secret/rotate"), "GET"), 405, "method_not_allowed");
    expect(get.allow).toBe("POST");
    expectError(await api(u("/v1/timelines/_secret"), "GET"), 400, "invalid_timeline");
    expectError(await api(u("/v1/timelines/_secret"), "PUT", JSON.stringify({ streams: ["a"] }), JSON_CT), 400, "invalid_timeline");
    expectError(await api(u("/v1/timelines/x/readers"), "GET"), 404, "not_found");
    expectError(await api(u("/v1/timelines/x/readers/r/more"), "GET"), 404, "not_found");
    // A raw path with a dot segment is sent as is: it is a name the rule refuses, not a route.
    expectError(await rawRequest(u("/v1/timelines/.."), "GET"), 400, "invalid_timeline");
  });

  itStaysHealthy(() => s);
});

describe("timelines across restarts and start-up", () => {
  const servers = perTestServers();

  it("timelines and reader positions are there after kill -9, and cursors from before still verify", async () => {
    const dir = servers.dir();
    let s = await servers.start(dir);
    for (const id of ["a", "b"]) expectOk(await api(`${s.url}/v1/streams/${id}`, "PUT", "{}", JSON_CT), 201);
    const made: unknown[] = [];
    for (let i = 0; i < 20; i++) made.push(expectOk(await api(`${s.url}/v1/timelines/t${i}`, "PUT", { streams: i % 2 ? ["a", "b"] : ["b"] }), 201));
    const cursor = cursorOf(s, ["a", "b"], [10, 20]);
    const readers = [];
    for (let i = 0; i < 10; i++) readers.push(expectOk(await api(`${s.url}/v1/timelines/t1/readers/r${i}`, "PUT", { cursor }), 201));
    expectOk(await api(`${s.url}/v1/timelines/t2`, "DELETE"), 204);
    expectOk(await api(`${s.url}/v1/timelines/t3`, "PUT", { streams: ["a"] }), 200);
    const listed = expectOk(await api(`${s.url}/v1/timelines`, "GET")).timelines;
    await s.kill9();
    s = servers.track(await startServer({ dataDir: dir }));
    expect(expectOk(await api(`${s.url}/v1/timelines`, "GET")).timelines).toEqual(listed);
    expect(listed).toHaveLength(19);
    for (const r of readers) expect(expectOk(await api(`${s.url}/v1/timelines/t1/readers/${r.reader}`, "GET"))).toEqual(r);
    expectOk(await api(`${s.url}/v1/timelines/t1/readers/after`, "PUT", { cursor }), 201);
    expect(s.output()).not.toMatch(/DAMAGED/);
  });

  it("a damaged secrets file stops the start (status 2) naming it, rather than voiding every cursor", async () => {
    const dir = servers.dir();
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, SECRETS_FILE), "{ not json");
    const r = await serveExpectingExit(["--data-dir", dir, "--port", "0"]);
    expect(r.code).toBe(2);
    expect(r.output).toContain(SECRETS_FILE);
    expect(readFileSync(join(dir, SECRETS_FILE), "utf8")).toBe("{ not json");
  });

  it("with timeline_cursor_secret the data dir keeps no secret, rotation is 409, and the previous secret verifies", async () => {
    const dir = servers.dir();
    const secret = randomBytes(24).toString("base64url");
    const previous = randomBytes(24).toString("base64url");
    // "--flag=value": a base64url secret may start with "-", which "--flag value" would read as a flag.
    const s = await servers.start(dir, [`--timeline-cursor-secret=${secret}`, `--timeline-cursor-previous-secret=${previous}`]);
    expect(existsSync(join(dir, SECRETS_FILE))).toBe(false);
    expectError(await api(`${s.url}/v1/timelines/_secret/rotate`, "POST"), 409, "secret_from_config");
    expectOk(await api(`${s.url}/v1/streams/a`, "PUT", "{}", JSON_CT), 201);
    expectOk(await api(`${s.url}/v1/timelines/feed`, "PUT", { streams: ["a"] }), 201);
    const signed = (k: string) =>
      CursorSigner.open(tempDataDir(), { secret: k, previousSecret: null, graceMs: 0 }).encode(["a"], { direction: "forward", seqs: [0] });
    expectOk(await api(`${s.url}/v1/timelines/feed/readers/cur`, "PUT", { cursor: signed(secret) }), 201);
    expectOk(await api(`${s.url}/v1/timelines/feed/readers/prev`, "PUT", { cursor: signed(previous) }), 201);
    expectError(await api(`${s.url}/v1/timelines/feed/readers/x`, "PUT", { cursor: signed(randomBytes(24).toString("base64url")) }), 400, "invalid_cursor");
  });
});

describe("timeline scopes and prefixes", () => {
  const key = (role: string) => `k-${role}-${randomBytes(12).toString("hex")}`;
  const KEYS = { admin: key("admin"), adminMd: key("admin-md"), consumeMd: key("consume-md"), publish: key("publish"), consume: key("consume") };
  const as = (k: string) => ({ authorization: `Bearer ${k}` });
  let s: TestServer;
  let dir: string;
  const call = (k: string | null, method: string, path: string, body?: unknown) => api(`${s.url}${path}`, method, body, k ? as(k) : {});

  beforeAll(async () => {
    dir = tempDataDir("ticker-tl-keys-");
    writeFileSync(
      join(dir, "keys.json"),
      JSON.stringify([
        { key: KEYS.admin, scopes: ["publish", "consume", "admin"] },
        { key: KEYS.adminMd, scopes: ["admin"], prefix: "md." },
        { key: KEYS.consumeMd, scopes: ["consume"], prefix: "md." },
        { key: KEYS.publish, scopes: ["publish"] },
        { key: KEYS.consume, scopes: ["consume"] },
      ]),
    );
    s = await startServer({ dataDir: join(dir, "data"), args: ["--api-keys-file", join(dir, "keys.json")] });
    for (const id of ["md.a", "md.b", "other"]) expectOk(await call(KEYS.admin, "PUT", `/v1/streams/${id}`, {}), 201);
    expectOk(await call(KEYS.admin, "PUT", "/v1/timelines/mixed", { streams: ["md.a", "other"] }), 201);
  });
  afterAll(async () => {
    await s?.stop();
    removeDir(dir);
  });

  it("without a key every timeline route is 401; without the scope it is 403", async () => {
    const routes: Array<[string, string, unknown, string]> = [
      ["GET", "/v1/timelines", undefined, "admin"],
      ["PUT", "/v1/timelines/mixed", { streams: ["md.a"] }, "admin"],
      ["GET", "/v1/timelines/mixed", undefined, "admin"],
      ["DELETE", "/v1/timelines/mixed", undefined, "admin"],
      ["POST", "/v1/timelines/_secret/rotate", undefined, "admin"],
      ["PUT", "/v1/timelines/mixed/readers/r", { cursor: "AAAA" }, "consume"],
      ["GET", "/v1/timelines/mixed/readers/r", undefined, "consume"],
    ];
    for (const [method, path, body, scope] of routes) {
      expectError(await call(null, method, path, body), 401, "unauthorized");
      const refused = expectError(await call(KEYS.publish, method, path, body), 403, "forbidden");
      expect(refused.scope, `${method} ${path}`).toBe(scope);
    }
    expect(expectOk(await call(KEYS.admin, "GET", "/v1/timelines/mixed")).streams).toEqual(["md.a", "other"]);
  });

  it("a key with a prefix may touch only timelines whose every stream is under it; the list shows only those", async () => {
    expectError(await call(KEYS.adminMd, "PUT", "/v1/timelines/md-feed", { streams: ["md.a", "other"] }), 403, "forbidden");
    expectOk(await call(KEYS.adminMd, "PUT", "/v1/timelines/md-feed", { streams: ["md.b", "md.a"] }), 201);
    // Refused before the shards are asked: a stream outside the prefix that does not exist is 403 too.
    expectError(await call(KEYS.adminMd, "PUT", "/v1/timelines/md-feed", { streams: ["md.a", "nope"] }), 403, "forbidden");
    expectError(await call(KEYS.adminMd, "PUT", "/v1/timelines/mixed", { streams: ["md.a"] }), 403, "forbidden");
    const hidden = expectError(await call(KEYS.adminMd, "GET", "/v1/timelines/mixed"), 403, "forbidden");
    expect(hidden.message).not.toContain("other");
    expectError(await call(KEYS.adminMd, "DELETE", "/v1/timelines/mixed"), 403, "forbidden");
    expect(expectOk(await call(KEYS.adminMd, "GET", "/v1/timelines")).timelines.map((t: { name: string }) => t.name)).toEqual(["md-feed"]);
    expect(expectOk(await call(KEYS.admin, "GET", "/v1/timelines")).timelines.map((t: { name: string }) => t.name)).toEqual(["md-feed", "mixed"]);
    expectError(await call(KEYS.adminMd, "POST", "/v1/timelines/_secret/rotate"), 403, "forbidden");
    expect(expectOk(await call(KEYS.admin, "GET", "/v1/timelines/mixed")).streams).toEqual(["md.a", "other"]);
  });

  it("reader positions need consume and the prefix over the timeline's streams", async () => {
    const signer = CursorSigner.open(join(dir, "data"), { secret: null, previousSecret: null, graceMs: 86_400_000 });
    const mdCursor = signer.encode(["md.a", "md.b"], { direction: "forward", seqs: [0, 0] });
    const mixedCursor = signer.encode(["md.a", "other"], { direction: "backward", seqs: [1, 1] });
    expectOk(await call(KEYS.consumeMd, "PUT", "/v1/timelines/md-feed/readers/r", { cursor: mdCursor }), 201);
    expectOk(await call(KEYS.consumeMd, "GET", "/v1/timelines/md-feed/readers/r"));
    expectError(await call(KEYS.consumeMd, "PUT", "/v1/timelines/mixed/readers/r", { cursor: mixedCursor }), 403, "forbidden");
    expectError(await call(KEYS.consumeMd, "GET", "/v1/timelines/mixed/readers/r"), 403, "forbidden");
    expectOk(await call(KEYS.consume, "PUT", "/v1/timelines/mixed/readers/r", { cursor: mixedCursor }), 201);
    expectError(await call(KEYS.consumeMd, "GET", "/v1/timelines/md-feed"), 403, "forbidden");
    expectOk(await call(KEYS.admin, "POST", "/v1/timelines/_secret/rotate"));
    expectOk(await call(KEYS.consume, "PUT", "/v1/timelines/mixed/readers/r2", { cursor: mixedCursor }), 201);
  });
});
