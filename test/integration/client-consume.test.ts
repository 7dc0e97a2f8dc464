// The client's consume side (src/client/consume.ts, docs/client.md) against
// real server processes: order across many batches in both formats, acks
// that a new subscription resumes after, nack to the dead-letter stream,
// seek, refusals as TickerErrors, a server killed -9 and restarted under a
// live subscription, standby takeover, and a caller that stops pulling.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { api, perTestServers, replayAll, startServer, type TestServer } from "../helpers/server.js";
import { consume, type ConsumedEvent, type Subscription } from "../../src/client/consume.js";
import { TickerError } from "../../src/client/errors.js";

const CHILD = fileURLToPath(new URL("../helpers/client-consumer-child.mjs", import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Publishes events {i} with i from `start`, `batch` a request, over plain HTTP (the client's publish is not under test here). */
async function publish(url: string, stream: string, n: number, start = 0, batch = 50, pad = 0): Promise<void> {
  for (let done = 0; done < n; done += batch) {
    const events = Array.from({ length: Math.min(batch, n - done) }, (_, k) => ({ type: "t", payload: { i: start + done + k, pad: "x".repeat(pad) } }));
    const r = await api(`${url}/v1/streams/${stream}/events`, "POST", { events });
    if (r.status !== 200) throw new Error(`publish: ${r.status} ${JSON.stringify(r.json)}`);
  }
}

/** The next `n` events, failing after `ms`. */
async function pull(sub: Subscription, n: number, ms = 10_000): Promise<ConsumedEvent[]> {
  const out: ConsumedEvent[] = [];
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`only ${out.length} of ${n} events came in ${ms} ms`)), ms);
  });
  try {
    while (out.length < n) {
      const r = await Promise.race([sub.next(), timeout]);
      if (r.done) throw new Error(`the subscription ended after ${out.length} of ${n} events`);
      out.push(r.value);
    }
    return out;
  } finally {
    clearTimeout(timer);
  }
}

/** A port nothing listens on now. */
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

const seqsOf = (events: ConsumedEvent[]) => events.map((e) => e.seq);
const run = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, k) => from + k);
const checkpointOf = async (url: string, stream: string, group: string) =>
  (await api(`${url}/v1/streams/${stream}/checkpoint?group=${group}`, "GET")).json?.seq;

