// Connections that hold a socket and send nothing useful: idle, half a header,
// half a body, or a body trickled one byte at a time. uWS.js closes an HTTP
// connection whose request is not complete within its fixed idle timer
// (HTTP_IDLE_TIMEOUT_S = 10, checked on a 4 s tick: 10-14 s; bytes that
// trickle in do not reset it). The promise: while thousands of them are open,
// a normal client is served as usual, and the server closes every one of them
// within IDLE_CLOSE_MS_MAX of its last byte.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type Socket } from "node:net";
import { removeDir, startServer, type TestServer } from "../helpers/server.js";
import { Client } from "../helpers/hostile.js";
import { recordResult, scaled } from "./scale.js";

/** uWS's 10 s timer plus its 4 s tick, plus slack for a loaded machine. */
const IDLE_CLOSE_MS_MAX = 20_000;
const JSON_CT = { "content-type": "application/json" };

let s: TestServer;

beforeAll(async () => {
  s = await startServer({ args: ["--shards", "1"] });
});

afterAll(async () => {
  if (s) {
    await s.stop();
    removeDir(s.dataDir);
  }
});

type Kind = "nothing" | "half header" | "half body" | "trickled body";
const KINDS: Kind[] = ["nothing", "half header", "half body", "trickled body"];
const OPENING: Record<Kind, string> = {
  nothing: "",
  "half header": "GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: aaaa",
  "half body": 'POST /v1/streams/idle/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"events":[',
  "trickled body": 'POST /v1/streams/idle/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"events":[',
};

interface Held {
  kind: Kind;
  sock: Socket;
  openedAt: number;
  closedAt: number | null;
  answer: string;
}

describe("idle and stalled connections", () => {
  it("thousands of idle, half-sent and trickling connections do not stop a normal client, and the server closes each within its bound", async () => {
    const n = scaled(2000, 8000);
    const held: Held[] = [];
    for (let i = 0; i < n; i++) {
      const kind = KINDS[i % KINDS.length];
      const sock = connect(s.port, "127.0.0.1");
      const h: Held = { kind, sock, openedAt: Date.now(), closedAt: null, answer: "" };
      sock.on("connect", () => {
        if (OPENING[kind]) sock.write(OPENING[kind]);
        h.openedAt = Date.now();
      });
      sock.on("data", (d) => (h.answer += d));
      sock.on("error", () => {});
      sock.on("close", () => (h.closedAt = Date.now()));
      held.push(h);
      if (i % 200 === 199) await new Promise((r) => setTimeout(r, 10)); // no SYN flood on the backlog
    }
    const trickle = setInterval(() => {
      for (const h of held) {
        if (h.kind === "trickled body" && h.closedAt === null && h.sock.writable) {
          h.sock.write(" ");
        }
      }
    }, 1000);
    // A normal client while they are all open: every request answered, quickly.
    const client = new Client(s.port, 4);
    let served = 0;
    let worstMs = 0;
    try {
      const until = Date.now() + 8000;
      while (Date.now() < until) {
        const p = await client.send("POST", "/v1/streams/live/events", JSON.stringify({ events: [{ type: "t" }] }), JSON_CT);
        const h = await client.send("GET", "/healthz");
        expect(p.status).toBe(200);
        expect(h.status).toBe(200);
        worstMs = Math.max(worstMs, p.ms, h.ms);
        served++;
        await new Promise((r) => setTimeout(r, 50));
      }
      const open = held.filter((h) => h.closedAt === null).length;
      expect(open, "the held connections are still open while the client is served").toBeGreaterThan(n / 2);
      // Now the server closes every one of them, trickling or not.
      const deadline = Date.now() + IDLE_CLOSE_MS_MAX + 5000;
      while (held.some((h) => h.closedAt === null) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
    } finally {
      clearInterval(trickle);
      client.close();
    }
    const stillOpen = held.filter((h) => h.closedAt === null);
    for (const h of stillOpen) h.sock.destroy();
    expect(stillOpen.length, `connections the server left open: ${stillOpen.slice(0, 3).map((h) => h.kind)}`).toBe(0);
    // Each is closed within the bound of its opening bytes: trickling more does not buy time.
    const byKind: Record<string, number> = {};
    for (const h of held) {
      const ms = h.closedAt! - h.openedAt;
      byKind[h.kind] = Math.max(byKind[h.kind] ?? 0, ms);
      expect(ms, h.kind).toBeLessThan(IDLE_CLOSE_MS_MAX);
      expect(h.answer, `${h.kind}: nothing is answered to an incomplete request`).toBe("");
    }
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    console.log(`served ${served} client rounds, worst ${worstMs.toFixed(0)} ms; closed after opening, ms max: ${JSON.stringify(byKind)}`);
    recordResult({
      fault: "idle and stalled connections",
      setup: `${n} sockets: idle, half header, half body, body trickled 1 B/s`,
      cases: n,
      survived: n - stillOpen.length,
      acked: served,
      lost: 0,
      duplicates: 0,
      gaps: 0,
      bounds: { "client worst ms": Math.round(worstMs), ...Object.fromEntries(Object.entries(byKind).map(([k, v]) => [`${k}: closed after, ms max`, v])) },
    });
  });
});
