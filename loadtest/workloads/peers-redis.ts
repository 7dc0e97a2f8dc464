// bench-peers' Redis Streams rows, through ioredis as an application would
// use it: W1 (XADD pipelines), W2 (XRANGE pages), W3 (XREAD BLOCK latency),
// W4 (many keys) and fsync (W1 with appendfsync always), each set on a fresh
// redis-server without persistence or with an AOF.
import { startRedis } from "../../test/harness/redis.js";
import type { ServerProcess } from "../../test/harness/process.js";
import { diskBytes, processMemory } from "../lib/proc.js";
import { int, mib } from "../lib/report.js";
import { BATCH_EVENTS, IN_FLIGHT, PAGE_EVENTS, PAYLOAD_BYTES, W4_EVENTS_PER_STREAM, W4_IN_FLIGHT, W4_STREAMS, type Workload } from "../lib/results.js";
import { within } from "../lib/run.js";
import { PRODUCER_LANES } from "../lib/pacing.js";
import { checkExec, findRedis, IdOrder, IoredisXreadConsumer, redisClient, redisClients, XREAD_COUNT_MAX } from "../systems/redis.js";
import {
  attempt,
  costNote,
  emit,
  emitError,
  IN_FLIGHT_VARIANT,
  latencyMetrics,
  latencyRow,
  measure,
  onFreshServer,
  oncePerSystem,
  payloadTexts,
  rateMetrics,
  REQUEST_TIMEOUT_MS,
  runLanes,
  runNotes,
  STREAM_KEY,
  streamsMetrics,
  W3_RATES,
  W4_PREFIX,
  type Plan,
  type RunOutcome,
  type SystemSpec,
} from "./peers-rows.js";

/** W1: `events` XADDs to one key, pipelines of BATCH_EVENTS, `inFlight` pipelines outstanding on as many connections. */
async function redisPublish(server: ServerProcess, events: number, inFlight: number): Promise<RunOutcome> {
  const pool = payloadTexts();
  const clients = await redisClients(server.port, inFlight);
  try {
    let acked = 0;
    const cost = await measure(server.pid, () =>
      runLanes(clients, events / BATCH_EVENTS, async (r, b) => {
        const p = r.pipeline();
        for (let i = 0; i < BATCH_EVENTS; i++) p.xadd(STREAM_KEY, "*", "p", pool[(b * BATCH_EVENTS + i) % pool.length]);
        checkExec(await within(p.exec(), REQUEST_TIMEOUT_MS, "XADD pipeline"), BATCH_EVENTS);
        acked += BATCH_EVENTS;
      }),
    );
    const len = await clients[0].xlen(STREAM_KEY);
    if (acked !== events || len !== events) throw new Error(`${int(acked)} XADDs answered, XLEN ${int(len)}, expected ${int(events)}`);
    return { cost, check: `XLEN ${int(len)}` };
  } finally {
    for (const c of clients) c.disconnect();
  }
}

/** W2: XRANGE from the start, COUNT PAGE_EVENTS, each page after the last id of the one before (exclusive "(" start, Redis >= 6.2). */
async function redisReplay(server: ServerProcess, events: number): Promise<RunOutcome> {
  const r = await redisClient(server.port);
  try {
    const order = new IdOrder();
    let received = 0;
    let badEntries = 0;
    let pages = 0;
    let start = "-";
    const cost = await measure(server.pid, async () => {
      while (received < events) {
        const page = await within(r.xrange(STREAM_KEY, start, "+", "COUNT", PAGE_EVENTS), REQUEST_TIMEOUT_MS, "XRANGE");
        if (page.length === 0) throw new Error(`empty page after ${int(received)} of ${int(events)} entries`);
        for (const [id, fields] of page) {
          order.see(id);
          if (fields.length !== 2 || fields[1].length !== PAYLOAD_BYTES) badEntries++;
        }
        received += page.length;
        pages++;
        start = `(${page[page.length - 1][0]}`;
      }
    });
    const rest = await r.xrange(STREAM_KEY, start, "+", "COUNT", 1);
    if (received !== events || rest.length !== 0) throw new Error(`read ${int(received)} entries, expected ${int(events)} and then none`);
    if (order.bad > 0 || badEntries > 0) throw new Error(`${order.bad} ids did not rise, ${badEntries} entries were not one ${PAYLOAD_BYTES}-byte field`);
    return { cost, check: `${int(received)} entries in ${pages} pages, ids rising` };
  } finally {
    r.disconnect();
  }
}

