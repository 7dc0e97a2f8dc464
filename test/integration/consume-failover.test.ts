// Consumers and servers that die: standby takeover after a client is killed
// or frozen, resume after the server is killed -9, and a consumer that reads
// nothing while a million events go by.
import { describe, it, expect } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { api, removeDir, startServer, tempDataDir, type TestServer } from "../helpers/server.js";
import { Consumer, isRun } from "../helpers/consumer.js";

const CHILD = fileURLToPath(new URL("../helpers/consumer-child.mjs", import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function publish(url: string, stream: string, n: number, batch = 1000): Promise<void> {
  for (let done = 0; done < n; done += batch) {
    const k = Math.min(batch, n - done);
    const r = await api(`${url}/v1/streams/${stream}/events`, "POST", {
      events: Array.from({ length: k }, (_, i) => ({ type: "t", payload: { i: done + i } })),
    });
    if (r.status !== 200) throw new Error(`publish: ${r.status} ${JSON.stringify(r.json)}`);
  }
}

/** Starts consumer-child.mjs and resolves once it has printed a hello. */
function childConsumer(s: TestServer, stream: string, query: string, ackUpTo: number): Promise<{ proc: ChildProcess; lines: any[] }> {
  const proc = spawn(process.execPath, [CHILD, `ws://127.0.0.1:${s.port}/v1/streams/${stream}/consume?${query}`, String(ackUpTo)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines: any[] = [];
  let buf = "";
  return new Promise((resolve, reject) => {
    proc.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        lines.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
        if (lines.length === 1) resolve({ proc, lines });
      }
    });
    proc.once("exit", (code) => reject(new Error(`consumer child exited with ${code}`)));
  });
}

const checkpointOf = async (s: TestServer, stream: string, group: string) =>
  (await api(`${s.url}/v1/streams/${stream}/checkpoint?group=${group}`, "GET")).json?.seq;

describe("consumer and server faults", () => {
  it("a standby takes over from checkpoint + 1 within 5 s of the active client being killed -9", async () => {
    const s = await startServer();
    try {
      await publish(s.url, "work", 100);
      const active = await childConsumer(s, "work", "group=g&from=earliest", 50);
      expect(active.lines[0]).toMatchObject({ type: "hello", role: "active", from: 1 });
      const standby = await Consumer.connect(s.url, "work", "group=g");
      expect(await standby.controlMessage("hello")).toMatchObject({ role: "standby", from: null });
      await expect.poll(() => checkpointOf(s, "work", "g")).toBe(50);
      const groups = (await api(`${s.url}/v1/streams/work/groups`, "GET")).json.groups;
      expect(groups[0].members.map((m: any) => m.role)).toEqual(["active", "standby"]);
      const t0 = Date.now();
      active.proc.kill("SIGKILL");
      const hello = await standby.controlMessage("hello", 1, 5000);
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(hello).toMatchObject({ role: "active", from: 51 });
      await standby.eventsThrough(100);
      expect(isRun(standby.seqs, 51, 100)).toBe(true);
      await standby.close();
    } finally {
      await s.stop();
      removeDir(s.dataDir);
    }
  });

  it("a standby takes over within 5 s when the active client freezes without closing (no pongs)", async () => {
    const s = await startServer();
    try {
      await publish(s.url, "frozen", 20);
      const active = await childConsumer(s, "frozen", "group=g&from=earliest", 20);
      await expect.poll(() => checkpointOf(s, "frozen", "g")).toBe(20);
      const standby = await Consumer.connect(s.url, "frozen", "group=g");
      await standby.controlMessage("hello");
      const t0 = Date.now();
      active.proc.kill("SIGSTOP"); // the socket stays open: only the silence tells
      try {
        const hello = await standby.controlMessage("hello", 1, 5000);
        expect(Date.now() - t0).toBeLessThan(5000);
        expect(hello).toMatchObject({ role: "active", from: 21 });
        await publish(s.url, "frozen", 5);
        await standby.eventsThrough(25);
        expect(standby.seqs).toEqual([21, 22, 23, 24, 25]);
      } finally {
        active.proc.kill("SIGKILL");
      }
      await standby.close();
    } finally {
      await s.stop();
      removeDir(s.dataDir);
    }
  });

  it("acks survive kill -9 of the server: the group resumes at checkpoint + 1 with the right lag", async () => {
    const dataDir = tempDataDir();
    let s = await startServer({ dataDir });
    try {
      await publish(s.url, "ledger", 100);
      const c = await Consumer.connect(s.url, "ledger", "group=billing&from=earliest");
      await c.eventsThrough(100);
      c.send({ type: "ack", seq: 60 });
      await expect.poll(() => checkpointOf(s, "ledger", "billing")).toBe(60);
      await s.kill9();
      await c.closed;
      s = await startServer({ dataDir });
      const lag = (await api(`${s.url}/v1/streams/ledger/lag?group=billing`, "GET")).json;
      expect(lag).toMatchObject({ head_seq: 100, checkpoint_seq: 60, lag: 40 });
      expect(lag.lag_ms).toBeGreaterThan(0);
      const again = await Consumer.connect(s.url, "ledger", "group=billing");
      expect(await again.controlMessage("hello")).toMatchObject({ from: 61, role: "active" });
      await again.eventsThrough(100);
      expect(isRun(again.seqs, 61, 100)).toBe(true);
      await again.close();
    } finally {
      await s.stop();
      removeDir(dataDir);
    }
  });

  it("a consumer that reads nothing while 1,000,000 events are published costs the server at most 64 MiB, then drains them all in order", async () => {
    // Small rings so that their fixed size does not hide what a consumer costs.
    const s = await startServer({
      args: [
        "--ring-bytes",
        String(4 << 20),
        "--request-bytes-max",
        String(1 << 20),
        "--replay-page-bytes-max",
        String(1 << 20),
        "--event-bytes-max",
        String(64 << 10),
      ],
    });
    const rssBytes = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${s.proc.pid}/status`, "utf8"))![1]) * 1024;
    try {
      // Warm up every path the measured run takes (rings, live pushes, log reads).
      await publish(s.url, "stuck", 1);
      const warm = await Consumer.connect(s.url, "stuck", "from=earliest&format=binary", { keepMessages: false });
      await publish(s.url, "stuck", 99_999);
      await warm.eventsThrough(100_000);
      await warm.close();
      await sleep(500);
      const stuck = await Consumer.connect(s.url, "stuck", "from=latest&format=binary", { keepMessages: false });
      await stuck.controlMessage("hello");
      stuck.ws.pause(); // reads nothing: the server's writes back up
      const base = rssBytes();
      let peak = base;
      const sampler = setInterval(() => (peak = Math.max(peak, rssBytes())), 50);
      await publish(s.url, "stuck", 1_000_000);
      await sleep(500);
      clearInterval(sampler);
      peak = Math.max(peak, rssBytes());
      console.log(`rss growth ${((peak - base) / 1048576).toFixed(1)} MiB (base ${(base / 1048576).toFixed(0)} MiB)`);
      expect(peak - base).toBeLessThan(64 * 1024 * 1024);
      stuck.ws.resume();
      await stuck.eventsThrough(1_100_000, 60_000);
      expect(isRun(stuck.seqs, 100_001, 1_100_000)).toBe(true);
      await stuck.close();
    } finally {
      await s.stop();
      removeDir(s.dataDir);
    }
  });
});
