// Exactly-once effects for a group consumer whose effects are PostgreSQL
// writes (docs/client.md, "Exactly-once effects"): the inbox pattern. For
// each batch of delivered events one transaction inserts a processed marker
// per event, runs the handler of every event whose marker was not there yet
// with that same transaction, and commits; only then are the events acked.
// A crash before the commit leaves neither markers nor effects, so the events
// come again and run; a crash after it leaves both, so they come again and
// are skipped. The ack is only the server's hint of where to resume.
//
// The client takes `postgres` as a type only: the caller brings its own `sql`.
import type postgres from "postgres";
import type { ConsumedEvent, Subscription } from "./consume.js";
import { TickerError } from "./errors.js";

/** What a processed marker is keyed by, beside the stream and the group. */
export type MarkerKey = "seq" | "idempotency_key";

export interface ExactlyOnceOptions {
  /** The markers' table, `name` or `schema.name` (lower case, digits, `_`). Default by `key`: `ticker_processed_events` or `ticker_processed_keys`. */
  table?: string;
  /** "seq" (default): one effect per seq. "idempotency_key": one effect per key, also when it came under several seqs. */
  key?: MarkerKey;
  /** Most events in one transaction (default 100): those already delivered when a batch starts, never waited for. */
  batchEvents?: number;
  /** A handler error: "stop" (default: reject with it, the batch rolled back and unacked) or "nack" the event (with the error as reason). */
  onError?: ErrorPolicy | ((error: unknown, event: ConsumedEvent) => ErrorPolicy);
  /** Creates the table if missing before the first batch (default true); false when migrations own it. */
  createTable?: boolean;
  /** Stops after the batch in progress, which commits and is acked. */
  signal?: AbortSignal;
  /** After each commit, before its ack: the batch's bounds and how many events ran or were skipped as done already. */
  onCommit?: (batch: CommittedBatch) => void;
}

export type ErrorPolicy = "stop" | "nack";

export interface CommittedBatch {
  first_seq: number;
  last_seq: number;
  processed: number;
  skipped: number;
}

export interface ExactlyOnceResult {
  /** Events whose handler ran in a committed transaction. */
  processed: number;
  /** Events found marked already (redelivered after a crash before the ack). */
  skipped: number;
  /** Events nacked after a handler error. */
  nacked: number;
}

export type Handler<T extends Record<string, unknown>> = (event: ConsumedEvent, tx: postgres.TransactionSql<T>) => Promise<unknown>;

const TABLE_DEFAULT: Record<MarkerKey, string> = { seq: "ticker_processed_events", idempotency_key: "ticker_processed_keys" };
/** A PostgreSQL identifier as it stays unquoted (at most 63 bytes), optionally schema-qualified. */
const TABLE_RULE = /^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$/;
const BATCH_EVENTS_DEFAULT = 100;
/** The server's default window: a subscription never holds more unacked events than its window, so a larger batch never forms. */
const BATCH_EVENTS_MAX = 10_000;
/** The server's cap on a nack reason. */
const NACK_REASON_CHARS_MAX = 1024;

/**
 * Creates the markers' table if it is missing. Two processes may run this at
 * once: a transaction-scoped advisory lock lets one create the table while
 * the other waits and then finds it (a bare `create table if not exists`
 * can fail on that race).
 */
