// Ordered ingest's edges, each once a defect found in review: an event held
// and released by one batch, a released entry outliving the dedup window, a
// delete during a release's sync, held idempotency keys, retries and bounds
// inside one batch.
import { describe, expect, it } from "vitest";
import { api, perTestServers, replayAll } from "../helpers/server.js";
import { ev, ordered, publish, sleep } from "../helpers/ordered.js";

const { start, dir } = perTestServers();

describe("ordered ingest: held.log across restarts", () => {
  it("a released event is never appended again after kill -9, also once its producer is past the dedup window", async () => {
    const d = dir();
    let s = await start(d);
    await ordered(s.url, "o", { gap_timeout_ms: 2500, dedup_window_ms: 1000 });
    expect((await publish(s.url, "o", [ev("a", 2)])).json.held).toHaveLength(1); // keeps held.log non-empty
    expect((await publish(s.url, "o", [ev("b", 2, { payload: "b2" })])).json.held).toHaveLength(1);
    expect((await publish(s.url, "o", [ev("b", 1)])).json.count).toBe(2); // b1, b2 appended
    await sleep(1300); // past the dedup window, a2 still held
    await s.kill9();
    s = await start(d);
    await sleep(2500);
    const events = await replayAll(s.url, "o");
    const b2 = events.filter((e) => e.producer_id === "b" && e.producer_seq === 2);
    expect(b2.map((e) => e.seq)).toHaveLength(1);
  });
});

describe("ordered ingest: delete during a sync", () => {
  it("DELETE of an fsync ordered stream while the sync of a release is in flight: the server keeps serving", async () => {
    const s = await start(dir());
    for (let i = 0; i < 30; i++) {
      const id = `d${i}`;
      await ordered(s.url, id, { durability: "fsync", gap_timeout_ms: 60_000 });
      await publish(s.url, id, [ev("a", 1)]);
      await publish(s.url, id, [ev("a", 3)]);
      // A large batch of plain events first keeps the shard busy, so the release and the DELETE are taken in one turn.
      const blocker = publish(
        s.url,
        id,
        Array.from({ length: 5000 }, () => ({ type: "plain", payload: { x: "y".repeat(50) } })),
      ).catch((e) => e);
      await sleep(2);
      const p = publish(s.url, id, [ev("a", 2)]).catch((e) => e);
      const del = api(`${s.url}/v1/streams/${id}`, "DELETE").catch((e) => e);
      await Promise.all([blocker, p, del]);
      const h = await api(`${s.url}/healthz`, "GET").catch((e) => ({ status: String(e) }));
      expect(h.status, `round ${i}: ${s.output().slice(-2000)}`).toBe(200);
    }
  });
});

describe("ordered ingest: keys, retries and bounds inside one batch", () => {
  it("a held event's idempotency key is taken while it is held: another event with it is its duplicate, and the producer's order stays whole", async () => {
    const s = await start(dir());
    await ordered(s.url, "k", { gap_timeout_ms: 60_000 });
    await publish(s.url, "k", [ev("a", 1)]);
    expect((await publish(s.url, "k", [ev("a", 3, { idempotency_key: "K" })])).json.held).toEqual([{ index: 0, producer_seq: 3 }]);
    const other = await publish(s.url, "k", [{ type: "other", idempotency_key: "K" }]);
    expect(other.json).toMatchObject({ count: 0, duplicates: [{ index: 0, producer_id: "a", producer_seq: 3 }] });
    expect((await publish(s.url, "k", [ev("a", 2)])).json.count).toBe(2);
    expect((await publish(s.url, "k", [ev("a", 4)])).json.count).toBe(1);
    const seqs = (await replayAll(s.url, "k")).map((e) => `${e.type}${e.producer_seq}`);
    expect(seqs).toEqual(["t1", "t2", "t3", "t4"]);
    // Appended now: the key is the dedup window's, with the seq a3 got.
    expect((await publish(s.url, "k", [{ type: "other", idempotency_key: "K" }])).json.duplicates).toEqual([{ index: 0, seq: 3 }]);
  });

  it("a retry inside the batch of an event the same batch releases is a duplicate, not held", async () => {
    const s = await start(dir());
    await ordered(s.url, "r", { gap_timeout_ms: 60_000 });
    await publish(s.url, "r", [ev("a", 1)]);
    const r = await publish(s.url, "r", [ev("a", 3), ev("a", 3), ev("a", 2)]);
    expect(r.json.count).toBe(2);
    expect(r.json.held).toEqual([]);
    expect(r.json.duplicates).toEqual([{ index: 1, producer_seq: 3 }]);
  });

  it("at held_events_max, a swapped pair that the batch itself closes is taken: the bound counts what the batch leaves held", async () => {
    const s = await start(dir(), ["--held-events-max", "1"]);
    await ordered(s.url, "h", { gap_timeout_ms: 60_000 });
    await publish(s.url, "h", [ev("a", 1)]);
    await publish(s.url, "h", [ev("b", 5)]); // one held elsewhere: at the bound
    const r = await publish(s.url, "h", [ev("a", 3), ev("a", 2)]);
    expect(r.status).toBe(200);
  });
});

describe("ordered ingest: held bytes", () => {
  it.each(["process", "fsync"])("(%s) an event held and released by one batch never counts as held: what else is held survives kill -9", async (durability) => {
    const d = dir();
    let s = await start(d);
    await ordered(s.url, "z", { gap_timeout_ms: 60_000, durability });
    await publish(s.url, "z", [ev("a", 1), ev("b", 1)]);
    expect((await publish(s.url, "z", [ev("b", 3, { payload: "x" })])).json.held).toHaveLength(1); // acknowledged as held
    // A swapped pair of the same size as b3: a3 is held and released by a2 in this one batch.
    expect((await publish(s.url, "z", [ev("a", 3, { payload: "x" }), ev("a", 2, { payload: "x" })])).json).toMatchObject({ count: 2, held: [] });
    expect((await api(`${s.url}/v1/streams/z`, "GET")).json.held_events).toBe(1);
    await s.kill9();
    s = await start(d);
    expect((await api(`${s.url}/v1/streams/z`, "GET")).json.held_events).toBe(1);
  });
});

describe("ordered ingest: held_bytes_max", () => {
  it("swapped pairs inside batches leave held_bytes where it was, so held_bytes_max keeps bounding", async () => {
    const s = await start(dir(), ["--held-bytes-max", String(64 * 1024)]);
    await ordered(s.url, "hb", { gap_timeout_ms: 60_000 });
    const big = (p: string, q: number) => ev(p, q, { payload: "x".repeat(20_000) });
    await publish(s.url, "hb", [ev("a", 1), ev("b", 1)]);
    for (let q = 2; q < 10; q += 2) expect((await publish(s.url, "hb", [big("a", q + 1), big("a", q)])).json.count).toBe(2);
    const r = await publish(
      s.url,
      "hb",
      [3, 4, 5, 6, 7, 8].map((q) => big("b", q)),
    ); // ~120 KiB held
    expect(r.status).toBe(429);
  });
});
