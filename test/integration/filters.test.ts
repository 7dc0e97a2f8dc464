// Server-side filters (`types=`, `keys=`, exact and `prefix*`) and `max_rate`
// on replay and consume, against a real server: only matching events are
// sent, and the seq ranges the messages state (a replay page's `next`, an
// events message's from_seq / to_seq, a range message, a heartbeat's
// next_seq) cover every seq exactly once, so a client can prove it missed
// nothing. Bad filters are 400 invalid_parameter, also at the bounds.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, removeDir, startServer, type TestServer } from "../helpers/server.js";
import { decodeEventBatch } from "../../src/wire/client.js";
import { RawConsumer } from "../helpers/raw-consumer.js";
import { Ticker } from "../../src/client/index.js";

/** Filter bounds the server runs with here, so the tests can stand at them. */
const VALUES_MAX = 4;
const BYTES_MAX = 64;

/** Event i: type trade / quote / trade.big by turns, key BTC-USD / ETH-USD / none. */
const eventOf = (i: number) => ({
  type: ["trade", "quote", "trade.big"][i % 3],
  ...(i % 5 === 4 ? {} : { key: i % 2 === 0 ? "BTC-USD" : "ETH-USD" }),
  payload: { i },
});

async function publish(url: string, stream: string, from: number, n: number): Promise<void> {
  for (let done = 0; done < n; done += 500) {
    const events = Array.from({ length: Math.min(500, n - done) }, (_, j) => eventOf(from + done + j));
    const r = await api(`${url}/v1/streams/${stream}/events`, "POST", { events });
    if (r.status !== 200) throw new Error(`publish: ${r.status} ${JSON.stringify(r.json)}`);
  }
}

/** Every page of a filtered replay from seq 1: the events, and the [from, next) stretch each page covered. */
async function replayPages(url: string, stream: string, query: string) {
  const pages: Array<{ from: number; next: number; seqs: number[] }> = [];
  let from = 1;
  for (;;) {
    const r = await api(`${url}/v1/streams/${stream}/events?from=${from}&${query}`, "GET");
    expect(r.status).toBe(200);
    pages.push({ from, next: r.json.next, seqs: r.json.events.map((e: { seq: number }) => e.seq) });
    if (r.json.next > r.json.head_seq) return { pages, head: r.json.head_seq as number, events: pages.flatMap((p) => p.seqs) };
    expect(r.json.next).toBeGreaterThan(from);
    from = r.json.next;
  }
}

/** Seqs 1..n whose event passes `pass`. */
const expected = (n: number, pass: (e: ReturnType<typeof eventOf>) => boolean) =>
  Array.from({ length: n }, (_, i) => i).flatMap((i) => (pass(eventOf(i)) ? [i + 1] : []));

/** A raw consumer that walks the ranges its messages cover. */
class Recorder extends RawConsumer {
  /**
   * Walks the messages as a client proving completeness would: each covers
   * the seqs from where the last one ended, with its events inside. Returns
   * the seqs delivered and the seq the consumer is known to be at.
   */
  covered(): { seqs: number[]; next: number } {
    const hello = this.messages.find((m) => m.type === "hello");
    if (!hello) return { seqs: [], next: 0 };
    let next = hello.from as number;
    const seqs: number[] = [];
    let range: { from_seq: number; to_seq: number; events: number } | null = null;
    for (const m of this.messages) {
      let from: number;
      let to: number;
      let got: number[];
      if (m.type === "events") [from, to, got] = [m.from_seq, m.to_seq, m.events.map((e: { seq: number }) => e.seq)];
      else if (m.type === "range") {
        range = m;
        continue;
      } else if (m.type === "batch") {
        if (range === null) throw new Error("a filtered binary batch came without its range message");
        expect(m.seqs.length).toBe(range.events);
        [from, to, got] = [range.from_seq, range.to_seq, m.seqs];
        range = null;
      } else if (m.type === "heartbeat" && m.next_seq !== undefined) {
        expect(m.next_seq).toBeGreaterThanOrEqual(next);
        next = m.next_seq;
        continue;
      } else continue;
      expect(from).toBe(next); // no gap, no overlap
      for (const s of got) expect(s >= from && s <= to).toBe(true);
      seqs.push(...got);
      next = to + 1;
    }
    return { seqs, next };
  }

  close(): void {
    this.ws.close();
  }
}

