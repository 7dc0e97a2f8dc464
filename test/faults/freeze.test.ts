// Frozen processes (SIGSTOP, then SIGCONT): the server frozen under load, and
// the active member of a consumer group frozen while a standby waits.
import { describe, it, expect } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { removeDir, startServer, type TestServer } from "../helpers/server.js";
import { failures, History, type Session } from "./history.js";
import { CheckpointPoller, GroupConsumer, Producer, readBack, rng, runSeed, setUpStreams, sleep, type Target } from "./load.js";
import { recordResult, scaled } from "./scale.js";

const CHILD = fileURLToPath(new URL("./consumer-proc.mjs", import.meta.url));
const SERVER_FREEZES = scaled(5, 30);
const CONSUMER_FREEZES = scaled(3, 20);
/** The contract's bound on a standby taking over from a dead active member. */
const TAKEOVER_MS_MAX = 5000;

/** A group member in a child process, its lines fed into a history session. */
class ChildMember {
  readonly proc: ChildProcess;
  readonly session: Session;
  active = false;
  activeAt = 0;
  exited: Promise<void>;

  constructor(history: History, s: TestServer, stream: string, group: string) {
    this.session = history.session(stream, group);
    this.proc = spawn(process.execPath, [CHILD, `ws://127.0.0.1:${s.port}/v1/streams/${stream}/consume?group=${group}`], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    this.exited = new Promise((r) => this.proc.once("exit", () => r()));
    let buf = "";
    this.proc.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const m = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (m.t === "hello" && m.role === "active") {
          this.session.hello(m.from, true);
          this.active = true;
          this.activeAt = Date.now();
        } else if (m.t === "events") for (const e of m.events) this.session.deliver(e.seq, e.payload);
        else if (m.t === "ack") this.session.ack(m.seq);
      }
    });
  }

  async waitActive(timeoutMs: number): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    while (!this.active && Date.now() < until) await sleep(10);
    return this.active;
  }

  async kill(): Promise<void> {
    this.proc.kill("SIGKILL");
    await this.exited;
  }
}

