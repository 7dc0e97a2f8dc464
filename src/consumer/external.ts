// Consumer-group checkpoints kept outside the data directory: PostgreSQL is the
// durable copy, Redis the fast one. An ack sets Redis at once but only marks the
// (stream, group) dirty for PostgreSQL; a timer writes every dirty checkpoint in
// one upsert, so PostgreSQL sees one statement per flush interval however fast
// consumers ack. A crash loses at most one interval of PostgreSQL writes, and a
// consumer that resumes from an older checkpoint is redelivered, never skipped.
// Either store may be configured alone.
import postgres from "postgres";
import { Redis } from "ioredis";
import { logger } from "../logger.js";

export interface ExternalCheckpointOptions {
  postgresUrl?: string;
  redisUrl?: string;
  /** How often dirty checkpoints are written to PostgreSQL; default 1000. */
  flushIntervalMs?: number;
  /** Prefix of every Redis key; default "ticker:". */
  keyPrefix?: string;
}

/** stream → group → seq */
type CheckpointMap = Map<string, Map<string, number>>;

const FLUSH_INTERVAL_MS_DEFAULT = 1000;
const KEY_PREFIX_DEFAULT = "ticker:";
/** Streams per Redis pipeline in load(): bounds one reply batch, not the call. */
const LOAD_PIPELINE_STREAMS_MAX = 1000;
/** One connection flushes while the other serves load(); more buys nothing. */
const PG_CONNECTIONS_MAX = 2;
/** Seconds; a flush every second keeps a connection warm, an idle one is let go. */
const PG_IDLE_TIMEOUT_S = 5;
const PG_CLOSE_TIMEOUT_S = 5;
/** Node turns a longer setInterval delay into 1 ms, a flush per millisecond. */
const TIMER_MS_MAX = 2 ** 31 - 1;

export class ExternalCheckpoints {
  private readonly sql: postgres.Sql | null;
  private readonly redis: Redis | null;
  private readonly keyPrefix: string;
  private readonly timer: NodeJS.Timeout | null;
  /** Acks not yet in PostgreSQL; one entry per (stream, group), the last ack. */
  private dirty: CheckpointMap = new Map();
  /** The batch an upsert is writing right now; still unflushed until it commits. */
  private flushing: CheckpointMap | null = null;
  /** Streams whose PostgreSQL delete is queued: a flush ahead of it must not write their newer acks. */
  private readonly deletesPending = new Map<string, number>();
  /** PostgreSQL writes run one at a time so a delete and an upsert never cross. */
  private pgTail: Promise<unknown> = Promise.resolve();
  private timerFlush: Promise<void> | null = null;
  private closed = false;
  private closing: Promise<void> | null = null;
  private readonly redisErrors = new ErrorBurst("external checkpoints: redis");
  private readonly pgErrors = new ErrorBurst("external checkpoints: postgres flush");

  private constructor(sql: postgres.Sql | null, redis: Redis | null, opts: ExternalCheckpointOptions) {
    this.sql = sql;
    this.redis = redis;
    this.keyPrefix = opts.keyPrefix ?? KEY_PREFIX_DEFAULT;
    const intervalMs = opts.flushIntervalMs ?? FLUSH_INTERVAL_MS_DEFAULT;
    // Without PostgreSQL nothing is ever dirty; with it, the timer must not keep the process alive.
    this.timer = sql ? setInterval(this.onTimer, intervalMs).unref() : null;
    redis?.on("error", this.redisErrors.fail);
    redis?.on("ready", this.redisErrors.ok);
  }

  /** Connects to the configured stores and checks both answer. Does not migrate. */
  static async open(opts: ExternalCheckpointOptions): Promise<ExternalCheckpoints> {
    if (!opts.postgresUrl && !opts.redisUrl) throw new Error("external checkpoints need a postgresUrl, a redisUrl, or both");
    const intervalMs = opts.flushIntervalMs ?? FLUSH_INTERVAL_MS_DEFAULT;
    if (!(intervalMs > 0 && intervalMs <= TIMER_MS_MAX)) throw new RangeError(`flushIntervalMs must be in (0, ${TIMER_MS_MAX}], got ${intervalMs}`);
    const sql = opts.postgresUrl ? connectPostgres(opts.postgresUrl) : null;
    const redis = opts.redisUrl ? connectRedis(opts.redisUrl) : null;
    try {
      await Promise.all([sql && sql`select 1`, redis?.ping()]);
      return new ExternalCheckpoints(sql, redis, opts);
    } catch (err) {
      await endClients(sql, redis);
      throw err;
    }
  }

  /** The per-ack path: no awaiting, no query; Redis failures are logged, never thrown. */
  write(stream: string, group: string, seq: number): void {
    if (this.closed) throw new Error("external checkpoints: write after close");
    assertSeq(seq, stream, group);
    this.redis?.hset(this.redisKey(stream), group, String(seq)).then(this.redisErrors.ok, this.redisErrors.fail);
    if (this.sql) setCheckpoint(this.dirty, stream, group, seq);
  }

