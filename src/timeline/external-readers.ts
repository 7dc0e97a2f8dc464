// Timeline reader positions kept outside the data directory, the way group
// checkpoints are (src/consumer/external.ts): Redis is set at once on every
// write, PostgreSQL gets every changed position in one upsert per flush
// interval. Each position carries its updated_at, and the upsert never
// replaces a newer one, so a write that arrives late cannot move a reader
// back. Loaded lazily by src/timeline/stores.ts, only when postgres_url or
// redis_url is configured.
import type postgres from "postgres";
import type { Redis } from "ioredis";
import { connectPostgres, connectRedis, endClients, ErrorBurst } from "../consumer/external.js";

export interface ExternalReadersOptions {
  postgresUrl?: string;
  redisUrl?: string;
  flushIntervalMs: number;
  /** Prefix of every Redis key: `<prefix>tl:<timeline>` is a hash of reader → "<updated_at ms>:<cursor>". */
  keyPrefix: string;
}

export interface StoredPosition {
  cursor: string;
  updatedAt: number;
}

/** timeline → reader → position */
type PositionMap = Map<string, Map<string, StoredPosition>>;

export class ExternalReaders {
  /** Positions not yet in PostgreSQL; one per (timeline, reader), the newest. */
  private dirty: PositionMap = new Map();
  /** The batch an upsert is writing right now; still unflushed until it commits. */
  private flushing: PositionMap | null = null;
  /** Timelines whose PostgreSQL delete is queued: a flush ahead of it must not write their newer positions. */
  private readonly deletesPending = new Map<string, number>();
  /** PostgreSQL writes run one at a time so a delete and an upsert never cross. */
  private pgTail: Promise<unknown> = Promise.resolve();
  private timerFlush: Promise<void> | null = null;
  private readonly timer: NodeJS.Timeout | null;
  private closing: Promise<void> | null = null;
  private readonly redisErrors = new ErrorBurst("timeline readers: redis");
  private readonly pgErrors = new ErrorBurst("timeline readers: postgres flush");

  private constructor(
    private readonly sql: postgres.Sql | null,
    private readonly redis: Redis | null,
    private readonly keyPrefix: string,
    flushIntervalMs: number,
  ) {
    this.timer = sql ? setInterval(this.onTimer, flushIntervalMs).unref() : null;
    redis?.on("error", this.redisErrors.fail);
    redis?.on("ready", this.redisErrors.ok);
  }

  /** Connects and checks both stores answer. The schema is migrated at start (migrate() in external.ts). */
  static async open(opts: ExternalReadersOptions): Promise<ExternalReaders> {
    if (!opts.postgresUrl && !opts.redisUrl) throw new Error("external reader positions need a postgresUrl, a redisUrl, or both");
    const sql = opts.postgresUrl ? connectPostgres(opts.postgresUrl) : null;
    const redis = opts.redisUrl ? connectRedis(opts.redisUrl) : null;
    try {
      await Promise.all([sql && sql`select 1`, redis?.ping()]);
      return new ExternalReaders(sql, redis, opts.keyPrefix, opts.flushIntervalMs);
    } catch (err) {
      await endClients(sql, redis);
      throw err;
    }
  }

  /** No awaiting: Redis failures are logged, PostgreSQL gets it with the next flush. */
  write(timeline: string, reader: string, p: StoredPosition): void {
    this.redis?.hset(this.redisKey(timeline), reader, `${p.updatedAt}:${p.cursor}`).then(this.redisErrors.ok, this.redisErrors.fail);
    if (this.sql) setPosition(this.dirty, timeline, reader, p);
  }

  /**
   * Every position of a timeline, the newest of PostgreSQL, Redis and what
   * this process has not flushed yet. If Redis fails while PostgreSQL is
   * configured, PostgreSQL's positions are used (at most one flush interval old).
   */
  async load(timeline: string): Promise<Map<string, StoredPosition>> {
    const [durable, cached] = await Promise.all([this.loadPostgres(timeline), this.loadRedisOrNothing(timeline)]);
    const result = new Map<string, StoredPosition>();
    for (const layer of [durable, cached, this.flushing?.get(timeline), this.dirty.get(timeline)]) {
      if (!layer) continue;
      for (const [reader, p] of layer) {
        const had = result.get(reader);
        if (!had || had.updatedAt <= p.updatedAt) result.set(reader, p);
      }
    }
    return result;
  }

  /** Forgets every position of a timeline (deleted, or its stream set changed), in both stores. */
  async deleteTimeline(timeline: string): Promise<void> {
    this.dirty.delete(timeline);
    this.flushing?.delete(timeline);
    const redisDone = this.redis?.del(this.redisKey(timeline));
    const sql = this.sql;
    let pgDone: Promise<unknown> | undefined;
    if (sql) {
      this.deletesPending.set(timeline, (this.deletesPending.get(timeline) ?? 0) + 1);
      pgDone = this.serially(() => sql`delete from ticker_timeline_readers where timeline = ${timeline}`).finally(() => this.deleteDone(timeline));
    }
    await Promise.all([redisDone, pgDone]);
  }

