// Timeline pages against real server processes (GET /v1/timelines): the
// merged order across streams on two shards, paging forward to the end and
// back to the start, the long poll, has_gap after retention and at a
// tombstone, a shard too busy to answer in time (partial), keys, and the
// bad input and limits, each refused with nothing changed and the server
// still serving.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { api, removeDir, startServer, tempDataDir, type TestServer } from "../helpers/server.js";
import { expectError, itStaysHealthy } from "../helpers/bad-input.js";
import {
  byTimelineOrder,
  eventId,
  pageToEnd,
  publishLarge,
  publishN,
  queueReplays,
  replaysLasting,
  shardCaughtUp,
  sleep,
  streamEvents,
  streamsOnShards,
  timelinePage,
  timelineRequest,
  type TimelineEvent,
} from "../helpers/timelines.js";

const SHARDS = 2;

/**
 * Sources get far longer than the default to answer: on a loaded 2-core
 * machine a shard thread can stall past 200 ms, and a partial page may show
 * that shard's events later than their order (that is its promise). The
 * describe that tests partial pages sets its own.
 */
const PATIENT = ["--timeline-source-timeout-ms", "5000"];

/** Servers of one describe: started in beforeAll, stopped and removed after. */
function serverWith(args: string[] = []) {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer({ args: ["--shards", String(SHARDS), ...PATIENT, ...args] });
  });
  afterAll(async () => {
    if (!s) return;
    await s.stop();
    removeDir(s.dataDir);
  });
  return () => s;
}

describe("the merged order, on two shards", () => {
  const server = serverWith();
  // Two streams on each shard, and one fsync stream: five streams, both shards.
  const [a, b] = streamsOnShards("ord.", SHARDS, 2);
  const streams = [...a, ...b, "ord.fsync"].sort();
  let all: TimelineEvent[];

  beforeAll(async () => {
    const url = server().url;
    expect((await api(`${url}/v1/streams/ord.fsync`, "PUT", { durability: "fsync" })).status).toBe(201);
    // Rounds of batches across the streams, in a shuffled order: some in the same millisecond, some not.
    for (let round = 0; round < 12; round++) {
      await Promise.all(streams.map((s, i) => publishN(url, s, 1 + ((round + i) % 4), round * 10)));
      if (round % 3 === 0) await sleep(3);
      await publishN(url, streams[round % streams.length], 5, 1000 + round);
    }
    await sleep(5); // past the horizon of the last millisecond
    all = (await Promise.all(streams.map((s) => streamEvents(url, s)))).flat().sort(byTimelineOrder);
    expect(all.length).toBeGreaterThan(150);
  });

  it("forward to the end, then backward to the start, visits every event exactly once in (ingest_ts, stream, seq) order", async () => {
    const url = server().url;
    for (const limit of [1, 7, 25, 1000]) {
      const fwd = await pageToEnd(url, streams, { limit: () => limit });
      expect(fwd.events.map(eventId)).toEqual(all.map(eventId));
      // Events come as replay renders them, byte for byte the same JSON.
      expect(fwd.events).toEqual(all);
      const bwd = await pageToEnd(url, streams, { cursor: fwd.last.prev_cursor, limit: () => limit });
      expect(bwd.events.map(eventId)).toEqual([...all].reverse().map(eventId));
      for (const p of [...fwd.pages, ...bwd.pages]) expect(p.has_gap).toBe(false);
    }
  });

  it("backward from the head without a cursor, then forward again from where it started: the same events both ways", async () => {
    const url = server().url;
    const bwd = await pageToEnd(url, streams, { direction: "backward", limit: () => 9 });
    expect(bwd.events.map(eventId)).toEqual([...all].reverse().map(eventId));
    // The first backward page's prev_cursor pages forward from the head: nothing new there yet.
    const first = await timelinePage(url, { streams: streams.join(","), direction: "backward", limit: 9 });
    expect((await timelinePage(url, { streams: streams.join(","), cursor: first.prev_cursor })).events).toEqual([]);
    // And the last (empty) backward page's prev_cursor pages forward through all of them.
    const fwd = await pageToEnd(url, streams, { cursor: bwd.last.prev_cursor, limit: () => 11 });
    expect(fwd.events.map(eventId)).toEqual(all.map(eventId));
  });

  it("next_cursor and prev_cursor of any page lead to the neighbouring pages: back and forth gives the same pages", async () => {
    const url = server().url;
    const set = streams.join(",");
    const p1 = await timelinePage(url, { streams: set, limit: 10 });
    const p2 = await timelinePage(url, { streams: set, cursor: p1.next_cursor, limit: 10 });
    const p3 = await timelinePage(url, { streams: set, cursor: p2.next_cursor, limit: 10 });
    const back = await timelinePage(url, { streams: set, cursor: p3.prev_cursor, limit: 10 });
    expect(back.events.map(eventId)).toEqual([...p2.events].reverse().map(eventId));
    const forwardAgain = await timelinePage(url, { streams: set, cursor: back.prev_cursor, limit: 10 });
    expect(forwardAgain.events).toEqual(p3.events);
  });

  it("a set is the same set in any order and with repeats: one stream's cursor works for the other spelling", async () => {
    const url = server().url;
    const p = await timelinePage(url, { streams: [...streams].reverse().join(","), limit: 5 });
    const q = await timelinePage(url, { streams: [...streams, streams[0]].join(","), cursor: p.next_cursor, limit: 5 });
    expect([...p.events, ...q.events].map(eventId)).toEqual(all.slice(0, 10).map(eventId));
  });

  it("a page while appends run: paging forward sees every event once and in order, and the appends' own order", async () => {
    const url = server().url;
    const live = streamsOnShards("live.", SHARDS, 2).flat().sort();
    let publishing = true;
    const writer = (async () => {
      for (let i = 0; i < 60; i++) await publishN(url, live[i % live.length], 1 + (i % 3), i);
      publishing = false;
    })();
    const seen: TimelineEvent[] = [];
    let cursor: string | undefined;
    for (;;) {
      const r = await timelineRequest(url, { streams: live.join(","), cursor, limit: 4 });
      // Until the first publish lands, a stream of the set may not exist yet.
      if (r.status === 404) continue;
      expect(r.status).toBe(200);
      seen.push(...r.json.events);
      cursor = r.json.next_cursor;
      if (r.json.events.length === 0 && !publishing) {
        await sleep(5);
        const rest = await pageToEnd(url, live, { cursor });
        seen.push(...rest.events);
        break;
      }
    }
    await writer;
    const expected = (await Promise.all(live.map((s) => streamEvents(url, s)))).flat().sort(byTimelineOrder);
    expect(seen.map(eventId)).toEqual(expected.map(eventId));
  });
});

