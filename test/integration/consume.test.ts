// WebSocket consumption against a real server: order and completeness on the
// live and log paths, groups, acks and checkpoints, windows, seek, nack and
// dead letters, reset on expiry, bad client messages.
import { describe, it, expect, afterAll, beforeAll } from "vitest";
import { api, removeDir, replayAll, startServer, type TestServer } from "../helpers/server.js";
import { Consumer, isRun } from "../helpers/consumer.js";
import { decodeEventBatch, decodeRecords } from "../../src/wire/client.js";

const events = (n: number, from = 0) => ({
  events: Array.from({ length: n }, (_, i) => ({ type: "tick", key: `k${(from + i) % 7}`, payload: { i: from + i } })),
});

async function publish(url: string, stream: string, n: number, batch = 1000): Promise<void> {
  for (let done = 0; done < n; done += batch) {
    const r = await api(`${url}/v1/streams/${stream}/events`, "POST", events(Math.min(batch, n - done), done));
    if (r.status !== 200) throw new Error(`publish: ${r.status} ${JSON.stringify(r.json)}`);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("WebSocket consume", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer();
  });
  afterAll(async () => {
    await s.stop();
    removeDir(s.dataDir);
  });

  it("delivers history then live events in seq order, no gap, no duplicate, JSON and binary", async () => {
    await publish(s.url, "orders", 5000);
    const json = await Consumer.connect(s.url, "orders", "from=earliest");
    const bin = await Consumer.connect(s.url, "orders", "from=earliest&format=binary");
    const hello = await json.controlMessage("hello");
    expect(hello).toMatchObject({ type: "hello", stream: "orders", group: null, from: 1, head_seq: 5000, first_seq: 1, role: "active" });
    // Published while both read history: the hand-off to live must not drop or repeat.
    const producing = publish(s.url, "orders", 20_000, 250);
    await producing;
    await json.eventsThrough(25_000);
    await bin.eventsThrough(25_000);
    expect(isRun(json.seqs, 1, 25_000)).toBe(true);
    expect(isRun(bin.seqs, 1, 25_000)).toBe(true);
    expect(json.events[41]).toMatchObject({ seq: 42, stream: "orders", type: "tick", key: "k6", payload: { i: 41 } });
    await json.close();
    await bin.close();
  });

  it("binary messages are EventBatch envelopes around the stored frames", async () => {
    await publish(s.url, "frames", 10);
    const c = await Consumer.connect(s.url, "frames", "from=earliest&format=binary");
    await c.eventsThrough(10);
    const batch = decodeEventBatch(c.binary[0]);
    expect(batch).toMatchObject({ stream: "frames", first_seq: 1, head_seq: 10 });
    const decoded = decodeRecords(batch.records); // checks each frame's CRC
    expect(decoded[0]).toMatchObject({ seq: 1, type: "tick", payload: { i: 0 } });
    await c.close();
  });

  it("from=latest gets only new events; heartbeats carry head_seq while idle", async () => {
    await publish(s.url, "quiet", 3);
    const c = await Consumer.connect(s.url, "quiet", "from=latest");
    expect(await c.controlMessage("hello")).toMatchObject({ from: 4, head_seq: 3 });
    const beats = c.control.length;
    const hb = await c.controlMessage("heartbeat", beats, 3000);
    expect(hb.head_seq).toBe(3);
    expect(Math.abs(hb.ts - Date.now())).toBeLessThan(5000);
    // At least one heartbeat per second while idle.
    const t0 = Date.now();
    const n0 = c.control.filter((m) => m.type === "heartbeat").length;
    await sleep(2100);
    const n1 = c.control.filter((m) => m.type === "heartbeat").length;
    expect(n1 - n0).toBeGreaterThanOrEqual(Math.floor((Date.now() - t0) / 1000));
    await publish(s.url, "quiet", 2);
    await c.eventsThrough(5);
    expect(c.seqs).toEqual([4, 5]);
    await c.close();
  });

  it("from_time starts at the first event ingested at or after it", async () => {
    await publish(s.url, "timed", 5);
    await sleep(30);
    const t = Date.now();
    await sleep(5);
    await publish(s.url, "timed", 5);
    const c = await Consumer.connect(s.url, "timed", `from_time=${t}`);
    expect(await c.controlMessage("hello")).toMatchObject({ from: 6 });
    await c.eventsThrough(10);
    expect(c.seqs).toEqual([6, 7, 8, 9, 10]);
    await c.close();
  });

  it("50 groups on one stream each get every event once, in order, and checkpoint what they ack", async () => {
    await publish(s.url, "fan", 2000);
    const cs = await Promise.all(Array.from({ length: 50 }, (_, g) => Consumer.connect(s.url, "fan", `group=g${g}&from=earliest`, { autoAck: true })));
    await publish(s.url, "fan", 3000, 500);
    for (const c of cs) await c.eventsThrough(5000);
    for (const c of cs) expect(isRun(c.seqs, 1, 5000)).toBe(true);
    // Acks become checkpoints (written asynchronously).
    await expect.poll(async () => (await api(`${s.url}/v1/streams/fan/lag?group=g17`, "GET")).json?.checkpoint_seq, { timeout: 5000 }).toBe(5000);
    const groups = await api(`${s.url}/v1/streams/fan/groups`, "GET");
    expect(groups.json.groups).toHaveLength(50);
    expect(groups.json.groups[0].members).toEqual([expect.objectContaining({ role: "active", next_seq: 5001 })]);
    await Promise.all(cs.map((c) => c.close()));
  });

  it("a group resumes at checkpoint + 1 when from is absent; a new group starts at latest", async () => {
    await publish(s.url, "resume", 100);
    const a = await Consumer.connect(s.url, "resume", "group=workers&from=earliest");
    await a.eventsThrough(100);
    a.send({ type: "ack", seq: 40 });
    await expect.poll(async () => (await api(`${s.url}/v1/streams/resume/checkpoint?group=workers`, "GET")).json?.seq).toBe(40);
    await a.close();
    const b = await Consumer.connect(s.url, "resume", "group=workers");
    expect(await b.controlMessage("hello")).toMatchObject({ from: 41, role: "active" });
    await b.eventsThrough(100);
    expect(isRun(b.seqs, 41, 100)).toBe(true);
    await b.close();
    const fresh = await Consumer.connect(s.url, "resume", "group=newcomers");
    expect(await fresh.controlMessage("hello")).toMatchObject({ from: 101 });
    await fresh.close();
  });

  it("a checkpoint set over HTTP while the group is connected is where its standby takes over", async () => {
    await publish(s.url, "moved", 50);
    const a = await Consumer.connect(s.url, "moved", "group=ops&from=earliest");
    await a.eventsThrough(50);
    const b = await Consumer.connect(s.url, "moved", "group=ops");
    expect(await b.controlMessage("hello")).toMatchObject({ role: "standby" });
    expect((await api(`${s.url}/v1/streams/moved/checkpoint`, "POST", { group: "ops", seq: 30 })).status).toBe(200);
    await a.close();
    expect(await b.controlMessage("hello", 1)).toMatchObject({ role: "active", from: 31 });
    await b.eventsThrough(50);
    expect(isRun(b.seqs, 31, 50)).toBe(true);
    await b.close();
  });

  it("window bounds unacked events in flight; acks open it again", async () => {
    await publish(s.url, "windowed", 500);
    const c = await Consumer.connect(s.url, "windowed", "group=slow&from=earliest&window=100");
    await c.eventsThrough(100);
    await sleep(300);
    expect(c.seqs.length).toBe(100); // nothing past the window
    c.send({ type: "ack", seq: 60 });
    await c.eventsThrough(160);
    await sleep(200);
    expect(c.seqs.length).toBe(160);
    c.send({ type: "ack", seq: 160 });
    await c.eventsThrough(260);
    // Live events respect the window too.
    c.send({ type: "ack", seq: 260 });
    await c.eventsThrough(360);
    c.send({ type: "ack", seq: 360 });
    await c.eventsThrough(460);
    c.send({ type: "ack", seq: 460 });
    await c.eventsThrough(500);
    await publish(s.url, "windowed", 50);
    await c.eventsThrough(550);
    expect(isRun(c.seqs, 1, 550)).toBe(true);
    await c.close();
  });

  it("seek moves delivery to any retained seq", async () => {
    await publish(s.url, "seeking", 30);
    const c = await Consumer.connect(s.url, "seeking", "from=earliest");
    await c.eventsThrough(30);
    c.send({ type: "seek", seq: 10 });
    await c.until(() => c.seqs.length >= 51, "redelivery from 10");
    expect(c.seqs.slice(30)).toEqual(Array.from({ length: 21 }, (_, i) => 10 + i));
    await c.close();
  });

  it("nack redelivers; the max_attempts-th nack dead-letters the event and the group moves past it", async () => {
    await publish(s.url, "jobs", 10);
    const c = await Consumer.connect(s.url, "jobs", "group=workers&from=earliest&max_attempts=3");
    await c.eventsThrough(10);
    for (let attempt = 1; attempt <= 3; attempt++) {
      const before = c.seqs.length;
      c.send({ type: "nack", seq: 4, reason: `boom ${attempt}` });
      if (attempt < 3) {
        await c.until(() => c.seqs.length >= before + 7, `redelivery ${attempt}`);
        expect(c.seqs.slice(before, before + 7)).toEqual([4, 5, 6, 7, 8, 9, 10]);
      }
    }
    await c.until(() => c.seqs.length >= 10 + 14 + 6, "delivery after the dead letter");
    expect(c.seqs.slice(24)).toEqual([5, 6, 7, 8, 9, 10]);
    const dlq = await replayAll(s.url, "jobs.dlq");
    expect(dlq).toHaveLength(1);
    expect(dlq[0]).toMatchObject({
      type: "dead_letter",
      key: "k3",
      payload: { stream: "jobs", seq: 4, group: "workers", reason: "boom 3", attempts: 3, event: { seq: 4, type: "tick", payload: { i: 3 } } },
    });
    // The nack acknowledged 1..3 and the dead letter 4.
    await expect.poll(async () => (await api(`${s.url}/v1/streams/jobs/checkpoint?group=workers`, "GET")).json?.seq).toBe(4);
    await c.close();
  });

  it("default max_attempts is 5", async () => {
    await publish(s.url, "jobs5", 2);
    const c = await Consumer.connect(s.url, "jobs5", "group=w&from=earliest");
    await c.eventsThrough(2);
    for (let attempt = 1; attempt <= 4; attempt++) {
      c.send({ type: "nack", seq: 1, reason: "no" });
      await c.until(() => c.seqs.length >= 2 + 2 * attempt, `redelivery ${attempt}`);
    }
    expect((await api(`${s.url}/v1/streams/jobs5.dlq`, "GET")).status).toBe(404);
    c.send({ type: "nack", seq: 1, reason: "no" });
    await c.until(() => c.seqs.length >= 11, "delivery of 2 after the dead letter");
    expect((await replayAll(s.url, "jobs5.dlq")).map((e) => e.payload.seq)).toEqual([1]);
    await c.close();
  });

  it("bad requests are refused: malformed ones before the upgrade, the rest with an error message and a close", async () => {
    await publish(s.url, "exists", 1);
    const refused = async (stream: string, query: string) => {
      try {
        await Consumer.connect(s.url, stream, query);
      } catch (err) {
        return err as { status: number; body: any };
      }
      throw new Error("connected");
    };
    expect(await refused("exists", "format=xml")).toMatchObject({ status: 400, body: { error: { code: "invalid_parameter" } } });
    expect(await refused("exists", "window=0")).toMatchObject({ status: 400 });
    expect(await refused("exists", "group=bad%20name")).toMatchObject({ status: 400, body: { error: { code: "invalid_group" } } });
    expect(await refused("exists", "colour=red")).toMatchObject({ status: 400 });
    expect(await refused("exists", "from=1&from_time=5")).toMatchObject({ status: 400 });
    expect(await refused("bad%20id", "")).toMatchObject({ status: 400, body: { error: { code: "invalid_stream" } } });
    // Known only to the shard: answered on the socket.
    const closedWith = async (stream: string, query: string) => {
      const c = await Consumer.connect(s.url, stream, query);
      const err = await c.controlMessage("error");
      const closed = await c.closed;
      expect(c.seqs).toEqual([]);
      return { code: err.code, close: closed.code };
    };
    expect(await closedWith("nope", "")).toEqual({ code: "stream_not_found", close: 1008 });
    expect(await closedWith("exists", "from=99")).toEqual({ code: "invalid_parameter", close: 1008 });
    expect(await closedWith("exists", "from=abc")).toEqual({ code: "invalid_parameter", close: 1008 });
  });

  it("bad client messages get an error, then a close; the server goes on serving", async () => {
    await publish(s.url, "strict", 5);
    const cases: Array<[string, unknown, string]> = [
      ["group=g&from=earliest", "not json", "invalid_message"],
      ["group=g&from=earliest", { type: "dance" }, "invalid_message"],
      ["group=g&from=earliest", { type: "ack", seq: -1 }, "invalid_message"],
      ["group=g&from=earliest", { type: "ack", seq: 999 }, "invalid_ack"],
      ["from=earliest", { type: "ack", seq: 1 }, "no_group"],
      ["group=g&from=earliest", { type: "nack", seq: 1, reason: 7 }, "invalid_message"],
      ["group=g&from=earliest", { type: "seek", seq: 1000 }, "invalid_seek"],
      ["group=g&from=earliest", "x".repeat(5000), "message_too_large"],
    ];
    for (const [query, msg, code] of cases) {
      const c = await Consumer.connect(s.url, "strict", query);
      await c.eventsThrough(5);
      c.send(msg);
      const err = await c.controlMessage("error");
      expect(err.code).toBe(code);
      const closed = await c.closed;
      expect(closed.code).toBe(1008);
    }
    const binary = await Consumer.connect(s.url, "strict", "from=earliest");
    binary.ws.send(Buffer.from([1, 2, 3]));
    expect((await binary.controlMessage("error")).code).toBe("invalid_message");
    expect((await api(`${s.url}/v1/streams/strict`, "GET")).json.head_seq).toBe(5);
    const ok = await Consumer.connect(s.url, "strict", "from=earliest");
    await ok.eventsThrough(5);
    await ok.close();
  });

  it("deleting a stream closes its consumers with stream_deleted", async () => {
    await publish(s.url, "doomed", 3);
    const c = await Consumer.connect(s.url, "doomed", "from=earliest");
    await c.eventsThrough(3);
    expect((await api(`${s.url}/v1/streams/doomed`, "DELETE")).status).toBe(204);
    expect((await c.controlMessage("error")).code).toBe("stream_deleted");
    await c.closed;
  });
});

describe("WebSocket consume: expiry", () => {
  it("a consumer whose next seq has expired gets reset with the new first_seq, then continues", async () => {
    const s = await startServer({ args: ["--segment-bytes-max", "4096", "--retention-check-interval-ms", "50"] });
    try {
      await api(`${s.url}/v1/streams/short`, "PUT", { retention_ms: 400 });
      await publish(s.url, "short", 300, 50);
      await sleep(600);
      await publish(s.url, "short", 5);
      const info = (await api(`${s.url}/v1/streams/short`, "GET")).json;
      expect(info.first_seq).toBeGreaterThan(1);
      const c = await Consumer.connect(s.url, "short", "from=1");
      const reset = await c.controlMessage("reset");
      expect(reset).toMatchObject({ type: "reset", reason: "expired" });
      expect(reset.from).toBeGreaterThan(1);
      await c.eventsThrough(305);
      expect(isRun(c.seqs, reset.from, 305)).toBe(true);
      await c.close();
    } finally {
      await s.stop();
      removeDir(s.dataDir);
    }
  });
});
