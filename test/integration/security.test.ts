// API keys, scopes, prefixes, rate limits and TLS against real server
// processes (README, "Security"): every route refuses a request without the
// right key before it reads a body or says anything about a stream, a
// refused request changes nothing, keys never reach the log, SIGHUP swaps the
// keys, and HTTPS/WSS serve the same API.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { join } from "node:path";
import WebSocket from "ws";
import { api, removeDir, serveExpectingExit, startServer, tempDataDir, type TestServer } from "../helpers/server.js";
import { encodePublishBatch } from "../../src/wire/client.js";
import { logLines } from "../helpers/log-lines.js";

const secret = (role: string) => `k-${role}-${randomBytes(12).toString("hex")}`;
const bearer = (key: string) => ({ authorization: `Bearer ${key}` });
const JSON_CT = { "content-type": "application/json" };

/** Waits until the server's output holds `text` (a log line after a signal). */
async function outputHas(s: TestServer, text: string | RegExp, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  // The log's messages, as written (JSON escapes undone).
  const messages = () =>
    logLines(s.output())
      .map((l) => l.msg)
      .join("\n");
  const has = () => (typeof text === "string" ? messages().includes(text) : text.test(messages()));
  while (!has()) {
    if (Date.now() > deadline) throw new Error(`server output never held ${text}:\n${s.output()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Every key's text, absent from what the server printed. */
function expectNoKeysIn(output: string, keys: string[]): void {
  for (const k of keys) expect(output.includes(k), `a key appears in the server's output`).toBe(false);
}

type Upgrade = { status: number; body: any; headers?: Record<string, unknown>; hello?: any };

/** A WebSocket upgrade: the HTTP refusal (status, JSON body), or the first message once open. */
function upgrade(url: string, headers: Record<string, string> = {}, options: WebSocket.ClientOptions = {}): Promise<Upgrade> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, ...options });
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: body ? JSON.parse(body) : null, headers: res.headers }));
    });
    ws.once("message", (data: Buffer) => {
      resolve({ status: 101, body: null, hello: JSON.parse(data.toString()) });
      ws.close();
    });
    ws.once("error", (err) => {
      if (!/Unexpected server response/.test(err.message)) reject(err);
    });
  });
}

interface Route {
  name: string;
  method: string;
  /** The path for a stream id (ignored by routes without one). */
  path: (stream: string) => string;
  scope: "publish" | "consume" | "admin";
  body?: unknown;
  /** Status with the right key. */
  ok: number;
  ws?: boolean;
}

/** Every route of the API but /healthz and /readyz, in an order the right key can run them. */
const ROUTES: Route[] = [
  { name: "list streams", method: "GET", path: () => "/v1/streams", scope: "admin", ok: 200 },
  { name: "put stream", method: "PUT", path: (s) => `/v1/streams/${s}`, scope: "admin", body: { retention_ms: 30 * 86_400_000 }, ok: 200 },
  { name: "stream info", method: "GET", path: (s) => `/v1/streams/${s}`, scope: "consume", ok: 200 },
  { name: "publish", method: "POST", path: (s) => `/v1/streams/${s}/events`, scope: "publish", body: { events: [{ type: "refused?" }] }, ok: 200 },
  { name: "replay", method: "GET", path: (s) => `/v1/streams/${s}/events?from=1`, scope: "consume", ok: 200 },
  { name: "set checkpoint", method: "POST", path: (s) => `/v1/streams/${s}/checkpoint`, scope: "consume", body: { group: "g", seq: 2 }, ok: 200 },
  { name: "get checkpoint", method: "GET", path: (s) => `/v1/streams/${s}/checkpoint?group=g`, scope: "consume", ok: 200 },
  { name: "lag", method: "GET", path: (s) => `/v1/streams/${s}/lag?group=g`, scope: "consume", ok: 200 },
  { name: "groups", method: "GET", path: (s) => `/v1/streams/${s}/groups`, scope: "consume", ok: 200 },
  { name: "consume without upgrade", method: "GET", path: (s) => `/v1/streams/${s}/consume`, scope: "consume", ok: 426 },
  { name: "consume upgrade", method: "GET", path: (s) => `/v1/streams/${s}/consume?group=w`, scope: "consume", ok: 101, ws: true },
  { name: "delete stream", method: "DELETE", path: (s) => `/v1/streams/${s}.del`, scope: "admin", ok: 204 },
];