describe("named timelines: GET /v1/timelines/{name}/events", () => {
  const server = serverWith();
  const streams = streamsOnShards("named.", SHARDS, 2).flat().sort();

  beforeAll(async () => {
    const url = server().url;
    for (const [i, s] of streams.entries()) await publishN(url, s, 3 + i);
    await sleep(5);
    expect((await api(`${url}/v1/timelines/feed`, "PUT", { streams })).status).toBe(201);
  });

  const named = (name: string, query: Record<string, string | number | undefined>) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, String(v));
    return api(`${server().url}/v1/timelines/${name}/events?${q}`, "GET");
  };

  it("pages the named set as the ad hoc one does, and their cursors are the same set's", async () => {
    const url = server().url;
    const adHoc = await pageToEnd(url, streams, { limit: () => 4 });
    const seen: TimelineEvent[] = [];
    let cursor: string | undefined;
    for (;;) {
      const r = await named("feed", { cursor, limit: 4 });
      expect(r.status).toBe(200);
      if (r.json.events.length === 0) break;
      seen.push(...r.json.events);
      cursor = r.json.next_cursor;
    }
    expect(seen).toEqual(adHoc.events);
    // A named page's cursor continues on the ad hoc route of the same set, and back.
    const first = (await named("feed", { limit: 3 })).json;
    const second = await timelinePage(url, { streams: streams.join(","), cursor: first.next_cursor, limit: 3 });
    expect([...first.events, ...second.events].map(eventId)).toEqual(adHoc.events.slice(0, 6).map(eventId));
    const back = (await named("feed", { cursor: second.prev_cursor, limit: 3 })).json;
    expect(back.events.map(eventId)).toEqual([...first.events].reverse().map(eventId));
  });

  it("long polls on a named timeline", async () => {
    const url = server().url;
    let cursor: string | undefined;
    for (;;) {
      const r = (await named("feed", { cursor, limit: 1000 })).json;
      cursor = r.next_cursor;
      if (r.events.length === 0) break;
    }
    const waiting = named("feed", { cursor, wait_ms: 2000 });
    await sleep(100);
    await publishN(url, streams[1], 1, 0, "named-late");
    expect((await waiting).json.events.map((e: TimelineEvent) => e.type)).toEqual(["named-late"]);
  });

  it("a timeline whose streams changed refuses the old set's cursors with 400 invalid_cursor", async () => {
    const url = server().url;
    expect((await api(`${url}/v1/timelines/changing`, "PUT", { streams: streams.slice(0, 2) })).status).toBe(201);
    const old = (await named("changing", { limit: 1 })).json.next_cursor;
    expect((await named("changing", { cursor: old })).status).toBe(200);
    expect((await api(`${url}/v1/timelines/changing`, "PUT", { streams: streams.slice(0, 3) })).status).toBe(200);
    expectError(await named("changing", { cursor: old }), 400, "invalid_cursor");
  });

  it("answers an unknown name 404 timeline_not_found, a bad name 400 invalid_timeline, a stray parameter 400, another method 405", async () => {
    const url = server().url;
    expect(expectError(await named("nope", {}), 404, "timeline_not_found").timeline).toBe("nope");
    expectError(await named("-bad", {}), 400, "invalid_timeline");
    expect(expectError(await named("feed", { streams: streams[0] }), 400, "invalid_parameter").parameters).toEqual(["streams"]);
    for (const method of ["POST", "PUT", "DELETE"]) {
      const r = await api(`${url}/v1/timelines/feed/events`, method);
      expectError(r, 405, "method_not_allowed");
      expect(r.headers.get("allow")).toBe("GET");
    }
  });
});

