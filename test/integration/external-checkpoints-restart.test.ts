// Group checkpoints in PostgreSQL and Redis, against the private servers the
// test setup starts: a server killed -9 and restarted with no checkpoint
// files in its data dir resumes every group from those stores.
import { describe, it, expect, inject, afterAll } from "vitest";
import { readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { Redis } from "ioredis";
import { api, removeDir, startServer, tempDataDir } from "../helpers/server.js";
import { Consumer, isRun } from "../helpers/consumer.js";

const pgUrl = inject("postgresUrl");
const redisUrl = inject("redisUrl");
const sql = postgres(pgUrl, { max: 1, onnotice: () => {} });
const redis = new Redis(redisUrl);
afterAll(async () => {
  await sql.end();
  redis.disconnect();
});

/** Removes every embedded checkpoint file, as if the data dir had none. */
function dropCheckpointFiles(dataDir: string): number {
  let n = 0;
  for (const d of readdirSync(join(dataDir, "streams"))) {
    const f = join(dataDir, "streams", d, "checkpoints.log");
    try {
      rmSync(f);
      n++;
    } catch {
      // no checkpoints on this stream
    }
  }
  return n;
}

const pgSeq = async (stream: string, group: string) =>
  (await sql`select seq from ticker_checkpoints where stream = ${stream} and group_name = ${group}`)[0]?.seq;

async function consumeAndAck(url: string, stream: string, group: string, ack: number): Promise<void> {
  const c = await Consumer.connect(url, stream, `group=${group}&from=earliest`);
  await c.eventsThrough(100);
  c.send({ type: "ack", seq: ack });
  await expect.poll(async () => (await api(`${url}/v1/streams/${stream}/checkpoint?group=${group}`, "GET")).json?.seq).toBe(ack);
  await c.close();
}

async function resumesAt(url: string, stream: string, group: string, from: number): Promise<void> {
  const c = await Consumer.connect(url, stream, `group=${group}`);
  expect(await c.controlMessage("hello")).toMatchObject({ from, role: "active" });
  await c.eventsThrough(100);
  expect(isRun(c.seqs, from, 100)).toBe(true);
  await c.close();
}

const events = { events: Array.from({ length: 100 }, (_, i) => ({ type: "t", payload: i })) };

describe("checkpoints in PostgreSQL and Redis", () => {
  it("kill -9, checkpoint files gone: groups resume from Redis, which is ahead of PostgreSQL's last batch", async () => {
    const dataDir = tempDataDir();
    const stream = `ext-${randomUUID().slice(0, 8)}`;
    const args = ["--postgres-url", pgUrl, "--redis-url", redisUrl, "--checkpoint-flush-interval-ms", "200"];
    let s = await startServer({ dataDir, args });
    try {
      await api(`${s.url}/v1/streams/${stream}/events`, "POST", events);
      await consumeAndAck(s.url, stream, "g", 70);
      await expect.poll(() => pgSeq(stream, "g")).toBe("70");
      await expect.poll(() => redis.hget(`ticker:cp:${stream}`, "g")).toBe("70");
      await api(`${s.url}/v1/streams/${stream}/checkpoint`, "POST", { group: "g", seq: 80 });
      // Redis is written right after the shard answers, not before.
      await expect.poll(() => redis.hget(`ticker:cp:${stream}`, "g")).toBe("80");
      await s.kill9();
      // PostgreSQL one batch behind, as when the server dies between flushes.
      await sql`update ticker_checkpoints set seq = 70 where stream = ${stream} and group_name = 'g'`;
      expect(dropCheckpointFiles(dataDir)).toBe(1);
      s = await startServer({ dataDir, args });
      await resumesAt(s.url, stream, "g", 81);
    } finally {
      await s.stop();
      removeDir(dataDir);
    }
  });

  it("with PostgreSQL alone: writes are batched, flushed on clean shutdown, and read back on start", async () => {
    const dataDir = tempDataDir();
    const stream = `pg-${randomUUID().slice(0, 8)}`;
    // A long interval: only the shutdown flush can have written the row.
    const args = ["--postgres-url", pgUrl, "--checkpoint-flush-interval-ms", "600000"];
    let s = await startServer({ dataDir, args });
    try {
      await api(`${s.url}/v1/streams/${stream}/events`, "POST", events);
      await consumeAndAck(s.url, stream, "batch", 33);
      expect(await pgSeq(stream, "batch")).toBeUndefined();
      expect(await s.stop()).toBe(0);
      expect(await pgSeq(stream, "batch")).toBe("33");
      dropCheckpointFiles(dataDir);
      s = await startServer({ dataDir, args });
      await resumesAt(s.url, stream, "batch", 34);
      expect((await api(`${s.url}/v1/streams/${stream}/lag?group=batch`, "GET")).json).toMatchObject({ checkpoint_seq: 33, lag: 67 });
    } finally {
      await s.stop();
      removeDir(dataDir);
    }
  });

  it("with Redis alone: kill -9 right after an ack loses nothing", async () => {
    const dataDir = tempDataDir();
    const stream = `rd-${randomUUID().slice(0, 8)}`;
    const args = ["--redis-url", redisUrl, "--redis-key-prefix", "t2:"];
    let s = await startServer({ dataDir, args });
    try {
      await api(`${s.url}/v1/streams/${stream}/events`, "POST", events);
      await consumeAndAck(s.url, stream, "fast", 90);
      await expect.poll(() => redis.hget(`t2:cp:${stream}`, "fast")).toBe("90");
      await s.kill9();
      dropCheckpointFiles(dataDir);
      s = await startServer({ dataDir, args });
      await resumesAt(s.url, stream, "fast", 91);
    } finally {
      await s.stop();
      removeDir(dataDir);
    }
  });

  it("a server that cannot reach PostgreSQL at start says so and exits", async () => {
    const dataDir = tempDataDir();
    try {
      await expect(startServer({ dataDir, args: ["--postgres-url", "postgres://ticker@127.0.0.1:1/postgres"] })).rejects.toThrow(/exited with 1/);
    } finally {
      removeDir(dataDir);
    }
  });
});
