// The timeline promise as a property, against a real server on two shards:
// for random interleavings of appends across streams (one of them fsync,
// one with a small retention_bytes that retention keeps cutting) and random
// page sizes, paging forward to the end while the appends run, then backward
// to the start while more appends run, visits every event exactly once in
// (ingest_ts, stream, seq) order; the only events a pass misses are ones
// retention removed, and the forward page that starts past them says
// has_gap.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { api, removeDir, startServer, type TestServer } from "../helpers/server.js";
import { byTimelineOrder, eventId, publishN, sleep, streamsOnShards, timelinePage, type Page, type TimelineEvent } from "../helpers/timelines.js";

const RUNS = 16;

interface Append {
  stream: number;
  count: number;
  pauseMs: number;
}

const appendArb = fc.record({ stream: fc.nat(3), count: fc.integer({ min: 1, max: 8 }), pauseMs: fc.constantFrom(0, 0, 0, 1, 2, 4) });

describe("timelines, as a property over random appends and page sizes", () => {
  let s: TestServer;
  beforeAll(async () => {
    // Segments of 4 KiB (about 50 events) and retention every 50 ms: the small-retention stream loses segments as the test runs.
    // Sources get 5 s to answer (not 200 ms): a partial page may show a stalled shard's events late, which is not what this tests.
    s = await startServer({
      args: ["--shards", "2", "--segment-bytes-max", "4096", "--retention-check-interval-ms", "50", "--timeline-source-timeout-ms", "5000"],
    });
  });
  afterAll(async () => {
    if (!s) return;
    await s.stop();
    removeDir(s.dataDir);
  });

  let run = 0;
  /** Runs in which retention removed events before the forward pass reached them: the has_gap path was taken. */
  let gapRuns = 0;

  it("forward to the end and backward to the start visit every retained event exactly once, in order, with appends and retention meanwhile", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(appendArb, { minLength: 1, maxLength: 40 }),
        fc.array(appendArb, { maxLength: 15 }),
        fc.array(fc.integer({ min: 1, max: 15 }), { minLength: 1, maxLength: 8 }),
        fc.nat(40),
        // A reader that starts late finds that retention has cut what it has not read yet.
        fc.constantFrom(0, 0, 150),
        async (appends, duringBackward, sizes, before, readerDelayMs) => {
          const url = s.url;
          const r = run++;
          // Two streams on each shard: [0] fsync, [1] small retention_bytes.
          const streams = streamsOnShards(`p${r}.`, 2, 2).flat();
          expect((await api(`${url}/v1/streams/${streams[0]}`, "PUT", { durability: "fsync" })).status).toBe(201);
          expect((await api(`${url}/v1/streams/${streams[1]}`, "PUT", { retention_bytes: 6000 })).status).toBe(201);
          const set = [...streams].sort();
          const appended: TimelineEvent[] = [];
          const append = async (a: Append) => {
            const id = streams[a.stream];
            // The small-retention stream's events are larger, so that its 4 KiB segments fill and go.
            const pad = a.stream === 1 ? 300 : 0;
            for (const seq of await publishN(url, id, a.count, 0, "t", pad)) appended.push({ stream: id, seq } as TimelineEvent);
            if (a.pauseMs > 0) await sleep(a.pauseMs);
          };
          for (const id of streams) await append({ stream: streams.indexOf(id), count: 1, pauseMs: 0 });
          for (const a of appends.slice(0, before)) await append(a);

          let size = 0;
          const nextSize = () => sizes[size++ % sizes.length];
          const page = (cursor: string | undefined) => timelinePage(url, { streams: set.join(","), cursor, limit: nextSize() });

          // Forward, while the rest of the appends run.
          let writing = true;
          // Three writers at once: a batch of one stream commits while another's (fsync) waits for its sync.
          const rest = appends.slice(before);
          const writer = Promise.all(
            [0, 1, 2].map(async (lane) => {
              for (let i = lane; i < rest.length; i += 3) await append(rest[i]);
            }),
          ).then(() => {
            writing = false;
          });
          if (readerDelayMs > 0) await sleep(readerDelayMs);
          const forward: TimelineEvent[] = [];
          const forwardPages: Page[] = [];
          let cursor: string | undefined;
          for (let settled = false; ; ) {
            const p = await page(cursor);
            forwardPages.push(p);
            forward.push(...p.events);
            cursor = p.next_cursor;
            if (p.events.length > 0) continue;
            if (settled) break;
            if (!writing) {
              // The last appends' millisecond passes the horizon, then one more look.
              await writer;
              await sleep(3);
              settled = true;
            }
          }
          const last = forwardPages[forwardPages.length - 1];

          // In order, hence never twice.
          for (let i = 1; i < forward.length; i++)
            expect(byTimelineOrder(forward[i - 1], forward[i]), `${eventId(forward[i - 1])} then ${eventId(forward[i])}`).toBeLessThan(0);
          const seen = new Set(forward.map(eventId));
          const firstSeqs = new Map<string, number>();
          for (const id of streams) firstSeqs.set(id, (await api(`${url}/v1/streams/${id}`, "GET")).json.first_seq);
          // Missed only what retention removed, and then some page said so.
          const missed = appended.filter((e) => !seen.has(eventId(e)));
          for (const e of missed) expect(e.seq, `${eventId(e)} missed but retained`).toBeLessThan(firstSeqs.get(e.stream) ?? 0);
          if (missed.length > 0) {
            gapRuns++;
            expect(forwardPages.some((p) => p.has_gap)).toBe(true);
          }
          if ([...firstSeqs.values()].every((f) => f === 1)) expect(forwardPages.some((p) => p.has_gap)).toBe(false);
          expect(seen.size).toBe(appended.length - missed.length);

          // Backward to the start from where forward ended, while more appends land after that point.
          const lateWriter = (async () => {
            for (const a of duringBackward) await append(a);
          })();
          const backward: TimelineEvent[] = [];
          cursor = last.prev_cursor;
          for (;;) {
            const p = await page(cursor);
            if (p.events.length === 0) break;
            backward.push(...p.events);
            cursor = p.next_cursor;
          }
          await lateWriter;
          for (let i = 1; i < backward.length; i++) expect(byTimelineOrder(backward[i - 1], backward[i])).toBeGreaterThan(0);
          // Nothing the forward pass did not show, and everything it showed that retention kept.
          for (const e of backward) expect(seen.has(eventId(e)), `${eventId(e)} backward only`).toBe(true);
          const back = new Set(backward.map(eventId));
          for (const id of streams) firstSeqs.set(id, (await api(`${url}/v1/streams/${id}`, "GET")).json.first_seq);
          for (const e of forward)
            if (e.seq >= (firstSeqs.get(e.stream) ?? 0)) expect(back.has(eventId(e)), `${eventId(e)} retained, not seen backward`).toBe(true);
        },
      ),
      {
        numRuns: RUNS,
        // One case sure to take the has_gap path: 60 large events of the small-retention stream before a late reader.
        examples: [[Array.from({ length: 30 }, (_, i) => ({ stream: i % 3 === 0 ? 0 : 1, count: 3, pauseMs: 0 })), [], [4, 9], 30, 150]],
      },
    );
    // The property is only as good as the cases it met: retention must have cut ahead of a reader.
    expect(gapRuns).toBeGreaterThan(0);
  });
});
