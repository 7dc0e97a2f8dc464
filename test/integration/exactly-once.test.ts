// Exactly-once effects (src/client/exactly-once.ts) against a real server and
// the run's private PostgreSQL: a consumer child (helpers/exactly-once-child.mjs)
// is killed -9 again and again while it applies events' effects, and every
// event's effect is there exactly once. The same kills of a consumer that
// commits and then acks, without the helper, leave a duplicate. Each test
// has its own schema and stream.
import { describe, it, expect, beforeAll, afterAll, inject } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { Ticker, processExactlyOnce, ensureSchema, TickerError, type ConsumedEvent, type ExactlyOnceOptions } from "../../src/client/index.js";
import { startServer, type TestServer } from "../helpers/server.js";
import { rng } from "../helpers/rng.js";

const CHILD = fileURLToPath(new URL("../helpers/exactly-once-child.mjs", import.meta.url));
const GROUP = "billing";
/** A child that has not reached its kill point by then is stuck. */
const CHILD_MS_MAX = 20_000;

let server: TestServer;
let ticker: Ticker;
let sql: postgres.Sql;
let schemas = 0;

beforeAll(async () => {
  server = await startServer();
  ticker = new Ticker({ url: server.url });
  sql = postgres(inject("postgresUrl"), { max: 4, onnotice: () => {} });
});

afterAll(async () => {
  ticker?.close();
  await sql?.end();
  await server?.kill9();
});

/** A fresh schema with the effect's tables; returns its name. */
async function freshSchema(): Promise<string> {
  const schema = `eo_${process.pid}_${++schemas}`;
  await sql`create schema ${sql(schema)}`;
  await sql`create table ${sql(`${schema}.effects`)} (stream text not null, seq bigint not null, amount bigint not null)`;
  await sql`create table ${sql(`${schema}.balance`)} (total bigint not null)`;
  await sql`insert into ${sql(`${schema}.balance`)} values (0)`;
  return schema;
}

/** Publishes `n` events {amount} through a producer; returns the amounts by seq (index 0 is seq 1). */
async function publishAmounts(stream: string, n: number, seed: number): Promise<number[]> {
  const random = rng(seed);
  const amounts = Array.from({ length: n }, () => 1 + Math.floor(random() * 1000));
  const producer = ticker.producer();
  for (const amount of amounts) await producer.send(stream, { type: "charge", payload: { amount } });
  await producer.close();
  // No checkpoint yet means "latest": at 0 the group starts at seq 1, and every later start resumes after its acks.
  await ticker.checkpoints.set(stream, GROUP, 0);
  return amounts;
}

type Line = { committed?: number; processed?: number; skipped?: number; paused?: number };
type Pause = { at: "none" } | { at: "handler" | "ack"; seq: number };

/** A consumer child; `lines` are its JSON lines so far. It is killed -9 as soon as a line makes `until` true, or `delayMs` after. */
function startChild(
  stream: string,
  schema: string,
  mode: "helper" | "naive",
  batchEvents: number,
  pause: Pause,
  until?: (line: Line) => boolean,
  delayMs = -1,
) {
  const pauseArg = pause.at === "none" ? "none" : `${pause.at}:${pause.seq}`;
  const args = [CHILD, server.url, stream, GROUP, inject("postgresUrl"), schema, mode, String(batchEvents), pauseArg];
  const proc: ChildProcess = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
  const lines: Line[] = [];
  let buf = "";
  let killed = false;
  proc.stdout?.on("data", (d: Buffer) => {
    buf += d.toString();
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      const line = JSON.parse(buf.slice(0, nl)) as Line;
      lines.push(line);
      buf = buf.slice(nl + 1);
      if (!killed && until?.(line)) {
        if (delayMs < 0) kill();
        else setTimeout(kill, delayMs);
      }
    }
  });
  const gone = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  const kill = () => {
    killed = true;
    proc.kill("SIGKILL");
  };
  const kill9 = async () => {
    kill();
    await gone;
  };
  return { lines, kill9, gone, killed: () => killed };
}

/** Waits until the child is gone and checks that it was the test's kill, not a crash of its own. */
async function endsKilled(child: ReturnType<typeof startChild>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, CHILD_MS_MAX)));
  await Promise.race([child.gone, late]);
  clearTimeout(timer);
  const wasKilled = child.killed();
  await child.kill9();
  expect(wasKilled).toBe(true);
}

async function effectsOf(schema: string) {
  const rows = await sql<{ seq: string; n: string }[]>`select seq, count(*) as n from ${sql(`${schema}.effects`)} group by seq order by seq`;
  const [{ total }] = await sql<{ total: string }[]>`select total from ${sql(`${schema}.balance`)}`;
  return { perSeq: rows.map((r) => [Number(r.seq), Number(r.n)]), total: Number(total) };
}

/** A client whose unqualified names (the effect's tables, the default markers' table) are in `schema`. */
const schemaSql = (schema: string) => postgres(inject("postgresUrl"), { max: 2, onnotice: () => {}, connection: { search_path: schema } });

