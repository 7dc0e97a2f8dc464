// Conflation (`conflate=key`) on consume, against a real server: a consumer
// that is behind gets the newest event of every key instead of every event,
// each message from the log says the seqs it covers and how many events of
// them it left out, the counts add up and the ranges have no gap; once caught
// up it gets every event live. Bad values and a group are 400 at the upgrade.
// The client's `conflate` option rides the same path and counts what was left out.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, removeDir, startServer, type TestServer, serverWithClient } from "../helpers/server.js";
import { RawConsumer } from "../helpers/raw-consumer.js";
import type { ConsumeOptions, Subscription } from "../../src/client/index.js";

const KEYS = 10;
/** Event i's key: one of KEYS instruments, except every 7th event, which has none (always kept). */
const keyOf = (i: number): string | undefined => (i % 7 === 6 ? undefined : `sym-${i % KEYS}`);
const eventOf = (i: number) => ({ type: "quote", ...(keyOf(i) === undefined ? {} : { key: keyOf(i) }), payload: { i, pad: "x".repeat(100) } });

/** Publishes events i = from .. from + n - 1 (seq i + 1 on a fresh stream). */
async function publish(url: string, stream: string, from: number, n: number, batch = 500): Promise<void> {
  for (let done = 0; done < n; done += batch) {
    const events = Array.from({ length: Math.min(batch, n - done) }, (_, j) => eventOf(from + done + j));
    const r = await api(`${url}/v1/streams/${stream}/events`, "POST", { events });
    if (r.status !== 200) throw new Error(`publish: ${r.status} ${JSON.stringify(r.json)}`);
  }
}

interface Covered {
  /** Seqs delivered, in order. */
  seqs: number[];
  /** The seq after the last one covered. */
  next: number;
  conflated: number;
  /** Messages from the log (with a range) and live ones (without). */
  logMessages: number;
  liveMessages: number;
}

/** A raw consumer that walks the ranges its messages cover, counting what was conflated. */
class Recorder extends RawConsumer {
  private walk: Covered | null = null;
  private walked = 0;
  private range: { from_seq: number; to_seq: number; events: number; conflated: number } | null = null;

  override until(ok: () => boolean, what: string, ms = 30_000): Promise<void> {
    return super.until(ok, what, ms);
  }

  /**
   * Walks the messages as a client would: a message from the log covers
   * from_seq..to_seq (a binary batch: its range message's), starting where
   * the last one ended, and delivered + conflated = the seqs it covers; a
   * live message covers exactly its events, which follow on with no gap.
   */
  covered(filtered = false): Covered {
    const c = this.walkOn(filtered);
    return { ...c, seqs: c.seqs.slice() };
  }

  /** The seq after the last one covered; cheap, for `until`. */
  next(filtered = false): number {
    return this.walkOn(filtered).next;
  }

  /** Walks the messages that came since the last call: `until` asks on every message, and a walk from the start each time would be quadratic. */
  private walkOn(filtered: boolean): Covered {
    const hello = this.messages.find((m) => m.type === "hello");
    if (!hello) return { seqs: [], next: 0, conflated: 0, logMessages: 0, liveMessages: 0 };
    const c = (this.walk ??= { seqs: [], next: hello.from, conflated: 0, logMessages: 0, liveMessages: 0 });
    for (; this.walked < this.messages.length; this.walked++) {
      const m = this.messages[this.walked];
      let got: number[];
      let r: { from_seq: number; to_seq: number; conflated: number } | null;
      if (m.type === "range") {
        this.range = m;
        continue;
      }
      if (m.type === "events") [got, r] = [m.events.map((e: { seq: number }) => e.seq), m.from_seq === undefined ? null : m];
      else if (m.type === "batch") {
        const range = this.range;
        if (range !== null) expect(m.seqs.length).toBe(range.events);
        [got, r, this.range] = [m.seqs, range, null];
      } else continue;
      if (r === null) {
        expect(got[0]).toBe(c.next);
        got.forEach((s, i) => {
          if (s !== c.next + i) throw new Error(`live seq ${s} where ${c.next + i} was due`);
        });
        c.liveMessages++;
        c.next += got.length;
      } else {
        expect(r.from_seq).toBe(c.next); // no gap, no overlap
        for (const s of got) if (s < r.from_seq || s > r.to_seq) throw new Error(`seq ${s} outside ${r.from_seq}..${r.to_seq}`);
        // With a filter, the filtered-out seqs are in the range too.
        if (filtered) expect(got.length + r.conflated).toBeLessThanOrEqual(r.to_seq - r.from_seq + 1);
        else expect(got.length + r.conflated).toBe(r.to_seq - r.from_seq + 1);
        c.conflated += r.conflated;
        c.logMessages++;
        c.next = r.to_seq + 1;
      }
      c.seqs.push(...got);
    }
    return c;
  }
}

