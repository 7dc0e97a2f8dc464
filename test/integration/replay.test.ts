// Replay, end to end against real server processes: its query rules (a bad
// query is a 400 in JSON, also when binary is asked for, and changes nothing),
// the page limits in events and in bytes, and a replay from below first_seq
// after retention (410 expired with the current first_seq).
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { api, removeDir, startServer, type TestServer } from "../helpers/server.js";
import { decodeEventBatch } from "../../src/wire/client.js";
import { REPLAY_PAGE_EVENTS_MAX, expectError, expectOk, itStaysHealthy, smallLimitsServer } from "../helpers/bad-input.js";

const FB = "application/x-flatbuffers";

describe("replay's bad input, on one server with small limits", () => {
  const { server, eventsUrl, streamIds, seeded, expectUnchangedThenServes } = smallLimitsServer();

  describe("replay", () => {
    let id: string;
    beforeAll(async () => {
      id = await seeded("replay", 5);
    });

    it("answers replay of an unknown stream with 404 stream_not_found, in JSON even when binary is asked for", async () => {
      expectError(await api(eventsUrl("replay-missing", "?from=1"), "GET"), 404, "stream_not_found");
      const bin = await api(eventsUrl("replay-missing"), "GET", undefined, { accept: "application/x-flatbuffers" });
      expectError(bin, 404, "stream_not_found");
      expect(await streamIds()).not.toContain("replay-missing");
    });

    const BAD_QUERIES: Array<[string, string]> = [
      ["a non-numeric from", "?from=abc"],
      ["from=0", "?from=0"],
      ["a negative from", "?from=-1"],
      ["a fractional from", "?from=1.5"],
      ["limit=0", "?from=1&limit=0"],
      ["a non-numeric limit", "?limit=ten"],
      ["limit one above replay_page_events_max", `?from=1&limit=${REPLAY_PAGE_EVENTS_MAX + 1}`],
      ["to below from", "?from=3&to=2"],
      ["to=0", "?to=0"],
      ["a non-numeric to", "?from=1&to=x"],
      ["both from and from_time", "?from=1&from_time=0"],
      ["a non-numeric from_time", "?from_time=yesterday"],
      ["an unknown query parameter", "?from=1&colour=red"],
    ];
    for (const [what, query] of BAD_QUERIES) {
      it(`rejects replay with ${what} with 400 invalid_parameter`, async () => {
        expectError(await api(eventsUrl(id, query), "GET"), 400, "invalid_parameter");
        const bin = await api(eventsUrl(id, query), "GET", undefined, { accept: "application/x-flatbuffers" });
        expectError(bin, 400, "invalid_parameter");
      });
    }

    it("takes limit equal to replay_page_events_max", async () => {
      const page = expectOk(await api(eventsUrl(id, `?from=1&limit=${REPLAY_PAGE_EVENTS_MAX}`), "GET"));
      expect(page.events.map((e: { seq: number }) => e.seq)).toEqual([1, 2, 3, 4, 5]);
      expect(page).toMatchObject({ next: 6, head_seq: 5, first_seq: 1 });
    });

    it("leaves the stream untouched after rejected replays and keeps serving", async () => {
      await expectUnchangedThenServes(id, 5);
    });
  });

  itStaysHealthy(server);
});

describe("replay past retention", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer({ args: ["--segment-bytes-max", "4096", "--retention-check-interval-ms", "50"] });
  });
  afterAll(async () => {
    if (!s) return;
    await s.stop();
    removeDir(s.dataDir);
  });

  it("answers a replay from below first_seq with 410 expired and the current first_seq", async () => {
    const id = "expiring";
    expectOk(await api(`${s.url}/v1/streams/${id}`, "PUT", { retention_ms: 1 }), 201);
    const events = [{ type: "a" }, { type: "b" }, { type: "c" }];
    expect(expectOk(await api(`${s.url}/v1/streams/${id}/events`, "POST", { events }))).toMatchObject({ first_seq: 1, last_seq: 3 });

    let info: any;
    const deadline = Date.now() + 10_000;
    do {
      await new Promise((r) => setTimeout(r, 50));
      info = expectOk(await api(`${s.url}/v1/streams/${id}`, "GET"));
    } while (info.first_seq === 1 && Date.now() < deadline);
    expect(info.first_seq).toBeGreaterThan(1);
    expect(info.head_seq).toBe(3);

    for (const from of [1, info.first_seq - 1]) {
      const err = expectError(await api(`${s.url}/v1/streams/${id}/events?from=${from}`, "GET"), 410, "expired");
      expect(err.first_seq).toBe(info.first_seq);
      const bin = await api(`${s.url}/v1/streams/${id}/events?from=${from}`, "GET", undefined, { accept: "application/x-flatbuffers" });
      expect(expectError(bin, 410, "expired").first_seq).toBe(info.first_seq);
    }

    // earliest starts at first_seq rather than failing; seqs go on from the head.
    const page = expectOk(await api(`${s.url}/v1/streams/${id}/events?from=earliest`, "GET"));
    expect(page).toMatchObject({ first_seq: info.first_seq, head_seq: 3 });
    const next = expectOk(await api(`${s.url}/v1/streams/${id}/events`, "POST", { events: [{ type: "d" }] }));
    expect(next).toMatchObject({ first_seq: 4, last_seq: 4, count: 1 });
  });
});

describe("replay page bytes", () => {
  it("a page stops at replay_page_bytes_max and always carries at least one event", async () => {
    const s = await startServer({ args: ["--replay-page-bytes-max", "65536"] });
    try {
      const big = "x".repeat(10_000);
      const r = await api(`${s.url}/v1/streams/pages/events`, "POST", { events: Array.from({ length: 20 }, (_, i) => ({ type: "t", payload: `${i}${big}` })) });
      expect(r.json.count).toBe(20);
      const json = await api(`${s.url}/v1/streams/pages/events?from=1&limit=100`, "GET");
      const n = json.json.events.length;
      expect(n).toBeGreaterThan(1);
      expect(n).toBeLessThan(20);
      expect(json.raw.byteLength).toBeLessThanOrEqual(65536 + 12_000);
      expect(json.json.next).toBe(1 + n);
      const bin = await api(`${s.url}/v1/streams/pages/events?from=1&limit=100`, "GET", undefined, { accept: FB });
      const page = decodeEventBatch(bin.raw);
      expect(page.count).toBeGreaterThan(1);
      expect(page.records.byteLength).toBeLessThanOrEqual(65536);
      expect(page.next).toBe(1 + page.count);
      // One event larger than the page limit still comes, alone.
      await api(`${s.url}/v1/streams/pages/events`, "POST", { events: [{ type: "huge", payload: "y".repeat(100_000) }] });
      const alone = await api(`${s.url}/v1/streams/pages/events?from=21&limit=100`, "GET");
      expect(alone.json.events.map((e: any) => e.type)).toEqual(["huge"]);
      expect(alone.json.next).toBe(22);
    } finally {
      expect(await s.stop()).toBe(0);
      removeDir(s.dataDir);
    }
  });
});