describe("consuming with the client on one server", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer();
  });
  afterAll(async () => {
    await s.stop();
  });

  it("delivers every event once and in order over many batches, the same in binary and JSON", async () => {
    await publish(s.url, "orders", 1000);
    const bin = consume({ url: s.url }, "orders", { from: "earliest" });
    const json = consume({ url: s.url }, "orders", { from: "earliest", format: "json" });
    expect(await bin.ready).toEqual({ from: 1, head_seq: 1000, first_seq: 1, role: "active" });
    await json.ready;
    const more = publish(s.url, "orders", 1000, 1000); // live batches while the first thousand are read from the log
    const [b, j] = await Promise.all([pull(bin, 2000), pull(json, 2000)]);
    await more;
    expect(seqsOf(b)).toEqual(run(1, 2000));
    expect(seqsOf(j)).toEqual(run(1, 2000));
    expect(b.map((e) => (e.payload as { i: number }).i)).toEqual(run(0, 1999));
    for (const k of [0, 999, 1999]) {
      expect(j[k].toJSON()).toEqual(b[k].toJSON());
      expect(j[k].payload_bytes.toString()).toBe(b[k].payload_bytes.toString());
      expect([j[k].type, j[k].payload_encoding, j[k].key]).toEqual(["t", "json", undefined]);
    }
    await Promise.all([bin.close(), json.close()]);
    expect(await bin.next()).toEqual({ value: undefined, done: true });
  });

  it("a subscription closed before its socket opened ends quietly: close resolves and the iterator is done", async () => {
    await publish(s.url, "early", 1);
    const sub = consume({ url: s.url }, "early", { group: "g" });
    await sub.close();
    expect(await sub.next()).toEqual({ value: undefined, done: true });
    await expect(sub.ready).rejects.toMatchObject({ code: "closed" });
  });

  it("an ack becomes the group's checkpoint: a new subscription of the group resumes right after it", async () => {
    await publish(s.url, "ledger", 100);
    const first = consume({ url: s.url }, "ledger", { group: "billing", from: "earliest" });
    const got = await pull(first, 100);
    expect(first.ack(60)).toBe(true);
    expect(first.ack(50)).toBe(false); // below an ack taken
    await first.close();
    expect(await checkpointOf(s.url, "ledger", "billing")).toBe(60);
    const again = consume({ url: s.url }, "ledger", { group: "billing" });
    expect((await again.ready).from).toBe(61);
    expect(seqsOf(await pull(again, 40))).toEqual(run(61, 100));
    expect(seqsOf(got)).toEqual(run(1, 100));
    await again.close();
  });

  it("a nack redelivers from its seq; the max_attempts-th dead-letters it to {stream}.dlq and delivery goes on after it", async () => {
    await publish(s.url, "jobs", 5);
    const sub = consume({ url: s.url }, "jobs", { group: "workers", from: "earliest", maxAttempts: 3 });
    const seen: number[] = [];
    while (seen.length < 7) {
      const [e] = await pull(sub, 1);
      seen.push(e.seq);
      if (e.seq === 3) expect(sub.nack(3, "boom")).toBe(true);
      else sub.ack(e.seq);
    }
    // 4 and 5, buffered when 3 was nacked, come again after it, never before it.
    expect(seen).toEqual([1, 2, 3, 3, 3, 4, 5]);
    await expect.poll(() => checkpointOf(s.url, "jobs", "workers"), { timeout: 10_000 }).toBe(5);
    const letters = await replayAll(s.url, "jobs.dlq");
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({ type: "dead_letter", payload: { stream: "jobs", seq: 3, group: "workers", reason: "boom", attempts: 3 } });
    await sub.close();
  });

  it("seek moves delivery back and forward, and what was buffered from the old place is not delivered", async () => {
    await publish(s.url, "tape", 50);
    const sub = consume({ url: s.url }, "tape", { from: "earliest" });
    expect(seqsOf(await pull(sub, 20))).toEqual(run(1, 20));
    sub.seek(5);
    expect(seqsOf(await pull(sub, 10))).toEqual(run(5, 14));
    sub.seek(45);
    expect(seqsOf(await pull(sub, 6))).toEqual(run(45, 50));
    await publish(s.url, "tape", 2, 50);
    expect(seqsOf(await pull(sub, 2))).toEqual([51, 52]);
    expect(() => sub.ack(52)).toThrow(TickerError); // no group: nothing to ack
    await sub.close();
  });

  it("a nack or seek while events stream in: delivery restarts exactly there, nothing stale from before it in between", async () => {
    await publish(s.url, "flow", 10);
    const flowing = publish(s.url, "flow", 1490, 10, 10);
    const group = consume({ url: s.url }, "flow", { group: "g", from: "earliest", window: 50 });
    const tail = consume({ url: s.url }, "flow", { from: "earliest" });
    const acked: number[] = [];
    const nacked = new Set<number>();
    while (acked.at(-1) !== 1500) {
      const [e] = await pull(group, 1);
      acked.push(e.seq);
      // Acks of the events in between must be takeable: an ack the server refuses would end the subscription.
      if (e.seq % 300 === 0 && !nacked.has(e.seq)) {
        nacked.add(e.seq);
        expect(group.nack(e.seq)).toBe(true);
      } else expect(group.ack(e.seq)).toBe(true);
    }
    expect(acked).toEqual([...run(1, 300), ...run(300, 600), ...run(600, 900), ...run(900, 1200), ...run(1200, 1500)]);
    const tailed = seqsOf(await pull(tail, 700));
    tail.seek(200);
    tailed.push(...seqsOf(await pull(tail, 1301)));
    expect(tailed).toEqual([...run(1, 700), ...run(200, 1500)]);
    await flowing;
    await Promise.all([group.close(), tail.close()]);
  });

  it("a standby takes over when the active member's process is killed -9, from the checkpoint + 1", async () => {
    await publish(s.url, "work", 100);
    const child = spawn(process.execPath, [CHILD, s.url, "work", "g", "50"], { stdio: ["ignore", "pipe", "inherit"] });
    const lines: any[] = [];
    let buf = "";
    child.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        lines.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
      }
    });
    try {
      // A child node process starting and connecting can take more than the default 1 s on a loaded machine.
      await expect.poll(() => lines.filter((l) => l.seq !== undefined).length, { timeout: 15_000 }).toBe(100);
      expect(lines[0]).toEqual({ role: "active" });
      await expect.poll(() => checkpointOf(s.url, "work", "g"), { timeout: 10_000 }).toBe(50);
      const standby = consume({ url: s.url }, "work", { group: "g" });
      const roles: string[] = [];
      standby.on("role", (r) => roles.push(r));
      expect(await standby.ready).toMatchObject({ role: "standby", from: null });
      child.kill("SIGKILL");
      const events = await pull(standby, 50);
      expect(seqsOf(events)).toEqual(run(51, 100));
      expect(roles).toEqual(["standby", "active"]);
      expect(standby.role).toBe("active");
      await standby.close();
    } finally {
      child.kill("SIGKILL");
    }
  });
});

