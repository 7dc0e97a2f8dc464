// The client in front of a cluster, against two small node:http servers
// standing in for its nodes: an entry node that answers 307 for the streams
// it does not own, and an owner. Location read absolute and relative, the
// request sent again whole, the hop bound at its limit, the route cache (its
// bound at the limit, what it forgets and when), and the redirects refused.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import http from "node:http";
import type net from "node:net";
import { parseResponseHead } from "../../src/client/http.js";
import { TickerError } from "../../src/client/errors.js";
import { Routes, streamOfPath } from "../../src/client/routes.js";
import { Transport } from "../../src/client/transport.js";

interface Seen {
  method: string;
  url: string;
  body: string;
  auth: string | undefined;
}

/** A node: `answer` says what to send for a request (its body read). */
function node(answer: (req: http.IncomingMessage, seen: Seen) => { status: number; headers?: Record<string, string>; body?: unknown }) {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const s = { method: req.method ?? "", url: req.url ?? "", body: Buffer.concat(chunks).toString(), auth: req.headers.authorization };
      seen.push(s);
      const a = answer(req, s);
      const body = Buffer.from(JSON.stringify(a.body ?? { url: s.url }));
      res.writeHead(a.status, { "content-type": "application/json", "content-length": body.length, ...a.headers });
      res.end(body);
    });
  });
  return {
    seen,
    server,
    url: "",
    async listen(): Promise<void> {
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      this.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    },
    async close(): Promise<void> {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

const owner = node((_req, s) => {
  if (s.url.startsWith("/v1/streams/moving"))
    return { status: 503, headers: { "retry-after": "1" }, body: { error: { code: "shard_moving", message: "moving" } } };
  return { status: 200 };
});
/** Streams the entry node serves itself; any other goes to `ownerOf`. */
const local = new Set<string>(["here"]);
let ownerOf = () => owner.url;
const entry = node((req, s) => {
  const u = new URL(s.url, "http://x");
  const hops = /^\/v1\/streams\/hops\/events$/.test(u.pathname) ? Number(u.searchParams.get("left")) : null;
  // A chain of relative redirects: left=N answers 307 to left=N-1, left=0 is served.
  if (hops !== null) return hops === 0 ? { status: 200 } : { status: 307, headers: { location: `/v1/streams/hops/events?left=${hops - 1}` } };
  const stream = streamOfPath(s.url);
  if (stream === null || local.has(stream)) return { status: 200 };
  const location = `${ownerOf()}${req.url}`;
  return { status: 307, headers: { location }, body: { error: { code: "not_owner", owner: "n2", location } } };
});

beforeAll(async () => {
  await owner.listen();
  await entry.listen();
});
afterAll(async () => {
  await owner.close();
  await entry.close();
});

const fresh = () => {
  owner.seen.length = 0;
  entry.seen.length = 0;
};

describe("Location", () => {
  it("is read from a response head, absolute or relative, and null without one", () => {
    const head = (h: string) => parseResponseHead(Buffer.from(`HTTP/1.1 307 Temporary Redirect\r\nContent-Length: 0\r\n${h}`.replace(/\r\n$/, "")));
    expect(head("Location: http://10.0.0.2:8080/v1/streams/a/events?from=1").location).toBe("http://10.0.0.2:8080/v1/streams/a/events?from=1");
    expect(head("location:   /v1/streams/a/events  ").location).toBe("/v1/streams/a/events");
    expect(head("").location).toBeNull();
  });

  it("names the stream of a request path, and none for the paths about no stream", () => {
    expect(streamOfPath("/v1/streams/orders/events?from=1")).toBe("orders");
    expect(streamOfPath("/v1/streams/a%2Fb/consume")).toBe("a/b");
    expect(streamOfPath("/v1/streams/x.dlq")).toBe("x.dlq");
    expect(streamOfPath("/v1/streams")).toBeNull();
    expect(streamOfPath("/v1/timelines/t/events")).toBeNull();
  });
});

describe("a client in front of a cluster", () => {
  it("follows a 307 with its method, body and token, then goes straight to the owner it learned", async () => {
    fresh();
    const t = new Transport(entry.url, "tok");
    const r = await t.send("POST", "/v1/streams/s1/events?x=1", Buffer.from('{"events":[]}'), { "Content-Type": "application/json" });
    expect(r.status).toBe(200);
    expect(entry.seen.map((s) => [s.method, s.url])).toEqual([["POST", "/v1/streams/s1/events?x=1"]]);
    expect(owner.seen).toEqual([{ method: "POST", url: "/v1/streams/s1/events?x=1", body: '{"events":[]}', auth: "Bearer tok" }]);
    expect(t.routes.redirects).toBe(1);
    // Every request about s1 now: no redirect, the entry node not asked.
    await t.json("GET", "/v1/streams/s1");
    await t.send("GET", "/v1/streams/s1/events?from=1");
    expect(entry.seen).toHaveLength(1);
    expect(owner.seen.map((s) => s.url)).toEqual(["/v1/streams/s1/events?x=1", "/v1/streams/s1", "/v1/streams/s1/events?from=1"]);
    expect(t.routes.redirects).toBe(1);
    // Another stream learns its own route; one the entry node serves needs none.
    await t.send("GET", "/v1/streams/s2");
    await t.send("GET", "/v1/streams/here");
    expect([t.routes.redirects, t.routes.size]).toEqual([2, 2]);
    t.close();
  });

  it("follows redirectsMax relative redirects and fails past them with too_many_redirects", async () => {
    const t = new Transport(entry.url, undefined, { redirectsMax: 5 });
    const r = await t.send("GET", "/v1/streams/hops/events?left=5");
    expect(JSON.parse(r.body.toString())).toEqual({ url: "/v1/streams/hops/events?left=0" });
    expect(t.routes.redirects).toBe(5);
    const e = await t.send("GET", "/v1/streams/hops/events?left=6").catch((err: unknown) => err);
    expect(e).toBeInstanceOf(TickerError);
    expect(e).toMatchObject({ status: 307, code: "too_many_redirects", details: { location: "/v1/streams/hops/events?left=0" }, retryable: false });
    t.close();
    const never = new Transport(entry.url, undefined, { redirectsMax: 0 });
    await expect(never.send("GET", "/v1/streams/s3")).rejects.toMatchObject({ code: "too_many_redirects" });
    never.close();
  });

  it("an owner that can no longer be reached is forgotten: the request goes through the url given instead", async () => {
    fresh();
    const gone = node(() => ({ status: 200 }));
    await gone.listen();
    ownerOf = () => gone.url;
    const t = new Transport(entry.url, undefined);
    await t.send("GET", "/v1/streams/mover");
    expect(gone.seen).toHaveLength(1);
    await gone.close();
    // Its keep-alive connection's end reaches the client: the next send opens a new one, and cannot.
    await new Promise((r) => setTimeout(r, 100));
    // The entry node took the stream over: the send after the dead owner's refusal is served by it, once.
    local.add("mover");
    const r = await t.send("POST", "/v1/streams/mover/events", Buffer.from("{}"));
    expect(r.status).toBe(200);
    expect(entry.seen.map((s) => [s.method, s.url, s.body])).toEqual([
      ["GET", "/v1/streams/mover", ""],
      ["POST", "/v1/streams/mover/events", "{}"],
    ]);
    expect(t.routes.size).toBe(0);
    // A redirect to an owner that cannot be reached is the caller's connection_failed, retryable, and not remembered.
    local.delete("mover");
    await expect(t.send("GET", "/v1/streams/mover")).rejects.toMatchObject({ status: 0, code: "connection_failed", retryable: true });
    expect(t.routes.size).toBe(0);
    ownerOf = () => owner.url;
    t.close();
  });

  it("an owner that answers shard_moving is forgotten: its 503 goes to the caller, the next request through the url given", async () => {
    fresh();
    const t = new Transport(entry.url, undefined);
    await t.send("GET", "/v1/streams/moving"); // the owner answers 503 for every request of this stream
    expect(t.routes.size).toBe(0);
    const r = await t.send("GET", "/v1/streams/moving/events?from=1");
    expect([r.status, r.retryAfter]).toEqual([503, "1"]);
    expect(entry.seen.map((s) => s.url)).toEqual(["/v1/streams/moving", "/v1/streams/moving/events?from=1"]);
    t.close();
  });
});

describe("the route cache", () => {
  it("refuses a bound that is not an integer >= 0", () => {
    expect(() => new Transport("http://entry:1", undefined, { redirectsMax: -1 })).toThrow(/redirectsMax must be an integer >= 0/);
    expect(() => new Transport("http://entry:1", undefined, { routedStreamsMax: 1.5 })).toThrow(/routedStreamsMax must be an integer >= 0/);
  });

  const go = (r: Routes, stream: string, to: string) =>
    r.redirect(307, `${to}/v1/streams/${stream}/events`, "http://entry:1/v1/streams/x", stream, `/v1/streams/${stream}/events`, 0);

  it("remembers routedStreamsMax streams at most, forgetting the least recently used", () => {
    const r = new Routes(new URL("http://entry:1"), 5, 2);
    go(r, "a", "http://n2:1");
    go(r, "b", "http://n3:1");
    expect([r.size, r.baseFor("a"), r.baseFor("b")]).toEqual([2, "http://n2:1", "http://n3:1"]);
    r.baseFor("a"); // a used last: b goes first
    go(r, "c", "http://n2:1");
    expect([r.size, r.baseFor("a"), r.baseFor("b"), r.baseFor("c")]).toEqual([2, "http://n2:1", "http://entry:1", "http://n2:1"]);
    const none = new Routes(new URL("http://entry:1"), 5, 0);
    expect(go(none, "a", "http://n2:1")).toEqual({ url: "http://n2:1/v1/streams/a/events", base: "http://n2:1" });
    expect([none.size, none.baseFor("a")]).toEqual([0, "http://entry:1"]);
  });

  it("keeps the path prefix of the owner's URL, and forgets a stream whose owner is the url given", () => {
    const r = new Routes(new URL("http://lb:1/ticker/"), 5, 10);
    expect(r.origin).toBe("http://lb:1/ticker");
    expect(go(r, "a", "http://n2:1/pre").base).toBe("http://n2:1/pre");
    expect(r.baseFor("a")).toBe("http://n2:1/pre");
    go(r, "a", "http://lb:1/ticker");
    expect(r.size).toBe(0);
    // A Location that is not the same path and query is followed, not learned.
    expect(r.redirect(307, "http://n3:1/elsewhere", "http://lb:1/ticker/v1/streams/b", "b", "/v1/streams/b", 0)).toEqual({
      url: "http://n3:1/elsewhere",
      base: "http://n3:1",
    });
    expect(r.size).toBe(0);
  });

  it("refuses a redirect from https to http, to another scheme, or to no URL at all", () => {
    const r = new Routes(new URL("https://entry:1"), 5, 10);
    const to = (l: string) => () => r.redirect(307, l, "https://entry:1/v1/streams/a", "a", "/v1/streams/a", 0);
    expect(to("http://n2:1/v1/streams/a")).toThrow(/https to http/);
    expect(to("ftp://n2/v1/streams/a")).toThrow(/only http and https/);
    expect(to("http://[bad")).toThrow(/not a URL/);
    expect(to("wss://n2:1/v1/streams/a")()).toEqual({ url: "https://n2:1/v1/streams/a", base: "https://n2:1" });
  });
});
