// One rule on every route (README, "Errors and input rules"), walked over the
// whole route table of src/front/app.ts: an unknown query parameter is a 400
// naming it, a repeated one is a 400, an unknown body field is a 400 naming
// it, a wrong method is a 405 with Allow, consume without an upgrade is a 426,
// and a path no route has is a 404.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect } from "node:net";
import WebSocket from "ws";
import { api, removeDir, startServer, type TestServer } from "../helpers/server.js";
import { Client } from "../helpers/hostile.js";
import { expectError, itStaysHealthy, streamIdsOf } from "../helpers/bad-input.js";
import { checkAnswersAgainstOpenApi } from "../helpers/openapi-check.js";

// Every answer `api` gets here is also checked against /openapi.json.
checkAnswersAgainstOpenApi();

interface Route {
  path: string;
  /** Method → the query parameters it takes. */
  methods: Record<string, string[]>;
}

// The route table, as registered in src/front/app.ts.
const ROUTES: Route[] = [
  { path: "/healthz", methods: { GET: [] } },
  { path: "/readyz", methods: { GET: [] } },
  { path: "/console", methods: { GET: [] } },
  { path: "/console/", methods: { GET: [] } },
  { path: "/console/app.js", methods: { GET: [] } },
  { path: "/v1/streams", methods: { GET: [] } },
  { path: "/v1/streams/rr", methods: { GET: [], PUT: [], DELETE: [] } },
  { path: "/v1/streams/rr/events", methods: { GET: ["from", "to", "limit", "from_time"], POST: ["expected_head_seq"] } },
  { path: "/v1/streams/rr/checkpoint", methods: { GET: ["group"], POST: [] } },
  { path: "/v1/streams/rr/lag", methods: { GET: ["group"] } },
  { path: "/v1/streams/rr/groups", methods: { GET: [] } },
  { path: "/v1/streams/rr/consume", methods: { GET: ["group", "from", "from_time", "format", "window", "max_attempts"] } },
  { path: "/v1/timelines", methods: { GET: [] } },
  { path: "/v1/timelines/rrt", methods: { GET: [], PUT: [], DELETE: [] } },
  { path: "/v1/timelines/rrt/readers/rd", methods: { GET: [], PUT: [] } },
  // The ad hoc page (GET /v1/timelines?streams=) is the list's path with a parameter: its rules are walked in timelines.test.ts.
  { path: "/v1/timelines/rrt/events", methods: { GET: ["cursor", "limit", "direction", "wait_ms"] } },
  { path: "/v1/timelines/_secret/rotate", methods: { POST: [] } },
];
const ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"];
const JSON_CT = { "content-type": "application/json" };
const VALID_BODY: Record<string, string> = {
  "PUT /v1/streams/rr": "{}",
  "POST /v1/streams/rr/events": JSON.stringify({ events: [{ type: "t" }] }),
  "POST /v1/streams/rr/checkpoint": JSON.stringify({ group: "g", seq: 0 }),
  "PUT /v1/timelines/rrt": JSON.stringify({ streams: ["rr"] }),
  // Refused by every rule under test before the cursor itself is checked.
  "PUT /v1/timelines/rrt/readers/rd": JSON.stringify({ cursor: "AAAA" }),
  "POST /v1/timelines/_secret/rotate": "{}",
};
/** A valid value for each known parameter, so that only the rule under test can refuse. */
const VALID_VALUE: Record<string, string> = {
  from: "1",
  to: "5",
  limit: "2",
  from_time: "0",
  group: "g",
  format: "json",
  window: "10",
  max_attempts: "3",
  cursor: "AAAA",
  direction: "forward",
  wait_ms: "0",
  expected_head_seq: "0",
};

let s: TestServer;
let client: Client;

beforeAll(async () => {
  s = await startServer();
  client = new Client(s.port, 8);
  await client.send("POST", "/v1/streams/rr/events", VALID_BODY["POST /v1/streams/rr/events"], JSON_CT);
  await client.send("POST", "/v1/streams/rr/checkpoint", VALID_BODY["POST /v1/streams/rr/checkpoint"], JSON_CT);
});

afterAll(async () => {
  client?.close();
  if (s) {
    await s.stop();
    removeDir(s.dataDir);
  }
});

