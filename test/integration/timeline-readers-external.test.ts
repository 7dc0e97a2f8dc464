// Timeline reader positions in PostgreSQL and Redis (src/timeline/
// external-readers.ts), against the private servers the test setup starts:
// Redis has a position at once, PostgreSQL after the flush, the newest wins
// on load, a late older write never moves a reader back, a deleted
// timeline's positions go from both; and a server killed -9 whose data dir
// lost its readers' files gets them back from those stores.
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { Redis } from "ioredis";
import { migrate } from "../../src/consumer/schema.js";
import { CursorSigner } from "../../src/timeline/cursor.js";
import { ExternalReaders, type ExternalReadersOptions } from "../../src/timeline/external-readers.js";
import { NamedTimelines } from "../../src/timeline/names.js";
import { READERS_FILE } from "../../src/timeline/readers-log.js";
import { ReaderPositions } from "../../src/timeline/readers.js";
import { api, removeDir, startServer, tempDataDir } from "../helpers/server.js";

const pgUrl = inject("postgresUrl");
const redisUrl = inject("redisUrl");
/** Long enough that no timer flush happens inside a test unless it asks for one. */
const FLUSH_NEVER_MS = 3_600_000;
const JSON_CT = { "content-type": "application/json" };
const SECRET = "external-readers-test-secret-0123456789";

let sql: postgres.Sql;
let redis: Redis;
const opened: ExternalReaders[] = [];
const dirs: string[] = [];

beforeAll(async () => {
  await migrate(pgUrl);
  sql = postgres(pgUrl, { max: 1, onnotice: () => {} });
  redis = new Redis(redisUrl);
});