/** W4: W4_STREAMS keys, one pipeline of W4_EVENTS_PER_STREAM XADDs each, W4_IN_FLIGHT pipelines outstanding. */
async function redisStreams(server: ServerProcess): Promise<RunOutcome> {
  const pool = payloadTexts();
  const clients = await redisClients(server.port, W4_IN_FLIGHT);
  try {
    const cost = await measure(server.pid, () =>
      runLanes(clients, W4_STREAMS, async (r, s) => {
        const p = r.pipeline();
        for (let i = 0; i < W4_EVENTS_PER_STREAM; i++) p.xadd(`${W4_PREFIX}:${s}`, "*", "p", pool[(s * W4_EVENTS_PER_STREAM + i) % pool.length]);
        checkExec(await within(p.exec(), REQUEST_TIMEOUT_MS, "XADD pipeline"), W4_EVENTS_PER_STREAM);
      }),
    );
    const keys = await clients[0].dbsize();
    const p = clients[0].pipeline();
    for (let s = 0; s < W4_STREAMS; s++) p.xlen(`${W4_PREFIX}:${s}`);
    const lens = await p.exec();
    checkExec(lens, W4_STREAMS);
    const total = lens!.reduce((a, [, n]) => a + (n as number), 0);
    if (keys !== W4_STREAMS || total !== W4_STREAMS * W4_EVENTS_PER_STREAM) throw new Error(`DBSIZE ${keys}, XLENs sum to ${total}`);
    return { cost, check: `DBSIZE ${int(keys)}, XLENs sum to ${int(total)}` };
  } finally {
    for (const c of clients) c.disconnect();
  }
}

