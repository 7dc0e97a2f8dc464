// The engine end to end, against a real server process.
import { describe, it, expect, afterAll, beforeAll } from "vitest";
import { randomBytes } from "node:crypto";
import { api, removeDir, replayAll, startServer, type TestServer } from "../helpers/server.js";
import { decodeEventBatch, decodeRecords, encodePublishBatch, type OutgoingEvent } from "../../src/wire/client.js";

const FB = "application/x-flatbuffers";

async function replayAllBinary(url: string, stream: string, from = 1) {
  const events = [];
  let next = from;
  for (;;) {
    const r = await api(`${url}/v1/streams/${stream}/events?from=${next}&limit=10000`, "GET", undefined, { accept: FB });
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe(FB);
    const page = decodeEventBatch(r.raw);
    if (page.count === 0) return events;
    const decoded = decodeRecords(page.records);
    expect(decoded.length).toBe(page.count);
    events.push(...decoded);
    next = page.next;
  }
}

describe("publish and replay", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer();
  });
  afterAll(async () => {
    expect(await s.stop()).toBe(0);
    removeDir(s.dataDir);
  });

  it("100,000 JSON events round-trip in order with payloads intact, as JSON and as binary", async () => {
    const total = 100_000;
    const batch = 1000;
    for (let b = 0; b < total / batch; b++) {
      const events = Array.from({ length: batch }, (_, i) => {
        const n = b * batch + i;
        return { type: "tick", key: `k${n % 7}`, producer_id: "p", producer_seq: n, payload: { n, s: `é"\\\n${n}`, a: [n, null, true] } };
      });
      const r = await api(`${s.url}/v1/streams/rt-json/events`, "POST", { events });
      expect(r.status).toBe(200);
      expect(r.json).toEqual({ stream: "rt-json", first_seq: b * batch + 1, last_seq: (b + 1) * batch, count: batch, duplicates: [] });
    }
    const json = await replayAll(s.url, "rt-json");
    expect(json.length).toBe(total);
    // One comparison per property over the whole stream (per-event expects are slow).
    expect(json.map((e) => e.seq)).toEqual(json.map((_, n) => n + 1));
    expect(json.every((e) => e.stream === "rt-json")).toBe(true);
    expect(json.map((e) => e.payload)).toEqual(json.map((_, n) => ({ n, s: `é"\\\n${n}`, a: [n, null, true] })));
    expect(json.map((e) => e.producer_seq)).toEqual(json.map((_, n) => n));
    expect(json.map((e) => e.key)).toEqual(json.map((_, n) => `k${n % 7}`));
    expect(json.every((e, n) => n === 0 || e.ingest_ts >= json[n - 1].ingest_ts)).toBe(true);
    const bin = await replayAllBinary(s.url, "rt-json");
    expect(bin.map((e) => [e.seq, e.ingest_ts, e.payload])).toEqual(json.map((e) => [e.seq, e.ingest_ts, e.payload]));
  });

  it("100,000 FlatBuffers events round-trip with binary payloads byte for byte, as binary and as JSON", async () => {
    const total = 100_000;
    const batch = 1000;
    const payloads: Buffer[] = [];
    for (let b = 0; b < total / batch; b++) {
      const events: OutgoingEvent[] = [];
      for (let i = 0; i < batch; i++) {
        const p = randomBytes(1 + ((b * batch + i) % 200));
        payloads.push(p);
        events.push({ type: "bin", idempotency_key: `id-${b * batch + i}`, producer_ts: 1_700_000_000_000 + i, payload_bytes: p });
      }
      const r = await api(`${s.url}/v1/streams/rt-bin/events`, "POST", encodePublishBatch(events), { "content-type": FB });
      expect(r.status).toBe(200);
      expect(r.json.first_seq).toBe(b * batch + 1);
      expect(r.json.count).toBe(batch);
    }
    const bin = await replayAllBinary(s.url, "rt-bin");
    expect(bin.length).toBe(total);
    expect(bin.map((e) => e.seq)).toEqual(bin.map((_, n) => n + 1));
    expect(bin.map((e) => e.idempotency_key)).toEqual(bin.map((_, n) => `id-${n}`));
    expect(bin.every((e, n) => Buffer.from(e.payload_bytes!).equals(payloads[n]))).toBe(true);
    const json = await replayAll(s.url, "rt-bin");
    expect(json.map((e) => e.payload_base64)).toEqual(payloads.map((p) => p.toString("base64")));
    expect(json.map((e) => e.producer_ts)).toEqual(json.map((_, n) => 1_700_000_000_000 + (n % batch)));
  });

  it("binary duplicates are squeezed out of a batch and the rest keep consecutive seqs", async () => {
    const ev = (k: string, n: number): OutgoingEvent => ({ type: "t", idempotency_key: k, payload_bytes: Buffer.from([n]) });
    const first = await api(`${s.url}/v1/streams/bin-dup/events`, "POST", encodePublishBatch([ev("a", 1), ev("b", 2)]), { "content-type": FB });
    expect(first.json).toMatchObject({ first_seq: 1, last_seq: 2, count: 2 });
    const second = await api(`${s.url}/v1/streams/bin-dup/events`, "POST", encodePublishBatch([ev("a", 3), ev("c", 4), ev("c", 5), ev("d", 6), ev("b", 7)]), {
      "content-type": FB,
    });
    expect(second.json).toEqual({
      stream: "bin-dup", first_seq: 3, last_seq: 4, count: 2,
      duplicates: [{ index: 0, seq: 1 }, { index: 2, seq: 3 }, { index: 4, seq: 2 }],
    });
    const r = await api(`${s.url}/v1/streams/bin-dup/events?from=1`, "GET", undefined, { accept: FB });
    const events = decodeRecords(decodeEventBatch(r.raw).records);
    expect(events.map((e) => [e.seq, e.idempotency_key, e.payload_bytes![0]])).toEqual([[1, "a", 1], [2, "b", 2], [3, "c", 4], [4, "d", 6]]);
  });

  it("events of one request get consecutive seqs even with concurrent publishers", async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, c) =>
        api(`${s.url}/v1/streams/concurrent/events`, "POST", { events: Array.from({ length: 50 }, (_, i) => ({ type: "t", payload: { c, i } })) }),
      ),
    );
    const ranges = results.map((r) => [r.json.first_seq, r.json.last_seq]).sort((a, b) => a[0] - b[0]);
    ranges.forEach(([f, l], i) => {
      expect(f).toBe(i * 50 + 1);
      expect(l).toBe(f + 49);
    });
    const events = await replayAll(s.url, "concurrent");
    for (const r of results) {
      const c = events[r.json.first_seq - 1].payload.c;
      for (let i = 0; i < 50; i++) expect(events[r.json.first_seq - 1 + i].payload).toEqual({ c, i });
    }
  });

  it("replays by time, by range, from latest, and reports stream info", async () => {
    const t0 = Date.now();
    await api(`${s.url}/v1/streams/timed/events`, "POST", { events: [{ type: "a" }, { type: "b" }] });
    await new Promise((r) => setTimeout(r, 30));
    const t1 = Date.now();
    await api(`${s.url}/v1/streams/timed/events`, "POST", { events: [{ type: "c" }, { type: "d" }] });
    const byTime = await api(`${s.url}/v1/streams/timed/events?from_time=${t1}`, "GET");
    expect(byTime.json.events.map((e: any) => e.type)).toEqual(["c", "d"]);
    const early = await api(`${s.url}/v1/streams/timed/events?from_time=${t0 - 1000}`, "GET");
    expect(early.json.events.length).toBe(4);
    const range = await api(`${s.url}/v1/streams/timed/events?from=2&to=3`, "GET");
    expect(range.json.events.map((e: any) => e.seq)).toEqual([2, 3]);
    expect(range.json.next).toBe(4);
    const latest = await api(`${s.url}/v1/streams/timed/events?from=latest`, "GET");
    expect(latest.json).toEqual({ events: [], next: 5, head_seq: 4, first_seq: 1 });
    const info = await api(`${s.url}/v1/streams/timed`, "GET");
    expect(info.json).toMatchObject({ id: "timed", head_seq: 4, first_seq: 1, events: 4, retention_ms: 604800000, durability: "process" });
    expect(info.json.bytes).toBeGreaterThan(0);
    const list = await api(`${s.url}/v1/streams`, "GET");
    expect(list.json.streams.map((x: any) => x.id)).toEqual(expect.arrayContaining(["timed", "rt-json", "rt-bin", "concurrent"]));
  });

  it("a durability fsync stream acknowledges only synced events and loses none", async () => {
    expect((await api(`${s.url}/v1/streams/durable`, "PUT", { durability: "fsync" })).status).toBe(201);
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, c) => api(`${s.url}/v1/streams/durable/events`, "POST", { events: [{ type: "t", payload: c }, { type: "t", payload: c }] })),
    );
    for (const r of results) expect(r.status).toBe(200);
    expect((await replayAll(s.url, "durable")).length).toBe(60);
  });

  it("deleting a stream removes it; publishing again starts at seq 1", async () => {
    await api(`${s.url}/v1/streams/gone/events`, "POST", { events: [{ type: "a" }, { type: "b" }] });
    expect((await api(`${s.url}/v1/streams/gone`, "DELETE")).status).toBe(204);
    expect((await api(`${s.url}/v1/streams/gone`, "GET")).status).toBe(404);
    const again = await api(`${s.url}/v1/streams/gone/events`, "POST", { events: [{ type: "a" }] });
    expect(again.json.first_seq).toBe(1);
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
