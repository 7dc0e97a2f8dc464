// The bad-input harness shared by publish.test.ts, streams.test.ts, replay.test.ts and
// route-rules.test.ts: one server per file with small limits (so every request at a
// limit stays small), the contract's error shape, and the checks that a rejected
// request changed nothing and the server keeps serving. One copy, so that the four
// files cannot drift apart in what "rejected and changed nothing" means.
import { afterAll, beforeAll, expect, it } from "vitest";
import { request as httpRequest } from "node:http";
import { api, removeDir, startServer, type TestServer } from "./server.js";

// Small limits keep every request small; the default ring_bytes stays valid.
export const PUBLISH_EVENTS_MAX = 10;
export const EVENT_BYTES_MAX = 2048;
export const REQUEST_BYTES_MAX = 65536;
export const REPLAY_PAGE_EVENTS_MAX = 50;
export const FIELD_BYTES_MAX = 64;
const LIMIT_ARGS = [
  "--publish-events-max",
  String(PUBLISH_EVENTS_MAX),
  "--event-bytes-max",
  String(EVENT_BYTES_MAX),
  "--request-bytes-max",
  String(REQUEST_BYTES_MAX),
  "--replay-page-events-max",
  String(REPLAY_PAGE_EVENTS_MAX),
  // The default page (1000) may not exceed the page maximum.
  "--replay-page-events-default",
  "20",
  "--event-field-bytes-max",
  String(FIELD_BYTES_MAX),
];

export const JSON_CT = { "content-type": "application/json" };
export const FB_CT = { "content-type": "application/x-flatbuffers" };

export type Res = Awaited<ReturnType<typeof api>>;

/** The contract's error shape: JSON content type, {"error": {"code", "message", ...}}. */
export function expectError(res: Res, status: number, code: string): Record<string, unknown> {
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

export function expectOk(res: Res, status = 200): any {
  expect(res.status, `${res.status} ${Buffer.from(res.raw).toString("utf8").slice(0, 300)}`).toBe(status);
  if (status !== 204) expect(res.headers.get("content-type")).toMatch(/^application\/json\b/);
  return res.json;
}

/**
 * A raw HTTP request through node:http, for what fetch cannot shape: chunked
 * bodies, exact lengths, and paths sent verbatim (fetch resolves "..").
 */
export function rawRequest(url: string, method: string, headers: Record<string, string | number> = {}, chunks: Buffer[] = []): Promise<Res> {
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

/** The ids in the stream list. */
export async function streamIdsOf(url: string): Promise<string[]> {
  const r = await api(`${url}/v1/streams`, "GET");
  return (expectOk(r).streams as Array<{ id: string }>).map((x) => x.id);
}

/**
 * The last test of a file that sent a server bad input: it is still the same
 * healthy process, it serves, and it never logged a fatal error.
 */
export function itStaysHealthy(server: () => TestServer): void {
  it("is still the same healthy process after all the bad input", async () => {
    const s = server();
    expect(s.proc.exitCode).toBeNull();
    expectOk(await api(`${s.url}/healthz`, "GET"));
    expectOk(await api(`${s.url}/readyz`, "GET"));
    const events = Array.from({ length: 2 }, (_, i) => ({ type: "good", payload: { i } }));
    const body = expectOk(await api(`${s.url}/v1/streams/after-everything/events`, "POST", JSON.stringify({ events }), JSON_CT));
    expect(body).toMatchObject({ stream: "after-everything", first_seq: 1, last_seq: 2, count: 2 });
    expect(s.output()).not.toMatch(/fatal/i);
  });
}

/**
 * Starts the file's server with the small limits (call inside a describe) and
 * gives the requests and checks its tests share. `server()` is valid from the
 * first test on.
 */
export function smallLimitsServer() {
  let s: TestServer;
  const u = (path: string) => `${s.url}${path}`;
  const streamUrl = (id: string) => u(`/v1/streams/${id}`);
  const eventsUrl = (id: string, query = "") => u(`/v1/streams/${id}/events${query}`);

  const publish = (id: string, body: unknown, headers: Record<string, string> = JSON_CT) =>
    api(eventsUrl(id), "POST", typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body), headers);

  const streamIds = (): Promise<string[]> => streamIdsOf(s.url);

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

  return {
    server: () => s,
    u,
    streamUrl,
    eventsUrl,
    publish,
    streamIds,
    publishGood,
    seeded,
    expectUnchangedThenServes,
    expectAbsentThenServes,
  };
}
