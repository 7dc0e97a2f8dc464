// Hostile WebSocket clients of the consume protocol (docs/consume.md):
// arbitrary text and binary frames, oversized messages, invalid JSON, wrong
// types, acks beyond what was delivered, negative seqs, floods. The server
// answers a bad message with an `error` message and a close code, keeps
// serving everyone else, and a group's checkpoint never moves to a seq its
// client was not delivered.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import WebSocket from "ws";
import { removeDir, startServer, type TestServer } from "../helpers/server.js";
import { Client, inBatches } from "../helpers/hostile.js";
import { recordResult, scaled } from "./scale.js";

const EVENTS = 200;
/** Unacked events in flight per group: small, so "delivered" is a known, short prefix. */
const WINDOW = 8;
/** Close codes the server may end a hostile connection with (policy, too big, server error). */
const CLOSE_CODES = [1008, 1009, 1011, 1006, 1002];
const JSON_CT = { "content-type": "application/json" };

let s: TestServer;
let client: Client;

beforeAll(async () => {
  s = await startServer({ args: ["--shards", "2"] });
  client = new Client(s.port, 8);
  const r = await client.send(
    "POST",
    "/v1/streams/wsf/events",
    JSON.stringify({ events: Array.from({ length: 100 }, (_, i) => ({ type: "e", payload: i })) }),
    JSON_CT,
  );
  const r2 = await client.send(
    "POST",
    "/v1/streams/wsf/events",
    JSON.stringify({ events: Array.from({ length: 100 }, (_, i) => ({ type: "e", payload: i })) }),
    JSON_CT,
  );
  expect([r.status, r2.status]).toEqual([200, 200]);
});

afterAll(async () => {
  client?.close();
  if (s) {
    await s.stop();
    removeDir(s.dataDir);
  }
});

interface Session {
  ws: WebSocket;
  delivered: number;
  errors: Array<{ code: string; message: string }>;
  closed: Promise<{ code: number }>;
  hello: Promise<any>;
  firstEvents: Promise<void>;
}

/** A wait that fails the test, naming what it waited for, instead of hanging it. */
function within<T>(p: Promise<T>, what: string, ms = 10_000): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms).unref())]);
}

function open(group: string, query = `group=${group}&from=earliest&window=${WINDOW}`): Session {
  const ws = new WebSocket(`ws://127.0.0.1:${s.port}/v1/streams/wsf/consume?${query}`, { maxPayload: 64 << 20 });
  const sess = { ws, delivered: 0, errors: [] } as unknown as Session;
  let gotHello!: (m: any) => void;
  let gotEvents!: () => void;
  sess.hello = within(new Promise((r) => (gotHello = r)), `hello of ${group}`);
  sess.firstEvents = within(new Promise((r) => (gotEvents = r)), `first events of ${group}`);
  sess.closed = new Promise((r) => ws.on("close", (code) => r({ code })));
  ws.on("error", () => {});
  ws.on("message", (data: Buffer, isBinary) => {
    expect(isBinary, "JSON format: the server sends text").toBe(false);
    const m = JSON.parse(data.toString("utf8"));
    if (m.type === "hello") gotHello(m);
    else if (m.type === "events") {
      // Gap-free except after a seek (docs/consume.md); the bound here is the highest seq seen.
      for (const e of m.events) sess.delivered = Math.max(sess.delivered, e.seq);
      gotEvents();
    } else if (m.type === "error") {
      expect(typeof m.code === "string" && typeof m.message === "string", JSON.stringify(m)).toBe(true);
      sess.errors.push(m);
    }
  });
  return sess;
}

const checkpointOf = async (group: string): Promise<number | null> => {
  const a = await client.send("GET", `/v1/streams/wsf/checkpoint?group=${group}`);
  if (a.status === 404) return null;
  expect(a.status).toBe(200);
  return a.json.seq;
};

