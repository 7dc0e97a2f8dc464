// Snapshot then live against a real server: GET .../snapshot pages and a
// consumer's from=snapshot deliver the newest event of every key as of one
// seq, then (the consumer) every later event exactly once; the key index
// survives a restart, follows retention and stops at snapshot_keys_max.
import { describe, it, expect, afterAll, beforeAll } from "vitest";
import WebSocket from "ws";
import { api, removeDir, replayAll, startServer, type TestServer } from "../helpers/server.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `n` events from `from`: key k(i % keys), every tenth without a key (not in any snapshot). */
const events = (n: number, from: number, keys: number) => ({
  events: Array.from({ length: n }, (_, i) => {
    const j = from + i;
    return j % 10 === 9 ? { type: "note", payload: { i: j } } : { type: "quote", key: `k${j % keys}`, payload: { i: j } };
  }),
});

async function publish(url: string, stream: string, n: number, keys: number, from = 0, batch = 500): Promise<void> {
  for (let done = 0; done < n; done += batch) {
    const r = await api(`${url}/v1/streams/${stream}/events`, "POST", events(Math.min(batch, n - done), from + done, keys));
    if (r.status !== 200) throw new Error(`publish: ${r.status} ${JSON.stringify(r.json)}`);
  }
}

/** Every page of a snapshot: its as_of_seq and events, checking each page names the same cut. */
async function snapshotAll(url: string, stream: string, limit = 1000, between?: () => Promise<void>): Promise<{ asOf: number; keys: number; events: any[] }> {
  const first = await api(`${url}/v1/streams/${stream}/snapshot?limit=${limit}`, "GET");
  if (first.status !== 200) throw new Error(`snapshot: ${first.status} ${JSON.stringify(first.json)}`);
  const asOf = first.json.as_of_seq;
  const out = [...first.json.events];
  let next = first.json.next_after_seq;
  while (next !== null) {
    await between?.();
    const r = await api(`${url}/v1/streams/${stream}/snapshot?as_of_seq=${asOf}&after_seq=${next}&limit=${limit}`, "GET");
    expect(r.status).toBe(200);
    expect(r.json.as_of_seq).toBe(asOf);
    out.push(...r.json.events);
    next = r.json.next_after_seq;
  }
  return { asOf, keys: first.json.keys, events: out };
}

/** The newest event of each key among `all` up to seq `asOf`, ascending by seq: what a snapshot must be. */
function newestPerKey(all: any[], asOf: number): any[] {
  const byKey = new Map<string, any>();
  for (const e of all) if (e.seq <= asOf && e.key !== undefined) byKey.set(e.key, e);
  return [...byKey.values()].sort((a, b) => a.seq - b.seq);
}

/** A raw consumer keeping every message in order (the snapshot flag is per message). */
async function consume(url: string, stream: string, query: string): Promise<{ ws: WebSocket; messages: any[]; until: (f: () => boolean) => Promise<void> }> {
  const ws = new WebSocket(`${url.replace(/^http/, "ws")}/v1/streams/${stream}/consume?${query}`);
  const messages: any[] = [];
  ws.on("message", (d: Buffer) => messages.push(JSON.parse(d.toString("utf8"))));
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  const until = async (f: () => boolean) => {
    const t0 = Date.now();
    while (!f()) {
      if (Date.now() - t0 > 20_000) throw new Error(`timed out; last messages ${JSON.stringify(messages.slice(-3)).slice(0, 500)}`);
      await sleep(10);
    }
  };
  return { ws, messages, until };
}