describe("API keys, scopes and prefixes", () => {
  const KEYS = {
    admin: secret("admin"), // every scope, every stream
    md: secret("md"), // every scope, streams md.*
    adminMd: secret("admin-md"),
    notPublish: secret("np"),
    notConsume: secret("nc"),
    notAdmin: secret("na"),
  };
  const WRONG_SCOPE: Record<Route["scope"], string> = { publish: KEYS.notPublish, consume: KEYS.notConsume, admin: KEYS.notAdmin };
  const STREAM = "md.s";
  let dir: string;
  let s: TestServer;

  /** A request through the HTTP API (WebSocket routes by upgrade). */
  const call = async (r: Route, stream: string, headers: Record<string, string>, query = "") => {
    const path = r.path(stream) + (query ? (r.path(stream).includes("?") ? "&" : "?") + query : "");
    if (r.ws) return upgrade(`${s.url.replace(/^http/, "ws")}${path}`, headers);
    return api(`${s.url}${path}`, r.method, r.body, { ...(r.body ? JSON_CT : {}), ...headers });
  };

  /** What a user can see of the server's state, read with the admin key. */
  const snapshot = async () => {
    const get = async (path: string) => (await api(`${s.url}${path}`, "GET", undefined, bearer(KEYS.admin))).json;
    return {
      list: await get("/v1/streams"),
      info: await get(`/v1/streams/${STREAM}`),
      infoDel: await get(`/v1/streams/${STREAM}.del`),
      events: await get(`/v1/streams/${STREAM}/events?from=1`),
      checkpoint: await get(`/v1/streams/${STREAM}/checkpoint?group=g`),
      other: await get(`/v1/streams/other.s/events?from=1`),
    };
  };

  beforeAll(async () => {
    dir = tempDataDir("ticker-keys-");
    const all = ["publish", "consume", "admin"];
    writeFileSync(
      join(dir, "keys.json"),
      JSON.stringify([
        { key: KEYS.admin, scopes: all },
        { key: KEYS.md, scopes: all, prefix: "md." },
        { key: KEYS.adminMd, scopes: ["admin"], prefix: "md." },
        { key: KEYS.notPublish, scopes: ["consume", "admin"] },
        { key: KEYS.notConsume, scopes: ["publish", "admin"] },
        { key: KEYS.notAdmin, scopes: ["publish", "consume"] },
      ]),
    );
    s = await startServer({ dataDir: join(dir, "data"), args: ["--api-keys-file", join(dir, "keys.json")] });
    const a = bearer(KEYS.admin);
    for (const id of [STREAM, `${STREAM}.del`, "other.s"]) expect((await api(`${s.url}/v1/streams/${id}`, "PUT", {}, a)).status).toBe(201);
    expect((await api(`${s.url}/v1/streams/${STREAM}/events`, "POST", { events: [{ type: "a" }, { type: "b" }] }, a)).status).toBe(200);
    expect((await api(`${s.url}/v1/streams/other.s/events`, "POST", { events: [{ type: "x" }] }, a)).status).toBe(200);
    expect((await api(`${s.url}/v1/streams/${STREAM}/checkpoint`, "POST", { group: "g", seq: 1 }, a)).status).toBe(200);
  });
  afterAll(async () => {
    await s?.stop();
    removeDir(dir);
  });

  it("every route answers 401 unauthorized with WWW-Authenticate: Bearer without a key, with an unknown key and with another scheme, and changes nothing", async () => {
    const before = await snapshot();
    const wrong = [{}, bearer(secret("unknown")), { authorization: `Basic ${Buffer.from(`u:${KEYS.admin}`).toString("base64")}` }, { authorization: "Bearer" }];
    for (const r of ROUTES) {
      for (const headers of wrong) {
        const res = await call(r, STREAM, headers);
        const detail = `${r.name} with ${JSON.stringify(Object.keys(headers))}: ${JSON.stringify(res instanceof Object && "json" in res ? res.json : (res as Upgrade).body)}`;
        expect(res.status, detail).toBe(401);
        const body = "json" in res ? res.json : res.body;
        expect(body.error.code, detail).toBe("unauthorized");
        const www = "json" in res ? res.headers.get("www-authenticate") : (res as Upgrade).headers!["www-authenticate"];
        expect(www, detail).toBe("Bearer");
      }
    }
    // Fallback answers (404, 405) need a key too: they tell which routes exist.
    expect((await api(`${s.url}/v2/nothing`, "GET")).status).toBe(401);
    expect((await api(`${s.url}/v1/streams/${STREAM}/lag`, "POST")).status).toBe(401);
    expect((await api(`${s.url}/v2/nothing`, "GET", undefined, bearer(KEYS.notAdmin))).status).toBe(404);
    expect((await api(`${s.url}/v1/streams/${STREAM}/lag`, "POST", undefined, bearer(KEYS.notAdmin))).status).toBe(405);
    expect(await snapshot()).toEqual(before);
  });

  it("?token= is accepted on the WebSocket upgrade only: a wrong token is 401, a right one opens the socket, and on HTTP routes it is no key", async () => {
    const consume = ROUTES.find((r) => r.ws)!;
    const refused = (await call(consume, STREAM, {}, `token=${secret("unknown")}`)) as Upgrade;
    expect([refused.status, refused.body.error.code]).toEqual([401, "unauthorized"]);
    const opened = (await call(consume, STREAM, {}, `token=${KEYS.md}`)) as Upgrade;
    expect(opened.status).toBe(101);
    expect(opened.hello).toMatchObject({ type: "hello", stream: STREAM, group: "w" });
    const prefixRefused = (await call(consume, "other.s", {}, `token=${KEYS.md}`)) as Upgrade;
    expect([prefixRefused.status, prefixRefused.body.error.code]).toEqual([403, "forbidden"]);
    for (const r of ROUTES.filter((r) => !r.ws)) {
      const res = await call(r, STREAM, {}, `token=${KEYS.admin}`);
      expect(res.status, r.name).toBe(401);
    }
  });

  it("every route answers 403 forbidden to a key without its scope and to a key whose prefix the stream lacks, and changes nothing", async () => {
    const before = await snapshot();
    for (const r of ROUTES) {
      const scopeRes = await call(r, STREAM, bearer(WRONG_SCOPE[r.scope]));
      const scopeBody = "json" in scopeRes ? scopeRes.json : scopeRes.body;
      expect([scopeRes.status, scopeBody?.error?.code], `${r.name} without the ${r.scope} scope`).toEqual([403, "forbidden"]);
      expect(scopeBody.error.scope).toBe(r.scope);
      if (r.path("x") === r.path("y")) continue; // no stream in the path (the list is filtered instead)
      const prefixRes = await call(r, "other.s", bearer(KEYS.md));
      const prefixBody = "json" in prefixRes ? prefixRes.json : prefixRes.body;
      expect([prefixRes.status, prefixBody?.error?.code], `${r.name} on other.s with an md. key`).toEqual([403, "forbidden"]);
    }
    // Refused before the stream is looked up: a stream that does not exist answers the same.
    const missing = await api(`${s.url}/v1/streams/nope.s`, "GET", undefined, bearer(KEYS.md));
    expect(missing.status).toBe(403);
    expect(await snapshot()).toEqual(before);
  });

  it("a refused publish is answered before its body is sent: 401 and 403 never wait for (or read) the body", async () => {
    const cases: Array<[Record<string, string>, string, number]> = [
      [{}, STREAM, 401],
      [bearer(KEYS.notPublish), STREAM, 403],
      [bearer(KEYS.md), "other.s", 403],
    ];
    for (const [headers, stream, expected] of cases) {
      const status = await new Promise<number>((resolve, reject) => {
        // Headers promise 1 MB; not one byte of it is ever written.
        const req = httpRequest(
          `${s.url}/v1/streams/${stream}/events`,
          { method: "POST", headers: { ...JSON_CT, "content-length": 1_000_000, ...headers } },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
            req.destroy();
          },
        );
        req.on("error", () => {});
        req.flushHeaders();
        setTimeout(() => reject(new Error("no answer within 5 s: the server waited for the body")), 5000);
      });
      expect(status).toBe(expected);
    }
  });

  it("the right key gets every route's answer, the stream list is admin's and shows only the key's prefix, /healthz and /readyz stay open", async () => {
    for (const r of ROUTES) {
      const res = await call(r, STREAM, bearer(KEYS.md));
      const body = "json" in res ? res.json : res.body;
      expect(res.status, `${r.name}: ${JSON.stringify(body)}`).toBe(r.ok);
    }
    const listed = (key: string) => api(`${s.url}/v1/streams`, "GET", undefined, bearer(key)).then((r) => r.json.streams.map((x: { id: string }) => x.id));
    expect(await listed(KEYS.admin)).toEqual(["md.s", "other.s"]);
    expect(await listed(KEYS.adminMd)).toEqual(["md.s"]);
    const events = await api(`${s.url}/v1/streams/${STREAM}/events?from=1`, "GET", undefined, bearer(KEYS.md));
    expect(events.json.events.map((e: { type: string }) => e.type)).toEqual(["a", "b", "refused?"]);
    for (const path of ["/healthz", "/readyz"]) expect((await api(`${s.url}${path}`, "GET")).status, path).toBe(200);
    expect((await api(`${s.url}/healthz`, "POST")).status).toBe(405);
  });

  it("no key appears in the server's output", () => {
    expectNoKeysIn(s.output(), Object.values(KEYS));
    expect(s.output()).toContain("api keys: 6 loaded");
  });
});