type Msg = { text: string } | { binary: Uint8Array } | { flood: string; n: number };
const seqish = fc.oneof(fc.integer({ min: -5, max: 20 }), fc.constantFrom(0, -1, 1.5, 2 ** 53, 1e400, "1", null, true, [], {}));
const message: fc.Arbitrary<Msg> = fc.oneof(
  fc
    .record(
      {
        type: fc.constantFrom("ack", "nack", "seek", "ping", "", "ACK"),
        seq: seqish,
        reason: fc.oneof(fc.string(), fc.constant("r".repeat(2000)), fc.integer()),
      },
      { requiredKeys: ["type"] },
    )
    .map((m) => ({ text: JSON.stringify(m) })),
  fc.jsonValue({ maxDepth: 3 }).map((v) => ({ text: JSON.stringify(v) })),
  fc.string({ unit: "binary", maxLength: 50 }).map((t) => ({ text: t })),
  fc.uint8Array({ maxLength: 64 }).map((b) => ({ binary: b })),
  fc.constantFrom<Msg>(
    { text: "x".repeat(5000) }, // over the 4 KiB message limit
    { text: `${" ".repeat(20_000)}{}` }, // over uWS's frame limit
    { text: "[".repeat(4000) },
    { text: `\uFEFF${JSON.stringify({ type: "ack", seq: 1 })}` },
    { flood: JSON.stringify({ type: "ack", seq: 1 }), n: 500 },
    { flood: JSON.stringify({ type: "seek", seq: 1 }), n: 200 },
    { flood: JSON.stringify({ type: "nack", seq: 1 }), n: 50 },
  ),
);

describe("hostile consume clients", () => {
  it("arbitrary frames, oversized and invalid messages, wrong types and floods: an error and a close, never a crash, never a checkpoint past what was delivered", async () => {
    const cases = scaled(300, 3000);
    let tried = 0;
    let survived = 0;
    let closedByServer = 0;
    const arb = fc.array(message, { minLength: 1, maxLength: 4 });
    await fc.assert(
      fc.asyncProperty(fc.array(arb, { minLength: 50, maxLength: 50 }), fc.nat(), async (batch, salt) => {
        await inBatches(batch, 50, async (msgs, i) => {
          tried++;
          const group = `g${salt}-${tried}-${i}`;
          const sess = open(group);
          await sess.hello;
          await sess.firstEvents;
          for (const m of msgs) {
            if (sess.ws.readyState !== WebSocket.OPEN) break;
            if ("text" in m) sess.ws.send(m.text);
            else if ("binary" in m) sess.ws.send(m.binary, { binary: true });
            else for (let k = 0; k < m.n && sess.ws.readyState === WebSocket.OPEN; k++) sess.ws.send(m.flood);
          }
          // Give the server time to answer, then leave if it has not closed.
          const closed = await Promise.race([sess.closed, new Promise<null>((r) => setTimeout(() => r(null), 300))]);
          if (closed) {
            closedByServer++;
            expect(CLOSE_CODES, `close ${closed.code} after ${JSON.stringify(msgs).slice(0, 200)}`).toContain(closed.code);
          } else {
            sess.ws.close();
            await within(sess.closed, `close of ${group}`);
          }
          const cp = await checkpointOf(group);
          if (cp !== null) expect(cp, `checkpoint of ${group} after ${JSON.stringify(msgs).slice(0, 200)}`).toBeLessThanOrEqual(sess.delivered);
          survived++;
        });
        expect((await client.send("GET", "/healthz")).status).toBe(200);
      }),
      { numRuns: Math.ceil(cases / 50), endOnFailure: true },
    );
    recordResult({
      fault: "hostile consume messages",
      setup: `1-4 arbitrary text/binary/oversized/flood messages per connection, window ${WINDOW}`,
      cases: tried,
      survived,
      acked: 0,
      lost: 0,
      duplicates: 0,
      gaps: 0,
      other: { "closed by server": closedByServer },
    });
  });

  it("an ack one past the last delivered event is refused with invalid_ack and a close, and the checkpoint stays where it was", async () => {
    const sess = open("one-past");
    await sess.hello;
    await sess.firstEvents;
    // The window is full: nothing more is delivered until an ack.
    await new Promise((r) => setTimeout(r, 200));
    expect(sess.delivered).toBe(WINDOW);
    sess.ws.send(JSON.stringify({ type: "ack", seq: 3 }));
    await new Promise((r) => setTimeout(r, 200));
    const delivered = sess.delivered; // 3 acked: the window moved on
    sess.ws.send(JSON.stringify({ type: "ack", seq: delivered + 1 }));
    const closed = await sess.closed;
    expect(closed.code).toBe(1008);
    expect(sess.errors.map((e) => e.code)).toEqual(["invalid_ack"]);
    expect(await checkpointOf("one-past")).toBe(3);
  });

  it("negative, zero, fractional and huge seqs are refused with invalid_message and move nothing", async () => {
    for (const seq of [-1, 0, 1.5, 2 ** 53, "2"]) {
      const group = `bad-seq-${String(seq).replace(/\W/g, "_")}`;
      const sess = open(group);
      await sess.hello;
      await sess.firstEvents;
      sess.ws.send(JSON.stringify({ type: "ack", seq }));
      const closed = await sess.closed;
      expect(closed.code, String(seq)).toBe(1008);
      expect(
        sess.errors.map((e) => e.code),
        String(seq),
      ).toEqual(["invalid_message"]);
      expect(await checkpointOf(group), String(seq)).toBe(null);
    }
  });

  it("a flood of valid acks and seeks from many clients at once leaves the server serving a normal consumer", async () => {
    const flooders = Array.from({ length: 20 }, (_, i) => open(`flood-${i}`));
    await Promise.all(flooders.map((f) => f.firstEvents));
    for (const f of flooders) for (let k = 0; k < 2000; k++) f.ws.send(JSON.stringify(k % 2 ? { type: "seek", seq: 1 } : { type: "ack", seq: 1 }));
    const normal = open("normal", `group=normal&from=earliest&window=1000`);
    await normal.firstEvents;
    const t0 = Date.now();
    while (normal.delivered < EVENTS && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 50));
    expect(normal.delivered).toBe(EVENTS);
    for (const f of [...flooders, normal]) f.ws.close();
    await Promise.all([...flooders, normal].map((f) => f.closed));
    for (let i = 0; i < 20; i++) {
      const cp = await checkpointOf(`flood-${i}`);
      expect(cp === null || cp <= flooders[i].delivered).toBe(true);
    }
    expect((await client.send("GET", "/healthz")).status).toBe(200);
  });
});

