// Consumer-group checkpoints in PostgreSQL and Redis, against real private
// servers (no mocks). Each test uses its own key prefix and stream names, so
// the tests of this file share one server of each kind.
import { describe, it, expect, beforeAll, afterAll, vi } from "vitest";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { Redis } from "ioredis";
import { ExternalCheckpoints, type ExternalCheckpointOptions } from "../../src/consumer/external.js";
import { migrate } from "../../src/consumer/schema.js";
import { logger } from "../../src/logger.js";
import type { ServerProcess } from "../harness/process.js";
import { startPostgres } from "../harness/postgres.js";
import { startRedis } from "../harness/redis.js";

const run = promisify(execFile);
/** Long enough that no timer flush happens inside a test unless it asks for one. */
const FLUSH_NEVER_MS = 3_600_000;

let pg: ServerProcess;
let redisServer: ServerProcess;
let sql: postgres.Sql;
let redis: Redis;
const opened: ExternalCheckpoints[] = [];
let prefixes = 0;

beforeAll(async () => {
  [pg, redisServer] = await Promise.all([startPostgres(), startRedis()]);
  sql = postgres(pg.url, { max: 2, onnotice: () => {} });
  redis = new Redis(redisServer.url);
  await migrate(pg.url);
});

afterAll(async () => {
  await Promise.allSettled(opened.map((c) => c.close()));
  await Promise.allSettled([sql?.end(), redis?.quit()]);
  await Promise.allSettled([pg?.stop(), redisServer?.stop()]);
});

/** Opens against the shared servers with a fresh key prefix unless one is given. */
async function open(opts: Partial<ExternalCheckpointOptions> & { postgres?: boolean; redis?: boolean } = {}) {
  const { postgres: usePg = true, redis: useRedis = true, ...rest } = opts;
  const cp = await ExternalCheckpoints.open({
    postgresUrl: usePg ? pg.url : undefined,
    redisUrl: useRedis ? redisServer.url : undefined,
    flushIntervalMs: FLUSH_NEVER_MS,
    keyPrefix: `t${++prefixes}:`,
    ...rest,
  });
  opened.push(cp);
  return cp;
}

async function pgRows(stream: string): Promise<Record<string, number>> {
  const rows = await sql<{ group_name: string; seq: string }[]>`select group_name, seq from ticker_checkpoints where stream = ${stream}`;
  return Object.fromEntries(rows.map((r) => [r.group_name, Number(r.seq)]));
}

const asObject = (m: Map<string, number> | undefined) => Object.fromEntries(m ?? []);