/** For each key, the newest seq among seqs 1..head (event i is seq i + 1). */
function newestPerKey(head: number): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i < head; i++) {
    const k = keyOf(i);
    if (k !== undefined) m.set(k, i + 1);
  }
  return m;
}

/** Checks what a consumer got of seqs 1..head: every keyless event, and for every key its newest. */
function expectNewestOfEveryKey(seqs: number[], head: number): void {
  const newest = new Map<string, number>();
  for (const s of seqs) {
    const k = keyOf(s - 1);
    if (k !== undefined) newest.set(k, Math.max(newest.get(k) ?? 0, s));
  }
  expect(newest).toEqual(newestPerKey(head));
  const keyless = Array.from({ length: head }, (_, i) => i + 1).filter((s) => keyOf(s - 1) === undefined);
  expect(seqs.filter((s) => keyOf(s - 1) === undefined)).toEqual(keyless);
  // In seq order, none twice.
  for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBeGreaterThan(seqs[i - 1]);
}

/** Publishes one event at a time, each once the consumer has it: a caught-up consumer gets every one live. */
async function publishLive(url: string, stream: string, c: Recorder, from: number, n: number): Promise<void> {
  for (let i = from; i < from + n; i++) {
    await publish(url, stream, i, 1);
    await c.until(() => c.next() === i + 2, `live seq ${i + 1}`);
  }
}

