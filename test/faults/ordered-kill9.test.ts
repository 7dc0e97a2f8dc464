// kill -9 of the server while producers publish out of order to ordered
// streams, over and over on one data dir: every event acknowledged (appended
// or held) ends in the log exactly once, each producer's events in
// producer_seq order, tombstones only where events were never sent, and
// none left held once the gaps have timed out.
import { describe, expect, it } from "vitest";
import { encodePublishBatch } from "../../src/wire/client.js";
import { removeDir, replayAll, startServer, tempDataDir, type TestServer } from "../helpers/server.js";
import { rng, runSeed, sleep, type Target } from "./load.js";
import { recordResult, scaled } from "./scale.js";

const STREAMS = [
  { id: "ord.p", durability: "process" },
  { id: "ord.f", durability: "fsync" },
];
const PRODUCERS_PER_STREAM = 3;
const CYCLES = scaled(6, 40);
const GAP_TIMEOUT_MS = 400;
/** Of every window of a producer's seqs: shuffled, and about one in fifty never sent. */
const WINDOW = 16;
const DROP = 1 / 50;

interface ProducerLog {
  stream: string;
  id: string;
  /** Answered 200: appended, held, or a duplicate (then also in `late`). */
  acked: Set<number>;
  late: Set<number>;
  dropped: Set<number>;
  requests: number;
  failures: number;
}

/** One producer: windows of its seqs, shuffled, in small batches, each retried until the server answers 200. */
async function produce(target: Target, p: ProducerLog, random: () => number, stop: { now: boolean }): Promise<void> {
  let next = 1;
  while (!stop.now) {
    const window: number[] = [];
    for (let q = next; q < next + WINDOW; q++)
      if (random() >= DROP) window.push(q);
      else p.dropped.add(q);
    next += WINDOW;
    for (let i = window.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [window[i], window[j]] = [window[j], window[i]];
    }
    while (window.length > 0) {
      const batch = window.splice(0, 1 + Math.floor(random() * 6));
      const events = batch.map((q) => ({ type: "t", producer_id: p.id, producer_seq: q, payload: { q } }));
      const binary = random() < 0.5;
      for (;;) {
        p.requests++;
        try {
          const res = await fetch(`${target.url}/v1/streams/${p.stream}/events`, {
            method: "POST",
            headers: { "content-type": binary ? "application/x-flatbuffers" : "application/json" },
            body: binary ? encodePublishBatch(events) : JSON.stringify({ events }),
            signal: AbortSignal.timeout(5000),
          });
          const body = await res.text();
          if (res.status === 200) {
            // At or below where the producer stands: appended before, or tombstoned while this one was away.
            for (const d of JSON.parse(body).duplicates as Array<{ producer_seq?: number }>) if (d.producer_seq !== undefined) p.late.add(d.producer_seq);
            break;
          }
        } catch {
          // The server is down or restarting: the same batch again (held and appended ones are answered as such).
        }
        p.failures++;
        await sleep(20);
      }
      for (const q of batch) p.acked.add(q);
    }
  }
}

