// open_files_max against a real server: many streams with consumer groups,
// some fsync, publish, replay and checkpoint through a small open-file
// budget, and the process's fds stay within it (plus the fixed ones every
// server holds) before and after a restart; so do many ordered streams,
// whose held.log files are in the same budget.
import { describe, expect, it } from "vitest";
import { readdirSync, readlinkSync } from "node:fs";
import { api, perTestServers, replayAll } from "../helpers/server.js";
import { ev, ordered, publish } from "../helpers/ordered.js";

const OPEN_FILES_MAX = 64;
const STREAMS = 500;
const IN_FLIGHT = 8;
/**
 * Sockets the test's fetch may hold open to the server at once (undici
 * keeps a connection per request in flight, each one fd in the server):
 * besides the fds of a fresh server, counted before any stream exists.
 */
const CLIENT_SOCKETS_MAX = 2 * IN_FLIGHT;

const servers = perTestServers();

/** The fds of process `pid`: all of them, and those on files under `dir`. */
function fds(pid: number, dir: string): { all: number; data: number } {
  let all = 0;
  let data = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    all++;
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith(`${dir}/streams/`)) data++;
    } catch {
      // closed since readdir
    }
  }
  return { all, data };
}

/** Runs `fn(i)` for i in [0, n), `IN_FLIGHT` at a time. */
async function each(n: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      for (let i = next++; i < n; i = next++) await fn(i);
    }),
  );
}

const stream = (i: number) => `inst-${i}`;
const fsync = (i: number) => i % 5 === 0;

describe("open_files_max", () => {
  it("500 streams with groups publish, replay and checkpoint through 64 open files, and again after a restart", async () => {
    const dataDir = servers.dir();
    const args = ["--open-files-max", String(OPEN_FILES_MAX), "--shards", "2"];
    let s = await servers.start(dataDir, args);
    const fixed = fds(s.proc.pid!, dataDir).all;
    const within = () => {
      const n = fds(s.proc.pid!, dataDir);
      expect(n.data).toBeLessThanOrEqual(OPEN_FILES_MAX);
      expect(n.all).toBeLessThanOrEqual(fixed + OPEN_FILES_MAX + CLIENT_SOCKETS_MAX);
    };

    await each(STREAMS, async (i) => {
      if (fsync(i)) expect((await api(`${s.url}/v1/streams/${stream(i)}`, "PUT", { durability: "fsync" })).status).toBe(201);
      const pub = await api(`${s.url}/v1/streams/${stream(i)}/events`, "POST", {
        events: [0, 1, 2].map((n) => ({ type: "tick", key: stream(i), payload: n })),
      });
      expect(pub.status).toBe(200);
      expect((await api(`${s.url}/v1/streams/${stream(i)}/checkpoint`, "POST", { group: "g", seq: 2 })).status).toBe(200);
    });
    within();
    await each(STREAMS, async (i) => {
      const r = await api(`${s.url}/v1/streams/${stream(i)}/events?from=1`, "GET");
      expect(r.json.events.map((e: any) => e.payload)).toEqual([0, 1, 2]);
      expect((await api(`${s.url}/v1/streams/${stream(i)}/checkpoint`, "POST", { group: "g", seq: 3 })).status).toBe(200);
    });
    within();

    expect(await s.stop()).toBe(0);
    s = await servers.start(dataDir, args);
    within();
    await each(STREAMS, async (i) => {
      expect((await api(`${s.url}/v1/streams/${stream(i)}/checkpoint?group=g`, "GET")).json).toEqual({ group: "g", seq: 3 });
      const pub = await api(`${s.url}/v1/streams/${stream(i)}/events`, "POST", { events: [{ type: "tick", key: stream(i), payload: 3 }] });
      expect(pub.status).toBe(200);
      const r = await api(`${s.url}/v1/streams/${stream(i)}/events?from=1`, "GET");
      expect(r.json.events.map((e: any) => e.payload)).toEqual([0, 1, 2, 3]);
    });
    within();
    expect((await api(`${s.url}/v1/streams/${stream(0)}`, "GET")).json).toMatchObject({ head_seq: 4, durability: "fsync" });
  });

  it("more ordered streams than open files hold events in held.log through 32 open files, keep them over a restart, and release them in order", async () => {
    const dataDir = servers.dir();
    const filesMax = 32;
    const streams = 200;
    const args = ["--open-files-max", String(filesMax), "--shards", "2"];
    let s = await servers.start(dataDir, args);
    const fixed = fds(s.proc.pid!, dataDir).all;
    const within = () => {
      const n = fds(s.proc.pid!, dataDir);
      expect(n.data).toBeLessThanOrEqual(filesMax);
      expect(n.all).toBeLessThanOrEqual(fixed + filesMax + CLIENT_SOCKETS_MAX);
    };
    const name = (i: number) => `ord-${i}`;
    await each(streams, async (i) => {
      // An hour: nothing is released by the gap timer while the test runs.
      expect((await ordered(s.url, name(i), { gap_timeout_ms: 3_600_000 })).status).toBe(201);
      const held = await publish(s.url, name(i), [ev("p", 2, { payload: i }), ev("p", 3, { payload: i })]);
      expect(held.json).toMatchObject({ count: 0, held: [{ producer_seq: 2 }, { producer_seq: 3 }] });
    });
    within();
    expect(await s.stop()).toBe(0);
    s = await servers.start(dataDir, args);
    within();
    await each(streams, async (i) => {
      expect((await api(`${s.url}/v1/streams/${name(i)}`, "GET")).json).toMatchObject({ held_events: 2 });
      const closing = await publish(s.url, name(i), [ev("p", 1, { payload: i })]);
      expect(closing.json).toMatchObject({ first_seq: 1, last_seq: 3, count: 3, held: [] });
      const events = await replayAll(s.url, name(i));
      expect(events.map((e: any) => [e.producer_seq, e.payload])).toEqual([1, 2, 3].map((q) => [q, i]));
    });
    within();
  });
});