describe("conflate=key", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer();
  });
  afterAll(async () => {
    await s.stop();
    removeDir(s.dataDir);
  });

  it("a consumer joining behind a stream of many updates of few keys gets the newest of each, counts that add up, then every live event", async () => {
    await publish(s.url, "md", 0, 5000);
    const c = await Recorder.open(s.url, "md", "from=1&conflate=key");
    await c.until(() => c.next() === 5001, "history covered");
    const history = c.covered();
    expect(history.logMessages).toBeGreaterThan(0);
    expect(history.seqs.length).toBeLessThan(5000);
    expect(history.seqs.length + history.conflated).toBe(5000);
    expectNewestOfEveryKey(history.seqs, 5000);
    await publishLive(s.url, "md", c, 5000, 20);
    const after = c.covered();
    expect(after.seqs.slice(history.seqs.length)).toEqual(Array.from({ length: 20 }, (_, i) => 5001 + i));
    expect(after.liveMessages).toBeGreaterThan(0);
    expect(after.conflated).toBe(history.conflated);
    c.ws.close();
  });

  it("a binary consumer that stops reading falls behind, then gets the newest of each key with range messages, then live events", async () => {
    await publish(s.url, "stalled", 0, 1);
    const c = await Recorder.open(s.url, "stalled", "from=1&conflate=key&format=binary");
    await c.until(() => c.next() === 2, "the first event");
    c.ws.pause(); // reads nothing: the server's writes back up past consumer_buffer_bytes_max and kernel buffers
    // ~20 MB of events, far more than the socket buffers on both sides hold.
    await publish(s.url, "stalled", 1, 99_999);
    c.ws.resume();
    await c.until(() => c.next() === 100_001, "every seq covered", 60_000);
    const got = c.covered();
    expect(got.logMessages).toBeGreaterThan(0);
    expect(got.conflated).toBeGreaterThan(0);
    expect(got.seqs.length + got.conflated).toBe(100_000);
    expectNewestOfEveryKey(got.seqs, 100_000);
    await publishLive(s.url, "stalled", c, 100_000, 20);
    expect(c.covered().seqs.slice(-20)).toEqual(Array.from({ length: 20 }, (_, i) => 100_001 + i));
    c.ws.close();
  });

  it("conflates the events a filter passes, and combines with from=snapshot", async () => {
    const c = await Recorder.open(s.url, "md", "from=1&conflate=key&keys=sym-1,sym-2");
    await c.until(() => c.next(true) > 5020, "history covered");
    const seqs = c.covered(true).seqs;
    const newest = newestPerKey(5020);
    // Conflation is per page: the newest of each key in each page's range, the newest of all among them.
    expect(new Set(seqs.map((q) => keyOf(q - 1)))).toEqual(new Set(["sym-1", "sym-2"]));
    expect(seqs).toContain(newest.get("sym-1"));
    expect(seqs).toContain(newest.get("sym-2"));
    expect(seqs.length).toBeLessThan(20);
    c.ws.close();
    const snap = await Recorder.open(s.url, "md", "from=snapshot&conflate=key");
    await snap.until(() => snap.messages.some((m) => m.type === "snapshot_end"), "snapshot_end");
    snap.ws.close();
  });

  it("refuses a bad conflate value, and conflate with a group, with 400 invalid_parameter at the upgrade", async () => {
    for (const q of ["conflate=foo", "conflate=", "conflate=KEY", "conflate=key&conflate=key", "conflate=key&group=g"]) {
      const err = await Recorder.open(s.url, "md", q).then(
        () => null,
        (e) => e,
      );
      expect(err, q).not.toBeNull();
      expect([err.status, err.body.error.code], q).toEqual([400, "invalid_parameter"]);
    }
  });
});

describe("the client's conflate option", () => {
  const env = serverWithClient();

  /** Pulls events until one reaches seq `last` (next(), as a break out of for await would close it); a gap the subscription found rejects here. */
  async function pullTo(sub: Subscription, last: number, seqs: number[] = []): Promise<number[]> {
    for (let seq = 0; seq < last; ) {
      const r = await sub.next();
      if (r.done) throw new Error(`the subscription ended at seq ${seq}`);
      seq = r.value.seq;
      seqs.push(seq);
    }
    return seqs;
  }

  it("a subscriber that stops pulling falls behind and then gets the newest event of each key, a conflated count that adds up, and no gap error", async () => {
    for (const format of ["binary", "json"] as const) {
      const stream = `slow.${format}`;
      await publish(env.server.url, stream, 0, 1);
      const sub = env.client.consume(stream, { from: 1, conflate: "key", window: 100, format });
      const seqs = await pullTo(sub, 1);
      // Pulls nothing while ~20 MB is published: the client's buffer fills, it stops reading, and the server's writes back up.
      await publish(env.server.url, stream, 1, 99_999);
      await pullTo(sub, 100_000, seqs);
      expect(sub.conflated).toBeGreaterThan(0);
      expect(seqs.length + sub.conflated).toBe(100_000);
      expectNewestOfEveryKey(seqs, 100_000);
      // Caught up, it rides live again: every event, none left out.
      const before = sub.conflated;
      await publish(env.server.url, stream, 100_000, 20);
      expect((await pullTo(sub, 100_020)).length).toBe(20);
      expect(sub.conflated).toBe(before);
      await sub.close();
    }
  }, 120_000);

  it("refuses conflate with a group, or a value other than key, before any connection", () => {
    const bad = [{ conflate: "key", group: "g" }, { conflate: "KEY" }] as const;
    for (const o of bad)
      expect(() => env.client.consume("md", o as ConsumeOptions), JSON.stringify(o)).toThrow(expect.objectContaining({ code: "invalid_parameter" }));
  });
});