describe("kill -9 with ordered streams", () => {
  it(`${CYCLES} kill -9 cycles while producers publish out of order: every acknowledged event once, in producer order, none left held`, async () => {
    const seed = runSeed("ordered kill -9");
    const random = rng(seed);
    const dataDir = tempDataDir("ticker-ordered-kill9-");
    let s: TestServer = await startServer({ dataDir });
    const target: Target = { url: s.url };
    const stop = { now: false };
    const producers: ProducerLog[] = STREAMS.flatMap((st) =>
      Array.from({ length: PRODUCERS_PER_STREAM }, (_, i) => ({
        stream: st.id,
        id: `${st.id}-p${i}`,
        acked: new Set<number>(),
        late: new Set<number>(),
        dropped: new Set<number>(),
        requests: 0,
        failures: 0,
      })),
    );
    try {
      for (const st of STREAMS) {
        const r = await fetch(`${s.url}/v1/streams/${st.id}`, {
          method: "PUT",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ producer_ordering: true, gap_timeout_ms: GAP_TIMEOUT_MS, durability: st.durability }),
        });
        expect(r.status).toBe(201);
      }
      const running = producers.map((p, i) => produce(target, p, rng(seed + 1 + i), stop));
      for (let cycle = 0; cycle < CYCLES; cycle++) {
        await sleep(300 + Math.floor(random() * 700));
        await s.kill9();
        s = await startServer({ dataDir });
        target.url = s.url;
      }
      stop.now = true;
      await Promise.all(running);
      // Every gap left times out now: its tombstone, then the held events.
      await sleep(GAP_TIMEOUT_MS + 1000);
      let lost = 0;
      let duplicates = 0;
      let reordered = 0;
      let acked = 0;
      for (const st of STREAMS) {
        const info = await (await fetch(`${s.url}/v1/streams/${st.id}`)).json();
        expect([info.held_events, info.held_bytes], st.id).toEqual([0, 0]);
        const events = await replayAll(s.url, st.id);
        for (const p of producers.filter((x) => x.stream === st.id)) {
          acked += p.acked.size;
          const mine = events.filter((e) => e.producer_id === p.id);
          const seen = new Map<number, number>();
          const tombstoned = new Set<number>();
          let firstSeq = 0;
          let last = 0;
          for (const e of mine) {
            if (e.type === "gap") {
              // Only seqs never sent, or sent late and answered as duplicates, are tombstoned: never one appended or held.
              for (let q = e.payload.from_producer_seq; q <= e.payload.to_producer_seq; q++) {
                expect(p.acked.has(q) && !p.late.has(q), `${p.id} ${q} appended or held, yet tombstoned`).toBe(false);
                tombstoned.add(q);
              }
              if (e.payload.from_producer_seq !== last + 1) reordered++;
              last = e.payload.to_producer_seq;
              continue;
            }
            seen.set(e.producer_seq, (seen.get(e.producer_seq) ?? 0) + 1);
            // A producer the stream does not know starts at its lowest event once that has waited gap_timeout_ms,
            // without a tombstone (README, "Ordered ingest"): every seq below it was never sent, or came later
            // and was answered as a duplicate.
            const unsettledStart = (q: number) => p.dropped.has(q) || p.late.has(q);
            const startsAfterDrops = last === 0 && Array.from({ length: e.producer_seq - 1 }, (_, k) => k + 1).every(unsettledStart);
            if (last === 0) firstSeq = e.producer_seq;
            if (e.producer_seq !== last + 1 && !startsAfterDrops) reordered++;
            last = e.producer_seq;
          }
          for (const q of p.acked)
            if (!seen.has(q) && !(p.late.has(q) && (tombstoned.has(q) || q < firstSeq))) {
              lost++;
              if (process.env.DEBUG_ORDERED) console.log(`LOST ${p.id} ${q} late=${p.late.has(q)} tomb=${tombstoned.has(q)}`);
            }
          if (process.env.DEBUG_ORDERED)
            console.log(p.id, mine.map((e) => (e.type === "gap" ? `g${e.payload.from_producer_seq}-${e.payload.to_producer_seq}` : e.producer_seq)).join(" "));
          for (const n of seen.values()) if (n > 1) duplicates += n - 1;
          for (const q of p.dropped) expect(seen.has(q), `${p.id} ${q} was never sent`).toBe(false);
        }
      }
      const requests = producers.reduce((n, p) => n + p.requests, 0);
      const failures = producers.reduce((n, p) => n + p.failures, 0);
      console.log(
        `ordered kill -9: ${CYCLES} cycles, ${acked} acked, lost ${lost}, duplicates ${duplicates}, reordered ${reordered}, ${requests} requests (${failures} retried)`,
      );
      recordResult({
        fault: "kill -9 with ordered streams",
        setup: `${STREAMS.length} producer_ordering streams (process, fsync), ${producers.length} producers shuffling windows of ${WINDOW}, ~2% never sent, JSON and FlatBuffers; gap_timeout_ms ${GAP_TIMEOUT_MS}; seed ${seed}`,
        cases: CYCLES,
        survived: lost + duplicates + reordered === 0 ? CYCLES : 0,
        acked,
        lost,
        duplicates,
        gaps: 0,
        other: { reordered },
      });
      expect({ lost, duplicates, reordered }).toEqual({ lost: 0, duplicates: 0, reordered: 0 });
      expect(acked).toBeGreaterThan(100);
    } finally {
      stop.now = true;
      await s.kill9();
      removeDir(dataDir);
    }
  }, 180_000);
});