  /**
   * Every checkpoint of `streams`, each stream present (an empty map if it has
   * none). Per (stream, group) the newest source wins: this process's unflushed
   * acks, then Redis, then PostgreSQL. If Redis fails while PostgreSQL is
   * configured the PostgreSQL values are used (at most one flush interval old).
   */
  async load(streams: string[]): Promise<CheckpointMap> {
    const unique = [...new Set(streams)];
    const [durable, cached] = await Promise.all([this.loadPostgres(unique), this.loadRedisOrNothing(unique)]);
    const result: CheckpointMap = new Map(unique.map((s) => [s, new Map<string, number>()]));
    for (const layer of [durable, cached, this.flushing, this.dirty]) {
      if (layer) overlay(result, layer);
    }
    return result;
  }

  /** Writes every dirty checkpoint to PostgreSQL in one upsert; rejects if it fails (the batch stays dirty). */
  flush(): Promise<void> {
    return this.serially(() => this.flushDirty());
  }

  /** Forgets every checkpoint of a deleted stream, in both stores and in the dirty set. */
  async deleteStream(stream: string): Promise<void> {
    this.dirty.delete(stream);
    this.flushing?.delete(stream);
    // Sent now, so it lands before any later write() of the same stream on this connection.
    const redisDone = this.redis?.del(this.redisKey(stream));
    const sql = this.sql;
    let pgDone: Promise<unknown> | undefined;
    if (sql) {
      this.deletesPending.set(stream, (this.deletesPending.get(stream) ?? 0) + 1);
      pgDone = this.serially(() => sql`delete from ticker_checkpoints where stream = ${stream}`).finally(() => this.deleteDone(stream));
    }
    await Promise.all([redisDone, pgDone]);
  }

  /** Flushes, then ends both clients; nothing of this object keeps the process alive afterwards. */
  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    try {
      await this.flush();
    } finally {
      await endClients(this.sql, this.redis);
    }
  }

  private async flushDirty(): Promise<void> {
    const sql = this.sql;
    if (!sql || this.dirty.size === 0) return;
    const batch = this.takeDirty();
    const rows = columns(batch);
    if (rows.streams.length === 0) return;
    this.flushing = batch;
    try {
      // unnest: one statement and three parameters however many rows, far from the 65,535-parameter limit.
      await sql`
        insert into ticker_checkpoints (stream, group_name, seq)
        select * from unnest(${rows.streams}::text[], ${rows.groups}::text[], ${rows.seqs}::bigint[])
        on conflict (stream, group_name) do update set seq = excluded.seq, updated_at = now()`;
    } catch (err) {
      this.requeue(batch);
      throw err;
    } finally {
      this.flushing = null;
    }
  }

  /** Moves the dirty set out for a flush, except streams with a delete still queued behind it. */
  private takeDirty(): CheckpointMap {
    const batch = this.dirty;
    this.dirty = new Map();
    for (const stream of this.deletesPending.keys()) {
      const held = batch.get(stream);
      if (!held) continue;
      batch.delete(stream);
      this.dirty.set(stream, held);
    }
    return batch;
  }

  /** A failed batch goes back, except where a newer ack has replaced it meanwhile. */
  private requeue(batch: CheckpointMap): void {
    for (const [stream, groups] of batch) {
      for (const [group, seq] of groups) {
        if (this.dirty.get(stream)?.has(group)) continue;
        setCheckpoint(this.dirty, stream, group, seq);
      }
    }
  }

  private async loadPostgres(streams: string[]): Promise<CheckpointMap | null> {
    if (!this.sql || streams.length === 0) return null;
    const rows = await this.sql<{ stream: string; group_name: string; seq: string }[]>`
      select stream, group_name, seq from ticker_checkpoints where stream = any(${streams}::text[])`;
    const found: CheckpointMap = new Map();
    for (const row of rows) setCheckpoint(found, row.stream, row.group_name, parseSeq(row.seq, row.stream, row.group_name));
    return found;
  }

  private async loadRedisOrNothing(streams: string[]): Promise<CheckpointMap | null> {
    if (!this.redis || streams.length === 0) return null;
    try {
      return await this.loadRedis(this.redis, streams);
    } catch (err) {
      if (!this.sql) throw err;
      this.redisErrors.fail(err);
      return null;
    }
  }

  private async loadRedis(redis: Redis, streams: string[]): Promise<CheckpointMap> {
    const found: CheckpointMap = new Map();
    for (let at = 0; at < streams.length; at += LOAD_PIPELINE_STREAMS_MAX) {
      const chunk = streams.slice(at, at + LOAD_PIPELINE_STREAMS_MAX);
      const pipeline = redis.pipeline();
      for (const stream of chunk) pipeline.hgetall(this.redisKey(stream));
      const replies = (await pipeline.exec()) ?? [];
      if (replies.length !== chunk.length) throw new Error(`redis pipeline answered ${replies.length} of ${chunk.length} commands`);
      replies.forEach(([err, hash], i) => {
        if (err) throw err;
        const stream = chunk[i];
        for (const [group, value] of Object.entries(hash as Record<string, string>)) {
          setCheckpoint(found, stream, group, parseSeq(value, stream, group));
        }
      });
    }
    return found;
  }

  private serially<T>(op: () => Promise<T>): Promise<T> {
    const result = this.pgTail.then(op);
    this.pgTail = result.catch(() => undefined);
    return result;
  }

  private deleteDone(stream: string): void {
    const left = (this.deletesPending.get(stream) ?? 1) - 1;
    if (left > 0) this.deletesPending.set(stream, left);
    else this.deletesPending.delete(stream);
  }

  /** A slow PostgreSQL must not pile up flushes: a tick is skipped while the last one runs. */
  private readonly onTimer = (): void => {
    if (this.timerFlush || this.closed) return;
    this.timerFlush = this.flush()
      .then(this.pgErrors.ok, this.pgErrors.fail)
      .finally(() => {
        this.timerFlush = null;
      });
  };

  private redisKey(stream: string): string {
    return `${this.keyPrefix}cp:${stream}`;
  }
}