describe("consumers at once are bounded", () => {
  it("past consumers_max a new consumer is refused with 429 and Retry-After before the upgrade, and a slot frees when one leaves", async () => {
    const CONSUMERS_MAX = 50;
    const small = await startServer({ args: ["--consumers-max", String(CONSUMERS_MAX)] });
    const refusal = (): Promise<{ status: number; retryAfter: string | undefined; json: any } | null> =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${small.port}/v1/streams/cap/consume?from=earliest`);
        ws.once("open", () => resolve({ ws } as never));
        ws.once("unexpected-response", (_req, res) => {
          let body = "";
          res.on("data", (d: Buffer) => (body += d));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers["retry-after"] as string | undefined, json: JSON.parse(body) }));
        });
        ws.once("error", reject);
      });
    const held: WebSocket[] = [];
    try {
      expect((await fetch(`${small.url}/v1/streams/cap`, { method: "PUT", headers: JSON_CT, body: "{}" })).status).toBe(201);
      for (let i = 0; i < CONSUMERS_MAX; i++) {
        const r = (await refusal()) as unknown as { ws?: WebSocket };
        expect(r.ws, `consumer ${i + 1} of ${CONSUMERS_MAX} is let in`).toBeDefined();
        held.push(r.ws!);
      }
      const over = (await refusal()) as { status: number; retryAfter: string | undefined; json: any };
      expect(over.status).toBe(429);
      expect(over.retryAfter).toBe("1");
      expect(over.json.error.code).toBe("server_busy");
      expect(over.json.error.consumers_max).toBe(CONSUMERS_MAX);
      const leaving = held.pop()!;
      const gone = new Promise((r) => leaving.once("close", r));
      leaving.close();
      await gone;
      await new Promise((r) => setTimeout(r, 100));
      const again = (await refusal()) as unknown as { ws?: WebSocket };
      expect(again.ws, "a slot frees when a consumer leaves").toBeDefined();
      held.push(again.ws!);
      expect((await fetch(`${small.url}/healthz`)).status).toBe(200);
    } finally {
      for (const ws of held) ws.terminate();
      await small.stop();
      removeDir(small.dataDir);
    }
  });
});
