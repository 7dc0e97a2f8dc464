// kill -9 of the server under load, over and over, on the same data dir:
// nothing acknowledged is lost, nothing is appended twice, no batch is cut in
// half, and no group's checkpoint goes back.
import { describe, it, expect } from "vitest";
import { readdirSync } from "node:fs";
import { removeDir, startServer, tempDataDir, type TestServer } from "../helpers/server.js";
import { failures, History } from "./history.js";
import { CheckpointPoller, GroupConsumer, Producer, readBack, rng, runSeed, setUpStreams, sleep, type Target } from "./load.js";
import { recordResult, scaled } from "./scale.js";

const STREAMS = ["k9.a", "k9.b", "k9.sync"];
const FSYNC = ["k9.sync"];
const GROUPS = ["g1", "g2"];
const PRODUCERS = 4;
const CYCLES = scaled(20, 100);
/** Small segments, so that kills also land around rolls and recovery reads closed segments and their indexes. */
const SERVER_ARGS = ["--segment-bytes-max", String(256 << 10)];

describe("kill -9 under load", () => {
  it(`${CYCLES} kill -9 cycles under load lose no acknowledged event, duplicate none, cut no batch and move no checkpoint back`, async () => {
    const seed = runSeed("kill -9");
    const random = rng(seed);
    const dataDir = tempDataDir("ticker-kill9-");
    const history = new History();
    let s: TestServer = await startServer({ dataDir, args: SERVER_ARGS });
    const target: Target = { url: s.url };
    const producers = Array.from({ length: PRODUCERS }, (_, i) => new Producer(`p${i}`, STREAMS, history, rng(seed + 1 + i)));
    const consumers = STREAMS.flatMap((st) => GROUPS.map((g) => new GroupConsumer(history, st, g)));
    const poller = new CheckpointPoller(
      history,
      STREAMS.flatMap((stream) => GROUPS.map((group) => ({ stream, group }))),
    );
    let cycles = 0;
    try {
      await setUpStreams(s.url, STREAMS, GROUPS, FSYNC);
      for (const p of producers) p.start(target);
      for (const c of consumers) c.start(target);
      poller.start(target);
      for (; cycles < CYCLES; cycles++) {
        // A random moment in about a second of load.
        await sleep(200 + Math.floor(random() * 700));
        await s.kill9();
        s = await startServer({ dataDir, args: SERVER_ARGS });
        target.url = s.url;
      }
      await sleep(500);
      await Promise.all([...producers.map((p) => p.stop(target)), ...consumers.map((c) => c.stop()), poller.stop()]);
      await poller.pollOnce(target);
      const counts = history.check(await readBack(s.url, STREAMS));
      const segments = (readdirSync(dataDir, { recursive: true }) as string[]).filter((f) => /\d{20}\.log$/.test(f)).length;
      const unexpected = producers.flatMap((p) => p.stats.unexpected);
      const statuses: Record<number, number> = {};
      for (const p of producers) for (const [k, v] of Object.entries(p.stats.statuses)) statuses[Number(k)] = (statuses[Number(k)] ?? 0) + v;
      console.log(
        `kill -9: ${cycles} cycles, ${JSON.stringify(counts)}, answers ${JSON.stringify(statuses)}, checkpoint polls ${poller.polls}, segments ${segments}`,
      );
      recordResult({
        fault: "kill -9 under load",
        setup: `${PRODUCERS} producers, ${STREAMS.length} streams (1 fsync), JSON + FlatBuffers batches of 1-1,000 events, half keyed and retried; 256 KiB segments; ${GROUPS.length} groups acking; seed ${seed}`,
        cases: cycles,
        survived: Object.keys(failures(counts)).length === 0 && unexpected.length === 0 ? cycles : 0,
        acked: counts.acked,
        lost: counts.lost,
        duplicates: counts.duplicated + counts.sessionDuplicates,
        gaps: counts.gaps,
        other: {
          reordered: counts.reordered,
          "half batches": counts.halfBatches,
          "checkpoint regressions": counts.checkpointRegressions,
          "deliveries out of order": counts.sessionOutOfOrder,
          delivered: counts.delivered,
          "requests without answer": statuses[0] ?? 0,
          segments,
        },
      });
      expect(unexpected).toEqual([]);
      expect(failures(counts)).toEqual({});
      expect(counts.acked).toBeGreaterThan(CYCLES * 100);
      expect(counts.delivered).toBeGreaterThan(CYCLES * 100);
      expect(poller.polls).toBeGreaterThan(CYCLES);
      expect(segments).toBeGreaterThan(2 * STREAMS.length); // kills landed among rolls
      expect(consumers.every((c) => c.sessions >= CYCLES)).toBe(true);
    } finally {
      await Promise.all([...producers.map((p) => p.stop()), ...consumers.map((c) => c.stop()), poller.stop()]);
      await s.stop();
      removeDir(dataDir);
    }
  });
});
