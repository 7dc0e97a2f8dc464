// ticker/client against a real server: publish in both formats with every
// field, the producer (order, flush, the buffered bound, retries through a
// kill -9 that never duplicate), replay (ranges, time, pages cut short by
// the bytes bound), the admin calls and typed errors.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Producer, Ticker, TickerError } from "../../src/client/index.js";
import { api, perTestServers, removeDir, startServer, tempDataDir, type TestServer } from "../helpers/server.js";

const drain = async <T>(it: AsyncIterable<T>): Promise<T[]> => {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
};

describe("ticker/client against one server", () => {
  let s: TestServer;
  let t: Ticker;
  beforeAll(async () => {
    // Pages of at most 64 KiB: a replay of big events gets pages cut short of their range.
    s = await startServer({ args: ["--replay-page-bytes-max", "65536"] });
    t = new Ticker({ url: s.url });
  });
  afterAll(async () => {
    t.close();
    await s.stop();
    removeDir(s.dataDir);
  });

  it.each(["binary", "json"] as const)("publish (%s) keeps every field, and replay gives them back as views", async (format) => {
    const stream = `fields-${format}`;
    const r = await t.publish(
      stream,
      [
        { type: "a", key: "k1", producer_id: "p", producer_seq: 0, producer_ts: 1764000000000, idempotency_key: "i1", payload: { px: 1.5, s: "é" } },
        { type: "b", payload_json: '{"raw":  [1, 2]}' },
        { type: "c", payload_bytes: new Uint8Array([0, 255, 7]) },
        { type: "d" },
      ],
      { format },
    );
    expect(r).toMatchObject({ stream, first_seq: 1, last_seq: 4, count: 4, duplicates: [] });
    const events = await drain(t.replay(stream));
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3, 4]);
    expect(events[0].toJSON()).toMatchObject({
      seq: 1,
      stream,
      type: "a",
      key: "k1",
      producer_id: "p",
      producer_seq: 0,
      producer_ts: 1764000000000,
      idempotency_key: "i1",
      payload: { px: 1.5, s: "é" },
    });
    expect(events[0].ingest_ts).toBeGreaterThan(1_700_000_000_000);
    expect(events[1].payload_bytes.toString()).toBe('{"raw":  [1, 2]}'); // the JSON text as sent
    expect(events[1].payload).toEqual({ raw: [1, 2] });
    expect(events[2].payload_encoding).toBe("binary");
    expect([...events[2].payload_bytes]).toEqual([0, 255, 7]);
    expect(events[2].payload).toBeUndefined();
    expect(events[3].payload_bytes.length).toBe(0);
    expect(events[3].key).toBeUndefined();
    // A view, not a copy: same memory as the page.
    expect(events[1].payload_bytes.buffer).toBe(events[2].payload_bytes.buffer);
    // The same event through the server's JSON page.
    const page = (await api(`${s.url}/v1/streams/${stream}/events`, "GET")).json;
    expect(events.map((e) => e.toJSON())).toEqual(page.events);
  });

  it("an invalid event refuses the whole call before anything is sent", async () => {
    const p = t.producer();
    await expect(p.send("bad", [{ type: "ok" }, { type: "" }])).rejects.toMatchObject({ status: 0, code: "invalid_event", details: { index: 1 } });
    await expect(t.publish("bad", [{ type: "x", payload: 1, payload_bytes: new Uint8Array(1) }])).rejects.toBeInstanceOf(TickerError);
    await p.flush();
    expect((await api(`${s.url}/v1/streams/bad`, "GET")).status).toBe(404);
  });

  it("the producer batches, keeps order per stream and flushes everything", async () => {
    const p = t.producer({ batchEventsMax: 100, lingerMs: 2 });
    for (let i = 0; i < 5000; i++) await p.send(i % 2 ? "odd" : "even", { type: "n", payload: i });
    await p.close();
    expect(p.published).toBe(5000);
    for (const [stream, parity] of [
      ["even", 0],
      ["odd", 1],
    ] as const) {
      const got = (await drain(t.replay(stream, { pageEvents: 700 }))).map((e) => e.payload as number);
      expect(got).toEqual(Array.from({ length: 2500 }, (_, i) => 2 * i + parity));
    }
    await expect(p.send("odd", { type: "late" })).rejects.toMatchObject({ code: "closed" });
  });

  it("send waits while the buffered bound is reached instead of holding more", async () => {
    const p = t.producer({ bufferedEventsMax: 50, batchEventsMax: 10, lingerMs: 1 });
    let most = 0;
    for (let i = 0; i < 2000; i++) {
      await p.send("bounded", { type: "n" });
      most = Math.max(most, (p as unknown as { buffered: number }).buffered);
    }
    await p.flush();
    expect(most).toBeLessThanOrEqual(50);
    expect((await t.streams.get("bounded")).head_seq).toBe(2000);
  });

  it("replay: ranges, latest, time, and pages that stop short of their range", async () => {
    const big = new Uint8Array(10_000).fill(1); // ~6 events fit a 64 KiB page
    for (let i = 0; i < 10; i++)
      await t.publish(
        "big",
        Array.from({ length: 10 }, () => ({ type: "b", payload_bytes: big })),
      );
    const all = await drain(t.replay("big", { pageEvents: 25, prefetch: 3 }));
    expect(all.map((e) => e.seq)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(all.every((e) => e.payload_bytes.length === 10_000)).toBe(true);
    expect((await drain(t.replay("big", { from: 40, to: 55, pageEvents: 4 }))).map((e) => e.seq)).toEqual(Array.from({ length: 16 }, (_, i) => i + 40));
    expect(await drain(t.replay("big", { from: "latest" }))).toEqual([]);
    const mid = all[50].ingest_ts;
    const fromTime = await drain(t.replay("big", { from_time: mid }));
    expect(fromTime[0].ingest_ts).toBeGreaterThanOrEqual(mid);
    expect(fromTime.at(-1)!.seq).toBe(100);
    // By page: the same events in arrays, none empty, none repeated.
    const pages: number[][] = [];
    for await (const page of t.replay("big", { from: 40, to: 75, pageEvents: 10 }).batches()) pages.push(page.map((e) => e.seq));
    expect(pages.flat()).toEqual(Array.from({ length: 36 }, (_, i) => i + 40));
    expect(pages.every((p) => p.length > 0 && p.length <= 10)).toBe(true);
    // Ends at the head the first page saw, although events keep coming.
    const r = t.replay("big", { pageEvents: 10, prefetch: 1 });
    let n = 0;
    for await (const _ of r) if (++n === 1) await t.publish("big", [{ type: "later" }]);
    expect(n).toBe(100);
  });

  it("admin: streams, checkpoints, lag, groups, timelines; errors carry status and code", async () => {
    expect(await t.streams.put("admin-s", { retention_ms: 60_000 })).toMatchObject({ id: "admin-s", retention_ms: 60_000 });
    await t.publish(
      "admin-s",
      Array.from({ length: 10 }, () => ({ type: "x" })),
    );
    expect((await t.streams.list()).map((x) => x.id)).toContain("admin-s");
    expect(await t.checkpoints.set("admin-s", "g", 4)).toEqual({ group: "g", seq: 4 });
    expect(await t.checkpoints.get("admin-s", "g")).toEqual({ group: "g", seq: 4 });
    expect(await t.lag("admin-s", "g")).toMatchObject({ group: "g", head_seq: 10, checkpoint_seq: 4, lag: 6 });
    expect((await t.groups("admin-s")).map((g) => g.group)).toEqual(["g"]);
    const page = await t.timelines.page({ streams: ["admin-s", "big"], limit: 5 });
    expect(page.events).toHaveLength(5);
    expect(typeof page.next_cursor).toBe("string");
    const next = await t.timelines.page({ streams: ["admin-s", "big"], limit: 5, cursor: page.next_cursor! });
    expect(next.events).toHaveLength(5);
    const err = await t.checkpoints.set("admin-s", "g", 11).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TickerError);
    expect(err).toMatchObject({ status: 400 });
    await t.streams.delete("admin-s");
    await expect(t.streams.get("admin-s")).rejects.toMatchObject({ status: 404, code: "stream_not_found" });
    await expect(drain(t.replay("nope-nothing"))).rejects.toMatchObject({ status: 404, code: "stream_not_found" });
    await expect(t.timelines.page({ streams: ["big"], cursor: "forged" })).rejects.toMatchObject({ status: 400, code: "invalid_cursor" });
  });
});

