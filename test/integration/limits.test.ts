// Limits that follow from other limits (src/limits.ts), as a client meets
// them: each page key bounds its own path, and a combination the server could
// not serve is refused at start, naming the key to change.
import { describe, it, expect } from "vitest";
import { api, perTestServers, serveExpectingExit, tempDataDir, removeDir } from "../helpers/server.js";
import { Consumer } from "../helpers/consumer.js";
import { decodeEventBatch, decodeRecords, encodePublishBatch } from "../../src/wire/client.js";
import { loadConfig } from "../../src/config.js";
import { deriveLimits } from "../../src/limits.js";

const { start, dir } = perTestServers();

describe("limits that follow from other limits", () => {
  it("a consumer's log page fills consume_page_bytes_max even when replay_page_bytes_max is smaller, and a replay page stops at its own", async () => {
    const REPLAY_PAGE_BYTES = 64 * 1024;
    // Small events keep the page buffer's room for one large frame small too: only the page bound counts.
    const s = await start(dir(), [
      "--replay-page-bytes-max",
      String(REPLAY_PAGE_BYTES),
      "--consume-page-bytes-max",
      String(1024 * 1024),
      "--event-bytes-max",
      "2048",
    ]);
    const events = Array.from({ length: 500 }, (_, i) => ({ type: "t", payload: `${i}`.padEnd(1000, ".") }));
    expect((await api(`${s.url}/v1/streams/pages/events`, "POST", { events })).status).toBe(200);
    const replay = await api(`${s.url}/v1/streams/pages/events?from=1&limit=1000`, "GET");
    expect(replay.json.events.length).toBeLessThan(70); // ~1 KiB frames: 64 KiB is ~60 of them
    const c = await Consumer.connect(s.url, "pages", "from=1&format=binary");
    await c.eventsThrough(500);
    // The consumer is behind: it is served from the log, and one page of up to 1 MiB holds all ~520 KiB.
    const first = decodeEventBatch(c.binary[0]);
    expect(first.count).toBe(500);
    expect(first.records.byteLength).toBeGreaterThan(8 * REPLAY_PAGE_BYTES);
    await c.close();
  });

  it("an event of the longest strings, all control characters, is replayed and delivered as JSON with the smallest ring the server accepts", async () => {
    const FIELD_BYTES = 64 * 1024;
    const flags = {
      "event-field-bytes-max": FIELD_BYTES,
      "event-bytes-max": 1024,
      "request-bytes-max": 512 * 1024,
      "replay-page-bytes-max": 64 * 1024,
      "consume-page-bytes-max": 4096,
    };
    const ringBytes = deriveLimits(loadConfig(Object.fromEntries(Object.entries(flags).map(([k, v]) => [k, String(v)])), {})).ringBytesMin;
    const s = await start(dir(), [...Object.entries(flags).flatMap(([k, v]) => [`--${k}`, String(v)]), "--ring-bytes", String(ringBytes)]);
    // Each byte is written \u0001 in JSON: 6x, 1.5 MiB rendered from a 256 KiB event.
    const field = "\u0001".repeat(FIELD_BYTES);
    const body = encodePublishBatch([{ type: field, key: field, producer_id: field, idempotency_key: field, payload: 1 }]);
    expect((await api(`${s.url}/v1/streams/esc/events`, "POST", body, { "content-type": "application/x-flatbuffers" })).status).toBe(200);
    const replay = await api(`${s.url}/v1/streams/esc/events?from=1`, "GET");
    expect(replay.status, JSON.stringify(replay.json)?.slice(0, 200)).toBe(200);
    expect([replay.json.events[0].type, replay.json.events[0].idempotency_key]).toEqual([field, field]);
    const bin = await api(`${s.url}/v1/streams/esc/events?from=1`, "GET", undefined, { accept: "application/x-flatbuffers" });
    expect(decodeRecords(decodeEventBatch(bin.raw).records)[0].key).toBe(field);
    const c = await Consumer.connect(s.url, "esc", "from=1");
    await c.eventsThrough(1);
    expect(c.events[0].producer_id).toBe(field);
    await c.close();
  });

  it("a ring too small for the configured limits is refused at start, naming ring_bytes and the size it needs", async () => {
    const d = tempDataDir();
    try {
      const r = await serveExpectingExit([
        "--port",
        "0",
        "--data-dir",
        d,
        "--request-bytes-max",
        String(32 * 1024 * 1024),
        "--ring-bytes",
        String(48 * 1024 * 1024),
      ]);
      expect(r.code).not.toBe(0);
      expect(r.output).toContain(`ring_bytes: must be at least ${2 * (32 * 1024 * 1024 + 64 * 1024)} bytes`);
    } finally {
      removeDir(d);
    }
  });
});
