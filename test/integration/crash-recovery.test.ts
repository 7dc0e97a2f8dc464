// Crashes, damage and restarts, against real server processes and real files.
import { describe, it, expect } from "vitest";
import { appendFileSync, closeSync, openSync, readdirSync, readSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { api, perTestServers, replayAll } from "../helpers/server.js";
import { linesOfKind } from "../helpers/log-lines.js";
import { escapeStreamId } from "../../src/shard/stream-config.js";

const { start, dir } = perTestServers();

function logDir(dataDir: string, stream: string): string {
  return join(dataDir, "streams", escapeStreamId(stream));
}

function segmentFiles(dataDir: string, stream: string): string[] {
  return readdirSync(logDir(dataDir, stream))
    .filter((f) => f.endsWith(".log"))
    .sort()
    .map((f) => join(logDir(dataDir, stream), f));
}

describe("crash recovery", () => {
  it("kill -9 during publish load: every acked event is there after restart, gap-free, and publishing goes on at head + 1", async () => {
    const dataDir = dir();
    const s = await start(dataDir);
    const acked = new Map<number, string>(); // seq -> payload id
    let stop = false;
    const publisher = async (p: number) => {
      for (let b = 0; !stop; b++) {
        const events = Array.from({ length: 100 }, (_, i) => ({ type: "load", payload: `${p}:${b}:${i}` }));
        let r;
        try {
          r = await api(`${s.url}/v1/streams/crashy/events`, "POST", { events });
        } catch {
          return; // the server died mid-request: this batch was never acked
        }
        expect(r.status).toBe(200);
        for (let i = 0; i < 100; i++) acked.set(r.json.first_seq + i, `${p}:${b}:${i}`);
      }
    };
    const running = Array.from({ length: 8 }, (_, p) => publisher(p));
    await new Promise((r) => setTimeout(r, 1500));
    await s.kill9();
    stop = true;
    await Promise.all(running);
    expect(acked.size).toBeGreaterThan(1000);

    const again = await start(dataDir);
    const events = await replayAll(again.url, "crashy");
    events.forEach((e, i) => expect(e.seq).toBe(i + 1));
    for (const [seq, id] of acked) expect(events[seq - 1]?.payload).toBe(id);
    const head = events.length;
    let lastAcked = 0; // not Math.max(...keys): more acks than the call stack takes arguments
    for (const seq of acked.keys()) if (seq > lastAcked) lastAcked = seq;
    expect(head).toBeGreaterThanOrEqual(lastAcked);
    const more = await api(`${again.url}/v1/streams/crashy/events`, "POST", { events: [{ type: "after" }] });
    expect(more.json.first_seq).toBe(head + 1);
    expect(await again.stop()).toBe(0);
  });

  it("garbage appended to a segment tail is cut on restart and the acked events are all there", async () => {
    const dataDir = dir();
    const s = await start(dataDir);
    for (let b = 0; b < 5; b++) {
      await api(`${s.url}/v1/streams/torn/events`, "POST", { events: Array.from({ length: 100 }, (_, i) => ({ type: "t", payload: b * 100 + i })) });
    }
    expect(await s.stop()).toBe(0);
    const segs = segmentFiles(dataDir, "torn");
    const last = segs[segs.length - 1];
    const sizeBefore = statSync(last).size;
    appendFileSync(last, Buffer.from("\x40\x00\x00\x00this is not a record, it is what a crash leaves behind"));
    const again = await start(dataDir);
    expect(again.output()).toMatch(/recovery: stream torn: cut \d+ torn bytes/);
    const finding = linesOfKind(again.output(), "recovery").find((l) => l.stream === "torn");
    expect(finding).toMatchObject({ level: "warn", stream: "torn" });
    expect(finding!.truncated_bytes).toBeGreaterThan(0);
    expect(statSync(last).size).toBe(sizeBefore);
    const events = await replayAll(again.url, "torn");
    expect(events.map((e) => e.payload)).toEqual(Array.from({ length: 500 }, (_, i) => i));
    const more = await api(`${again.url}/v1/streams/torn/events`, "POST", { events: [{ type: "after" }] });
    expect(more.json.first_seq).toBe(501);
    expect(await again.stop()).toBe(0);
  });

  it("a bit flip inside a closed segment is detected and reported, never served as data", async () => {
    const dataDir = dir();
    const args = ["--segment-bytes-max", "8192"];
    const s = await start(dataDir, args);
    for (let b = 0; b < 10; b++) {
      await api(`${s.url}/v1/streams/flip/events`, "POST", {
        events: Array.from({ length: 50 }, (_, i) => ({ type: "t", payload: { v: "x".repeat(20), n: b * 50 + i } })),
      });
    }
    expect(await s.stop()).toBe(0);
    const segs = segmentFiles(dataDir, "flip");
    expect(segs.length).toBeGreaterThan(3);
    // Flip one bit in the payload of a record in the middle of the second segment.
    const victim = segs[1];
    const fd = openSync(victim, "r+");
    const mid = Math.floor(statSync(victim).size / 2);
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, mid);
    b[0] ^= 0x04;
    writeSync(fd, b, 0, 1, mid);
    closeSync(fd);

    const again = await start(dataDir, args);
    const first = await api(`${again.url}/v1/streams/flip/events?from=1&limit=10000`, "GET");
    expect(first.status).toBe(200);
    const served = first.json.events as any[];
    served.forEach((e, i) => expect(e.payload.n).toBe(i)); // everything before the damage, intact
    const damagedSeq = first.json.next;
    expect(damagedSeq).toBeLessThan(500);
    const bad = await api(`${again.url}/v1/streams/flip/events?from=${damagedSeq}`, "GET");
    expect(bad.status).toBe(500);
    expect(bad.json.error.code).toBe("corrupt_record");
    expect(bad.json.error.seq).toBe(damagedSeq);
    // The damage is also found by the background scrub and shown on the stream.
    await expect.poll(async () => (await api(`${again.url}/v1/streams/flip`, "GET")).json.corruptions?.[0]?.seq, { timeout: 10_000 }).toBe(damagedSeq);
    expect(again.output()).toContain(`DAMAGED record ${damagedSeq}`);
    // Records past the damaged region (the next segment) are still served.
    const nextBase = Number(segs[2].slice(-24, -4));
    expect(nextBase).toBeGreaterThan(damagedSeq);
    const after = await api(`${again.url}/v1/streams/flip/events?from=${nextBase}&limit=10000`, "GET");
    expect(after.status).toBe(200);
    expect(after.json.events.map((e: any) => e.seq)).toEqual(Array.from({ length: 501 - nextBase }, (_, i) => nextBase + i));
    expect(await again.stop()).toBe(0);
  });

  it("idempotency keys are remembered across a restart", async () => {
    const dataDir = dir();
    const s = await start(dataDir);
    const first = await api(`${s.url}/v1/streams/idem/events`, "POST", {
      events: [
        { type: "a", idempotency_key: "k1" },
        { type: "b", idempotency_key: "k2" },
        { type: "c", idempotency_key: "k1" },
      ],
    });
    expect(first.json).toMatchObject({ first_seq: 1, last_seq: 2, count: 2, duplicates: [{ index: 2, seq: 1 }] });
    await s.kill9();
    const again = await start(dataDir);
    const second = await api(`${again.url}/v1/streams/idem/events`, "POST", {
      events: [
        { type: "b", idempotency_key: "k2" },
        { type: "d", idempotency_key: "k3" },
        { type: "a", idempotency_key: "k1" },
      ],
    });
    expect(second.json).toEqual({
      stream: "idem",
      first_seq: 3,
      last_seq: 3,
      count: 1,
      duplicates: [
        { index: 0, seq: 2 },
        { index: 2, seq: 1 },
      ],
    });
    expect((await replayAll(again.url, "idem")).map((e) => e.type)).toEqual(["a", "b", "d"]);
    expect(await again.stop()).toBe(0);
  });

  it("retention expiry moves first_seq and frees disk; reading expired seqs is 410", async () => {
    const dataDir = dir();
    const s = await start(dataDir, ["--segment-bytes-max", "4096", "--retention-check-interval-ms", "50"]);
    expect((await api(`${s.url}/v1/streams/short`, "PUT", { retention_ms: 300 })).status).toBe(201);
    for (let b = 0; b < 10; b++) {
      await api(`${s.url}/v1/streams/short/events`, "POST", { events: Array.from({ length: 40 }, (_, i) => ({ type: "t", payload: b * 40 + i })) });
    }
    const bytesOf = () => segmentFiles(dataDir, "short").reduce((n, f) => n + statSync(f).size, 0);
    const before = bytesOf();
    expect(before).toBeGreaterThan(10_000);
    await expect.poll(async () => (await api(`${s.url}/v1/streams/short`, "GET")).json.first_seq, { timeout: 5000 }).toBe(401);
    const info = (await api(`${s.url}/v1/streams/short`, "GET")).json;
    expect(info).toMatchObject({ head_seq: 400, first_seq: 401, events: 0 });
    expect(bytesOf()).toBe(0);
    const gone = await api(`${s.url}/v1/streams/short/events?from=1`, "GET");
    expect(gone.status).toBe(410);
    expect(gone.json.error).toMatchObject({ code: "expired", first_seq: 401 });
    const more = await api(`${s.url}/v1/streams/short/events`, "POST", { events: [{ type: "new" }] });
    expect(more.json.first_seq).toBe(401);
    expect(await s.stop()).toBe(0);
    const again = await start(dataDir, ["--segment-bytes-max", "4096"]);
    expect((await api(`${again.url}/v1/streams/short`, "GET")).json).toMatchObject({ head_seq: 401 });
    expect(await again.stop()).toBe(0);
  });
});