describe("the horizon: a batch waiting for its fsync holds back what comes after it", () => {
  const server = serverWith();

  it("pages read while fsync batches wait for their syncs and other streams commit never show an event before one that belongs ahead of it", async () => {
    const url = server().url;
    // The fsync stream sorts first: its event and a later-committed one of the same millisecond order by stream id.
    const [fsync, quick] = ["hz.a-fsync", "hz.b-quick"];
    expect((await api(`${url}/v1/streams/${fsync}`, "PUT", { durability: "fsync" })).status).toBe(201);
    await publishN(url, quick, 1);
    let writing = true;
    const writers = [fsync, quick, quick].map(async (id) => {
      while (writing) await publishN(url, id, 3);
    });
    const seen: TimelineEvent[] = [];
    let cursor: string | undefined;
    for (const t0 = Date.now(); Date.now() - t0 < 1500; ) {
      const p = await timelinePage(url, { streams: `${fsync},${quick}`, cursor, limit: 50 });
      seen.push(...p.events);
      cursor = p.next_cursor;
    }
    writing = false;
    await Promise.all(writers);
    for (let i = 1; i < seen.length; i++) expect(byTimelineOrder(seen[i - 1], seen[i]), `${eventId(seen[i - 1])} then ${eventId(seen[i])}`).toBeLessThan(0);
    expect(seen.filter((e) => e.stream === fsync).length).toBeGreaterThan(10);
  });
});