describe("the keys file", () => {
  let dir: string;
  beforeAll(() => {
    dir = tempDataDir("ticker-keysfile-");
  });
  afterAll(() => removeDir(dir));

  const KEY = secret("file");
  const BAD_FILES: Array<[string, string, RegExp]> = [
    [
      "an unknown field",
      JSON.stringify([
        { key: secret("ok"), scopes: ["admin"] },
        { key: KEY, scopes: ["admin"], prefx: "md." },
      ]),
      /entry 1: unknown field\(s\) "prefx"/,
    ],
    ["an empty key", JSON.stringify([{ key: "", scopes: ["admin"] }]), /entry 0: "key": must not be empty/],
    ["an unknown scope", JSON.stringify([{ key: KEY, scopes: ["write"] }]), /entry 0: "scopes.0"/],
    ["no scope", JSON.stringify([{ key: KEY, scopes: [] }]), /entry 0: "scopes": must name at least one scope/],
    [
      "a duplicate key",
      JSON.stringify([
        { key: KEY, scopes: ["admin"] },
        { key: secret("x"), scopes: ["admin"] },
        { key: KEY, scopes: ["consume"] },
      ]),
      /entry 2: the same key as entry 0/,
    ],
    ["a key with a space", JSON.stringify([{ key: `${KEY} x`, scopes: ["admin"] }]), /entry 0: "key"/],
    ["a rate of 0", JSON.stringify([{ key: KEY, scopes: ["admin"], events_per_s: 0 }]), /entry 0: "events_per_s"/],
    ["not JSON", `[{"key": "${KEY}", "scopes": ["admin"]`, /not valid JSON/],
    ["an object, not an array", JSON.stringify({ key: KEY, scopes: ["admin"] }), /must hold a JSON array/],
  ];

  it.each(BAD_FILES)("a keys file with %s stops the start with status 2, naming the file and the entry, never the key", async (_what, text, message) => {
    const file = join(dir, `keys-${randomBytes(4).toString("hex")}.json`);
    writeFileSync(file, text);
    const r = await serveExpectingExit(["--port", "0", "--data-dir", join(dir, "data"), "--api-keys-file", file]);
    expect(r.code, r.output).toBe(2);
    expect(r.output).toContain(file);
    expect(r.output).toMatch(message);
    expect(r.output).not.toContain(KEY);
    expect(r.output).not.toContain("ticker listening");
  });

  it("a keys file that cannot be read stops the start with status 2", async () => {
    const r = await serveExpectingExit(["--port", "0", "--data-dir", join(dir, "data"), "--api-keys-file", join(dir, "missing.json")]);
    expect(r.code).toBe(2);
    expect(r.output).toMatch(/missing\.json: cannot read it \(ENOENT\)/);
  });

  it("SIGHUP loads a new file for the next request (a key added works, a key removed is refused) and a broken file keeps the old keys", async () => {
    const file = join(dir, "reload.json");
    const [a, b] = [secret("a"), secret("b")];
    const write = (entries: unknown) => writeFileSync(file, typeof entries === "string" ? entries : JSON.stringify(entries));
    write([{ key: a, scopes: ["consume"] }]);
    const s = await startServer({ dataDir: join(dir, "reload-data"), args: ["--api-keys-file", file] });
    try {
      const status = async (key: string) => (await api(`${s.url}/v1/streams/x/events?from=1`, "GET", undefined, bearer(key))).status;
      expect([await status(a), await status(b)]).toEqual([404, 401]);

      write([
        { key: a, scopes: ["consume"] },
        { key: b, scopes: ["consume"] },
      ]);
      s.proc.kill("SIGHUP");
      await outputHas(s, "SIGHUP: api keys: 2 loaded");
      expect([await status(a), await status(b)]).toEqual([404, 404]);

      write([{ key: b, scopes: ["consume"] }]);
      s.proc.kill("SIGHUP");
      await outputHas(s, "SIGHUP: api keys: 1 loaded");
      expect([await status(a), await status(b)]).toEqual([401, 404]);

      // Broken twice: bad JSON (holding a key), then an entry that fails the schema.
      write(`[{"key": "${a}", "scopes": ["consume"]},`);
      s.proc.kill("SIGHUP");
      await outputHas(s, /not valid JSON.*keeping the 1 keys loaded before/);
      expect([await status(a), await status(b)]).toEqual([401, 404]);
      write([
        { key: b, scopes: ["consume"] },
        { key: a, scopes: ["root"] },
      ]);
      s.proc.kill("SIGHUP");
      await outputHas(s, /entry 1: "scopes.0".*keeping the 1 keys loaded before/);
      expect([await status(a), await status(b)]).toEqual([401, 404]);
      expectNoKeysIn(s.output(), [a, b]);
    } finally {
      await s.stop();
    }
  });

  it("listening beyond loopback warns loudly without keys, and not with keys; SIGHUP without keys changes nothing", async () => {
    // 127.0.0.2 is loopback on Linux, but not one of the addresses the server calls local.
    const open = await startServer({ dataDir: join(dir, "warn-open"), args: ["--host", "127.0.0.2"] });
    const file = join(dir, "warn-keys.json");
    writeFileSync(file, JSON.stringify([{ key: secret("w"), scopes: ["admin"] }]));
    const keyed = await startServer({ dataDir: join(dir, "warn-keyed"), args: ["--host", "127.0.0.2", "--api-keys-file", file] });
    // SIGHUP without a keys file: nothing to reload, and the server keeps serving.
    open.proc.kill("SIGHUP");
    await outputHas(open, "SIGHUP: no api_keys_file is configured");
    expect((await api(`http://127.0.0.2:${open.port}/healthz`, "GET")).status).toBe(200);
    await Promise.all([open.stop(), keyed.stop()]);
    expect(open.output()).toMatch(/WARNING: listening on 127\.0\.0\.2 without API keys/);
    expect(keyed.output()).not.toContain("WARNING");
  });
});