export async function runRedis(system: SystemSpec, plan: Plan): Promise<void> {
  const found = await findRedis(runNotes);
  if ("reason" in found) {
    for (const w of plan.workloads) if (w !== "fsync" || system.persistence === "aof-always") emitError(system, w, "", new Error(found.reason));
    return;
  }
  const v = found.version;
  const [major, minor] = v.number.split(".").map(Number);
  if (major < 6 || (major === 6 && minor < 2)) throw new Error(`redis-server ${v.number}: W2 needs XRANGE's exclusive start (6.2 and later)`);
  const takeVersion = oncePerSystem(`redis-server ${v.number} (\`${v.line}\`${v.debian ? `, Debian ${v.debian}` : ""}); `);
  const start = () => startRedis({ persistence: system.persistence });
  const isFsync = system.persistence === "aof-always";
  const w1 = plan.workloads.has("W1") || (isFsync && plan.workloads.has("fsync"));
  const durability =
    system.persistence === "none"
      ? 'no persistence (--save "" --appendonly no)'
      : `appendonly yes, appendfsync ${system.persistence === "aof-always" ? "always (each event loop's writes fsynced before its replies are sent)" : "everysec (fsync in a background thread once a second)"}, no AOF rewrite`;
  const diskNote = (s: ServerProcess) => (system.persistence === "none" ? "" : `; data dir after: ${mib(diskBytes(s.dir)).toFixed(0)} MiB`);

  // The AOF always W1 rows are also the fsync rows; with only "fsync" asked for, a failure is reported there.
  const w1Workload: Workload = plan.workloads.has("W1") ? "W1" : "fsync";
  const w1Row = (s: ServerProcess, variant: string, inFlight: number) =>
    attempt(system, w1Workload, variant, async () => {
      const o = await redisPublish(s, plan.events, inFlight);
      const note = `${takeVersion()}ioredis pipeline() of ${BATCH_EVENTS} XADDs per batch, ${inFlight === 1 ? "1 batch in flight" : `${inFlight} batches in flight over ${inFlight} connections`}; ${durability}; ${costNote(o.cost)}${diskNote(s)}`;
      const metrics = rateMetrics(plan.events, o.cost);
      if (plan.workloads.has("W1")) emit(system, "W1", variant, metrics, o.check, note);
      if (isFsync && plan.workloads.has("fsync")) emit(system, "fsync", variant, metrics, o.check, note);
    });

  if (w1) await onFreshServer(start, system, [[w1Workload, ""]], (s) => w1Row(s, "", 1));
  if (w1 || plan.workloads.has("W2")) {
    const failRows: [Workload, string][] = [
      ...(w1 ? [[w1Workload, IN_FLIGHT_VARIANT(IN_FLIGHT)] as [Workload, string]] : []),
      ...(plan.workloads.has("W2") ? [["W2", ""] as [Workload, string]] : []),
    ];
    await onFreshServer(start, system, failRows, async (s) => {
      // Without W1 the stream is loaded untimed, the way the W1 row would.
      const loaded = w1
        ? await w1Row(s, IN_FLIGHT_VARIANT(IN_FLIGHT), IN_FLIGHT)
        : await attempt(system, "W2", "", async () => void (await redisPublish(s, plan.events, IN_FLIGHT)));
      if (!plan.workloads.has("W2")) return;
      // A failed untimed load is already W2's error row.
      if (!loaded) return w1 ? emitError(system, "W2", "", new Error("no data: W1 did not complete")) : undefined;
      await attempt(system, "W2", "", async () => {
        const o = await redisReplay(s, plan.events);
        emit(
          system,
          "W2",
          "",
          rateMetrics(plan.events, o.cost),
          o.check,
          `${takeVersion()}ioredis xrange(), COUNT ${PAGE_EVENTS}, pages one after another, exclusive start after the last id; ${costNote(o.cost)}`,
        );
      });
    });
  }
  for (const w of ["W3-20k", "W3-100k"] as const) {
    if (!plan.workloads.has(w)) continue;
    await onFreshServer(start, system, [[w, ""]], (s) =>
      attempt(system, w, "", async () => {
        const target = plan.redisProducer === "resp" ? "redis" : "redis-ioredis";
        // The stamp and XADD's other fields take ~18 of the event's PAYLOAD_BYTES.
        const o = await latencyRow(target, (window) => new IoredisXreadConsumer(s.port, STREAM_KEY, window), s, W3_RATES[w], plan, PAYLOAD_BYTES - 18);
        const sender =
          plan.redisProducer === "resp"
            ? "raw RESP pipelines (as bench-consume's Redis rows; ioredis cannot offer 100,000 events/s from one thread here)"
            : "ioredis pipelines";
        emit(
          system,
          w,
          "",
          latencyMetrics(o),
          o.check,
          `${takeVersion()}producer thread: ${sender} of XADD bench * t <stamp> p <pad> on ${PRODUCER_LANES} connections; reader: ioredis XREAD COUNT ${XREAD_COUNT_MAX} BLOCK 0 on its own connection; ${durability}; ${o.note}`,
        );
      }),
    );
  }
  if (plan.workloads.has("W4")) {
    await onFreshServer(start, system, [["W4", ""]], (s) =>
      attempt(system, "W4", "", async () => {
        const o = await redisStreams(s);
        const metrics = streamsMetrics(o.cost, mib(processMemory(s.pid).rss), system.persistence === "none" ? null : mib(diskBytes(s.dir)));
        emit(
          system,
          "W4",
          "",
          metrics,
          o.check,
          `${takeVersion()}${int(W4_STREAMS)} keys, one pipeline of ${W4_EVENTS_PER_STREAM} XADDs each, ${W4_IN_FLIGHT} in flight over ${W4_IN_FLIGHT} connections; RSS is VmRSS after; ${durability}; ${costNote(o.cost)}`,
        );
      }),
    );
  }
}