describe("snapshot then live", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer({ args: ["--snapshot-keys-max", "5000"] });
  });
  afterAll(async () => {
    await s.stop();
    removeDir(s.dataDir);
  });

  it("GET .../snapshot pages the newest event of every key as of its first page, however the keys move on between pages", async () => {
    await publish(s.url, "md.pages", 6000, 703);
    const expected = newestPerKey(await replayAll(s.url, "md.pages"), 6000);
    let n = 6000;
    // Every key is updated again between pages: the pages must still be as of the first one.
    const snap = await snapshotAll(s.url, "md.pages", 97, async () => {
      await publish(s.url, "md.pages", 1000, 703, n);
      n += 1000;
    });
    expect(snap.asOf).toBe(6000);
    expect(snap.keys).toBe(703);
    expect(snap.events).toEqual(expected);
    expect(snap.events[0]).toMatchObject({ stream: "md.pages", type: "quote", payload: {} });
  });

  it("from=snapshot: the snapshot, snapshot_end, then every later event once, while publishing goes on", async () => {
    await publish(s.url, "md.live", 20_000, 3000);
    let publishing = true;
    let published = 20_000;
    const producer = (async () => {
      while (publishing) {
        await publish(s.url, "md.live", 200, 3000, published, 200);
        published += 200;
      }
    })();
    await sleep(50);
    const c = await consume(s.url, "md.live", "from=snapshot");
    await c.until(() => c.messages.some((m) => m.type === "snapshot_end"));
    const endAt = c.messages.findIndex((m) => m.type === "snapshot_end");
    const asOf = c.messages[endAt].as_of_seq;
    await sleep(300);
    publishing = false;
    await producer;
    await c.until(() => {
      const last = c.messages.at(-1);
      return last?.type === "events" && last.events.at(-1).seq === published;
    });
    const hello = c.messages[0];
    expect(hello).toMatchObject({ type: "hello", from: asOf + 1 });
    const before = c.messages.slice(1, endAt);
    expect(before.every((m) => m.type === "events" && m.snapshot === true)).toBe(true);
    const all = await replayAll(s.url, "md.live");
    expect(before.flatMap((m) => m.events)).toEqual(newestPerKey(all, asOf));
    const after = c.messages.slice(endAt + 1).filter((m) => m.type === "events");
    expect(after.every((m) => m.snapshot === undefined)).toBe(true);
    const seqs = after.flatMap((m) => m.events.map((e: any) => e.seq));
    // No gap and no duplicate at the seam or after it.
    expect(seqs).toEqual(Array.from({ length: published - asOf }, (_, i) => asOf + 1 + i));
    expect(asOf).toBeGreaterThanOrEqual(20_000);
    c.ws.close();
  });

  it("the first snapshot of a long stream reads its log over several shard turns, publishes going on, and is as of the head it reached", async () => {
    // Past INDEX_EVENTS_PER_TURN (src/shard/snapshot.ts): the index is read in slices.
    await publish(s.url, "md.long", 130_000, 997, 0, 1000);
    let published = 130_000;
    let publishing = true;
    const producer = (async () => {
      while (publishing) {
        await publish(s.url, "md.long", 100, 997, published, 100);
        published += 100;
      }
    })();
    const snap = await snapshotAll(s.url, "md.long", 10_000);
    publishing = false;
    await producer;
    expect(snap.asOf).toBeGreaterThanOrEqual(130_000);
    expect(snap.events).toEqual(newestPerKey(await replayAll(s.url, "md.long"), snap.asOf));
  });

  it("a stream without keyed events has an empty snapshot; an unknown stream is 404", async () => {
    expect((await api(`${s.url}/v1/streams/md.empty/events`, "POST", { events: [{ type: "note" }] })).status).toBe(200);
    const r = await api(`${s.url}/v1/streams/md.empty/snapshot`, "GET");
    expect(r.json).toMatchObject({ as_of_seq: 1, keys: 0, events: [], next_after_seq: null });
    const c = await consume(s.url, "md.empty", "from=snapshot");
    await c.until(() => c.messages.length >= 2);
    expect(c.messages.slice(0, 2)).toMatchObject([
      { type: "hello", from: 2 },
      { type: "snapshot_end", as_of_seq: 1 },
    ]);
    c.ws.close();
    expect((await api(`${s.url}/v1/streams/md.nope/snapshot`, "GET")).status).toBe(404);
  });

  it("bad limit, after_seq without as_of_seq, unknown names and a snapshot no longer held get clear JSON errors", async () => {
    await publish(s.url, "md.bad", 10, 3);
    const get = (q: string) => api(`${s.url}/v1/streams/md.bad/snapshot?${q}`, "GET");
    for (const q of ["limit=0", "limit=abc", "limit=100000000", "as_of_seq=-1&after_seq=1", "as_of_seq=9&after_seq=x"]) {
      const r = await get(q);
      expect(r.status).toBe(400);
      expect(r.json.error.code).toBe("invalid_parameter");
    }
    const noAsOf = await get("after_seq=3");
    expect(noAsOf.status).toBe(400);
    expect(noAsOf.json.error.message).toMatch(/as_of_seq/);
    expect((await get("after_key=k1")).json.error.code).toBe("invalid_parameter");
    const gone = await get("as_of_seq=5&after_seq=1");
    expect(gone.status).toBe(410);
    expect(gone.json.error).toMatchObject({ code: "snapshot_expired", as_of_seq: 5 });
  });

  it("from=snapshot is refused with a group or format=binary", async () => {
    for (const q of ["from=snapshot&group=g", "from=snapshot&format=binary"]) {
      const ws = new WebSocket(`${s.url.replace(/^http/, "ws")}/v1/streams/md.bad/consume?${q}`);
      const res = await new Promise<{ status: number; body: any }>((resolve, reject) => {
        ws.once("unexpected-response", (_req, r) => {
          let body = "";
          r.on("data", (d: Buffer) => (body += d.toString()));
          r.on("end", () => resolve({ status: r.statusCode ?? 0, body: JSON.parse(body) }));
        });
        ws.once("open", () => reject(new Error(`${q} was upgraded`)));
      });
      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({ code: "invalid_parameter" });
    }
  });

  it("at snapshot_keys_max keys a stream is snapshotted; one key more is 409 snapshot_keys_exceeded, over HTTP and on the socket", async () => {
    const keyed = (from: number, n: number) => ({ events: Array.from({ length: n }, (_, i) => ({ type: "quote", key: `f${from + i}` })) });
    for (let i = 0; i < 5000; i += 1000) expect((await api(`${s.url}/v1/streams/md.full/events`, "POST", keyed(i, 1000))).status).toBe(200);
    const full = await snapshotAll(s.url, "md.full", 10_000);
    expect(full.keys).toBe(5000);
    // Updates of keys it has are fine; a new key is one too many.
    expect((await api(`${s.url}/v1/streams/md.full/events`, "POST", keyed(0, 10))).status).toBe(200);
    expect((await snapshotAll(s.url, "md.full", 10_000)).keys).toBe(5000);
    expect((await api(`${s.url}/v1/streams/md.full/events`, "POST", keyed(5000, 1))).status).toBe(200);
    const r = await api(`${s.url}/v1/streams/md.full/snapshot`, "GET");
    expect(r.status).toBe(409);
    expect(r.json.error).toMatchObject({ code: "snapshot_keys_exceeded", snapshot_keys_max: 5000 });
    const c = await consume(s.url, "md.full", "from=snapshot");
    await c.until(() => c.messages.length > 0);
    expect(c.messages[0]).toMatchObject({ type: "error", code: "snapshot_keys_exceeded" });
    c.ws.close();
  });
});