describe("frozen processes", () => {
  it(`a server frozen ${SERVER_FREEZES} times under load (SIGSTOP, SIGCONT) keeps everything it acknowledged and appends nothing twice`, async () => {
    const seed = runSeed("server SIGSTOP");
    const random = rng(seed);
    const streams = ["fz.a", "fz.sync"];
    const groups = ["g1", "g2"];
    const history = new History();
    const s = await startServer();
    const target: Target = { url: s.url };
    // Requests time out while the server is frozen: keyed ones are retried.
    const producers = [0, 1, 2].map((i) => new Producer(`fz${i}`, streams, history, rng(seed + 1 + i), { timeoutMs: 1000 }));
    const consumers = streams.flatMap((st) => groups.map((g) => new GroupConsumer(history, st, g)));
    const poller = new CheckpointPoller(
      history,
      streams.flatMap((stream) => groups.map((group) => ({ stream, group }))),
    );
    let freezes = 0;
    try {
      await setUpStreams(s.url, streams, groups, ["fz.sync"]);
      for (const p of producers) p.start(target);
      for (const c of consumers) c.start(target);
      poller.start(target);
      for (; freezes < SERVER_FREEZES; freezes++) {
        await sleep(300 + Math.floor(random() * 500));
        s.proc.kill("SIGSTOP");
        await sleep(1200 + Math.floor(random() * 1000));
        s.proc.kill("SIGCONT");
      }
      await sleep(1000);
      await Promise.all([...producers.map((p) => p.stop(target)), ...consumers.map((c) => c.stop()), poller.stop()]);
      await poller.pollOnce(target);
      const counts = history.check(await readBack(s.url, streams));
      const timedOut = producers.reduce((n, p) => n + (p.stats.statuses[0] ?? 0), 0);
      console.log(`server SIGSTOP: ${freezes} freezes, ${JSON.stringify(counts)}, requests timed out ${timedOut}`);
      recordResult({
        fault: "SIGSTOP/SIGCONT of the server under load",
        setup: `3 producers (1 s timeout, keyed batches retried), 2 streams (1 fsync), 2 groups; frozen 1.2-2.2 s each time; seed ${seed}`,
        cases: freezes,
        survived: Object.keys(failures(counts)).length === 0 ? freezes : 0,
        acked: counts.acked,
        lost: counts.lost,
        duplicates: counts.duplicated + counts.sessionDuplicates,
        gaps: counts.gaps,
        other: {
          "half batches": counts.halfBatches,
          "checkpoint regressions": counts.checkpointRegressions,
          "requests timed out": timedOut,
          delivered: counts.delivered,
        },
      });
      expect(producers.flatMap((p) => p.stats.unexpected)).toEqual([]);
      expect(failures(counts)).toEqual({});
      expect(timedOut).toBeGreaterThan(0); // the freezes were felt
      expect(counts.acked).toBeGreaterThan(SERVER_FREEZES * 100);
      expect(counts.delivered).toBeGreaterThan(SERVER_FREEZES * 100);
    } finally {
      s.proc.kill("SIGCONT");
      await Promise.all([...producers.map((p) => p.stop()), ...consumers.map((c) => c.stop()), poller.stop()]);
      await s.stop();
      removeDir(s.dataDir);
    }
  });

  it(`a frozen active consumer (SIGSTOP, ${CONSUMER_FREEZES} times) is replaced by its standby within 5 s, from checkpoint + 1`, async () => {
    const seed = runSeed("consumer SIGSTOP");
    const stream = "fz.work";
    const group = "w";
    const history = new History();
    const s = await startServer();
    const target: Target = { url: s.url };
    const producer = new Producer("fzc", [stream], history, rng(seed), { sizes: [1, 5, 20] });
    const poller = new CheckpointPoller(history, [{ stream, group }], 50);
    const members: ChildMember[] = [];
    const takeoverMs: number[] = [];
    try {
      await setUpStreams(s.url, [stream], [group], []);
      producer.start(target);
      poller.start(target);
      let active = new ChildMember(history, s, stream, group);
      members.push(active);
      expect(await active.waitActive(TAKEOVER_MS_MAX)).toBe(true);
      for (let i = 0; i < CONSUMER_FREEZES; i++) {
        const standby = new ChildMember(history, s, stream, group);
        members.push(standby);
        await sleep(700); // the standby is connected and the active one busy
        expect(standby.active).toBe(false);
        const t0 = Date.now();
        active.proc.kill("SIGSTOP");
        const took = await standby.waitActive(TAKEOVER_MS_MAX + 2000);
        takeoverMs.push(standby.activeAt - t0);
        expect(took, "standby became active").toBe(true);
        expect(standby.activeAt - t0).toBeLessThan(TAKEOVER_MS_MAX);
        // The standby starts right after the frozen member's last ack (or the
        // one before, when the freeze fell between printing and sending it).
        const acks = [0, 0, ...active.session.acks];
        expect(acks.slice(-2).map((a) => a + 1)).toContain(standby.session.from);
        await active.kill();
        active = standby;
      }
      await sleep(500);
      await producer.stop(target);
      await poller.stop();
      await poller.pollOnce(target);
      const counts = history.check(await readBack(s.url, [stream]));
      console.log(`consumer SIGSTOP: ${takeoverMs.length} takeovers (ms ${takeoverMs.join(", ")}), ${JSON.stringify(counts)}`);
      recordResult({
        fault: "SIGSTOP of the active consumer of a group",
        setup: `1 producer, 1 stream, group of a frozen active member (child process) and a standby; seed ${seed}`,
        cases: takeoverMs.length,
        survived: Object.keys(failures(counts)).length === 0 ? takeoverMs.filter((ms) => ms < TAKEOVER_MS_MAX).length : 0,
        acked: counts.acked,
        lost: counts.lost,
        duplicates: counts.duplicated + counts.sessionDuplicates,
        gaps: counts.gaps,
        other: { "checkpoint regressions": counts.checkpointRegressions, "resumed past acks": counts.sessionSkips, delivered: counts.delivered },
        bounds: { "takeover ms max": Math.max(...takeoverMs) },
      });
      expect(failures(counts)).toEqual({});
      // Every takeover resumed at a checkpoint + 1 the checker accepted, and delivered something.
      expect(members.slice(1).every((m) => m.session.from !== null && m.session.deliveries.length > 0)).toBe(true);
    } finally {
      for (const m of members) await m.kill();
      await producer.stop();
      await poller.stop();
      await s.stop();
      removeDir(s.dataDir);
    }
  });
});
