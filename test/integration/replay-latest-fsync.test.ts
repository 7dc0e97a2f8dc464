// Replay from `latest` on an fsync stream under load: a reader's start is the
// head it is shown (head_seq + 1, what is synced), never a seq past records
// still waiting for their fsync, which would then be skipped.
import { describe, it, expect } from "vitest";
import { api, perTestServers } from "../helpers/server.js";

const { start, dir } = perTestServers();

const PRODUCERS = 4;
const EVENTS_PER_BATCH = 10;
const READERS = 12;
const READER_INTERVAL_MS = 40;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("replay from latest on an fsync stream", () => {
  it("a reader that starts at from=latest while producers publish, and pages by next, sees every seq after the head it was shown, in order, none skipped", async () => {
    const s = await start(dir());
    const url = `${s.url}/v1/streams/synced`;
    expect((await api(url, "PUT", { durability: "fsync" })).status).toBe(201);

    let publishing = true;
    const producer = async (p: number) => {
      let n = 0;
      while (publishing) {
        const events = Array.from({ length: EVENTS_PER_BATCH }, () => ({ type: "t", payload: { p, n: n++ } }));
        const r = await api(`${url}/events`, "POST", { events });
        expect(r.status).toBe(200);
      }
    };

    /** Starts at from=latest, then follows `next` until `until()` gives a seq it has reached. */
    const reader = async (until: () => number | null) => {
      const first = await api(`${url}/events?from=latest`, "GET");
      expect(first.status).toBe(200);
      const shownHead: number = first.json.head_seq;
      const seqs: number[] = first.json.events.map((e: { seq: number }) => e.seq);
      let next: number = first.json.next;
      for (;;) {
        const r = await api(`${url}/events?from=${next}&limit=1000`, "GET");
        expect(r.status).toBe(200);
        for (const e of r.json.events) seqs.push(e.seq);
        next = r.json.next;
        const last = until();
        if (last !== null && next > last) break;
        if (r.json.events.length === 0) await sleep(5);
      }
      return { shownHead, start: first.json.next as number, seqs };
    };

    const producers = Array.from({ length: PRODUCERS }, (_, p) => producer(p));
    let finalHead: number | null = null;
    const readers: Array<ReturnType<typeof reader>> = [];
    await sleep(100); // producers under way
    for (let i = 0; i < READERS; i++) {
      readers.push(reader(() => finalHead));
      await sleep(READER_INTERVAL_MS);
    }
    publishing = false;
    await Promise.all(producers);
    finalHead = (await api(url, "GET")).json.head_seq as number;
    const results = await Promise.all(readers);

    expect(finalHead).toBeGreaterThan(0);
    for (const r of results) {
      // Every seq after the head it was shown, in order, up to the last published...
      const expected = Array.from({ length: finalHead - r.shownHead }, (_, i) => r.shownHead + 1 + i);
      expect(r.seqs).toEqual(expected);
      // ...because it started where new events land after that head.
      expect(r.start).toBe(r.shownHead + 1);
    }
  });
});