export async function ensureSchema<T extends Record<string, unknown>>(sql: postgres.Sql<T>, opts: { table?: string; key?: MarkerKey } = {}): Promise<void> {
  const key = opts.key ?? "seq";
  const table = tableName(opts.table, key);
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext(${table}))`;
    if (key === "seq")
      await tx`create table if not exists ${tx(table)} (
        stream text not null,
        consumer_group text not null,
        seq bigint not null,
        processed_at timestamptz not null default now(),
        primary key (stream, consumer_group, seq)
      )`;
    else
      await tx`create table if not exists ${tx(table)} (
        stream text not null,
        consumer_group text not null,
        idempotency_key text not null,
        seq bigint not null,
        processed_at timestamptz not null default now(),
        primary key (stream, consumer_group, idempotency_key)
      )`;
  });
}

/**
 * Runs `handler` for each event of `sub` (a group subscription) with its
 * effects and the event's processed marker in one transaction, then acks.
 * Resolves when the subscription ends (closed, or `signal` aborted); rejects
 * with the subscription's error, a database error, a handler error under
 * "stop" or a bad option. In every case the subscription is closed when it
 * returns: the events it held and had not acked come again to the next run.
 */
export async function processExactlyOnce<T extends Record<string, unknown>>(
  sub: Subscription,
  sql: postgres.Sql<T>,
  handler: Handler<T>,
  options: ExactlyOnceOptions = {},
): Promise<ExactlyOnceResult> {
  const signal = options.signal;
  let busy = false;
  const onAbort = () => {
    // Idle: end the wait for events now. Busy: the batch commits and is acked first.
    if (!busy) void sub.close();
  };
  signal?.addEventListener("abort", onAbort);
  try {
    const group = sub.group;
    if (group === undefined)
      throw new TickerError(0, "invalid_parameter", "exactly-once processing needs a group subscription: its acks and markers are the group's");
    const key = options.key ?? "seq";
    const table = tableName(options.table, key);
    const batchEvents = options.batchEvents ?? BATCH_EVENTS_DEFAULT;
    if (!Number.isSafeInteger(batchEvents) || batchEvents < 1 || batchEvents > BATCH_EVENTS_MAX)
      throw new TickerError(0, "invalid_parameter", `batchEvents must be an integer in [1, ${BATCH_EVENTS_MAX}], got ${batchEvents}`);
    const inbox = new Inbox(sub, sql, handler, { ...options, group, key, table });
    if (options.createTable ?? true) await ensureSchema(sql, { table, key });
    while (!signal?.aborted) {
      const first = await sub.next();
      if (first.done) break;
      busy = true;
      const batch = [first.value];
      // Only what is already here: a batch never waits for events to fill it.
      while (batch.length < batchEvents && sub.buffered > 0) {
        const r = await sub.next();
        if (r.done) break;
        batch.push(r.value);
      }
      await inbox.settle(batch);
      busy = false;
    }
    return inbox.result;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    await sub.close();
  }
}

function tableName(table: string | undefined, key: MarkerKey): string {
  if (key !== "seq" && key !== "idempotency_key") throw new TickerError(0, "invalid_parameter", `key is "seq" or "idempotency_key", got ${String(key)}`);
  const name = table ?? TABLE_DEFAULT[key];
  if (!TABLE_RULE.test(name))
    throw new TickerError(
      0,
      "invalid_parameter",
      `table must be a lower-case identifier, optionally schema-qualified (${TABLE_RULE}), got ${JSON.stringify(name)}`,
    );
  return name;
}

/** Where a batch's transaction failed: the handler's error, at that event. */
interface EventFailure {
  index: number;
  error: unknown;
}

class Inbox<T extends Record<string, unknown>> {
  readonly result: ExactlyOnceResult = { processed: 0, skipped: 0, nacked: 0 };

  constructor(
    private readonly sub: Subscription,
    private readonly sql: postgres.Sql<T>,
    private readonly handler: Handler<T>,
    private readonly opts: ExactlyOnceOptions & { group: string; key: MarkerKey; table: string },
  ) {}

  /**
   * Commits the batch, or under "nack" the events before the first that
   * failed (in a new transaction: the first one rolled back whole) and then
   * nacks that one; the nack acks what is below it, and the events after it
   * come again.
   */
  async settle(events: ConsumedEvent[]): Promise<void> {
    let batch = events;
    let failed: { event: ConsumedEvent; error: unknown } | null = null;
    const unkeyed = this.opts.key === "idempotency_key" ? batch.findIndex((e) => e.idempotency_key === undefined) : -1;
    if (unkeyed >= 0) {
      const error = new TickerError(0, "invalid_event", `event ${batch[unkeyed].seq} has no idempotency_key to mark it by`);
      if (this.policy(error, batch[unkeyed]) === "stop") throw error;
      failed = { event: batch[unkeyed], error };
      batch = batch.slice(0, unkeyed);
    }
    while (batch.length > 0) {
      const f = await this.transact(batch);
      if (f === null) break;
      const event = batch[f.index];
      if (this.policy(f.error, event) === "stop") throw f.error;
      failed = { event, error: f.error };
      batch = batch.slice(0, f.index);
    }
    if (failed === null) this.sub.ack(batch[batch.length - 1].seq);
    else {
      this.sub.nack(failed.event.seq, reasonOf(failed.error));
      this.result.nacked++;
    }
  }

  /** One transaction over `batch`: null when it committed, else the event it failed at. Errors of the database itself are thrown. */
  private async transact(events: ConsumedEvent[]): Promise<EventFailure | null> {
    let failure: EventFailure | null = null;
    let processed = 0;
    try {
      await this.sql.begin(async (tx) => {
        const fresh = await this.mark(tx, events);
        for (let i = 0; i < events.length; i++) {
          if (!fresh.has(events[i].seq)) continue;
          try {
            await this.handler(events[i], tx);
          } catch (error) {
            failure = { index: i, error };
            throw error;
          }
          processed++;
        }
      });
    } catch (error) {
      if (failure !== null) return failure;
      throw error;
    }
    this.result.processed += processed;
    this.result.skipped += events.length - processed;
    this.opts.onCommit?.({ first_seq: events[0].seq, last_seq: events[events.length - 1].seq, processed, skipped: events.length - processed });
    return null;
  }

  /**
   * Inserts the batch's markers; returns the seqs whose marker is new. A
   * marker another transaction has inserted and not committed yet (a member
   * that lost the group but still runs) blocks this insert until that one
   * ends, so the same event never runs in two committed transactions.
   */
  private async mark(tx: postgres.TransactionSql<T>, events: ConsumedEvent[]): Promise<Set<number>> {
    const { table, group, key } = this.opts;
    const stream = this.sub.stream;
    const seqs = events.map((e) => e.seq);
    const rows =
      key === "seq"
        ? await tx`insert into ${tx(table)} (stream, consumer_group, seq)
            select ${stream}, ${group}, s from unnest(${seqs}::bigint[]) as u(s)
            on conflict do nothing returning seq`
        : await tx`insert into ${tx(table)} (stream, consumer_group, idempotency_key, seq)
            select ${stream}, ${group}, k, s from unnest(${events.map((e) => e.idempotency_key as string)}::text[], ${seqs}::bigint[]) as u(k, s)
            on conflict do nothing returning seq`;
    return new Set(rows.map((r) => Number(r.seq)));
  }

  private policy(error: unknown, event: ConsumedEvent): ErrorPolicy {
    const p = this.opts.onError ?? "stop";
    return typeof p === "function" ? p(error, event) : p;
  }
}

function reasonOf(error: unknown): string {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return text.slice(0, NACK_REASON_CHARS_MAX);
}