describe("server-side filters and max_rate", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer({ args: ["--filter-values-max", String(VALUES_MAX), "--filter-bytes-max", String(BYTES_MAX)] });
    await publish(s.url, "md", 0, 3000);
  });
  afterAll(async () => {
    await s.stop();
    removeDir(s.dataDir);
  });

  it("a filtered replay sends only matching events, and its pages' next values cover every seq once", async () => {
    const r = await replayPages(s.url, "md", "types=trade&keys=BTC-USD&limit=100");
    expect(r.events).toEqual(expected(3000, (e) => e.type === "trade" && e.key === "BTC-USD"));
    for (const p of r.pages) expect(p.seqs.length).toBeLessThanOrEqual(100);
    for (let i = 1; i < r.pages.length; i++) expect(r.pages[i].from).toBe(r.pages[i - 1].next);
  });

  it("the prefix form matches types and keys that start with it; binary pages hold the same events", async () => {
    const r = await replayPages(s.url, "md", "types=trade*&keys=ETH*");
    expect(r.events).toEqual(expected(3000, (e) => e.type.startsWith("trade") && (e.key ?? "").startsWith("ETH")));
    const bin = await api(`${s.url}/v1/streams/md/events?from=1&limit=50&types=trade*&keys=ETH*`, "GET", undefined, { accept: "application/x-flatbuffers" });
    expect(bin.status).toBe(200);
    const batch = decodeEventBatch(bin.raw);
    expect(batch.count).toBe(50);
    const records = Buffer.from(batch.records.buffer, batch.records.byteOffset, batch.records.byteLength);
    const seqs: number[] = [];
    for (let at = 0; at < records.length; at += records.readUInt32LE(at)) seqs.push(Number(records.readBigUInt64LE(at + 8)));
    expect(seqs).toEqual(r.events.slice(0, 50));
    // It stopped at the 51st match: the filtered-out seqs before it are passed over.
    expect(batch.next).toBe(r.events[50]);
  });

  it("a replay page where nothing matches is empty and its next moves past what it looked at", async () => {
    const r = await api(`${s.url}/v1/streams/md/events?from=1&limit=10&types=nothing-like-this`, "GET");
    expect(r.status).toBe(200);
    expect(r.json.events).toEqual([]);
    expect(r.json.next).toBeGreaterThan(1);
  });

  it("a filtered JSON consumer gets ranges that cover history and live events without a gap", async () => {
    const c = await Recorder.open(s.url, "md", "from=earliest&format=json&types=quote,trade.big&keys=BTC*");
    await publish(s.url, "md", 3000, 600); // live, while or after history is served
    const pass = (e: ReturnType<typeof eventOf>) => (e.type === "quote" || e.type === "trade.big") && (e.key ?? "").startsWith("BTC");
    const want = expected(3600, pass);
    await c.until(() => c.covered().seqs.length >= want.length, "every matching event");
    expect(c.covered().seqs).toEqual(want);
    for (const m of c.messages.filter((x) => x.type === "events")) expect(m.events.length).toBeGreaterThan(0);
    // The tail after the last match is filtered out: a heartbeat says the consumer is past it.
    await c.until(() => c.covered().next === 3601, "a heartbeat with next_seq at the head");
    c.close();
  });

  it("a filtered binary consumer gets a range message before each batch", async () => {
    const c = await Recorder.open(s.url, "md", "from=earliest&format=binary&keys=ETH-USD");
    const want = expected(3600, (e) => e.key === "ETH-USD");
    await c.until(() => c.covered().seqs.length >= want.length, "every matching event");
    expect(c.covered().seqs).toEqual(want);
    c.close();
  });

  it("a filtered group with a small window is not stalled by the filtered-out events between its own", async () => {
    const c = await Recorder.open(s.url, "md", "from=earliest&format=json&group=g-small&window=3&types=trade.big&keys=BTC-USD", true);
    const head = (await api(`${s.url}/v1/streams/md`, "GET")).json.head_seq;
    const want = expected(head, (e) => e.type === "trade.big" && e.key === "BTC-USD");
    await c.until(() => c.covered().seqs.length >= want.length, "every matching event");
    expect(c.covered().seqs).toEqual(want);
    c.close();
  });

  it("refuses bad filters and rates with 400 invalid_parameter, at and over the bounds", async () => {
    const bad = [
      "types=",
      "types=a,,b",
      "keys=*",
      "keys=a*b",
      `types=${["a", "b", "c", "d", "e"].join(",")}`, // VALUES_MAX + 1 values
      `keys=${"k".repeat(BYTES_MAX + 1)}`,
      "max_rate=0",
      "max_rate=fast",
      "types=a&types=b",
    ];
    for (const q of bad) {
      const r = await api(`${s.url}/v1/streams/md/events?from=1&${q}`, "GET");
      expect([q, r.status, r.json?.error?.code]).toEqual([q, 400, "invalid_parameter"]);
      const refused = await Recorder.open(s.url, "md", `from=1&${q}`).then(
        () => null,
        (e: { status: number; body: any }) => e,
      );
      expect([q, refused?.status, refused?.body?.error?.code]).toEqual([q, 400, "invalid_parameter"]);
    }
    // Snapshot pages are neither filtered nor paced: the combination is refused, not half done.
    for (const q of ["from=snapshot&types=trade", "from=snapshot&max_rate=10"]) {
      const refused = await Recorder.open(s.url, "md", q).then(
        () => null,
        (e: { status: number; body: any }) => e,
      );
      expect([q, refused?.status, refused?.body?.error?.code]).toEqual([q, 400, "invalid_parameter"]);
    }
    // Exactly at the bounds: VALUES_MAX values, BYTES_MAX bytes.
    const atValues = await api(`${s.url}/v1/streams/md/events?from=1&types=a,b&keys=c,d`, "GET");
    expect(atValues.status).toBe(200);
    const atBytes = await api(`${s.url}/v1/streams/md/events?from=1&keys=${"k".repeat(BYTES_MAX)}`, "GET");
    expect(atBytes.status).toBe(200);
  });

  it("max_rate paces a replay: 1000 events at 2000/s take at least ~0.4 s, pages of at most max_rate", async () => {
    const t0 = performance.now();
    const seqs: number[] = [];
    let from = 1;
    while (seqs.length < 1000) {
      const r = await api(`${s.url}/v1/streams/md/events?from=${from}&limit=1000&max_rate=2000`, "GET");
      expect(r.status).toBe(200);
      seqs.push(...r.json.events.map((e: { seq: number }) => e.seq));
      from = r.json.next;
    }
    expect(performance.now() - t0).toBeGreaterThanOrEqual(400);
    expect(seqs.slice(0, 1000)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    const small = await api(`${s.url}/v1/streams/md/events?from=1&limit=1000&max_rate=10`, "GET");
    expect(small.json.events.length).toBe(10);
  });

  it("max_rate paces a consumer: 1000 events at 2000/s take at least ~0.4 s, in order, no gap", async () => {
    const t0 = performance.now();
    const c = await Recorder.open(s.url, "md", "from=1&format=json&max_rate=2000");
    const seqs = () => c.messages.filter((m) => m.type === "events").flatMap((m) => m.events.map((e: { seq: number }) => e.seq));
    await c.until(() => seqs().length >= 1000, "1000 events");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(400);
    expect(seqs().slice(0, 1000)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    c.close();
  });

  it("the client's replay and consume take types, keys and maxRate, and a filtered subscription goes on past filtered-out stretches", async () => {
    const t = new Ticker({ url: s.url });
    try {
      const pass = (e: ReturnType<typeof eventOf>) => e.type === "quote" && e.key === "ETH-USD";
      const got: number[] = [];
      for await (const e of t.replay("md", { types: ["quote"], keys: ["ETH-USD"], pageEvents: 50 })) got.push(e.seq);
      expect(got).toEqual(expected(3600, pass));
      for (const format of ["binary", "json"] as const) {
        const sub = t.consume("md", { from: "earliest", types: ["quote"], keys: ["ETH*"], format });
        const seen: number[] = [];
        for await (const e of sub) {
          seen.push(e.seq);
          if (seen.length === got.length) break;
        }
        expect(seen).toEqual(got);
        await sub.close();
      }
      // A live subscription that nothing matches for a while, then something does.
      const sub = t.consume("md", { from: "latest", types: ["late"], format: "json" });
      await sub.ready;
      await publish(s.url, "md", 3600, 500);
      await new Promise((r) => setTimeout(r, 1500)); // past a heartbeat with next_seq
      const r = await api(`${s.url}/v1/streams/md/events`, "POST", { events: [{ type: "late", payload: {} }] });
      const first = await sub.next();
      expect(first.value?.seq).toBe(r.json.first_seq);
      await sub.close();
    } finally {
      t.close();
    }
  });
});

