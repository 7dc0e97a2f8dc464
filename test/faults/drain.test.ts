// Graceful drain: SIGTERM while producers and consumers are busy.
//
// What "every request the server took is answered" means here: a request is
// taken when the server has read it. A taken request gets an answer (200, or
// a JSON error such as 503 shutting_down) before the process exits. A
// request whose answer never came (connection refused, reset or closed under
// it) was therefore never taken: none of its events may be in the log. The
// checker verifies that for every unanswered batch, plus the usual counts.
// Consumers get an `error` shutting_down and a close 1001, after the acks
// the server took were written (the test holds it to every ack sent
// ACK_SETTLE_MS before the SIGTERM); the process exits 0; a restart resumes
// each group exactly at its checkpoint + 1.
import { describe, it, expect } from "vitest";
import { api, removeDir, startServer, tempDataDir, type TestServer } from "../helpers/server.js";
import { failures, History } from "./history.js";
import { CheckpointPoller, GroupConsumer, Producer, readBack, rng, runSeed, setUpStreams, sleep, type Target } from "./load.js";
import { recordResult, scaled } from "./scale.js";

const STREAMS = ["dr.a", "dr.b", "dr.sync"];
const GROUPS = ["g1", "g2"];
const CYCLES = scaled(3, 20);
const CLOSE_GOING_AWAY = 1001;
/** Time for an ack on loopback to reach the server and be taken, generous for a loaded 2-core machine. */
const ACK_SETTLE_MS = 200;

describe("graceful drain", () => {
  it(`SIGTERM under load (${CYCLES} times) answers every request it took, closes consumers with 1001 after writing their acks, exits 0, and resumes each group at checkpoint + 1`, async () => {
    const seed = runSeed("drain");
    const random = rng(seed);
    const dataDir = tempDataDir("ticker-drain-");
    const history = new History();
    const pairs = STREAMS.flatMap((stream) => GROUPS.map((group) => ({ stream, group })));
    const poller = new CheckpointPoller(history, pairs);
    const producers: Producer[] = [];
    const exitCodes: Array<number | null> = [];
    let resumedExactly = 0;
    let closedProperly = 0;
    let s: TestServer = await startServer({ dataDir });
    try {
      await setUpStreams(s.url, STREAMS, GROUPS, ["dr.sync"]);
      for (let cycle = 0; cycle < CYCLES; cycle++) {
        const target: Target = { url: s.url };
        // Where each group stands before its members connect: they must start right after it.
        const checkpoints: number[] = [];
        for (const { stream, group } of pairs) {
          checkpoints.push((await api(`${s.url}/v1/streams/${stream}/checkpoint?group=${group}`, "GET")).json.seq);
          history.checkpoint(stream, group, checkpoints[checkpoints.length - 1]);
        }
        const consumers = pairs.map(({ stream, group }) => new GroupConsumer(history, stream, group));
        for (const c of consumers) c.start(target);
        const cycleProducers = [0, 1, 2, 3].map((i) => new Producer(`c${cycle}p${i}`, STREAMS, history, rng(seed + 10 * cycle + i)));
        producers.push(...cycleProducers);
        for (const p of cycleProducers) p.start(target);
        poller.start(target);
        await sleep(700 + Math.floor(random() * 600));
        consumers.forEach((c, i) => {
          if (c.current?.from === checkpoints[i] + 1) resumedExactly++;
        });
        // Acks sent ACK_SETTLE_MS before SIGTERM have reached the server: those must be written.
        // (One sent later may cross the server's shutting_down on the wire; it is not taken.)
        const acked = consumers.map((c) => (c.current?.acks ?? []).reduce((a, b) => Math.max(a, b), 0));
        await sleep(ACK_SETTLE_MS);
        const closesBefore = consumers.map((c) => c.closes.length);
        exitCodes.push(await s.stop());
        await Promise.all([...cycleProducers.map((p) => p.stop()), ...consumers.map((c) => c.stop()), poller.stop()]);
        // The first close after SIGTERM: an error shutting_down, then 1001.
        const ends = consumers.map((c, i) => c.closes[closesBefore[i]]);
        for (const e of ends) {
          expect(e).toMatchObject({ code: CLOSE_GOING_AWAY, errors: ["shutting_down"] });
          closedProperly++;
        }
        s = await startServer({ dataDir });
        for (let i = 0; i < pairs.length; i++) {
          const seq = (await api(`${s.url}/v1/streams/${pairs[i].stream}/checkpoint?group=${pairs[i].group}`, "GET")).json.seq;
          history.checkpoint(pairs[i].stream, pairs[i].group, seq);
          expect(seq, `${pairs[i].stream}/${pairs[i].group} checkpoint after restart`).toBeGreaterThanOrEqual(acked[i]);
        }
      }
      const counts = history.check(await readBack(s.url, STREAMS));
      // An unanswered request was never taken: not one of its events is in the log.
      const replayed = await readBack(s.url, STREAMS);
      const batchesInLog = new Set<string>();
      for (const events of replayed.values()) for (const e of events) batchesInLog.add((e.payload as { b: string }).b);
      const unanswered = producers.flatMap((p) => p.stats.unanswered);
      const appendedUnanswered = unanswered.filter((b) => batchesInLog.has(b.id)).map((b) => b.id);
      const statuses: Record<number, number> = {};
      for (const p of producers) for (const [k, v] of Object.entries(p.stats.statuses)) statuses[Number(k)] = (statuses[Number(k)] ?? 0) + v;
      console.log(
        `drain: ${CYCLES} cycles, exits ${exitCodes}, answers ${JSON.stringify(statuses)}, ${JSON.stringify(counts)}, resumed at checkpoint + 1: ${resumedExactly}/${CYCLES * pairs.length}`,
      );
      recordResult({
        fault: "SIGTERM (graceful drain) under load",
        setup: `4 producers, ${STREAMS.length} streams (1 fsync), ${GROUPS.length} groups; SIGTERM after 0.7-1.3 s, restart; seed ${seed}`,
        cases: CYCLES,
        survived: Object.keys(failures(counts)).length === 0 && appendedUnanswered.length === 0 && exitCodes.every((c) => c === 0) ? CYCLES : 0,
        acked: counts.acked,
        lost: counts.lost,
        duplicates: counts.duplicated + counts.sessionDuplicates,
        gaps: counts.gaps,
        other: {
          "unanswered but appended": appendedUnanswered.length,
          "requests without answer": statuses[0] ?? 0,
          "checkpoint regressions": counts.checkpointRegressions,
          "consumers closed 1001 after shutting_down": closedProperly,
          "groups resumed at checkpoint + 1": resumedExactly,
        },
      });
      expect(exitCodes).toEqual(Array(CYCLES).fill(0));
      expect(producers.flatMap((p) => p.stats.unexpected)).toEqual([]);
      expect(appendedUnanswered).toEqual([]);
      expect(failures(counts)).toEqual({});
      expect(resumedExactly).toBe(CYCLES * pairs.length);
      expect(counts.acked).toBeGreaterThan(CYCLES * 100);
    } finally {
      await s.stop();
      removeDir(dataDir);
    }
  });
});