describe("per-key rate limits", () => {
  const KEYS = { requests: secret("rps"), events: secret("eps"), admin: secret("admin") };
  const REQUESTS_PER_S = 2;
  const EVENTS_PER_S = 10;
  let dir: string;
  let s: TestServer;
  const events = (n: number, payload: unknown = { px: 1 }) => ({ events: Array.from({ length: n }, (_, i) => ({ type: `t${i}`, payload })) });
  const publish = (body: unknown, headers: Record<string, string> = JSON_CT) =>
    api(`${s.url}/v1/streams/rl/events`, "POST", body, { ...headers, ...bearer(KEYS.events) });
  const head = async () => (await api(`${s.url}/v1/streams/rl`, "GET", undefined, bearer(KEYS.admin))).json.head_seq;
  const retryAfterMs = (r: Awaited<ReturnType<typeof api>>) => {
    const v = r.headers.get("retry-after");
    expect(v).toMatch(/^[1-9]\d*$/);
    return Number(v) * 1000;
  };

  beforeAll(async () => {
    dir = tempDataDir("ticker-rate-");
    writeFileSync(
      join(dir, "keys.json"),
      JSON.stringify([
        { key: KEYS.requests, scopes: ["consume"], requests_per_s: REQUESTS_PER_S },
        { key: KEYS.events, scopes: ["publish"], events_per_s: EVENTS_PER_S },
        { key: KEYS.admin, scopes: ["admin", "consume"] },
      ]),
    );
    s = await startServer({ dataDir: join(dir, "data"), args: ["--api-keys-file", join(dir, "keys.json")] });
    expect((await api(`${s.url}/v1/streams/rl`, "PUT", {}, bearer(KEYS.admin))).status).toBe(201);
  });
  afterAll(async () => {
    await s?.stop();
    removeDir(dir);
  });

  it("requests_per_s: a burst of exactly the rate passes, the next is 429 rate_limited with Retry-After, and after it the bucket has refilled", async () => {
    const get = () => api(`${s.url}/v1/streams/rl/lag?group=g`, "GET", undefined, bearer(KEYS.requests));
    // One more than the rate, all at once (so no refill comes between them): exactly the rate is admitted.
    const burst = await Promise.all(Array.from({ length: REQUESTS_PER_S + 1 }, get));
    const statuses = burst.map((r) => r.status).sort();
    expect(statuses).toEqual([...Array(REQUESTS_PER_S).fill(404), 429]); // 404: admitted, and the group is unknown
    const over = burst.find((r) => r.status === 429)!;
    expect([over.json.error.code, over.json.error.requests_per_s]).toEqual(["rate_limited", REQUESTS_PER_S]);
    await new Promise((r) => setTimeout(r, retryAfterMs(over)));
    expect((await get()).status).toBe(404);
  });

  it("events_per_s: a batch of exactly the rate passes, the next batch is refused whole (429, nothing appended), a batch larger than the rate is 413, and the bucket refills", async () => {
    // Payloads full of brackets and quotes: the count must not be fooled by them.
    const tricky = { s: '{"events": [{"type": "x"}]}', a: [[{}], { "}": "]" }] };
    const first = await publish(events(EVENTS_PER_S, tricky));
    expect(first.status, JSON.stringify(first.json)).toBe(200);
    expect(await head()).toBe(EVENTS_PER_S);
    const over = await publish(events(EVENTS_PER_S));
    expect([over.status, over.json.error.code, over.json.error.events_per_s]).toEqual([429, "rate_limited", EVENTS_PER_S]);
    const wait = retryAfterMs(over);
    expect(await head()).toBe(EVENTS_PER_S);
    const tooBig = await publish(events(EVENTS_PER_S + 1));
    expect([tooBig.status, tooBig.json.error.code]).toEqual([413, "batch_too_large"]);
    await new Promise((r) => setTimeout(r, wait));
    // A refill is spent by a FlatBuffers batch as well as by JSON.
    const fb = await publish(Buffer.from(encodePublishBatch(Array.from({ length: EVENTS_PER_S }, () => ({ type: "fb" })))), {
      "content-type": "application/x-flatbuffers",
    });
    expect(fb.status, JSON.stringify(fb.json)).toBe(200);
    expect(await head()).toBe(2 * EVENTS_PER_S);
    expect((await publish(events(EVENTS_PER_S))).status).toBe(429);
  });

  it("a batch the shard refuses costs its key nothing", async () => {
    await new Promise((r) => setTimeout(r, 1000)); // a full bucket
    const h = await head();
    for (let i = 0; i < 3; i++) {
      const bad = await publish({ events: Array.from({ length: EVENTS_PER_S }, () => ({ type: "t", colour: "red" })) });
      expect(bad.status).toBe(400);
    }
    expect((await publish(events(EVENTS_PER_S))).status).toBe(200);
    expect(await head()).toBe(h + EVENTS_PER_S);
  });
});

