// Ordered ingest on a real server: per producer, events reach the log in
// producer_seq order; one that runs ahead is held (and answered as held),
// released with the one it waited for in one batch, or after
// gap_timeout_ms behind a gap tombstone; late and repeated ones are
// duplicates; held events survive kill -9; the bounds answer 429 / 400 and
// change nothing.
import { describe, expect, it } from "vitest";
import { api, perTestServers, replayAll } from "../helpers/server.js";
import { ev, ordered, publish, sleep } from "../helpers/ordered.js";
import { encodePublishBatch } from "../../src/wire/client.js";

const { start, dir } = perTestServers();

/** Polls the stream until it holds `n` events (or the deadline passes), and returns them. */
async function eventsOnceThere(url: string, stream: string, n: number, deadlineMs = 10_000): Promise<any[]> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const events = await replayAll(url, stream);
    if (events.length >= n || Date.now() > until) return events;
    await sleep(25);
  }
}

/** Each producer's events in log order: producer_seq strictly ascending by one, a gap tombstone covering what is missing. */
function expectInProducerOrder(events: any[]): void {
  const at = new Map<string, number>();
  for (const e of events) {
    if (e.producer_id === undefined) continue;
    const last = at.get(e.producer_id) ?? 0;
    if (e.type === "gap") {
      expect(e.payload.from_producer_seq, `${e.producer_id} gap`).toBe(last + 1);
      expect(e.producer_seq).toBe(e.payload.to_producer_seq);
    } else if (last > 0) expect(e.producer_seq, `${e.producer_id} after ${last}`).toBe(last + 1);
    at.set(e.producer_id, e.producer_seq);
  }
}