describe("ticker/client when the server goes away", () => {
  const servers = perTestServers();

  it("a refused connection is a TickerError with status 0", async () => {
    const t = new Ticker({ url: "http://127.0.0.1:1" });
    await expect(t.streams.list()).rejects.toMatchObject({ status: 0, code: "connection_failed" });
    t.close();
  });

  it("a producer retries through a kill -9 and a restart, and no event lands twice", async () => {
    const dataDir = servers.dir();
    const first = await servers.start(dataDir);
    const t = new Ticker({ url: first.url });
    let p: Producer | null = t.producer({ batchEventsMax: 200, lingerMs: 1, inFlightMax: 4 });
    const total = 20_000;
    let restarted: Promise<TestServer> | null = null;
    for (let i = 0; i < total; i++) {
      await p.send(`kill-${i % 3}`, { type: "n", payload: i });
      if (i === 8_000) {
        await first.kill9();
        // The producer keeps sending into the outage; the server comes back on the same port.
        restarted = startServer({ dataDir, args: ["--port", String(first.port)] }).then(servers.track);
      }
    }
    await p.close();
    p = null;
    await restarted;
    const seen = new Map<number, number>();
    for (const stream of ["kill-0", "kill-1", "kill-2"]) {
      let last = 0;
      for await (const e of t.replay(stream)) {
        expect(e.seq).toBe(last + 1);
        last = e.seq;
        const v = e.payload as number;
        seen.set(v, (seen.get(v) ?? 0) + 1);
        expect(v % 3).toBe(Number(stream.at(-1)));
      }
    }
    expect(seen.size).toBe(total);
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
    t.close();
  });
});

describe("ticker/client refusals", () => {
  it("publishing to an unknown stream is a 404 stream_not_found when auto create is off", async () => {
    const dir = tempDataDir();
    const s = await startServer({ dataDir: dir, args: ["--auto-create-streams", "false"] });
    try {
      const t = new Ticker({ url: s.url });
      await expect(t.publish("nope", [{ type: "x" }])).rejects.toMatchObject({ status: 404, code: "stream_not_found" });
      t.close();
    } finally {
      await s.stop();
      removeDir(dir);
    }
  });
});