  /** Writes every changed position to PostgreSQL in one upsert; rejects if it fails (the batch stays dirty). */
  flush(): Promise<void> {
    return this.serially(() => this.flushDirty());
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.timer) clearInterval(this.timer);
      try {
        await this.flush();
      } finally {
        await endClients(this.sql, this.redis);
      }
    })();
    return this.closing;
  }

  private async flushDirty(): Promise<void> {
    const sql = this.sql;
    if (!sql || this.dirty.size === 0) return;
    const batch = this.takeDirty();
    const rows = columns(batch);
    if (rows.timelines.length === 0) return;
    this.flushing = batch;
    try {
      // unnest: one statement and four parameters however many rows.
      await sql`
        insert into ticker_timeline_readers (timeline, reader, cursor, updated_at_ms)
        select * from unnest(${rows.timelines}::text[], ${rows.readers}::text[], ${rows.cursors}::text[], ${rows.times}::bigint[])
        on conflict (timeline, reader) do update set cursor = excluded.cursor, updated_at_ms = excluded.updated_at_ms
        where ticker_timeline_readers.updated_at_ms <= excluded.updated_at_ms`;
    } catch (err) {
      this.requeue(batch);
      throw err;
    } finally {
      this.flushing = null;
    }
  }

  /** Moves the dirty set out for a flush, except timelines with a delete still queued behind it. */
  private takeDirty(): PositionMap {
    const batch = this.dirty;
    this.dirty = new Map();
    for (const timeline of this.deletesPending.keys()) {
      const held = batch.get(timeline);
      if (!held) continue;
      batch.delete(timeline);
      this.dirty.set(timeline, held);
    }
    return batch;
  }

  /** A failed batch goes back, except where a newer write has replaced it meanwhile. */
  private requeue(batch: PositionMap): void {
    for (const [timeline, readers] of batch) {
      for (const [reader, p] of readers) {
        if (this.dirty.get(timeline)?.has(reader)) continue;
        setPosition(this.dirty, timeline, reader, p);
      }
    }
  }

  private async loadPostgres(timeline: string): Promise<Map<string, StoredPosition> | null> {
    if (!this.sql) return null;
    const rows = await this.sql<{ reader: string; cursor: string; updated_at_ms: string }[]>`
      select reader, cursor, updated_at_ms from ticker_timeline_readers where timeline = ${timeline}`;
    return new Map(rows.map((r) => [r.reader, { cursor: r.cursor, updatedAt: parseMs(r.updated_at_ms, timeline, r.reader) }]));
  }

  private async loadRedisOrNothing(timeline: string): Promise<Map<string, StoredPosition> | null> {
    if (!this.redis) return null;
    try {
      const hash = await this.redis.hgetall(this.redisKey(timeline));
      const found = new Map<string, StoredPosition>();
      for (const [reader, value] of Object.entries(hash)) {
        // A value this server did not write (no "<ms>:" in front) is not a position.
        const m = /^(\d{1,16}):/.exec(value);
        if (m) found.set(reader, { updatedAt: parseMs(m[1], timeline, reader), cursor: value.slice(m[0].length) });
      }
      return found;
    } catch (err) {
      if (!this.sql) throw err;
      this.redisErrors.fail(err);
      return null;
    }
  }

  private serially<T>(op: () => Promise<T>): Promise<T> {
    const result = this.pgTail.then(op);
    this.pgTail = result.catch(() => undefined);
    return result;
  }

  private deleteDone(timeline: string): void {
    const left = (this.deletesPending.get(timeline) ?? 1) - 1;
    if (left > 0) this.deletesPending.set(timeline, left);
    else this.deletesPending.delete(timeline);
  }

  /** A slow PostgreSQL must not pile up flushes: a tick is skipped while the last one runs. */
  private readonly onTimer = (): void => {
    if (this.timerFlush || this.closing) return;
    this.timerFlush = this.flush()
      .then(this.pgErrors.ok, this.pgErrors.fail)
      .finally(() => {
        this.timerFlush = null;
      });
  };

  private redisKey(timeline: string): string {
    return `${this.keyPrefix}tl:${timeline}`;
  }
}

function setPosition(map: PositionMap, timeline: string, reader: string, p: StoredPosition): void {
  let readers = map.get(timeline);
  if (!readers) map.set(timeline, (readers = new Map()));
  readers.set(reader, p);
}

function columns(batch: PositionMap): { timelines: string[]; readers: string[]; cursors: string[]; times: string[] } {
  const out = { timelines: [] as string[], readers: [] as string[], cursors: [] as string[], times: [] as string[] };
  for (const [timeline, readers] of batch) {
    for (const [reader, p] of readers) {
      out.timelines.push(timeline);
      out.readers.push(reader);
      out.cursors.push(p.cursor);
      out.times.push(String(p.updatedAt));
    }
  }
  return out;
}

/** bigint columns and the Redis value's prefix arrive as decimal strings. */
function parseMs(text: string, timeline: string, reader: string): number {
  const ms = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(ms))
    throw new Error(`reader position ${timeline}/${reader}: stored updated_at "${text}" is not a safe integer`);
  return ms;
}