describe("ordered ingest", () => {
  it("holds an event that runs ahead, answers it under held, and appends it with the one it waited for, in order, in one batch", async () => {
    const s = await start(dir());
    expect((await ordered(s.url, "o")).status).toBe(201);
    const first = await publish(s.url, "o", [ev("a", 1), ev("a", 3, { payload: 3 }), { type: "plain" }, ev("a", 4)]);
    expect(first.status).toBe(200);
    expect(first.json).toMatchObject({
      first_seq: 1,
      last_seq: 2,
      count: 2,
      duplicates: [],
      held: [
        { index: 1, producer_seq: 3 },
        { index: 3, producer_seq: 4 },
      ],
    });
    expect((await api(`${s.url}/v1/streams/o`, "GET")).json).toMatchObject({ held_events: 2, producers: 1 });
    // A retry of a held event is answered as held again, and kept once.
    expect((await publish(s.url, "o", [ev("a", 3)])).json).toMatchObject({ count: 0, held: [{ index: 0, producer_seq: 3 }] });
    const closing = await publish(s.url, "o", [ev("a", 2)]);
    expect(closing.json).toMatchObject({ first_seq: 3, last_seq: 5, count: 3, held: [] });
    const events = await replayAll(s.url, "o");
    expect(events.map((e) => [e.seq, e.type, e.producer_seq])).toEqual([
      [1, "t", 1],
      [2, "plain", undefined], // without producer fields: appended as it came
      [3, "t", 2],
      [4, "t", 3],
      [5, "t", 4],
    ]);
    expect(events[3].payload).toBe(3);
    // The released events went to the log as one batch: one ingest_ts.
    expect(new Set(events.slice(2).map((e) => e.ingest_ts)).size).toBe(1);
    // At or below where the producer stands: a duplicate, listed, not appended.
    const late = await publish(s.url, "o", [ev("a", 2), ev("a", 5)]);
    expect(late.json).toMatchObject({ count: 1, first_seq: 6, duplicates: [{ index: 0, producer_seq: 2 }] });
  });

  it("FlatBuffers batches are ordered the same way, binary payloads and idempotency keys kept; a key repeated in the batch names the seq its original got", async () => {
    const s = await start(dir());
    await ordered(s.url, "bin");
    const FB = { "content-type": "application/x-flatbuffers" };
    const bytes = (n: number) => new Uint8Array([n, 255, 0, n]);
    const first = await api(
      `${s.url}/v1/streams/bin/events`,
      "POST",
      encodePublishBatch([
        { type: "t", producer_id: "a", producer_seq: 2, payload_bytes: bytes(2), idempotency_key: "k2" },
        { type: "t", producer_id: "a", producer_seq: 1, payload_bytes: bytes(1) },
        { type: "t", idempotency_key: "k2" },
        { type: "t", producer_id: "a", producer_seq: 4, payload: { n: 4 } },
      ]),
      FB,
    );
    expect(first.json).toMatchObject({ count: 2, first_seq: 1, duplicates: [{ index: 2, seq: 2 }], held: [{ index: 3, producer_seq: 4 }] });
    expect((await api(`${s.url}/v1/streams/bin/events`, "POST", encodePublishBatch([{ type: "t", producer_id: "a", producer_seq: 3 }]), FB)).json.count).toBe(
      2,
    );
    const events = await replayAll(s.url, "bin");
    expect(events.map((e) => [e.seq, e.producer_seq, e.payload_base64 ?? e.payload])).toEqual([
      [1, 1, Buffer.from(bytes(1)).toString("base64")],
      [2, 2, Buffer.from(bytes(2)).toString("base64")],
      [3, 3, undefined],
      [4, 4, { n: 4 }],
    ]);
    expect(events[1].idempotency_key).toBe("k2");
  });

  it("a gap that persists gap_timeout_ms gets a tombstone for exactly the missing range, then the held events, within the timeout + 1 s; a late event is a duplicate", async () => {
    const s = await start(dir());
    await ordered(s.url, "g", { gap_timeout_ms: 300 });
    await publish(s.url, "g", [ev("a", 1)]);
    const t0 = Date.now();
    expect((await publish(s.url, "g", [ev("a", 4), ev("a", 5)])).json.held).toHaveLength(2);
    const events = await eventsOnceThere(s.url, "g", 4);
    expect(Date.now() - t0).toBeLessThan(300 + 1000 + 500); // the contract's bound, plus this poll's own slack
    expect(events.map((e) => [e.type, e.producer_seq])).toEqual([
      ["t", 1],
      ["gap", 3],
      ["t", 4],
      ["t", 5],
    ]);
    expect(events[1]).toMatchObject({ producer_id: "a", payload: { producer_id: "a", from_producer_seq: 2, to_producer_seq: 3 } });
    expect(events[2].ingest_ts - t0).toBeGreaterThanOrEqual(290);
    const late = await publish(s.url, "g", [ev("a", 2), ev("a", 3), ev("a", 6)]);
    expect(late.json).toMatchObject({
      count: 1,
      duplicates: [
        { index: 0, producer_seq: 2 },
        { index: 1, producer_seq: 3 },
      ],
    });
  });

  it("many producers at once, each shuffled: every producer's events in producer_seq order, each once, none held at the end", async () => {
    const s = await start(dir());
    await ordered(s.url, "many", { gap_timeout_ms: 5000 });
    const producers = 40;
    const perProducer = 50;
    const all: ReturnType<typeof ev>[] = [];
    for (let p = 0; p < producers; p++) for (let q = 1; q <= perProducer; q++) all.push(ev(`p${p}`, q, { idempotency_key: `p${p}:${q}` }));
    // A deterministic shuffle, sent in batches of 37 by 8 concurrent senders.
    let x = 7;
    for (let i = all.length - 1; i > 0; i--) {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      const j = x % (i + 1);
      [all[i], all[j]] = [all[j], all[i]];
    }
    const batches: (typeof all)[] = [];
    for (let i = 0; i < all.length; i += 37) batches.push(all.slice(i, i + 37));
    await Promise.all(
      Array.from({ length: 8 }, async (_, w) => {
        for (let b = w; b < batches.length; b += 8) expect((await publish(s.url, "many", batches[b])).status).toBe(200);
      }),
    );
    const events = await replayAll(s.url, "many");
    expect(events.length).toBe(producers * perProducer); // nothing lost, nothing tombstoned: every gap closed
    expect(events.every((e) => e.type === "t")).toBe(true);
    expectInProducerOrder(events);
    expect((await api(`${s.url}/v1/streams/many`, "GET")).json).toMatchObject({ held_events: 0, held_bytes: 0 });
  });

  it.each(["process", "fsync"])(
    "held events survive kill -9 (%s): after the restart they are still held, released when the gap closes, and the gap timer resumes",
    async (durability) => {
      const dataDir = dir();
      let s = await start(dataDir);
      await ordered(s.url, "k", { gap_timeout_ms: 4000, durability }); // longer than a restart under load
      await publish(s.url, "k", [ev("a", 1), ev("b", 1)]);
      expect((await publish(s.url, "k", [ev("a", 3, { payload: "a3" }), ev("b", 3, { payload: "b3" })])).json.held).toHaveLength(2);
      // Held and released in one request, then more held: the file must keep exactly what is held.
      expect((await publish(s.url, "k", [ev("b", 2), ev("b", 5)])).json).toMatchObject({ count: 2, held: [{ index: 1, producer_seq: 5 }] });
      // Held on the way and released by a later event of the same request: never counted as held.
      const before = (await api(`${s.url}/v1/streams/k`, "GET")).json.held_bytes;
      expect((await publish(s.url, "k", [ev("c", 2), ev("c", 1)])).json).toMatchObject({ count: 2, held: [] });
      expect((await api(`${s.url}/v1/streams/k`, "GET")).json.held_bytes).toBe(before);
      await s.kill9();
      s = await start(dataDir);
      const restarted = (await api(`${s.url}/v1/streams/k`, "GET")).json;
      expect(restarted).toMatchObject({ held_events: 2, head_seq: 6 });
      expect(restarted.held_bytes).toBeGreaterThan(0);
      // The gap closed by the producer: released at once, in order.
      expect((await publish(s.url, "k", [ev("a", 2)])).json).toMatchObject({ count: 2 });
      // b's gap (4) was never filled: tombstoned by the resumed timer.
      const events = await eventsOnceThere(s.url, "k", 10);
      expect(events.map((e) => `${e.producer_id}${e.type === "gap" ? "-gap" : ""}${e.producer_seq}`)).toEqual([
        "a1",
        "b1",
        "b2",
        "b3",
        "c1",
        "c2",
        "a2",
        "a3",
        "b-gap4",
        "b5",
      ]);
      expect(events[7].payload).toBe("a3");
      expectInProducerOrder(events);
      // And a restart now finds nothing held and nothing to append twice.
      await s.kill9();
      s = await start(dataDir);
      expect((await api(`${s.url}/v1/streams/k`, "GET")).json).toMatchObject({ held_events: 0, held_bytes: 0, head_seq: 10 });
      await sleep(300);
      expect((await replayAll(s.url, "k")).length).toBe(10);
    },
  );

  it("bounds: past held_events_max a batch is 429 with Retry-After, past producers_max 400; a refused batch changes nothing", async () => {
    const s = await start(dir(), ["--held-events-max", "3", "--producers-max", "2"]);
    await ordered(s.url, "b", { gap_timeout_ms: 60_000 });
    await publish(s.url, "b", [ev("a", 1)]);
    expect((await publish(s.url, "b", [ev("a", 3), ev("a", 4), ev("a", 5)])).json.held).toHaveLength(3); // at the bound
    const full = await publish(s.url, "b", [ev("c", 1), ev("a", 7)]);
    expect([full.status, full.json.error.code]).toEqual([429, "held_full"]);
    expect(Number(full.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    const info = (await api(`${s.url}/v1/streams/b`, "GET")).json;
    expect([info.head_seq, info.held_events, info.producers]).toEqual([1, 3, 1]); // c1 was not appended either
    expect((await publish(s.url, "b", [ev("c", 1)])).json.count).toBe(1);
    const tooMany = await publish(s.url, "b", [{ type: "plain" }, ev("d", 1)]);
    expect([tooMany.status, tooMany.json.error.code, tooMany.json.error.index]).toEqual([400, "producers_full", 1]);
    expect((await api(`${s.url}/v1/streams/b`, "GET")).json.head_seq).toBe(2);
    // Closing the gap frees the room: the held ones go out with it.
    expect((await publish(s.url, "b", [ev("a", 2)])).json.count).toBe(4);
  });

  it("held_bytes_max: held events are bounded in bytes too (memory and held.log), at the limit and one past it", async () => {
    const s = await start(dir(), ["--held-bytes-max", String(64 * 1024)]);
    await ordered(s.url, "bytes", { gap_timeout_ms: 60_000 });
    const big = (q: number) => ev("a", q, { payload: "x".repeat(20_000) }); // ~20 KiB held each
    await publish(s.url, "bytes", [ev("a", 1)]);
    expect((await publish(s.url, "bytes", [big(3), big(4), big(5)])).json.held).toHaveLength(3); // ~60 KiB: under 64 KiB
    const past = await publish(s.url, "bytes", [big(6)]);
    expect([past.status, past.json.error.code]).toEqual([429, "held_full"]);
    expect((await api(`${s.url}/v1/streams/bytes`, "GET")).json.held_events).toBe(3);
    expect((await publish(s.url, "bytes", [ev("a", 2)])).json.count).toBe(4);
    expect((await publish(s.url, "bytes", [big(7)])).json.held).toHaveLength(1); // room again
    // One event that alone could never be held: 413, not a 429 that no wait would cure.
    const huge = await publish(s.url, "bytes", [ev("a", 10, { payload: "x".repeat(70_000) })]);
    expect([huge.status, huge.json.error.code, huge.json.error.index]).toEqual([413, "event_too_large", 0]);
  });

  it("bad producer fields are refused whole (400 naming the event); the stream can be switched off only with nothing held", async () => {
    const s = await start(dir());
    await ordered(s.url, "bad", { gap_timeout_ms: 60_000 });
    for (const bad of [
      { type: "t", producer_id: "a" },
      { type: "t", producer_seq: 2 },
      { type: "t", producer_id: "a", producer_seq: 0 },
    ]) {
      const r = await publish(s.url, "bad", [ev("a", 1), bad]);
      expect([r.status, r.json.error.code, r.json.error.index], JSON.stringify(bad)).toEqual([400, "invalid_event", 1]);
    }
    expect((await api(`${s.url}/v1/streams/bad`, "GET")).json.head_seq).toBe(0);
    await publish(s.url, "bad", [ev("a", 2)]);
    const off = await api(`${s.url}/v1/streams/bad`, "PUT", { producer_ordering: false });
    expect([off.status, off.json.error.code]).toEqual([409, "events_held"]);
    for (const gap of [0, 3_600_001, 1.5, "5"]) expect((await api(`${s.url}/v1/streams/bad`, "PUT", { gap_timeout_ms: gap })).status).toBe(400);
    await publish(s.url, "bad", [ev("a", 1)]);
    expect((await api(`${s.url}/v1/streams/bad`, "PUT", { producer_ordering: false })).status).toBe(200);
    // Without ordering producer fields are only fields again.
    expect((await publish(s.url, "bad", [ev("a", 9), { type: "t", producer_id: "z" }])).json.count).toBe(2);
    expect((await api(`${s.url}/healthz`, "GET")).status).toBe(200);
  });
});