describe("refusals reach the caller as TickerErrors", () => {
  const servers = perTestServers();

  it("ready rejects with 404 for an unknown stream (auto create off) and 400 for a bad window; the iterator throws the same", async () => {
    const s = await servers.start(servers.dir(), ["--auto-create-streams", "false"]);
    const sub = consume({ url: s.url }, "nope", {});
    const err = await sub.ready.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TickerError);
    expect(err).toMatchObject({ status: 404, code: "stream_not_found" });
    await expect(sub.next()).rejects.toBe(err);
    await expect(consume({ url: s.url }, "nope", { window: 0 }).ready).rejects.toMatchObject({ status: 400, code: "invalid_parameter" });
  });

  it("ready rejects with 401 for an unknown key and 403 for a key without the consume scope", async () => {
    const dir = servers.dir();
    writeFileSync(
      join(dir, "keys.json"),
      JSON.stringify([
        { key: "k-consumer-0123456789abcdef", scopes: ["consume", "publish"] },
        { key: "k-publisher-0123456789abcdef", scopes: ["publish"] },
      ]),
    );
    const s = await servers.start(join(dir, "data"), ["--api-keys-file", join(dir, "keys.json")]);
    const auth = { authorization: "Bearer k-consumer-0123456789abcdef" };
    expect((await api(`${s.url}/v1/streams/keyed/events`, "POST", { events: [{ type: "a" }] }, auth)).status).toBe(200);
    await expect(consume({ url: s.url, token: "k-wrong" }, "keyed", {}).ready).rejects.toMatchObject({ status: 401, code: "unauthorized" });
    await expect(consume({ url: s.url, token: "k-publisher-0123456789abcdef" }, "keyed", {}).ready).rejects.toMatchObject({ status: 403, code: "forbidden" });
    const ok = consume({ url: s.url, token: "k-consumer-0123456789abcdef" }, "keyed", { from: 1 });
    expect(seqsOf(await pull(ok, 1))).toEqual([1]);
    await ok.close();
  });
});

describe("a subscription through faults", () => {
  const servers = perTestServers();

  it("survives the server's kill -9 and restart on the same port: every event comes, none skipped (a tail exactly once)", async () => {
    const dir = servers.dir();
    // A port given, not port 0: Linux refuses to bind an ephemeral port taken
    // by port 0 again while the dead server's connections are in TIME_WAIT.
    const port = await freePort();
    const s = await servers.start(dir, ["--port", String(port)]);
    await publish(s.url, "feed", 300);
    const reconnect = { initialDelayMs: 50, maxDelayMs: 500 };
    const tail = consume({ url: s.url }, "feed", { from: "earliest", reconnect });
    const group = consume({ url: s.url }, "feed", { group: "g", from: "earliest", reconnect });
    const attempts: TickerError[] = [];
    tail.on("reconnect", (r) => attempts.push(r.error));
    const before = await pull(tail, 100);
    await pull(group, 100);
    group.ack(80); // 81..100 handed out, not acked
    await expect.poll(() => checkpointOf(s.url, "feed", "g"), { timeout: 10_000 }).toBe(80);
    await s.kill9(); // mid-stream: 200 more were published, some buffered or on the wire
    const again = await servers.start(dir, ["--port", String(port)]);
    expect(again.url).toBe(s.url);
    await publish(again.url, "feed", 200, 300);
    const after = await pull(tail, 400);
    expect(seqsOf([...before, ...after])).toEqual(run(1, 500));
    expect(attempts.length).toBeGreaterThan(0);
    expect(attempts[0]).toMatchObject({ status: 0, code: "connection_failed" });
    // A group resumes after its last ack: what was not acked comes again.
    expect(seqsOf(await pull(group, 420))).toEqual(run(81, 500));
    await Promise.all([tail.close(), group.close()]);
  });

  it("a caller that stops pulling stops the reading: the buffer stays within the window and one read, then every event comes in order", async () => {
    const s = await servers.start(servers.dir(), ["--consume-page-events-max", "100"]);
    const windowEvents = 200;
    expect((await api(`${s.url}/v1/streams/flood`, "PUT", {})).status).toBe(201);
    const sub = consume({ url: s.url }, "flood", { from: "earliest", window: windowEvents });
    await sub.ready;
    let most = 0;
    const watch = setInterval(() => (most = Math.max(most, sub.buffered)), 5);
    try {
      // 3,000 events of about 1 KiB (3 MiB) while nothing is pulled.
      await publish(s.url, "flood", 3000, 0, 100, 1000);
      await sleep(1000);
      most = Math.max(most, sub.buffered);
      // The bound: the window, the message that crossed it (at most a page of
      // 100 events) and the rest of that socket read (64 KiB: 64 events).
      expect(most).toBeGreaterThanOrEqual(windowEvents);
      expect(most).toBeLessThanOrEqual(windowEvents + 100 + 64);
      const all = await pull(sub, 3000);
      expect(seqsOf(all)).toEqual(run(1, 3000));
      expect(most).toBeLessThanOrEqual(windowEvents + 100 + 64);
    } finally {
      clearInterval(watch);
      await sub.close();
    }
  });
});
