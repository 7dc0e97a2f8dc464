// Floods get 429 with Retry-After from a full shard ring, never unbounded memory,
// and nothing acknowledged is lost.
import { describe, it, expect } from "vitest";
import { connect, type Socket } from "node:net";
import { api, removeDir, startServer } from "../helpers/server.js";

describe("backpressure", () => {
  it("a flood of publishes to an fsync stream gets 429 with Retry-After past shard_requests_max; every acked event is kept", async () => {
    // Requests wait in the shard for their fsync: at most 8 may be in flight.
    const s = await startServer({ args: ["--shard-requests-max", "8", "--shards", "1"] });
    try {
      expect((await api(`${s.url}/v1/streams/flood`, "PUT", { durability: "fsync" })).status).toBe(201);
      const events = Array.from({ length: 1000 }, (_, i) => ({ type: "flood", payload: `${i}`.padStart(30, "x") }));
      const body = JSON.stringify({ events });
      expect(body.length).toBeLessThan(65536);
      const results = await Promise.all(
        Array.from({ length: 300 }, () =>
          fetch(`${s.url}/v1/streams/flood/events`, { method: "POST", headers: { "content-type": "application/json" }, body }).then(async (r) => ({
            status: r.status,
            retryAfter: r.headers.get("retry-after"),
            json: (await r.json()) as any,
          })),
        ),
      );
      const ok = results.filter((r) => r.status === 200);
      const busy = results.filter((r) => r.status === 429);
      expect(ok.length + busy.length).toBe(300);
      expect(busy.length).toBeGreaterThan(0);
      for (const b of busy) {
        expect(b.retryAfter).toBe("1");
        expect(b.json.error.code).toBe("shard_busy");
      }
      const info = await api(`${s.url}/v1/streams/flood`, "GET");
      expect(info.json.head_seq).toBe(ok.length * 1000);
      const firsts = ok.map((r) => r.json.first_seq).sort((a, b) => a - b);
      expect(firsts).toEqual(firsts.map((_, i) => i * 1000 + 1));
      // And it keeps serving once the flood is over.
      const after = await api(`${s.url}/v1/streams/flood/events`, "POST", { events: [{ type: "after" }] });
      expect(after.json.first_seq).toBe(ok.length * 1000 + 1);
    } finally {
      await s.stop();
      removeDir(s.dataDir);
    }
  });

  it("request bodies held at once are bounded: past request_buffer_bytes_max a new upload gets 429, and the budget frees when uploads end", async () => {
    const s = await startServer({ args: ["--request-bytes-max", "65536", "--request-buffer-bytes-max", "131072"] });
    const held: Socket[] = [];
    try {
      // Two slow uploads that declare 60,000 bytes each and send only part of them.
      for (let i = 0; i < 2; i++) {
        const sock = connect(s.port, "127.0.0.1");
        await new Promise((r) => sock.once("connect", r));
        sock.write(`POST /v1/streams/slow/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 60000\r\n\r\n{"events":[`);
        held.push(sock);
      }
      await new Promise((r) => setTimeout(r, 200));
      const body = JSON.stringify({ events: [{ type: "t", payload: "x".repeat(20_000) }] });
      const busy = await fetch(`${s.url}/v1/streams/other/events`, { method: "POST", headers: { "content-type": "application/json" }, body });
      expect(busy.status).toBe(429);
      expect(busy.headers.get("retry-after")).toBe("1");
      expect(((await busy.json()) as any).error.code).toBe("server_busy");
      for (const sock of held) sock.destroy();
      // Aborted uploads give their budget back.
      await expect
        .poll(async () => (await fetch(`${s.url}/v1/streams/other/events`, { method: "POST", headers: { "content-type": "application/json" }, body })).status, {
          timeout: 5000,
        })
        .toBe(200);
      expect((await api(`${s.url}/v1/streams/slow`, "GET")).status).toBe(404);
    } finally {
      for (const sock of held) sock.destroy();
      await s.stop();
      removeDir(s.dataDir);
    }
  });
});