describe("long poll", () => {
  const server = serverWith(["--timeline-wait-ms-max", "3000"]);
  const [[x], [y]] = streamsOnShards("poll.", SHARDS, 1);
  const set = [x, y, "poll.fsync"].sort().join(",");

  beforeAll(async () => {
    const url = server().url;
    await publishN(url, x, 2);
    await publishN(url, y, 2);
    expect((await api(`${url}/v1/streams/poll.fsync`, "PUT", { durability: "fsync" })).status).toBe(201);
    await sleep(5);
  });

  const atHead = async () => {
    const url = server().url;
    const p = await pageToEnd(url, set.split(","));
    return p.last.next_cursor;
  };

  it("answers as soon as an event arrives, on either shard and on an fsync stream", async () => {
    const url = server().url;
    for (const stream of [x, y, "poll.fsync"]) {
      const cursor = await atHead();
      const t0 = Date.now();
      const waiting = timelinePage(url, { streams: set, cursor, wait_ms: 2500 });
      await sleep(300);
      await publishN(url, stream, 1, 0, "late");
      const p = await waiting;
      const ms = Date.now() - t0;
      expect(p.events.map((e) => [e.stream, e.type])).toEqual([[stream, "late"]]);
      // Answered on the event, well before the wait's end.
      expect(ms).toBeGreaterThanOrEqual(290);
      expect(ms).toBeLessThan(2000);
    }
  });

  it("answers an empty page at the end of wait_ms, whose cursor still pages from the same place", async () => {
    const url = server().url;
    const cursor = await atHead();
    const t0 = Date.now();
    const p = await timelinePage(url, { streams: set, cursor, wait_ms: 400 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(395);
    expect(p.events).toEqual([]);
    await publishN(url, x, 1, 0, "after");
    await sleep(5);
    expect((await timelinePage(url, { streams: set, cursor: p.next_cursor })).events.map((e) => e.type)).toEqual(["after"]);
  });

  it("waits at most timeline_wait_ms_max: wait_ms at it is taken, one above is a 400", async () => {
    const url = server().url;
    const cursor = await atHead();
    const t0 = Date.now();
    expect((await timelinePage(url, { streams: set, cursor, wait_ms: 3000 })).events).toEqual([]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2995);
    expectError(await timelineRequest(url, { streams: set, cursor, wait_ms: 3001 }), 400, "invalid_parameter");
  });

  it("a page that has events answers at once, whatever wait_ms says", async () => {
    const url = server().url;
    const t0 = Date.now();
    const p = await timelinePage(url, { streams: set, wait_ms: 3000 });
    expect(p.events.length).toBeGreaterThan(0);
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it("a client that goes away while waiting costs nothing after: the next polls answer as before", async () => {
    const url = server().url;
    const cursor = await atHead();
    for (let i = 0; i < 20; i++) {
      const ac = new AbortController();
      const q = new URLSearchParams({ streams: set, cursor, wait_ms: "2000" });
      const r = fetch(`${url}/v1/timelines?${q}`, { signal: ac.signal }).catch(() => null);
      await sleep(5);
      ac.abort();
      await r;
    }
    const waiting = timelinePage(url, { streams: set, cursor, wait_ms: 2000 });
    await sleep(50);
    await publishN(url, y, 1, 0, "still");
    expect((await waiting).events.map((e) => e.type)).toEqual(["still"]);
  });
});

describe("long polls waiting at once: timeline_waiters_max", () => {
  const server = serverWith(["--timeline-waiters-max", "2"]);

  it("takes timeline_waiters_max waiting polls and answers one more 429 with Retry-After; a slot frees when a poll ends", async () => {
    const url = server().url;
    await publishN(url, "w.a", 1);
    await sleep(5);
    const { last } = await pageToEnd(url, ["w.a"]);
    const q = { streams: "w.a", cursor: last.next_cursor, wait_ms: 1500 };
    const two = [timelineRequest(url, q), timelineRequest(url, q)];
    await sleep(200);
    const third = await timelineRequest(url, q);
    expectError(third, 429, "server_busy");
    expect(third.headers.get("retry-after")).toBe("1");
    expect(third.json.error.timeline_waiters_max).toBe(2);
    // A page with events does not wait, so it is never refused for the bound.
    expect((await timelineRequest(url, { streams: "w.a", wait_ms: 1500 })).status).toBe(200);
    for (const r of await Promise.all(two)) expect(r.status).toBe(200);
    expect((await timelineRequest(url, { ...q, wait_ms: 100 })).status).toBe(200);
  });
});

describe("has_gap", () => {
  const server = serverWith(["--segment-bytes-max", "4096", "--retention-check-interval-ms", "50"]);

  it("is true on the page that starts past events retention removed, and only there", async () => {
    const url = server().url;
    const [[kept], [gone]] = streamsOnShards("gap.", SHARDS, 1);
    expect((await api(`${url}/v1/streams/${gone}`, "PUT", { retention_bytes: 8192 })).status).toBe(201);
    await publishN(url, kept, 3);
    await publishN(url, gone, 5);
    await sleep(5);
    const set = [kept, gone].sort();
    const start = await timelinePage(url, { streams: set.join(","), limit: 2 });
    expect(start.has_gap).toBe(false);
    // ~100 events of ~60 bytes a frame: many 4 KiB segments, all but the last two past 8 KiB.
    for (let i = 0; i < 10; i++) await publishN(url, gone, 50, 100 * i);
    // Retention runs every 50 ms: wait until it has removed seq 5 and then stopped moving first_seq.
    const firstSeq = async () => (await api(`${url}/v1/streams/${gone}`, "GET")).json.first_seq as number;
    let first = await firstSeq();
    for (let t0 = Date.now(), still = 0; still < 4 && Date.now() - t0 < 10_000; await sleep(60)) {
      const now = await firstSeq();
      still = now === first && now > 5 ? still + 1 : 0;
      first = now;
    }
    expect(first).toBeGreaterThan(5);
    await sleep(5);
    const next = await pageToEnd(url, set, { cursor: start.next_cursor, limit: () => 7 });
    expect(next.pages[0].has_gap).toBe(true);
    for (const p of next.pages.slice(1)) expect(p.has_gap).toBe(false);
    const goneSeqs = next.events.filter((e) => e.stream === gone).map((e) => e.seq);
    expect(goneSeqs[0]).toBe(first);
    // Nothing retained is skipped, and nothing is seen twice.
    const retained = (await Promise.all(set.map((s) => streamEvents(url, s)))).flat().sort(byTimelineOrder);
    const seen = [...start.events, ...next.events];
    expect(new Set(seen.map(eventId)).size).toBe(seen.length);
    for (const e of retained) expect(seen.map(eventId)).toContain(eventId(e));
  });

  it("is true on the page that holds ordered ingest's tombstone, which a long poll gets when the gap timer appends it", async () => {
    const url = server().url;
    expect((await api(`${url}/v1/streams/ord.feed`, "PUT", { producer_ordering: true, gap_timeout_ms: 300 })).status).toBe(201);
    const send = (producer_seq: number) =>
      api(`${url}/v1/streams/ord.feed/events`, "POST", { events: [{ type: "quote", producer_id: "feed-a", producer_seq }] });
    expect((await send(1)).status).toBe(200);
    await sleep(5);
    const { last } = await pageToEnd(url, ["ord.feed"]);
    expect((await send(3)).json.held).toEqual([{ index: 0, producer_seq: 3 }]);
    // Nobody publishes again: the shard's gap timer appends the tombstone and the held event, and the poll hears it.
    const t0 = Date.now();
    const p = await timelinePage(url, { streams: "ord.feed", cursor: last.next_cursor, wait_ms: 3000 });
    expect(Date.now() - t0).toBeLessThan(2500);
    expect(p.events.map((e) => e.type)).toEqual(["gap", "quote"]);
    expect(p.events[0]).toMatchObject({ producer_id: "feed-a" });
    expect(p.has_gap).toBe(true);
  });

  it("is true on a page that holds a gap tombstone", async () => {
    const url = server().url;
    await publishN(url, "tomb.a", 2);
    await api(`${url}/v1/streams/tomb.a/events`, "POST", {
      events: [{ type: "gap", producer_id: "feed", payload: { from_producer_seq: 3, to_producer_seq: 4 } }],
    });
    await publishN(url, "tomb.a", 2);
    await sleep(5);
    const pages = (await pageToEnd(url, ["tomb.a"], { limit: () => 2 })).pages;
    expect(pages.map((p) => [p.events.map((e) => e.type), p.has_gap])).toEqual([
      [["t", "t"], false],
      [["gap", "t"], true],
      [["t"], false],
      [[], false],
    ]);
  });
});

describe("a shard too busy to answer in time: partial", () => {
  const SOURCE_TIMEOUT_MS = 150;
  const server = serverWith(["--timeline-source-timeout-ms", String(SOURCE_TIMEOUT_MS)]);
  const [[busy], [calm]] = streamsOnShards("part.", SHARDS, 1);
  const large = streamsOnShards("large.", SHARDS, 1)[0][0]; // on the busy stream's shard
  /** Replays of `large` queued at once that keep its shard busy for several source timeouts, measured on this machine. */
  let busyReplays: number;

  beforeAll(async () => {
    const url = server().url;
    await publishN(url, busy, 3);
    await publishN(url, calm, 3);
    await publishLarge(url, large);
    busyReplays = await replaysLasting(url, large, 3 * SOURCE_TIMEOUT_MS);
    await sleep(5);
  });

  it("leaves the busy shard's streams out and names them; the next pages bring their events, nothing skipped or repeated", async () => {
    const url = server().url;
    const set = [busy, calm].sort();
    // The page's read waits on the busy shard behind the replays.
    await queueReplays(url, large, busyReplays);
    const p = await timelinePage(url, { streams: set.join(","), limit: 100 });
    expect(p.partial).toEqual([busy]);
    expect(p.events.map((e) => e.stream)).toEqual([calm, calm, calm]);
    await shardCaughtUp(url, busy);
    const rest = await pageToEnd(url, set, { cursor: p.next_cursor });
    expect(rest.pages.every((q) => q.partial === undefined)).toBe(true);
    expect(rest.events.map(eventId)).toEqual([1, 2, 3].map((seq) => `${busy}#${seq}`));
  });

  it("backward from the head with the busy shard left out: its streams are read from their head once it answers", async () => {
    const url = server().url;
    const set = [busy, calm].sort();
    await queueReplays(url, large, busyReplays);
    const p = await timelinePage(url, { streams: set.join(","), direction: "backward", limit: 2 });
    expect(p.partial).toEqual([busy]);
    expect(p.events.map(eventId)).toEqual([`${calm}#3`, `${calm}#2`]);
    await shardCaughtUp(url, busy);
    const rest = await pageToEnd(url, set, { cursor: p.next_cursor, limit: () => 2 });
    expect(rest.events.map(eventId).sort()).toEqual([`${busy}#1`, `${busy}#2`, `${busy}#3`, `${calm}#1`].sort());
    // Forward from where that first page started: what was appended since, nothing before it again.
    await publishN(url, busy, 1, 0, "new");
    await publishN(url, calm, 1, 0, "new");
    await sleep(5);
    const after = await pageToEnd(url, set, { cursor: p.prev_cursor });
    expect(after.events.map(eventId).sort()).toEqual([`${busy}#4`, `${calm}#4`]);
  });
});

describe("keys: consume on every stream of the set", () => {
  const keys = {
    reader: "tl-reader-key-0123456789",
    prefixed: "tl-prefixed-key-0123456789",
    publisher: "tl-publisher-key-0123456789",
    admin: "tl-admin-key-0123456789",
  };
  let keysDir: string;
  let withKeys: TestServer;
  beforeAll(async () => {
    keysDir = tempDataDir();
    writeFileSync(
      join(keysDir, "keys.json"),
      JSON.stringify([
        { key: keys.reader, scopes: ["consume", "publish"] },
        { key: keys.prefixed, scopes: ["consume"], prefix: "team." },
        { key: keys.publisher, scopes: ["publish"] },
        { key: keys.admin, scopes: ["admin"] },
      ]),
    );
    withKeys = await startServer({ args: ["--shards", String(SHARDS), "--api-keys-file", join(keysDir, "keys.json")] });
    const auth = { authorization: `Bearer ${keys.reader}` };
    for (const s of ["team.a", "team.b", "other.c"])
      expect((await api(`${withKeys.url}/v1/streams/${s}/events`, "POST", { events: [{ type: "t" }] }, auth)).status).toBe(200);
    await sleep(5);
  });
  afterAll(async () => {
    if (withKeys) {
      await withKeys.stop();
      removeDir(withKeys.dataDir);
    }
    if (keysDir) removeDir(keysDir);
  });
  const bearer = (k: string) => ({ authorization: `Bearer ${k}` });

  it("401 without a key, 403 without the consume scope, 403 for a set with a stream outside the key's prefix; 200 inside it", async () => {
    const url = withKeys.url;
    expectError(await timelineRequest(url, { streams: "team.a" }), 401, "unauthorized");
    expectError(await timelineRequest(url, { streams: "team.a" }, bearer(keys.publisher)), 403, "forbidden");
    const outside = expectError(await timelineRequest(url, { streams: "team.a,other.c,team.b" }, bearer(keys.prefixed)), 403, "forbidden");
    expect(outside).toMatchObject({ prefix: "team." });
    const ok = await timelineRequest(url, { streams: "team.a,team.b" }, bearer(keys.prefixed));
    expect(ok.status).toBe(200);
    expect(ok.json.events.map(eventId)).toEqual(["team.a#1", "team.b#1"]);
    expect((await timelineRequest(url, { streams: "team.a,other.c" }, bearer(keys.reader))).status).toBe(200);
  });

  it("the same on a named timeline: consume on every stream of its set", async () => {
    const url = withKeys.url;
    const admin = bearer(keys.admin);
    expect((await api(`${url}/v1/timelines/mixed`, "PUT", { streams: ["team.a", "other.c"] }, admin)).status).toBe(201);
    expect((await api(`${url}/v1/timelines/team`, "PUT", { streams: ["team.a", "team.b"] }, admin)).status).toBe(201);
    expectError(await api(`${url}/v1/timelines/team/events`, "GET"), 401, "unauthorized");
    expectError(await api(`${url}/v1/timelines/team/events`, "GET", undefined, admin), 403, "forbidden");
    expectError(await api(`${url}/v1/timelines/mixed/events`, "GET", undefined, bearer(keys.prefixed)), 403, "forbidden");
    const ok = await api(`${url}/v1/timelines/team/events`, "GET", undefined, bearer(keys.prefixed));
    expect(ok.status).toBe(200);
    expect(ok.json.events.map(eventId)).toEqual(["team.a#1", "team.b#1"]);
  });
});

describe("bad input and limits, on one server with small ones", () => {
  const STREAMS_MAX = 4;
  const EVENTS_MAX = 30;
  const server = serverWith([
    "--timeline-streams-max",
    String(STREAMS_MAX),
    "--timeline-page-events-max",
    String(EVENTS_MAX),
    "--timeline-wait-ms-max",
    "200",
    "--replay-page-bytes-max",
    "65536",
  ]);
  const set = ["bad.a", "bad.b", "bad.c"];
  const streamsParam = set.join(",");
  let good: { next_cursor: string; prev_cursor: string };

  beforeAll(async () => {
    const url = server().url;
    for (const s of set) await publishN(url, s, 20);
    await sleep(5);
    good = await timelinePage(url, { streams: streamsParam, limit: 5 });
  });

  const bad = async (query: Record<string, string | number | undefined>, status: number, code: string) =>
    expectError(await timelineRequest(server().url, query), status, code);

  it("refuses a cursor that is garbage, tampered, truncated, of another stream set or of another server with 400 invalid_cursor", async () => {
    const c = good.next_cursor;
    const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === "A" ? "B" : "A") + s.slice(i + 1);
    for (const cursor of ["not a cursor!", "", "AAAA", c.slice(0, -3), `${c}AA`, flip(c, 3), flip(c, c.length - 2), flip(c, 12)]) {
      await bad({ streams: streamsParam, cursor }, 400, "invalid_cursor");
    }
    await bad({ streams: "bad.a,bad.b", cursor: c }, 400, "invalid_cursor");
    await bad({ streams: "bad.a,bad.b,bad.c,after-everything", cursor: c }, 400, "invalid_cursor");
    // A cursor signed by another server's secret.
    const other = await startServer({ args: ["--shards", "2"] });
    try {
      for (const s of set) await publishN(other.url, s, 1);
      await sleep(5);
      const foreign = await timelinePage(other.url, { streams: streamsParam, limit: 1 });
      await bad({ streams: streamsParam, cursor: foreign.next_cursor }, 400, "invalid_cursor");
    } finally {
      await other.stop();
      removeDir(other.dataDir);
    }
  });

  it("takes timeline_streams_max streams and refuses one more, and repeats count once", async () => {
    const url = server().url;
    await publishN(url, "bad.d", 1);
    await sleep(5);
    const four = await pageToEnd(url, ["bad.a", "bad.b", "bad.c", "bad.d"], { limit: () => EVENTS_MAX });
    expect(new Set(four.events.map((e) => e.stream))).toEqual(new Set(["bad.a", "bad.b", "bad.c", "bad.d"]));
    expect((await timelineRequest(url, { streams: "bad.a,bad.b,bad.c,bad.d,bad.a,bad.d" })).status).toBe(200);
    const five = await bad({ streams: "bad.a,bad.b,bad.c,bad.d,bad.e" }, 400, "invalid_parameter");
    expect(five.timeline_streams_max).toBe(STREAMS_MAX);
  });

  it("answers an unknown stream with 404 stream_not_found naming it, whichever shard owns it", async () => {
    for (const missing of ["bad.nope", "bad.nope2", "bad.nope3"]) {
      const e = await bad({ streams: `bad.a,${missing},bad.c` }, 404, "stream_not_found");
      expect(e.stream).toBe(missing);
    }
    expect((await api(`${server().url}/v1/streams/bad.nope`, "GET")).status).toBe(404);
  });

  it("refuses a bad stream list, limit, direction or wait_ms with 400, and takes each at its bounds", async () => {
    const url = server().url;
    // Without "streams" it is the list of named timelines, which takes no parameter.
    await bad({ limit: 5 }, 400, "invalid_parameter");
    await bad({ streams: "" }, 400, "invalid_stream");
    await bad({ streams: "bad.a,,bad.b" }, 400, "invalid_stream");
    await bad({ streams: "bad.a,-x" }, 400, "invalid_stream");
    await bad({ streams: "bad.a,a/b" }, 400, "invalid_stream");
    for (const limit of ["0", "-1", "1.5", "ten", "1e2", String(EVENTS_MAX + 1)]) await bad({ streams: streamsParam, limit }, 400, "invalid_parameter");
    expect((await timelinePage(url, { streams: streamsParam, limit: EVENTS_MAX })).events).toHaveLength(EVENTS_MAX);
    expect((await timelinePage(url, { streams: streamsParam, limit: 1 })).events).toHaveLength(1);
    expect((await timelinePage(url, { streams: streamsParam })).events).toHaveLength(25);
    for (const direction of ["up", "Forward", ""]) await bad({ streams: streamsParam, direction }, 400, "invalid_parameter");
    for (const wait of ["-1", "201", "x"]) await bad({ streams: streamsParam, wait_ms: wait }, 400, "invalid_parameter");
    await bad({ streams: streamsParam, direction: "backward", wait_ms: 10 }, 400, "invalid_parameter");
    await bad({ streams: streamsParam, cursor: good.next_cursor, direction: "backward" }, 400, "invalid_parameter");
    expect((await timelineRequest(url, { streams: streamsParam, cursor: good.next_cursor, direction: "forward" })).status).toBe(200);
    expect((await timelineRequest(url, { streams: streamsParam, cursor: good.prev_cursor, direction: "backward" })).status).toBe(200);
    expect((await timelineRequest(url, { streams: streamsParam, wait_ms: 0 })).status).toBe(200);
  });

  it("follows the rules of every route: unknown or repeated query parameters are 400 naming them, other methods 405 with Allow", async () => {
    const url = server().url;
    const unknown = expectError(await api(`${url}/v1/timelines?streams=bad.a&colour=red`, "GET"), 400, "invalid_parameter");
    expect(unknown.parameters).toEqual(["colour"]);
    const twice = expectError(await api(`${url}/v1/timelines?streams=bad.a&limit=1&limit=2`, "GET"), 400, "invalid_parameter");
    expect(twice.parameters).toEqual(["limit"]);
    for (const method of ["POST", "PUT", "DELETE", "PATCH"]) {
      const r = await api(`${url}/v1/timelines?streams=bad.a`, method);
      expectError(r, 405, "method_not_allowed");
      expect(r.headers.get("allow")).toBe("GET");
    }
  });

  it("keeps a page within replay_page_bytes_max (the event that reaches it is the last) and pages on without a skip", async () => {
    const url = server().url;
    const big = "y".repeat(20_000);
    for (let i = 0; i < 3; i++)
      expect(
        (await api(`${url}/v1/streams/bytes.${i}/events`, "POST", { events: Array.from({ length: 4 }, () => ({ type: "b", payload: big })) })).status,
      ).toBe(200);
    await sleep(5);
    const sets = ["bytes.0", "bytes.1", "bytes.2"];
    const first = await timelineRequest(url, { streams: sets.join(","), limit: EVENTS_MAX });
    expect(first.json.events.length).toBeGreaterThanOrEqual(3);
    expect(first.json.events.length).toBeLessThan(12);
    expect(first.raw.byteLength).toBeLessThan(65536 + 20_000 + 1024);
    const all = await pageToEnd(url, sets, { limit: () => EVENTS_MAX });
    expect(all.events.map(eventId).sort()).toEqual(sets.flatMap((s) => [1, 2, 3, 4].map((seq) => `${s}#${seq}`)).sort());
  });

  it("changed nothing: the streams hold what they held", async () => {
    const url = server().url;
    for (const s of set) expect((await api(`${url}/v1/streams/${s}`, "GET")).json).toMatchObject({ head_seq: 20, first_seq: 1 });
    expect((await api(`${url}/v1/streams`, "GET")).json.streams.map((s: { id: string }) => s.id)).not.toContain("bad.nope");
  });

  itStaysHealthy(server);
});