/** The clients and error logging below are shared with src/timeline/external-readers.ts, which keeps reader positions the same way. */
export function connectPostgres(url: string): postgres.Sql {
  return postgres(url, { max: PG_CONNECTIONS_MAX, onnotice: () => {}, idle_timeout: PG_IDLE_TIMEOUT_S });
}

export function connectRedis(url: string): Redis {
  // Two retries, then a command fails: an ack must not wait out a long Redis outage.
  return new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 2, enableAutoPipelining: true });
}

export async function endClients(sql: postgres.Sql | null, redis: Redis | null): Promise<void> {
  await Promise.all([sql?.end({ timeout: PG_CLOSE_TIMEOUT_S }), redis && quitRedis(redis)]);
}

/**
 * QUIT bypasses auto-pipelining and would overtake acks still queued for this
 * tick's pipeline; a PING rides behind them, so its answer means they landed.
 * If Redis is unreachable the socket is just dropped (the acks are in
 * PostgreSQL, or were never durable without it).
 */
async function quitRedis(redis: Redis): Promise<void> {
  try {
    await redis.ping();
    await redis.quit();
  } catch {
    redis.disconnect();
  }
}

function setCheckpoint(map: CheckpointMap, stream: string, group: string, seq: number): void {
  let groups = map.get(stream);
  if (!groups) map.set(stream, (groups = new Map()));
  groups.set(group, seq);
}

/** Copies `layer` over `result`, only for streams `result` asked for. */
function overlay(result: CheckpointMap, layer: CheckpointMap): void {
  for (const [stream, groups] of layer) {
    const into = result.get(stream);
    if (!into) continue;
    for (const [group, seq] of groups) into.set(group, seq);
  }
}

/** The dirty set as three parallel columns for unnest(); a map has each key once, as one upsert requires. */
function columns(batch: CheckpointMap): { streams: string[]; groups: string[]; seqs: string[] } {
  const streams: string[] = [];
  const groups: string[] = [];
  const seqs: string[] = [];
  for (const [stream, byGroup] of batch) {
    for (const [group, seq] of byGroup) {
      streams.push(stream);
      groups.push(group);
      seqs.push(String(seq));
    }
  }
  return { streams, groups, seqs };
}

function assertSeq(seq: number, stream: string, group: string): void {
  if (!Number.isSafeInteger(seq) || seq < 0) throw new RangeError(`checkpoint ${stream}/${group}: seq ${seq} is not a non-negative safe integer`);
}

/** bigint columns and Redis values arrive as decimal strings. */
function parseSeq(text: string, stream: string, group: string): number {
  const seq = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(seq)) throw new Error(`checkpoint ${stream}/${group}: stored seq "${text}" is not a safe integer`);
  return seq;
}

/**
 * Logs the first error of a run of failures and how many followed once the
 * store answers again: an outage during a flood of acks is two lines, not one
 * per ack. Methods are bound once so the per-ack path allocates no closure.
 */
export class ErrorBurst {
  private failures = 0;

  constructor(private readonly what: string) {}

  readonly fail = (err: unknown): void => {
    if (this.failures++ === 0) logger().error({ kind: "external", what: this.what, err }, `${this.what}: ${(err as Error)?.message ?? err}`);
  };

  readonly ok = (): void => {
    if (this.failures === 0) return;
    logger().info({ kind: "external", what: this.what, failures: this.failures }, `${this.what}: recovered after ${this.failures} error(s)`);
    this.failures = 0;
  };
}