async function effect(tx: postgres.TransactionSql, stream: string, e: ConsumedEvent): Promise<void> {
  const { amount } = e.payload as { amount: number };
  await tx`insert into effects (stream, seq, amount) values (${stream}, ${e.seq}, ${amount})`;
  await tx`update balance set total = total + ${amount}`;
}

/** Runs the helper in this process until the group has no lag, then stops it through its signal. */
async function runUntilDone(
  stream: string,
  db: postgres.Sql,
  options: ExactlyOnceOptions,
  consumeOptions: { maxAttempts?: number },
  handler: (e: ConsumedEvent, tx: postgres.TransactionSql) => Promise<void>,
) {
  const stop = new AbortController();
  const run = processExactlyOnce(ticker.consume(stream, { group: GROUP, ...consumeOptions }), db, handler, { ...options, signal: stop.signal });
  try {
    await expect.poll(async () => (await ticker.lag(stream, GROUP)).lag, { timeout: 20_000, interval: 50 }).toBe(0);
  } finally {
    stop.abort();
  }
  return run;
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const once = (n: number) => Array.from({ length: n }, (_, i) => [i + 1, 1]);

describe("exactly-once effects", () => {
  it("a consumer killed -9 seven times (in a handler, between commit and ack, at random) applies every event's effect exactly once", async () => {
    const N = 2000;
    const seed = 1313;
    const random = rng(seed);
    const stream = `eo-kills-${seed}`;
    const schema = await freshSchema();
    const amounts = await publishAmounts(stream, N, seed);
    // Where each kill lands: in an open transaction, after a commit and before its ack, or wherever the timer falls.
    const kinds = ["handler", "ack", "random", "handler", "ack", "random", "random"] as const;
    // Short of the end: a random kill lands a few ms after its target, and the events must not all be done by then.
    const targets = kinds.map(() => 1 + Math.floor(random() * N * 0.9)).sort((a, b) => a - b);
    let skipped = 0;
    for (let k = 0; k < kinds.length; k++) {
      const kind = kinds[k];
      const target = targets[k];
      const batchEvents = 1 + Math.floor(random() * 50);
      const child =
        kind === "random"
          ? startChild(stream, schema, "helper", batchEvents, { at: "none" }, (l) => (l.committed ?? 0) >= target, Math.floor(random() * 4))
          : startChild(stream, schema, "helper", batchEvents, { at: kind, seq: target }, (l) => l.paused !== undefined);
      await endsKilled(child);
      skipped += sum(child.lines.map((l) => l.skipped ?? 0));
      const { perSeq } = await effectsOf(schema);
      // Killed before the end, and never a second effect of one event.
      expect(perSeq.length).toBeLessThan(N);
      expect(perSeq.filter(([, n]) => n !== 1)).toEqual([]);
    }
    const last = startChild(stream, schema, "helper", 100, { at: "none" });
    try {
      await expect.poll(async () => (await ticker.lag(stream, GROUP)).lag, { timeout: 20_000, interval: 50 }).toBe(0);
    } finally {
      await last.kill9();
    }
    skipped += sum(last.lines.map((l) => l.skipped ?? 0));
    const { perSeq, total } = await effectsOf(schema);
    expect(perSeq).toEqual(once(N));
    expect(total).toBe(sum(amounts));
    const [{ n }] = await sql<{ n: string }[]>`select count(*) as n from ${sql(`${schema}.ticker_processed_events`)} where stream = ${stream}`;
    expect(Number(n)).toBe(N);
    // The kills between commit and ack left committed events unacked: they came again and were skipped.
    expect(skipped).toBeGreaterThanOrEqual(2);
  });

  it("without the helper, the same kill between the effect's commit and the ack applies that event twice", async () => {
    const N = 200;
    const K = 120;
    const stream = "eo-naive";
    const schema = await freshSchema();
    const amounts = await publishAmounts(stream, N, 7);
    const first = startChild(stream, schema, "naive", 1, { at: "ack", seq: K }, (l) => l.paused !== undefined);
    await endsKilled(first);
    expect(first.lines.at(-1)).toEqual({ paused: K });
    const second = startChild(stream, schema, "naive", 1, { at: "none" });
    try {
      await expect.poll(async () => (await ticker.lag(stream, GROUP)).lag, { timeout: 20_000, interval: 50 }).toBe(0);
    } finally {
      await second.kill9();
    }
    const { perSeq, total } = await effectsOf(schema);
    // K was committed and never acked, so it came again and ran again (and maybe a few acked events before it whose ack was still in flight).
    const twice = perSeq.filter(([, n]) => n > 1).map(([seq]) => seq);
    expect(twice).toContain(K);
    expect(twice.every((seq) => seq <= K)).toBe(true);
    expect(total).toBeGreaterThan(sum(amounts));
  });

  it("a handler error under nack commits the events before it and nacks it; after max_attempts it is dead-lettered and the others run once", async () => {
    const stream = "eo-nack";
    const schema = await freshSchema();
    const amounts = await publishAmounts(stream, 40, 3);
    const db = schemaSql(schema);
    const tried: number[] = [];
    const result = await runUntilDone(stream, db, { batchEvents: 10, onError: "nack" }, { maxAttempts: 2 }, async (e, tx) => {
      if (e.seq === 5) {
        tried.push(e.seq);
        throw new Error("no such account");
      }
      await effect(tx, stream, e);
    });
    expect(tried).toEqual([5, 5]);
    expect(result).toEqual({ processed: 39, skipped: 0, nacked: 2 });
    const { perSeq, total } = await effectsOf(schema);
    expect(perSeq).toEqual(once(40).filter(([seq]) => seq !== 5));
    expect(total).toBe(sum(amounts) - amounts[4]);
    const letters = [];
    for await (const l of ticker.dlq.list(stream)) letters.push(l.payload as { seq?: number; reason?: string; event?: { seq?: number } });
    expect(letters).toHaveLength(1);
    expect(JSON.stringify(letters[0])).toContain("no such account");
    await db.end();
  });

  it("a handler error under stop rejects with it, rolls its batch back whole and leaves it unacked; the next run resumes there", async () => {
    const stream = "eo-stop";
    const schema = await freshSchema();
    const amounts = await publishAmounts(stream, 30, 4);
    const db = schemaSql(schema);
    const boom = new Error("boom");
    const sub = ticker.consume(stream, { group: GROUP });
    const failing = processExactlyOnce(
      sub,
      db,
      async (e, tx) => {
        await effect(tx, stream, e);
        if (e.seq === 17) throw boom;
      },
      { batchEvents: 10 },
    );
    await expect(failing).rejects.toBe(boom);
    // The batch 11..20 rolled back: 1..10 are there, nothing after.
    expect((await effectsOf(schema)).perSeq).toEqual(once(10));
    expect(await sub.next()).toEqual({ value: undefined, done: true });
    await expect.poll(async () => (await ticker.lag(stream, GROUP)).lag).toBe(20);
    const result = await runUntilDone(stream, db, { batchEvents: 10 }, {}, (e, tx) => effect(tx, stream, e));
    expect(result).toEqual({ processed: 20, skipped: 0, nacked: 0 });
    const { perSeq, total } = await effectsOf(schema);
    expect(perSeq).toEqual(once(30));
    expect(total).toBe(sum(amounts));
    await db.end();
  });

  it('key "idempotency_key": an event published again under a new seq (past the dedup window) is skipped; an event without a key is refused', async () => {
    const stream = "eo-keys";
    await ticker.streams.put(stream, { dedup_window_ms: 0 });
    const schema = await freshSchema();
    const db = schemaSql(schema);
    const keyed = (i: number) => ({ type: "charge", idempotency_key: `order-${i}`, payload: { amount: i } });
    // Seqs 1..10, then orders 3 and 4 again as seqs 11 and 12 (a producer resending its outbox; in a request of its own, since
    // the server squeezes repeated keys out of one request whatever the window), then seq 13 with no key.
    await ticker.publish(
      stream,
      Array.from({ length: 10 }, (_, i) => keyed(i + 1)),
    );
    await ticker.publish(stream, [keyed(3), keyed(4), { type: "charge", payload: { amount: 1000 } }]);
    await ticker.checkpoints.set(stream, GROUP, 0);
    const refused: unknown[] = [];
    const onError: ExactlyOnceOptions["onError"] = (error) => {
      refused.push(error);
      return "nack";
    };
    const result = await runUntilDone(stream, db, { key: "idempotency_key", onError }, { maxAttempts: 1 }, (e, tx) => effect(tx, stream, e));
    expect(result).toEqual({ processed: 10, skipped: 2, nacked: 1 });
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ code: "invalid_event" });
    const { perSeq, total } = await effectsOf(schema);
    expect(perSeq).toEqual(once(10));
    expect(total).toBe(55);
    const markers = await db<{ idempotency_key: string; seq: string }[]>`select idempotency_key, seq from ticker_processed_keys order by seq`;
    expect(markers.map((m) => [m.idempotency_key, Number(m.seq)])).toEqual(Array.from({ length: 10 }, (_, i) => [`order-${i + 1}`, i + 1]));
    await db.end();
  });

  it("a table name that is not a plain identifier, a subscription without a group and a bad batchEvents are refused before any SQL", async () => {
    const db = schemaSql("public");
    for (const table of ['x"; drop table effects; --', "Upper", "a.b.c", "", "1abc", "a".repeat(64)]) {
      await expect(ensureSchema(db, { table })).rejects.toMatchObject({ code: "invalid_parameter" });
      const sub = ticker.consume("eo-refusals", { group: GROUP });
      await expect(processExactlyOnce(sub, db, async () => {}, { table })).rejects.toMatchObject({ code: "invalid_parameter" });
    }
    for (const batchEvents of [0, 1.5, 10_001]) {
      await expect(processExactlyOnce(ticker.consume("eo-refusals", { group: GROUP }), db, async () => {}, { batchEvents })).rejects.toBeInstanceOf(
        TickerError,
      );
    }
    const tail = ticker.consume("eo-refusals");
    await expect(processExactlyOnce(tail, db, async () => {})).rejects.toMatchObject({ code: "invalid_parameter" });
    await db.end();
  });
});