describe("TLS", () => {
  let dir: string;
  let cert: Buffer;
  beforeAll(() => {
    dir = tempDataDir("ticker-tls-");
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-days",
        "2",
        "-keyout",
        join(dir, "key.pem"),
        "-out",
        join(dir, "cert.pem"),
      ],
      { stdio: "ignore" },
    );
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=other",
        "-days",
        "2",
        "-keyout",
        join(dir, "other-key.pem"),
        "-out",
        join(dir, "other-cert.pem"),
      ],
      { stdio: "ignore" },
    );
    cert = readFileSync(join(dir, "cert.pem"));
  });
  afterAll(() => removeDir(dir));

  /** A JSON request over HTTPS, trusting only the test's own certificate. */
  const httpsApi = (url: string, method: string, body?: unknown, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; json: any }>((resolve, reject) => {
      const req = httpsRequest(url, { method, ca: cert, headers: { ...(body ? JSON_CT : {}), ...headers } }, (res) => {
        let text = "";
        res.on("data", (d: Buffer) => (text += d.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : null }));
      });
      req.on("error", reject);
      req.end(body ? JSON.stringify(body) : undefined);
    });

  it("with --tls-cert and --tls-key the server says https, and publish, replay, keys and a wss consumer work over TLS", async () => {
    const key = secret("tls");
    writeFileSync(join(dir, "keys.json"), JSON.stringify([{ key, scopes: ["publish", "consume"] }]));
    const s = await startServer({
      dataDir: join(dir, "data"),
      args: ["--tls-cert", join(dir, "cert.pem"), "--tls-key", join(dir, "key.pem"), "--api-keys-file", join(dir, "keys.json")],
    });
    try {
      expect(s.output()).toMatch(/ticker listening on https:\/\/127\.0\.0\.1:\d+ /);
      const url = `https://127.0.0.1:${s.port}`;
      expect((await httpsApi(`${url}/v1/streams/tls/events`, "POST", { events: [{ type: "a" }, { type: "b" }] }, bearer(key))).status).toBe(200);
      const consumer = upgrade(`wss://127.0.0.1:${s.port}/v1/streams/tls/consume?from=earliest&token=${key}`, {}, { ca: cert });
      const replay = await httpsApi(`${url}/v1/streams/tls/events?from=1`, "GET", undefined, bearer(key));
      expect(replay.json.events.map((e: { type: string }) => e.type)).toEqual(["a", "b"]);
      expect((await httpsApi(`${url}/v1/streams/tls/events?from=1`, "GET")).status).toBe(401);
      const opened = await consumer;
      expect(opened.status).toBe(101);
      expect(opened.hello).toMatchObject({ type: "hello", stream: "tls" });
      // Events reach a wss consumer too.
      const got = await new Promise<any>((resolve, reject) => {
        const ws = new WebSocket(`wss://127.0.0.1:${s.port}/v1/streams/tls/consume?from=1`, { ca: cert, headers: bearer(key) });
        ws.on("message", (d: Buffer) => {
          const m = JSON.parse(d.toString());
          if (m.type === "events") {
            resolve(m);
            ws.close();
          }
        });
        ws.on("error", reject);
      });
      expect(got.events.map((e: { seq: number }) => e.seq)).toEqual([1, 2]);
      // Plain HTTP on the TLS port gets no answer.
      await expect(api(`http://127.0.0.1:${s.port}/healthz`, "GET")).rejects.toThrow();
      expectNoKeysIn(s.output(), [key]);
    } finally {
      await s.stop();
    }
  });

  it("a certificate without its key, a key of another certificate, or a missing file stops the start with status 2", async () => {
    const data = join(dir, "bad-data");
    const cases: Array<[string[], RegExp]> = [
      [["--tls-cert", join(dir, "cert.pem")], /tls_key_file: TLS needs both/],
      [["--tls-key-file", join(dir, "key.pem")], /tls_cert_file: TLS needs both/],
      [["--tls-cert", join(dir, "cert.pem"), "--tls-key", join(dir, "other-key.pem")], /other-key\.pem is not the key of the certificate/],
      [["--tls-cert", join(dir, "nope.pem"), "--tls-key", join(dir, "key.pem")], /tls_cert_file .*nope\.pem: cannot read it/],
      [["--tls-cert", join(dir, "key.pem"), "--tls-key", join(dir, "key.pem")], /not a PEM certificate/],
    ];
    for (const [args, message] of cases) {
      const r = await serveExpectingExit(["--port", "0", "--data-dir", data, ...args]);
      expect(r.code, r.output).toBe(2);
      expect(r.output).toMatch(message);
    }
  });
});