describe("snapshot: a slow reader", () => {
  it("a consumer that stops reading mid-snapshot holds the pages back, then gets all of them and goes on", async () => {
    // A small socket buffer bound: the snapshot's pages wait for drain.
    const s = await startServer({ args: ["--consumer-buffer-bytes-max", "65536", "--consume-page-bytes-max", "65536"] });
    try {
      // 20 MB of snapshot: more than the kernel's loopback buffers take, so the server's queue fills.
      const pad = "x".repeat(10_000);
      for (let i = 0; i < 2000; i += 100) {
        const batch = { events: Array.from({ length: 100 }, (_, j) => ({ type: "quote", key: `big${i + j}`, payload: { pad } })) };
        expect((await api(`${s.url}/v1/streams/md.slow/events`, "POST", batch)).status).toBe(200);
      }
      const c = await consume(s.url, "md.slow", "from=snapshot");
      c.ws.pause();
      await sleep(500);
      await publish(s.url, "md.slow", 100, 7, 2000);
      c.ws.resume();
      await c.until(() => c.messages.at(-1)?.events?.at(-1)?.seq === 2100);
      const endAt = c.messages.findIndex((m) => m.type === "snapshot_end");
      expect(c.messages[endAt].as_of_seq).toBe(2000);
      const snapshot = c.messages.slice(1, endAt).flatMap((m) => m.events);
      expect(snapshot.map((e) => e.seq)).toEqual(Array.from({ length: 2000 }, (_, i) => 1 + i));
      expect(snapshot.every((e, i) => e.key === `big${i}` && e.payload.pad === pad)).toBe(true);
      const seqs = c.messages.slice(endAt + 1).flatMap((m) => (m.type === "events" ? m.events.map((e: any) => e.seq) : []));
      expect(seqs).toEqual(Array.from({ length: 100 }, (_, i) => 2001 + i));
      c.ws.close();
    } finally {
      await s.stop();
      removeDir(s.dataDir);
    }
  });
});

describe("snapshot: restart and retention", () => {
  it("a restart rebuilds the key index: the same snapshot after it", async () => {
    const s = await startServer();
    try {
      await publish(s.url, "md.restart", 3000, 400);
      const before = await snapshotAll(s.url, "md.restart");
      await s.stop();
      const again = await startServer({ dataDir: s.dataDir });
      try {
        expect(await snapshotAll(again.url, "md.restart")).toEqual(before);
        await publish(again.url, "md.restart", 100, 400, 3000);
        const after = await snapshotAll(again.url, "md.restart");
        expect(after.asOf).toBe(3100);
        expect(after.events).toEqual(newestPerKey(await replayAll(again.url, "md.restart"), 3100));
      } finally {
        await again.stop();
      }
    } finally {
      removeDir(s.dataDir);
    }
  });

  it("keys whose newest event retention deleted leave the snapshot", async () => {
    const s = await startServer({ args: ["--segment-bytes-max", "4096", "--retention-check-interval-ms", "50"] });
    try {
      await api(`${s.url}/v1/streams/md.short`, "PUT", { retention_ms: 400 });
      await publish(s.url, "md.short", 300, 300, 0, 50);
      expect((await snapshotAll(s.url, "md.short")).keys).toBe(270);
      await sleep(600);
      // Keys k0..k4 again: only they outlive the segments that expired.
      await publish(s.url, "md.short", 5, 300, 300 * 1);
      const info = (await api(`${s.url}/v1/streams/md.short`, "GET")).json;
      expect(info.first_seq).toBeGreaterThan(1);
      const snap = await snapshotAll(s.url, "md.short");
      const retained = (await replayAll(s.url, "md.short", info.first_seq)).filter((e) => e.key !== undefined);
      expect(snap.events).toEqual(newestPerKey(retained, snap.asOf));
      expect(snap.events.every((e) => e.seq >= info.first_seq)).toBe(true);
      expect(snap.keys).toBeLessThan(270);
    } finally {
      await s.stop();
      removeDir(s.dataDir);
    }
  });
});