describe("live first", () => {
  it("while live batches are pushed, a replay page on the same shard is cut at 1,000 events and its next goes on from there", async () => {
    const s = await startServer({ args: ["--shards", "1"] });
    try {
      await publish(s.url, "history", 0, 5000);
      const full = await api(`${s.url}/v1/streams/history/events?from=1&limit=5000`, "GET");
      expect(full.json.events.length).toBe(5000); // nobody consumes anything live: the whole page
      await publish(s.url, "ticks", 0, 1); // a consumer needs the stream
      const live = await Recorder.open(s.url, "ticks", "from=latest&format=json");
      let publishing = true;
      const producer = (async () => {
        while (publishing) await publish(s.url, "ticks", 0, 10);
      })();
      // "Being pushed" is the last 100 ms: on a loaded machine a publish can take longer, so a few tries.
      const pages: Array<[number, number]> = [];
      try {
        await live.until(() => live.messages.some((m) => m.type === "events"), "a live batch");
        while (pages.length < 50 && !pages.some(([n]) => n === 1000)) {
          const r = await api(`${s.url}/v1/streams/history/events?from=1&limit=5000`, "GET");
          pages.push([r.json.events.length, r.json.next]);
        }
      } finally {
        publishing = false;
        await producer;
      }
      for (const p of pages)
        expect([
          [5000, 5001],
          [1000, 1001],
        ]).toContainEqual(p);
      expect(pages).toContainEqual([1000, 1001]);
      live.close();
    } finally {
      await s.stop();
      removeDir(s.dataDir);
    }
  });
});