/** The consume route answers through the WebSocket upgrade: status and JSON body of a refused one. */
function upgrade(query: string): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${s.port}/v1/streams/rr/consume?${query}`);
    ws.once("open", () => {
      ws.close();
      resolve({ status: 101, json: null });
    });
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(body || "null") }));
    });
    ws.once("error", reject);
  });
}

const call = (method: string, path: string, query: string) => {
  const body = VALID_BODY[`${method} ${path}`];
  return client.send(method, `${path}${query ? `?${query}` : ""}`, body, body ? JSON_CT : {});
};

describe("one rule on every route and method", () => {
  for (const r of ROUTES) {
    for (const [method, params] of Object.entries(r.methods)) {
      const isConsume = r.path.endsWith("/consume");
      it(`${method} ${r.path}: an unknown query parameter is 400 naming it`, async () => {
        const query = "bogus_param=1";
        const a = isConsume ? await upgrade(query) : await call(method, r.path, query);
        expect(a.status, JSON.stringify(a.json)).toBe(400);
        expect(a.json.error.code).toBe("invalid_parameter");
        expect(a.json.error.parameters).toEqual(["bogus_param"]);
        expect(a.json.error.message).toContain("bogus_param");
      });
      for (const p of params) {
        it(`${method} ${r.path}: "${p}" given twice is 400 naming it`, async () => {
          const query = `${p}=${VALID_VALUE[p]}&${p}=${VALID_VALUE[p]}`;
          const a = isConsume ? await upgrade(query) : await call(method, r.path, query);
          expect(a.status, JSON.stringify(a.json)).toBe(400);
          expect(a.json.error.code).toBe("invalid_parameter");
          expect(a.json.error.parameters).toEqual([p]);
        });
      }
    }
    const wrong = ALL_METHODS.filter((m) => !(m in r.methods) && !(m === "HEAD" && "GET" in r.methods));
    it(`${r.path}: every other method (${wrong.join(", ")}) is 405 with Allow: ${Object.keys(r.methods).join(", ")}`, async () => {
      for (const m of wrong) {
        const a = await client.send(m, r.path, m === "POST" || m === "PUT" ? "{}" : undefined, JSON_CT);
        expect(a.status, `${m} ${r.path}`).toBe(405);
        expect(a.headers.allow, `${m} ${r.path}`).toBe(Object.keys(r.methods).join(", "));
        // A HEAD answer has the headers of the GET it stands for, without the body (RFC 9110, 9.3.2).
        if (m === "HEAD") expect(a.raw.length).toBe(0);
        else expect(a.json.error.code).toBe("method_not_allowed");
      }
    });
  }

  it("a consume GET without the upgrade headers is 426 upgrade_required", async () => {
    const a = await client.send("GET", "/v1/streams/rr/consume?group=g");
    expect(a.status).toBe(426);
    expect(a.json.error.code).toBe("upgrade_required");
    expect(a.headers.upgrade).toBe("websocket");
  });

  it("unknown body fields are 400 naming them on every route with a body, and change nothing", async () => {
    const before = await client.send("GET", "/v1/streams/rr");
    for (const [route, valid] of Object.entries(VALID_BODY)) {
      const [method, path] = route.split(" ");
      const withExtra = JSON.stringify({ ...JSON.parse(valid), bogus_field: 1 });
      const a = await client.send(method, path, withExtra, JSON_CT);
      expect(a.status, `${route}: ${a.raw}`).toBe(400);
      expect(a.json.error.fields, route).toEqual(["bogus_field"]);
      expect(a.json.error.message, route).toContain("bogus_field");
    }
    const inEvent = await client.send("POST", "/v1/streams/rr/events", JSON.stringify({ events: [{ type: "t", bogus_field: 1 }] }), JSON_CT);
    expect(inEvent.status).toBe(400);
    expect(inEvent.json.error.message).toContain("bogus_field");
    expect(await client.send("GET", "/v1/streams/rr")).toMatchObject({ json: before.json });
  });
});

describe("unknown paths and wrong methods, through fetch", () => {
  const u = (path: string) => `${s.url}${path}`;
  const streamIds = () => streamIdsOf(s.url);

  it("answers an unknown path with 404 not_found", async () => {
    for (const [method, path] of [
      ["GET", "/"],
      ["GET", "/v2/streams"],
      ["GET", "/v1/nothing"],
      ["GET", "/v1/streams/x/nothing"],
      ["POST", "/v1/streams/x/events/extra"],
      ["GET", "/v1/timelines/x/readers"],
      ["PUT", "/v1/timelines/x/readers/r/extra"],
      ["DELETE", "/nope"],
    ] as const) {
      expectError(await api(u(path), method), 404, "not_found");
    }
  });

  it("answers a HEAD with the status and headers only, and the same connection goes on serving", async () => {
    for (const [path, status] of [
      ["/nope", "404 Not Found"],
      ["/v1/timelines/_secret/rotate", "405 Method Not Allowed"],
      ["/v1/streams/rr/lag", "405 Method Not Allowed"],
    ] as const) {
      // Both requests on one socket: the answer to the HEAD must end where its headers do.
      const text = await new Promise<string>((resolve, reject) => {
        const sock = connect(s.port, "127.0.0.1", () => sock.write(`HEAD ${path} HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n`));
        let got = "";
        sock.on("data", (d: Buffer) => {
          got += d.toString("latin1");
          if (got.endsWith('{"status":"ok"}')) {
            sock.destroy();
            resolve(got);
          }
        });
        sock.on("error", reject);
        sock.on("close", () => reject(new Error(`closed after ${JSON.stringify(got)}`)));
      });
      const [head, next] = text.split(/(?=HTTP\/1\.1 200 OK)/);
      expect(head.startsWith(`HTTP/1.1 ${status}\r\n`), path).toBe(true);
      expect(head.endsWith("\r\n\r\n"), path).toBe(true);
      expect(head, path).toMatch(/content-length: [1-9]\d*\r\n/i);
      expect(next, path).toMatch(/\r\n\r\n\{"status":"ok"\}$/);
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
      ["POST", "/openapi.json"],
    ] as const) {
      expectError(await api(u(path), method), 405, "method_not_allowed");
    }
    expect(await streamIds()).not.toContain("route-x");
  });
});

itStaysHealthy(() => s);