afterAll(async () => {
  await Promise.allSettled(opened.map((e) => e.close()));
  await Promise.allSettled([sql?.end(), redis?.quit()]);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const unique = () => `tl-${randomUUID().slice(0, 8)}`;

async function open(opts: Partial<ExternalReadersOptions> & { postgres?: boolean; redis?: boolean } = {}) {
  const { postgres: usePg = true, redis: useRedis = true, ...rest } = opts;
  const e = await ExternalReaders.open({
    postgresUrl: usePg ? pgUrl : undefined,
    redisUrl: useRedis ? redisUrl : undefined,
    flushIntervalMs: FLUSH_NEVER_MS,
    keyPrefix: `${unique()}:`,
    ...rest,
  });
  opened.push(e);
  return e;
}

const pgRows = async (timeline: string) =>
  Object.fromEntries(
    (
      await sql<{ reader: string; cursor: string; updated_at_ms: string }[]>`
      select reader, cursor, updated_at_ms from ticker_timeline_readers where timeline = ${timeline}`
    ).map((r) => [r.reader, `${r.cursor}@${r.updated_at_ms}`]),
  );

describe("reader positions in PostgreSQL and Redis", () => {
  it("a position is in Redis at once and in PostgreSQL with the flush; load gives the newest", async () => {
    const prefix = `${unique()}:`;
    const e = await open({ keyPrefix: prefix });
    const tl = unique();
    e.write(tl, "r1", { cursor: "AAAA", updatedAt: 100 });
    await expect.poll(() => redis.hget(`${prefix}tl:${tl}`, "r1")).toBe("100:AAAA");
    expect(await pgRows(tl)).toEqual({});
    await e.flush();
    expect(await pgRows(tl)).toEqual({ r1: "AAAA@100" });
    e.write(tl, "r1", { cursor: "BBBB", updatedAt: 200 });
    expect(Object.fromEntries(await e.load(tl))).toEqual({ r1: { cursor: "BBBB", updatedAt: 200 } });
  });

  it("a late write older than what PostgreSQL holds does not move the reader back", async () => {
    const e = await open({ redis: false });
    const tl = unique();
    e.write(tl, "r1", { cursor: "NEWER", updatedAt: 500 });
    await e.flush();
    e.write(tl, "r1", { cursor: "OLDER", updatedAt: 400 });
    await e.flush();
    expect(await pgRows(tl)).toEqual({ r1: "NEWER@500" });
  });

  it("deleting a timeline's positions empties both stores, also what was not flushed yet", async () => {
    const prefix = `${unique()}:`;
    const e = await open({ keyPrefix: prefix });
    const tl = unique();
    e.write(tl, "r1", { cursor: "AAAA", updatedAt: 1 });
    await e.flush();
    e.write(tl, "r2", { cursor: "BBBB", updatedAt: 2 });
    await e.deleteTimeline(tl);
    await e.flush();
    expect(await pgRows(tl)).toEqual({});
    expect(await redis.exists(`${prefix}tl:${tl}`)).toBe(0);
    expect((await e.load(tl)).size).toBe(0);
  });

  it("with Redis alone, and with PostgreSQL alone, positions load back in a new process", async () => {
    for (const which of [{ postgres: false }, { redis: false }]) {
      const prefix = `${unique()}:`;
      const tl = unique();
      const a = await open({ ...which, keyPrefix: prefix });
      a.write(tl, "r1", { cursor: "AAAA", updatedAt: 7 });
      await a.close();
      const b = await open({ ...which, keyPrefix: prefix });
      expect(Object.fromEntries(await b.load(tl))).toEqual({ r1: { cursor: "AAAA", updatedAt: 7 } });
    }
  });

  it("a data dir without the readers' file gets them from the external stores", async () => {
    const prefix = `${unique()}:`;
    const dataDir = mkdtempSync(join(tmpdir(), "ticker-ext-readers-"));
    dirs.push(dataDir);
    const names = NamedTimelines.open(dataDir, 10);
    const t = (await names.put(unique(), ["a"], 1000)).timeline;
    const e1 = await open({ keyPrefix: prefix });
    await new ReaderPositions(names, 10, e1).put(t, "kept", "KEPT", 2000);
    await e1.close();
    rmSync(join(names.dirOf(t.name), READERS_FILE));
    const reopened = NamedTimelines.open(dataDir, 10);
    const readers = new ReaderPositions(reopened, 10, await open({ keyPrefix: prefix }));
    expect(await readers.get(reopened.get(t.name)!, "kept")).toEqual({ timeline: t.name, reader: "kept", cursor: "KEPT", updated_at: 2000 });
  });

  it("the newer of the data dir's and the external stores' position wins; one older than the stream set is not loaded", async () => {
    const prefix = `${unique()}:`;
    const dataDir = mkdtempSync(join(tmpdir(), "ticker-ext-readers-"));
    dirs.push(dataDir);
    const names = NamedTimelines.open(dataDir, 10);
    const t = (await names.put(unique(), ["a"], 1000)).timeline;
    const e1 = await open({ keyPrefix: prefix });
    const both = new ReaderPositions(names, 10, e1);
    await both.put(t, "local-newer", "EXT", 2000);
    await both.put(t, "external-newer", "LOCAL", 2000);
    await e1.close();
    // Without the stores: only the data dir moves on.
    await new ReaderPositions(names, 10, null).put(t, "local-newer", "LOCAL", 3000);
    // Behind the data dir's back: a newer position, and one older than the timeline's set.
    await redis.hset(`${prefix}tl:${t.name}`, "external-newer", "2500:EXT", "stale", "999:STALE");
    const reopened = NamedTimelines.open(dataDir, 10);
    const t2 = reopened.get(t.name)!;
    const readers = new ReaderPositions(reopened, 10, await open({ keyPrefix: prefix }));
    expect((await readers.get(t2, "local-newer"))?.cursor).toBe("LOCAL");
    expect((await readers.get(t2, "external-newer"))?.cursor).toBe("EXT");
    expect(await readers.get(t2, "stale")).toBeNull();
  });
});

describe("a server with PostgreSQL and Redis", () => {
  it("kill -9, readers' files gone: positions come back from Redis and PostgreSQL", async () => {
    const dataDir = tempDataDir();
    const prefix = `${unique()}:`;
    const args = ["--postgres-url", pgUrl, "--redis-url", redisUrl, "--redis-key-prefix", prefix, "--checkpoint-flush-interval-ms", "100"];
    args.push("--timeline-cursor-secret", SECRET);
    const tl = unique();
    const cursor = CursorSigner.open(tempDataDir(), { secret: SECRET, previousSecret: null, graceMs: 0 }).encode(["ext-a", "ext-b"], {
      direction: "forward",
      seqs: [3, 4],
    });
    let s = await startServer({ dataDir, args });
    try {
      for (const stream of ["ext-a", "ext-b"]) expect((await api(`${s.url}/v1/streams/${stream}`, "PUT", {}, JSON_CT)).status).toBe(201);
      expect((await api(`${s.url}/v1/timelines/${tl}`, "PUT", { streams: ["ext-b", "ext-a"] })).status).toBe(201);
      const put = await api(`${s.url}/v1/timelines/${tl}/readers/phone`, "PUT", { cursor });
      expect(put.status).toBe(201);
      await expect.poll(() => redis.hget(`${prefix}tl:${tl}`, "phone")).toBe(`${put.json.updated_at}:${cursor}`);
      await expect.poll(() => pgRows(tl)).toEqual({ phone: `${cursor}@${put.json.updated_at}` });
      await s.kill9();
      const names = NamedTimelines.open(dataDir, 10);
      rmSync(join(names.dirOf(tl), READERS_FILE));
      s = await startServer({ dataDir, args });
      const got = await api(`${s.url}/v1/timelines/${tl}/readers/phone`, "GET");
      expect(got.status).toBe(200);
      expect(got.json).toEqual({ timeline: tl, reader: "phone", cursor, updated_at: put.json.updated_at });
      // Deleting the timeline takes its positions out of both stores.
      expect((await api(`${s.url}/v1/timelines/${tl}`, "DELETE")).status).toBe(204);
      expect(await pgRows(tl)).toEqual({});
      expect(await redis.exists(`${prefix}tl:${tl}`)).toBe(0);
    } finally {
      await s.stop();
      removeDir(dataDir);
    }
  });
});