describe("external checkpoints", () => {
  it("migrate builds the schema once, also when two processes run it at the same moment", async () => {
    await sql`create database ticker_migrate_race`;
    const url = pg.url.replace(/\/postgres$/, "/ticker_migrate_race");
    await Promise.all([migrate(url), migrate(url)]);
    await migrate(url);
    const db = postgres(url, { max: 1, onnotice: () => {} });
    try {
      const versions = await db<{ version: number }[]>`select version from ticker_schema_migrations order by version`;
      expect(versions.map((v) => v.version)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
      await db`insert into ticker_checkpoints (stream, group_name, seq) values ('s', 'g', 9007199254740991)`;
      const [row] = await db<{ seq: string }[]>`select seq from ticker_checkpoints`;
      expect(row.seq).toBe("9007199254740991");
    } finally {
      await db.end();
    }
  });

  it("an ack is in Redis at once and reaches PostgreSQL only with the flush", async () => {
    const cp = await open({ keyPrefix: "ack:" });
    cp.write("orders", "billing", 41);
    cp.write("orders", "billing", 42);
    await vi.waitFor(async () => expect(await redis.hget("ack:cp:orders", "billing")).toBe("42"), { timeout: 5000 });
    expect(await pgRows("orders")).toEqual({});
    await cp.flush();
    expect(await pgRows("orders")).toEqual({ billing: 42 });
  });

  it("the timer flushes dirty checkpoints to PostgreSQL on its own", async () => {
    const cp = await open({ flushIntervalMs: 20 });
    cp.write("timer-stream", "g", 7);
    await vi.waitFor(async () => expect(await pgRows("timer-stream")).toEqual({ g: 7 }), { timeout: 10_000 });
  });

  it("load prefers Redis, and falls back to PostgreSQL per group when Redis has none", async () => {
    const writer = await open({ keyPrefix: "pref:" });
    writer.write("prefer", "a", 10);
    writer.write("prefer", "b", 20);
    await writer.close();
    // Another process acked further; only Redis has heard of it yet.
    await redis.hset("pref:cp:prefer", "a", "15");
    await redis.hdel("pref:cp:prefer", "b");
    const reader = await open({ keyPrefix: "pref:" });
    expect(asObject((await reader.load(["prefer"])).get("prefer"))).toEqual({ a: 15, b: 20 });
    await redis.del("pref:cp:prefer");
    expect(asObject((await reader.load(["prefer"])).get("prefer"))).toEqual({ a: 10, b: 20 });
  });

  it("works with PostgreSQL alone, and touches no Redis key", async () => {
    const cp = await open({ redis: false, keyPrefix: "pgonly:" });
    cp.write("pg-only", "g", 5);
    // Not flushed yet: load still sees this process's own ack.
    expect(asObject((await cp.load(["pg-only"])).get("pg-only"))).toEqual({ g: 5 });
    await cp.close();
    const again = await open({ redis: false });
    expect(asObject((await again.load(["pg-only"])).get("pg-only"))).toEqual({ g: 5 });
    expect(await redis.keys("pgonly:*")).toEqual([]);
  });

  it("works with Redis alone, and writes no PostgreSQL row", async () => {
    const cp = await open({ postgres: false, keyPrefix: "redisonly:" });
    cp.write("redis-only", "g", 6);
    await cp.flush();
    await cp.close();
    const again = await open({ postgres: false, keyPrefix: "redisonly:" });
    expect(asObject((await again.load(["redis-only"])).get("redis-only"))).toEqual({ g: 6 });
    expect(await pgRows("redis-only")).toEqual({});
  });

  it("1,000 acks of one group become one row holding the last seq", async () => {
    const cp = await open();
    for (let seq = 1; seq <= 1000; seq++) cp.write("coalesce", "g", seq);
    await cp.flush();
    const rows = await sql`select seq from ticker_checkpoints where stream = 'coalesce'`;
    expect(rows.map((r) => Number(r.seq))).toEqual([1000]);
  });

  it("deleting a stream removes its checkpoints from both stores, also unflushed ones", async () => {
    const cp = await open({ keyPrefix: "del:" });
    cp.write("doomed", "a", 1);
    cp.write("doomed", "b", 2);
    await cp.flush();
    cp.write("doomed", "a", 3);
    await cp.deleteStream("doomed");
    await cp.flush();
    expect(await pgRows("doomed")).toEqual({});
    expect(await redis.exists("del:cp:doomed")).toBe(0);
    expect(asObject((await cp.load(["doomed"])).get("doomed"))).toEqual({});
    // A stream created again under the same name starts afresh.
    cp.write("doomed", "a", 1);
    await cp.flush();
    expect(await pgRows("doomed")).toEqual({ a: 1 });
  });

  it("an ack made while a delete of its stream is queued survives the delete", async () => {
    const cp = await open();
    cp.write("reborn", "g", 1);
    const flushed = cp.flush();
    const deleted = cp.deleteStream("reborn");
    cp.write("reborn", "g", 2);
    const flushedAgain = cp.flush();
    await Promise.all([flushed, deleted, flushedAgain]);
    await cp.flush();
    expect(await pgRows("reborn")).toEqual({ g: 2 });
  });

  it("loads the checkpoints of 5,000 streams in one call", async () => {
    const streamCount = 5000;
    const names = Array.from({ length: streamCount }, (_, i) => `many-${i}`);
    const writer = await open({ keyPrefix: "many:" });
    names.forEach((s, i) => {
      writer.write(s, "g1", i);
      if (i % 2 === 0) writer.write(s, "g2", i * 10);
    });
    await writer.close();
    // Every third stream only in PostgreSQL, as after a Redis restart.
    const pipeline = redis.pipeline();
    names.forEach((s, i) => i % 3 === 0 && pipeline.del(`many:cp:${s}`));
    await pipeline.exec();
    const reader = await open({ keyPrefix: "many:" });
    const loaded = await reader.load([...names, "many-unknown"]);
    expect(loaded.size).toBe(streamCount + 1);
    names.forEach((s, i) => {
      expect(asObject(loaded.get(s))).toEqual(i % 2 === 0 ? { g1: i, g2: i * 10 } : { g1: i });
    });
    expect(asObject(loaded.get("many-unknown"))).toEqual({});
  });

  it("close() flushes what is still dirty", async () => {
    const cp = await open();
    cp.write("closing", "g", 77);
    await cp.close();
    expect(await pgRows("closing")).toEqual({ g: 77 });
    expect(() => cp.write("closing", "g", 78)).toThrow(/after close/);
  });

  it("acks while Redis is down are not thrown, and still reach PostgreSQL", async () => {
    const ownRedis = await startRedis();
    const cp = await open({ redisUrl: ownRedis.url });
    const errors: unknown[] = [];
    const logged = vi.spyOn(logger(), "error").mockImplementation((...args: unknown[]) => void errors.push(args));
    try {
      await ownRedis.stop();
      for (let seq = 1; seq <= 100; seq++) cp.write("redis-down", "g", seq);
      await vi.waitFor(() => expect(errors.length).toBeGreaterThan(0), { timeout: 10_000 });
      await cp.flush();
      expect(await pgRows("redis-down")).toEqual({ g: 100 });
      await cp.close();
    } finally {
      logged.mockRestore();
    }
    // One outage, a hundred failed acks: a line per burst, not one per ack.
    expect(errors.length).toBeLessThan(10);
  });

  it("a process that opens, acks and closes exits by itself", async () => {
    const dist = fileURLToPath(new URL("../../dist/src/consumer/external.js", import.meta.url));
    const script = `
      const { ExternalCheckpoints } = await import(${JSON.stringify(dist)});
      const cp = await ExternalCheckpoints.open({ postgresUrl: process.argv[1], redisUrl: process.argv[2], flushIntervalMs: 10 });
      cp.write("exit-stream", "g", 3);
      await cp.close();`;
    await run(process.execPath, ["--input-type=module", "-e", script, pg.url, redisServer.url], { timeout: 30_000 });
    expect(await pgRows("exit-stream")).toEqual({ g: 3 });
  });
});
