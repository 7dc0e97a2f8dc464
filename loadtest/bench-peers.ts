// Peer benchmarks: Redis Streams (without persistence, with an AOF fsynced
// every second, with an AOF fsynced before every reply) and NATS JetStream
// (file storage) on Ticker's workloads, through the npm clients an
// application would use (ioredis, nats), reported in the one Measurement
// shape (./results.ts) so the report can put them beside the Ticker rows.
//
//   npm run bench:peers                                  # everything, ~5 minutes
//   node dist/loadtest/bench-peers.js --systems redis,nats --workloads W1,W2
//   node dist/loadtest/bench-peers.js --quick            # smoke run: 100,000 events, 3 s windows
//   node dist/loadtest/bench-peers.js --results r.jsonl  # also append the measurements as JSON lines
//
// Workloads (ids as in results.ts), each system on a fresh server and temp
// dir per workload set: {W1}, {W1 8 in flight, then W2 reading what it
// wrote}, {W3-20k}, {W3-100k}, {W4}:
// - W1: 1,000,000 events of 100 bytes in batches of 1,000, one batch in
//   flight, and 8 in flight over 8 connections. Redis: an ioredis
//   pipeline() of 1,000 XADDs per batch. NATS: 1,000 js.publish() started,
//   then their acks awaited; and a third row without js.publish()'s client
//   cost (AckInboxPublisher). "fsync" is W1 on a server that makes each
//   batch durable before acknowledging it: Redis with appendfsync always;
//   NATS only if the server takes `sync_interval: always` (2.9 does not).
// - W2: the 8-in-flight stream read back from the start. Redis: XRANGE in
//   pages of COUNT 10,000, each after the last id of the one before. NATS:
//   an ordered push consumer (deliver all). Counts and order are checked.
// - W3-20k, W3-100k: publish-to-deliver latency of every event at a fixed
//   rate, 2 s warm-up then a 10 s window, one consumer on its own
//   connection (Redis: ioredis XREAD BLOCK; NATS: an ordered push
//   consumer). The producer runs in a worker thread, as bench-consume's
//   does, and paces with a 1 ms timer the same way (runProducer); it sends
//   through each system's cheapest path (raw RESP, AckInboxPublisher) so
//   that the client library does not cap the offered rate.
// - W4: 10,000 streams of 10 events. Redis: 10,000 keys, one pipeline of 10
//   XADDs per key. NATS: one stream on subjects `w4.*`, 10 publishes to
//   each of 10,000 subjects. 16 streams in flight, as bench-streams' Ticker
//   rows. Total time, server RSS after, data dir size when persistent.
//
// Runtime is mostly fixed: eight 12.5 s latency rows, and js.publish() at
// ~30,000 events/s (client-bound) for two million events.
import { randomBytes } from "node:crypto";
import { cpus } from "node:os";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { isMainThread, workerData } from "node:worker_threads";
import type { Histogram } from "hdr-histogram-js";
import { Redis } from "ioredis";
import { connect, consumerOpts, createInbox, StorageType, type JsMsg, type Msg, type NatsConnection, type NatsError, type Subscription } from "nats";
import { decodeHistogram, newHistogram, record, wallNow, type LatencyRecorder } from "./consume-clients.js";
import { error, pace, respXaddLanes, type PacedLane, type PaceStats } from "./consume-producer.js";
import { ensureNatsServer, killNatsNow, natsServerVersion, natsSyncAlwaysSupport, NatsServer, SYNC_ALWAYS_CONFIG } from "./peers/nats.js";
import { ensureRedisServer, killRedisNow, RedisServer, serverVersion, type Persistence } from "./peers/redis.js";
import { CLK_TCK, diskBytes, machineBusyTicks, processMemory, ticksOf, timed } from "./proc.js";
import { serveProducerThread, startProducerThread, type Producer } from "./producer-thread.js";
import { report, resultsFile, type Measurement, type Workload } from "./results.js";
import { guardRun, runMain } from "./server.js";

// ---- workload constants --------------------------------------------------------

const BATCH_EVENTS = 1000; // Ticker's publish_events_max
const PAYLOAD_BYTES = 100;
const PAGE_EVENTS = 10_000; // Ticker's replay_page_events_max
const IN_FLIGHT = 8;
/** As bench-streams' Ticker W4: 16 publishes in flight. */
const W4_IN_FLIGHT = 16;
/** Distinct payloads, used round-robin: nothing on these paths deduplicates or compresses. */
const PAYLOAD_POOL = 10_000;
const W4_STREAMS = 10_000;
const W4_EVENTS_PER_STREAM = 10;
const W3_RATES: Record<"W3-20k" | "W3-100k", number> = { "W3-20k": 20_000, "W3-100k": 100_000 };
/** The producer's timer: 1 ms is the finest Node timer; at 100,000 events/s a batch is ~100 events. */
const TICK_MS = 1;
/** Producer connections, each with one batch outstanding at most: as bench-consume's LANES. */
const LANES = 16;
/** Time for the producer thread to start and the clock probes, before t0. */
const LEAD_MS = 500;
/** After the producer's last answer, the consumer gets this long to receive the rest. */
const DRAIN_TIMEOUT_MS = 20_000;
/** Before a latency row the machine should be idle (other work on 2 cores is latency); waited for, at most QUIET_TIMEOUT_MS. */
const QUIET_WINDOW_MS = 500;
const QUIET_CORES = 0.3;
const QUIET_TIMEOUT_MS = 3000;
/** A publish or read that gets no answer this long is a failed row, not a slow one. */
const REQUEST_TIMEOUT_MS = 60_000;
/** The whole run must end, even if a server or client hangs. */
const RUN_DEADLINE_MS = 9 * 60_000;

const STREAM_KEY = "bench"; // Redis key, NATS stream name and subject
/** Entries per XREAD reply at most (see RedisLatencyConsumer). */
const XREAD_COUNT = 1000;
const W4_PREFIX = "w4";
const PRODUCER_ROLE = "bench-peers-producer";

// ---- systems ------------------------------------------------------------------

const SYSTEM_IDS = ["redis", "redis-aof-everysec", "redis-aof-always", "nats"] as const;
type SystemId = (typeof SYSTEM_IDS)[number];
const WORKLOAD_IDS = ["W1", "W2", "W3-20k", "W3-100k", "W4", "fsync"] as const;
type PeerWorkload = (typeof WORKLOAD_IDS)[number];

interface SystemSpec {
  id: SystemId;
  /** As results.ts names it. */
  name: string;
  kind: "redis" | "nats";
  persistence: Persistence;
}

const SYSTEMS: SystemSpec[] = [
  { id: "redis", name: "Redis Streams", kind: "redis", persistence: "none" },
  { id: "redis-aof-everysec", name: "Redis Streams (AOF everysec)", kind: "redis", persistence: "aof-everysec" },
  { id: "redis-aof-always", name: "Redis Streams (AOF always)", kind: "redis", persistence: "aof-always" },
  { id: "nats", name: "NATS JetStream", kind: "nats", persistence: "none" },
];

// ---- helpers -------------------------------------------------------------------

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : "?");
const mib = (bytes: number) => bytes / 2 ** 20;
/** µs → ms, 3 decimals (the histogram's resolution is 1 µs). */
const usToMs = (us: number) => Math.round(us) / 1000;

/** Rejects with `what` if `p` has not settled in `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms / 1000} s`)), ms)))]).finally(() => clearTimeout(timer));
}

/** Random base64 text, `bytes` long: a JSON-ish payload, not compressible to nothing. */
function payloadText(bytes: number): string {
  return randomBytes(Math.ceil((bytes * 3) / 4) + 3)
    .toString("base64")
    .slice(0, bytes);
}

let textPool: string[] | null = null;
let bytePool: Uint8Array[] | null = null;
const payloadTexts = () => (textPool ??= Array.from({ length: PAYLOAD_POOL }, () => payloadText(PAYLOAD_BYTES)));
const payloadBytes = () => (bytePool ??= payloadTexts().map((s) => Buffer.from(s, "latin1")));

/** Runs `lane` on every connection until `batches` batches are taken; the first failure stops the others. */
async function runLanes<C>(conns: C[], batches: number, lane: (conn: C, batch: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  await Promise.all(
    conns.map(async (conn) => {
      while (!failed && next < batches) {
        const b = next++;
        try {
          await lane(conn, b);
        } catch (err) {
          failed = true;
          throw new Error(`batch ${b + 1}/${batches}: ${(err as Error).message}`);
        }
      }
    }),
  );
}

/** What one timed body cost: wall time, and CPU of the server, this process and everything else. */
interface Cost {
  wallS: number;
  serverCpuS: number;
  serverCores: number;
  clientCores: number;
  restCores: number;
}

async function measure(pid: number, body: () => Promise<void>): Promise<Cost> {
  const t = await timed(() => ticksOf(`/proc/${pid}/stat`), (x: number) => x, body);
  return { wallS: t.wallS, serverCpuS: t.serverCpuS, serverCores: t.serverCpuS / t.wallS, clientCores: t.clientCpuS / t.wallS, restCores: t.restCpuS / t.wallS };
}

const costNote = (c: Cost) => `CPU: server ${f2(c.serverCores)} cores, bench process ${f2(c.clientCores)}, other processes ${f2(c.restCores)} (of ${cpus().length})`;

// ---- Redis (ioredis) -------------------------------------------------------------

async function redisClient(port: number): Promise<Redis> {
  // No reconnects and no offline queue: a benchmark wants the error, not a retry.
  const r = new Redis({ host: "127.0.0.1", port, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on("error", () => {}); // Surfaces as the failed command's rejection.
  await r.connect();
  return r;
}

async function redisClients(port: number, n: number): Promise<Redis[]> {
  return Promise.all(Array.from({ length: n }, () => redisClient(port)));
}

/** Throws the first error reply of a pipeline's exec(). */
function checkExec(res: [Error | null, unknown][] | null, n: number): void {
  if (!res || res.length !== n) throw new Error(`pipeline of ${n} answered ${res?.length ?? "nothing"}`);
  for (const [err] of res) if (err) throw err;
}

/** Rises strictly, across pages too: "ms-seq" ids compared as numbers. */
class IdOrder {
  private ms = -1;
  private seq = -1;
  bad = 0;
  see(id: string): void {
    const dash = id.indexOf("-");
    const ms = Number(id.slice(0, dash));
    const seq = Number(id.slice(dash + 1));
    if (ms < this.ms || (ms === this.ms && seq <= this.seq)) this.bad++;
    this.ms = ms;
    this.seq = seq;
  }
}

interface RunOutcome {
  cost: Cost;
  check: string;
  extra?: string;
}

/** W1: `events` XADDs to one key, pipelines of BATCH_EVENTS, `inFlight` pipelines outstanding on as many connections. */
async function redisPublish(server: RedisServer, events: number, inFlight: number, key = STREAM_KEY): Promise<RunOutcome> {
  const pool = payloadTexts();
  const clients = await redisClients(server.port, inFlight);
  try {
    let acked = 0;
    const cost = await measure(server.pid, () =>
      runLanes(clients, events / BATCH_EVENTS, async (r, b) => {
        const p = r.pipeline();
        for (let i = 0; i < BATCH_EVENTS; i++) p.xadd(key, "*", "p", pool[(b * BATCH_EVENTS + i) % pool.length]);
        checkExec(await within(p.exec(), REQUEST_TIMEOUT_MS, "XADD pipeline"), BATCH_EVENTS);
        acked += BATCH_EVENTS;
      }),
    );
    const len = await clients[0].xlen(key);
    if (acked !== events || len !== events) throw new Error(`${fmt(acked)} XADDs answered, XLEN ${fmt(len)}, expected ${fmt(events)}`);
    return { cost, check: `XLEN ${fmt(len)}` };
  } finally {
    for (const c of clients) c.disconnect();
  }
}

/** W2: XRANGE from the start, COUNT PAGE_EVENTS, each page after the last id of the one before (exclusive "(" start, Redis >= 6.2). */
async function redisReplay(server: RedisServer, events: number): Promise<RunOutcome> {
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
        if (page.length === 0) throw new Error(`empty page after ${fmt(received)} of ${fmt(events)} entries`);
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
    if (received !== events || rest.length !== 0) throw new Error(`read ${fmt(received)} entries, expected ${fmt(events)} and then none`);
    if (order.bad > 0 || badEntries > 0) throw new Error(`${order.bad} ids did not rise, ${badEntries} entries were not one ${PAYLOAD_BYTES}-byte field`);
    return { cost, check: `${fmt(received)} entries in ${pages} pages, ids rising` };
  } finally {
    r.disconnect();
  }
}

/** W4: W4_STREAMS keys, one pipeline of W4_EVENTS_PER_STREAM XADDs each, W4_IN_FLIGHT pipelines outstanding. */
async function redisStreams(server: RedisServer): Promise<RunOutcome> {
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
    return { cost, check: `DBSIZE ${fmt(keys)}, XLENs sum to ${fmt(total)}` };
  } finally {
    for (const c of clients) c.disconnect();
  }
}

// ---- NATS JetStream (nats.js) ----------------------------------------------------

/**
 * noAsyncTraces: by default nats.js allocates an Error per request (and one
 * more per timer) to give a timeout a stack pointing at its caller; at one
 * request per event that is most of the client's CPU. Off, a timeout is
 * still an error, only without the caller's stack.
 */
function natsConnect(port: number): Promise<NatsConnection> {
  return connect({ servers: `127.0.0.1:${port}`, noAsyncTraces: true, reconnect: false, timeout: 10_000 });
}

async function natsConnections(port: number, n: number): Promise<NatsConnection[]> {
  return Promise.all(Array.from({ length: n }, () => natsConnect(port)));
}

async function closeAll(conns: NatsConnection[]): Promise<void> {
  await Promise.all(conns.map((c) => c.close().catch(() => {})));
}

async function natsAddStream(port: number, name: string, subjects: string[]): Promise<void> {
  const nc = await natsConnect(port);
  try {
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name, subjects, storage: StorageType.File });
  } finally {
    await nc.close();
  }
}

async function natsStreamState(port: number, name: string): Promise<{ messages: number; lastSeq: number; subjects: number }> {
  const nc = await natsConnect(port);
  try {
    const jsm = await nc.jetstreamManager();
    const s = (await jsm.streams.info(name)).state;
    return { messages: s.messages, lastSeq: s.last_seq, subjects: s.num_subjects ?? NaN };
  } finally {
    await nc.close();
  }
}

/**
 * nats.js settles every request it completes by also rejecting its deferred
 * with a new NatsError ("cancelled", a no-op once resolved): V8 captures a
 * stack trace for each, about a quarter of js.publish()'s client CPU here
 * (alternating runs of 200,000 events: 24,000-25,000 events/s with traces,
 * 27,000-36,000 without). The timed js.publish() rows run with stack traces
 * off; errors keep their messages.
 */
async function withoutStackTraces<T>(body: () => Promise<T>): Promise<T> {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return await body();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** W1 as specified: per batch, BATCH_EVENTS js.publish() calls started, then all their acks awaited. */
async function natsPublish(server: NatsServer, events: number, inFlight: number): Promise<RunOutcome> {
  const pool = payloadBytes();
  await natsAddStream(server.port, STREAM_KEY, [STREAM_KEY]);
  const conns = await natsConnections(server.port, inFlight);
  try {
    const jss = new Map(conns.map((c) => [c, c.jetstream({ timeout: REQUEST_TIMEOUT_MS })]));
    let acked = 0;
    let duplicates = 0;
    const cost = await withoutStackTraces(() =>
      measure(server.pid, () =>
        runLanes(conns, events / BATCH_EVENTS, async (nc, b) => {
          const js = jss.get(nc)!;
          const acks = new Array<ReturnType<typeof js.publish>>(BATCH_EVENTS);
          for (let i = 0; i < BATCH_EVENTS; i++) acks[i] = js.publish(STREAM_KEY, pool[(b * BATCH_EVENTS + i) % pool.length]);
          for (const a of await Promise.all(acks)) if (a.duplicate) duplicates++;
          acked += BATCH_EVENTS;
        }),
      ),
    );
    const s = await natsStreamState(server.port, STREAM_KEY);
    if (acked !== events || duplicates > 0 || s.messages !== events || s.lastSeq !== events) {
      throw new Error(`${fmt(acked)} acks (${duplicates} duplicates), stream has ${fmt(s.messages)} messages, last seq ${fmt(s.lastSeq)}; expected ${fmt(events)}`);
    }
    return { cost, check: `${fmt(acked)} acks, stream ${fmt(s.messages)} messages` };
  } finally {
    await closeAll(conns);
  }
}

/**
 * A JetStream publisher that leaves the request machinery out: plain
 * publishes with a reply subject, their acks counted on one inbox
 * subscription per connection (the way the Go client's PublishAsync
 * works). One connection's publishes are stored, and acked, in order, so a
 * batch is acked once the count reaches it. An ack that is not
 * `{"stream":…` is a JetStream error.
 */
class AckInboxPublisher {
  private readonly inbox = createInbox();
  private readonly sub: Subscription;
  private acked = 0;
  private published = 0;
  private waiter: { upTo: number; resolve: () => void } | null = null;
  errors = 0;
  lastError = "";

  constructor(readonly nc: NatsConnection) {
    this.sub = nc.subscribe(this.inbox, {
      callback: (err: NatsError | null, m: Msg) => {
        if (err) {
          this.errors++;
          this.lastError = err.message;
        } else if (m.data[2] !== 0x73 /* s */) {
          this.errors++;
          this.lastError = new TextDecoder().decode(m.data);
        }
        this.acked++;
        const w = this.waiter;
        if (w && this.acked >= w.upTo) {
          this.waiter = null;
          w.resolve();
        }
      },
    });
  }

  /** Publishes `data` to `subject` n times; resolves once all of them are acked. */
  send(subject: string, n: number, data: (i: number) => Uint8Array): Promise<void> {
    for (let i = 0; i < n; i++) this.nc.publish(subject, data(i), { reply: this.inbox });
    this.published += n;
    const upTo = this.published;
    if (this.acked >= upTo) return Promise.resolve();
    return within(new Promise<void>((resolve) => (this.waiter = { upTo, resolve })), REQUEST_TIMEOUT_MS, `acks of ${n} publishes`);
  }

  close(): void {
    this.sub.unsubscribe();
  }
}

/** W1 "acks on one inbox": as natsPublish, through AckInboxPublisher. */
async function natsPublishAckInbox(server: NatsServer, events: number, inFlight: number): Promise<RunOutcome> {
  const pool = payloadBytes();
  await natsAddStream(server.port, STREAM_KEY, [STREAM_KEY]);
  const conns = await natsConnections(server.port, inFlight);
  const pubs = conns.map((c) => new AckInboxPublisher(c));
  try {
    let acked = 0;
    const cost = await measure(server.pid, () =>
      runLanes(pubs, events / BATCH_EVENTS, async (pub, b) => {
        await pub.send(STREAM_KEY, BATCH_EVENTS, (i) => pool[(b * BATCH_EVENTS + i) % pool.length]);
        acked += BATCH_EVENTS;
      }),
    );
    const errors = pubs.reduce((a, p) => a + p.errors, 0);
    const s = await natsStreamState(server.port, STREAM_KEY);
    if (errors > 0) throw new Error(`${errors} publishes failed, the last: ${pubs.find((p) => p.errors > 0)!.lastError}`);
    if (acked !== events || s.messages !== events || s.lastSeq !== events) throw new Error(`${fmt(acked)} acks, stream has ${fmt(s.messages)} messages, last seq ${fmt(s.lastSeq)}; expected ${fmt(events)}`);
    return { cost, check: `${fmt(acked)} acks, stream ${fmt(s.messages)} messages` };
  } finally {
    for (const p of pubs) p.close();
    await closeAll(conns);
  }
}

/**
 * W2: an ordered push consumer delivering all of the stream: the client
 * library's way to read a stream once, in order (it resets the consumer on
 * a gap). Stream seqs must run 1, 2, 3, … and every message be the payload's size.
 */
async function natsReplay(server: NatsServer, events: number): Promise<RunOutcome> {
  const nc = await natsConnect(server.port);
  let sub: { unsubscribe(): void } | null = null;
  try {
    let received = 0;
    let lastSeq = 0;
    let bad = 0;
    const cost = await measure(server.pid, async () => {
      const done = new Promise<void>((resolve, reject) => {
        const opts = consumerOpts()
          .orderedConsumer()
          .deliverAll()
          .callback((err: NatsError | null, m: JsMsg | null) => {
            if (err) return reject(err);
            if (!m) return;
            received++;
            if (m.seq !== lastSeq + 1 || m.data.length !== PAYLOAD_BYTES) bad++;
            lastSeq = m.seq;
            if (received === events) resolve();
          });
        nc.jetstream()
          .subscribe(STREAM_KEY, opts)
          .then((s) => (sub = s), reject);
      });
      await within(done, REQUEST_TIMEOUT_MS * 2, `ordered consumer (${fmt(received)} of ${fmt(events)} received)`);
    });
    // Anything past the stream's end would be a duplicate delivery.
    await sleep(100);
    if (received !== events || bad > 0) throw new Error(`received ${fmt(received)} messages, expected ${fmt(events)}; ${bad} out of order or of the wrong size`);
    return { cost, check: `${fmt(received)} messages, seqs 1..${fmt(lastSeq)} in order` };
  } finally {
    (sub as { unsubscribe(): void } | null)?.unsubscribe();
    await nc.close().catch(() => {});
  }
}

/**
 * W4: one stream on `w4.*`, W4_EVENTS_PER_STREAM publishes to each of
 * W4_STREAMS subjects, acked per subject, through AckInboxPublisher: with
 * js.publish() the client's own CPU would be most of the time measured.
 */
async function natsStreams(server: NatsServer): Promise<RunOutcome> {
  const pool = payloadBytes();
  await natsAddStream(server.port, W4_PREFIX, [`${W4_PREFIX}.*`]);
  const conns = await natsConnections(server.port, W4_IN_FLIGHT);
  const pubs = conns.map((c) => new AckInboxPublisher(c));
  try {
    const cost = await measure(server.pid, () =>
      runLanes(pubs, W4_STREAMS, (pub, s) => pub.send(`${W4_PREFIX}.${s}`, W4_EVENTS_PER_STREAM, (i) => pool[(s * W4_EVENTS_PER_STREAM + i) % pool.length])),
    );
    const errors = pubs.reduce((a, p) => a + p.errors, 0);
    if (errors > 0) throw new Error(`${errors} publishes failed, the last: ${pubs.find((p) => p.errors > 0)!.lastError}`);
    const st = await natsStreamState(server.port, W4_PREFIX);
    if (st.messages !== W4_STREAMS * W4_EVENTS_PER_STREAM || st.subjects !== W4_STREAMS) throw new Error(`stream has ${fmt(st.messages)} messages on ${st.subjects} subjects`);
    return { cost, check: `${fmt(st.messages)} messages on ${fmt(st.subjects)} subjects` };
  } finally {
    for (const p of pubs) p.close();
    await closeAll(conns);
  }
}

// ---- W3: the paced producer (a worker thread) ---------------------------------

/**
 * How the Redis W3 producer sends: raw RESP (RespConn, as consume-producer's
 * Redis lanes) by default, or ioredis pipelines. With ioredis the producer
 * thread could not offer 100,000 events/s on the 2-core VM: in a full run it
 * reached 61,000-70,000 with its timer late by 300-430 ms at p99, while
 * redis-server used 0.2-0.4 cores; the row then measured the client, not
 * Redis. The reader is ioredis either way.
 */
type RedisProducer = "resp" | "ioredis";

interface ProducerSpec {
  kind: "redis" | "nats";
  redisProducer: RedisProducer;
  port: number;
  /** Events per second. */
  rate: number;
  /** Wall-clock ms (wallNow): sending starts at t0; events stamped in [tStart, tEnd) are measured; sending stops at tEnd. */
  t0: number;
  tStart: number;
  tEnd: number;
  /** Filler next to the stamp, so that an event is ~PAYLOAD_BYTES. */
  pad: string;
}

/** pace()'s counters (rtt: stamp to ack of each batch), and what was acknowledged. */
interface ProducerResult extends PaceStats {
  accepted: number;
  errors: string[];
}

interface Lane extends PacedLane {
  close(): Promise<void>;
}

/** Redis: `XADD bench * t <stamp> p <pad>` × n as one pipeline, RESP encoded and written to a raw socket. */
async function respLanes(spec: ProducerSpec, res: ProducerResult): Promise<Lane[]> {
  const lanes = await respXaddLanes(spec.port, LANES, STREAM_KEY, spec.pad, res);
  return lanes.map((l) => ({ ...l, close: async () => l.close() }));
}

/** Redis: `XADD bench * t <stamp> p <pad>` × n as one ioredis pipeline. */
async function redisLanes(spec: ProducerSpec, res: ProducerResult): Promise<Lane[]> {
  const clients = await redisClients(spec.port, LANES);
  return clients.map((r) => ({
    busy: false,
    async send(n, t) {
      const ts = String(t);
      const p = r.pipeline();
      for (let i = 0; i < n; i++) p.xadd(STREAM_KEY, "*", "t", ts, "p", spec.pad);
      try {
        checkExec(await p.exec(), n);
        res.accepted += n;
      } catch (err) {
        error(res, `pipeline of ${n} XADDs: ${(err as Error).message}`);
      }
    },
    close: async () => r.disconnect(),
  }));
}

/**
 * NATS: n JetStream publishes of [stamp as float64 LE, pad], acks counted
 * on the lane's inbox (AckInboxPublisher). js.publish() costs the client
 * ~30 µs of CPU per event here, so it cannot offer 100,000 events/s from
 * one thread; the server still stores and acks every event.
 */
async function natsLanes(spec: ProducerSpec, res: ProducerResult): Promise<Lane[]> {
  const conns = await natsConnections(spec.port, LANES);
  const pad = Buffer.from(spec.pad, "latin1");
  return conns.map((nc) => {
    const pub = new AckInboxPublisher(nc);
    return {
      busy: false,
      async send(n, t) {
        const data = Buffer.allocUnsafe(8 + pad.length);
        data.writeDoubleLE(t, 0);
        pad.copy(data, 8);
        const errorsBefore = pub.errors;
        try {
          await pub.send(STREAM_KEY, n, () => data);
          if (pub.errors > errorsBefore) error(res, `${pub.errors - errorsBefore} of ${n} publishes failed: ${pub.lastError}`);
          else res.accepted += n;
        } catch (err) {
          error(res, `${n} publishes: ${(err as Error).message}`);
        }
      },
      close: async () => {
        pub.close();
        await nc.close().catch(() => {});
      },
    };
  });
}

/** Pacing as in consume-producer.ts, stopping at tEnd even if behind. */
async function runProducer(spec: ProducerSpec): Promise<ProducerResult> {
  const res: ProducerResult = { sent: 0, accepted: 0, measured: 0, requests: 0, batchMax: 0, stalls: 0, backlogMax: 0, tickLateP99Ms: 0, tickLateMaxMs: 0, rtt: "", errors: [] };
  const lanes = spec.kind === "nats" ? await natsLanes(spec, res) : spec.redisProducer === "resp" ? await respLanes(spec, res) : await redisLanes(spec, res);
  try {
    await pace({ ...spec, tickMs: TICK_MS, batchEventsMax: BATCH_EVENTS, stopAtEnd: true }, lanes, res);
  } finally {
    await Promise.all(lanes.map((l) => l.close()));
  }
  return res;
}

function startProducer(spec: ProducerSpec): Producer<ProducerResult> {
  return startProducerThread<ProducerResult>(new URL(import.meta.url), { role: PRODUCER_ROLE, spec });
}

// ---- W3: the consumers ------------------------------------------------------------

/** Receive time − send stamp of every event stamped inside the window, in µs (bench-consume's recorder). */
class Recorder implements LatencyRecorder {
  readonly hist: Histogram = newHistogram();
  measured = 0;
  total = 0;
  negative = 0;
  clipped = 0;
  constructor(
    private readonly tStart: number,
    private readonly tEnd: number,
  ) {}

  record(t: number, recv: number): void {
    record(this, t, recv, this.tStart, this.tEnd);
  }
}

interface LatencyConsumer {
  readonly rec: Recorder;
  readonly errors: string[];
  /** Replies (Redis) or messages (NATS) received. */
  readonly deliveries: number;
  /** Resolves once the consumer is subscribed: every event published from then on reaches it. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * One ioredis connection looping `XREAD COUNT 1000 BLOCK 0 STREAMS bench
 * <last id>`, from 0-0: the stream is new and empty, so nothing is missed
 * between the subscribe and the first event. The receive time is when
 * ioredis hands over the parsed reply, once per reply. COUNT bounds a
 * reply: without it a reader that fell behind once asks for everything
 * since, redis-server blocks its event loop (and the producer's XADDs)
 * rendering a reply of 10^5 entries, ioredis takes as long again to parse
 * it, and the reader never catches up (seen at 100,000 events/s with an AOF:
 * 70 replies in 12 s, p50 1.7 s).
 */
class RedisLatencyConsumer implements LatencyConsumer {
  readonly errors: string[] = [];
  deliveries = 0;
  private readonly order = new IdOrder();
  private stopped = false;
  private loop: Promise<void> = Promise.resolve();
  private r: Redis | null = null;

  constructor(
    private readonly port: number,
    readonly rec: Recorder,
  ) {}

  async start(): Promise<void> {
    this.r = await redisClient(this.port);
    this.loop = this.run(this.r);
  }

  private async run(r: Redis): Promise<void> {
    let lastId = "0-0";
    while (!this.stopped) {
      let reply: [string, [string, string[]][]][] | null;
      try {
        reply = (await r.xread("COUNT", XREAD_COUNT, "BLOCK", 0, "STREAMS", STREAM_KEY, lastId)) as [string, [string, string[]][]][] | null;
      } catch (err) {
        if (!this.stopped) this.errors.push(`XREAD: ${(err as Error).message}`);
        return;
      }
      const recv = wallNow();
      if (!reply) continue;
      this.deliveries++;
      const entries = reply[0][1];
      for (const [id, fields] of entries) {
        this.order.see(id);
        // Fields are t, <stamp>, p, <pad>.
        this.rec.record(Number(fields[1]), recv);
      }
      if (entries.length > 0) lastId = entries[entries.length - 1][0];
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.r?.disconnect();
    await this.loop;
    if (this.order.bad > 0) this.errors.push(`${this.order.bad} ids did not rise`);
  }
}

/** An ordered push consumer (deliver all, on a new stream), one receive time per message. */
class NatsLatencyConsumer implements LatencyConsumer {
  readonly errors: string[] = [];
  deliveries = 0;
  private lastSeq = 0;
  private outOfOrder = 0;
  private nc: NatsConnection | null = null;
  private sub: { unsubscribe(): void } | null = null;

  constructor(
    private readonly port: number,
    readonly rec: Recorder,
  ) {}

  async start(): Promise<void> {
    this.nc = await natsConnect(this.port);
    const opts = consumerOpts()
      .orderedConsumer()
      .deliverAll()
      .callback((err: NatsError | null, m: JsMsg | null) => {
        const recv = wallNow();
        if (err) {
          error(this, err.message);
          return;
        }
        if (!m) return;
        this.deliveries++;
        if (m.seq !== this.lastSeq + 1) this.outOfOrder++;
        this.lastSeq = m.seq;
        const d = m.data;
        this.rec.record(Buffer.from(d.buffer, d.byteOffset, d.byteLength).readDoubleLE(0), recv);
      });
    this.sub = await this.nc.jetstream().subscribe(STREAM_KEY, opts);
  }

  async stop(): Promise<void> {
    this.sub?.unsubscribe();
    await this.nc?.close().catch(() => {});
    if (this.outOfOrder > 0) this.errors.push(`${this.outOfOrder} messages out of stream order`);
  }
}

/** Waits for the machine to go idle; returns a note when it did not. */
async function waitQuiet(): Promise<string> {
  const t0 = performance.now();
  let busy = NaN;
  while (performance.now() - t0 < QUIET_TIMEOUT_MS) {
    const m0 = machineBusyTicks();
    await sleep(QUIET_WINDOW_MS);
    busy = (machineBusyTicks() - m0) / CLK_TCK / (QUIET_WINDOW_MS / 1000);
    if (busy < QUIET_CORES) return "";
  }
  return `; the machine was not idle before the row (${f2(busy)} cores busy after ${QUIET_TIMEOUT_MS / 1000} s of waiting)`;
}

/** Server CPU and the whole machine's over [tStart, tEnd), sampled by timers at those instants. */
function sampleWindow(tStart: number, tEnd: number, pid: number): Promise<{ serverCores: number; machineCores: number }> {
  return new Promise((resolve) => {
    setTimeout(() => {
      const w0 = performance.now();
      const s0 = ticksOf(`/proc/${pid}/stat`);
      const m0 = machineBusyTicks();
      setTimeout(() => {
        const wallS = (performance.now() - w0) / 1000;
        resolve({ serverCores: (ticksOf(`/proc/${pid}/stat`) - s0) / CLK_TCK / wallS, machineCores: (machineBusyTicks() - m0) / CLK_TCK / wallS });
      }, Math.max(0, tEnd - wallNow()));
    }, Math.max(0, tStart - wallNow()));
  });
}

interface LatencyOutcome {
  hist: Histogram;
  serverCores: number;
  check: string;
  note: string;
}

async function latencyRow(kind: "redis" | "nats", port: number, pid: number, rate: number, plan: Plan): Promise<LatencyOutcome> {
  const { warmupMs, measureMs } = plan;
  const quiet = await waitQuiet();
  const t0 = wallNow() + LEAD_MS;
  const w = { t0, tStart: t0 + warmupMs, tEnd: t0 + warmupMs + measureMs };
  const rec = new Recorder(w.tStart, w.tEnd);
  const consumer: LatencyConsumer = kind === "redis" ? new RedisLatencyConsumer(port, rec) : new NatsLatencyConsumer(port, rec);
  await consumer.start();
  try {
    const pad = payloadText(kind === "redis" ? PAYLOAD_BYTES - 18 : PAYLOAD_BYTES - 8);
    const cpu = sampleWindow(w.tStart, w.tEnd, pid);
    const producer = startProducer({ kind, redisProducer: plan.redisProducer, port, rate, ...w, pad });
    const [p, offset, winCpu] = await Promise.all([producer.result, producer.offset, cpu]);
    if (p.errors.length > 0) throw new Error(`producer: ${p.errors.join("; ")}`);
    if (p.accepted !== p.sent) throw new Error(`producer sent ${fmt(p.sent)}, ${fmt(p.accepted)} acknowledged`);
    const td = performance.now();
    while (rec.total < p.sent && performance.now() - td < DRAIN_TIMEOUT_MS && consumer.errors.length === 0) await sleep(20);
    const drainS = (performance.now() - td) / 1000;
    await consumer.stop();
    if (consumer.errors.length > 0) throw new Error(`consumer: ${consumer.errors.slice(0, 5).join("; ")}`);
    if (rec.total !== p.sent || rec.measured !== p.measured) throw new Error(`consumer got ${fmt(rec.total)} events (${fmt(rec.measured)} in the window), producer sent ${fmt(p.sent)} (${fmt(p.measured)})`);
    const rtt = decodeHistogram(p.rtt);
    const achieved = p.measured / (measureMs / 1000);
    const note =
      `producer: ${fmt(achieved)} events/s in the window of ${fmt(rate)} asked, ${fmt(p.requests)} batches (largest ${fmt(p.batchMax)}), ${p.stalls} ticks with all ${LANES} lanes busy (backlog max ${fmt(p.backlogMax)}), ` +
      `batch round trip p50 ${usToMs(rtt.getValueAtPercentile(50))} / p99 ${usToMs(rtt.getValueAtPercentile(99))} ms, timer late p99 ${f2(p.tickLateP99Ms)} ms; ` +
      `consumer: ${fmt(consumer.deliveries)} ${kind === "redis" ? "XREAD replies" : "messages"}, drained ${f2(drainS)} s after the last ack; ` +
      `CPU in the window: server ${f2(winCpu.serverCores)} cores, machine ${f2(winCpu.machineCores)} of ${cpus().length}; producer clock offset ${(offset.offsetMs * 1000).toFixed(0)} µs` +
      (rec.negative > 0 || rec.clipped > 0 ? `; ${rec.negative} latencies < 0 recorded as 0, ${rec.clipped} > 60 s clipped` : "") +
      quiet;
    // A producer that fell behind offered less than the row's rate: the figures are for the lower rate, and say so.
    const short = achieved < 0.95 * rate ? `; **only ${fmt(achieved)} of ${fmt(rate)} events/s offered**` : "";
    return { hist: rec.hist, serverCores: winCpu.serverCores, check: `${fmt(rec.measured)} events in the window, all received${short}`, note };
  } catch (err) {
    await consumer.stop().catch(() => {});
    throw err;
  }
}

// ---- rows -------------------------------------------------------------------------

interface TableRow {
  workload: Workload;
  system: string;
  variant: string;
  result: string;
  check: string;
  note: string;
  error?: string;
}

interface Metric {
  metric: string;
  value: number;
  better: "higher" | "lower";
  /** How the table shows it. */
  text: string;
}

const rows: TableRow[] = [];
const runNotes: string[] = [];
let resultsPath: string | null = null;

/** The one place a row is recorded: table, console, and the results file. */
/** When the current row set started, for the console's per-row times. */
let rowStart = performance.now();

function emit(system: SystemSpec, workload: Workload, variant: string, metrics: Metric[], check: string, note: string): void {
  rows.push({ workload, system: system.name, variant, result: metrics.map((m) => m.text).join(" · "), check, note });
  const ms: Measurement[] = metrics.map((m) => ({ workload, system: system.name, ...(variant ? { variant } : {}), metric: m.metric, value: m.value, better: m.better, note }));
  report(ms, resultsPath);
  console.error(`${workload} ${system.name}${variant ? ` (${variant})` : ""}: ${metrics.map((m) => m.text).join(", ")} [${((performance.now() - rowStart) / 1000).toFixed(1)} s]`);
}

function emitError(system: SystemSpec, workload: Workload, variant: string, err: unknown): void {
  const msg = (err as Error).message.split("\n")[0];
  rows.push({ workload, system: system.name, variant, result: "FAILED", check: "", note: "", error: msg });
  console.error(`${workload} ${system.name}${variant ? ` (${variant})` : ""}: FAILED: ${msg}`);
}

/** W1, W2, fsync: the rate, and the server's CPU time for it (as bench-engine reports Ticker's). */
const rateMetrics = (events: number, c: Cost): Metric[] => [
  { metric: "events/s", value: Math.round(events / c.wallS), better: "higher", text: `${fmt(events / c.wallS)} events/s` },
  { metric: "server CPU s", value: Number(c.serverCpuS.toFixed(2)), better: "lower", text: `server CPU ${c.serverCpuS.toFixed(1)} s` },
];

/** W3: the latency percentiles, and the server's CPU over the window (as bench-consume reports Ticker's). */
function latencyMetrics(o: LatencyOutcome): Metric[] {
  const h = o.hist;
  const at = (p: number) => usToMs(h.getValueAtPercentile(p));
  const m = (metric: string, v: number): Metric => ({ metric, value: v, better: "lower", text: `${metric.replace(" ms", "")} ${v} ms` });
  return [
    m("p50 ms", at(50)),
    m("p99 ms", at(99)),
    m("p99.9 ms", at(99.9)),
    m("max ms", usToMs(h.maxValue)),
    { metric: "server CPU cores", value: Number(o.serverCores.toFixed(2)), better: "lower", text: `server CPU ${f2(o.serverCores)} cores` },
  ];
}

interface Plan {
  workloads: Set<PeerWorkload>;
  events: number;
  warmupMs: number;
  measureMs: number;
  quick: boolean;
  redisProducer: RedisProducer;
}

/** The server a row set runs on: started fresh, stopped by pid afterwards. */
interface Started {
  pid: number;
  dir: string;
  stop(): Promise<string>;
}

/**
 * Runs `body` on a fresh server; a failed start or run becomes error rows
 * for `workloads`, so the other rows still run.
 */
async function onFreshServer<S extends Started>(start: () => Promise<S>, system: SystemSpec, failRows: [Workload, string][], body: (s: S) => Promise<unknown>): Promise<void> {
  let server: S;
  rowStart = performance.now();
  try {
    server = await start();
  } catch (err) {
    for (const [w, v] of failRows) emitError(system, w, v, new Error(`server did not start: ${(err as Error).message}`));
    return;
  }
  try {
    await body(server);
  } finally {
    const how = await server.stop();
    if (how !== "SIGTERM: exited") runNotes.push(`${system.name}: server stop: ${how}.`);
  }
}

/** Runs one measured row, turning an exception into an error row. */
async function attempt(system: SystemSpec, workload: Workload, variant: string, row: () => Promise<void>): Promise<boolean> {
  try {
    await row();
    return true;
  } catch (err) {
    emitError(system, workload, variant, err);
    return false;
  }
}

const W1_VARIANTS = { one: "", many: `${IN_FLIGHT} in flight` };

async function runRedis(system: SystemSpec, plan: Plan): Promise<void> {
  const found = await ensureRedisServer(runNotes);
  if ("reason" in found) {
    for (const w of plan.workloads) if (w !== "fsync" || system.persistence === "aof-always") emitError(system, w, "", new Error(found.reason));
    return;
  }
  const v = await serverVersion(found.binary);
  const [major, minor] = v.number.split(".").map(Number);
  if (major < 6 || (major === 6 && minor < 2)) throw new Error(`redis-server ${v.number}: W2 needs XRANGE's exclusive start (6.2 and later)`);
  let versionNote = `redis-server ${v.number} (\`${v.line}\`${v.debian ? `, Debian ${v.debian}` : ""}); `;
  const takeVersion = () => {
    const n = versionNote;
    versionNote = "";
    return n;
  };
  const start = () => RedisServer.start(found.binary, system.persistence);
  const isFsync = system.persistence === "aof-always";
  const w1 = plan.workloads.has("W1") || (isFsync && plan.workloads.has("fsync"));
  const durability =
    system.persistence === "none"
      ? "no persistence (--save \"\" --appendonly no)"
      : `appendonly yes, appendfsync ${system.persistence === "aof-always" ? "always (each event loop's writes fsynced before its replies are sent)" : "everysec (fsync in a background thread once a second)"}, no AOF rewrite`;
  const diskNote = (s: RedisServer) => (system.persistence === "none" ? "" : `; data dir after: ${mib(diskBytes(s.dir)).toFixed(0)} MiB`);

  // The AOF always W1 rows are also the fsync rows; with only "fsync" asked for, a failure is reported there.
  const w1Workload: Workload = plan.workloads.has("W1") ? "W1" : "fsync";
  const w1Row = (s: RedisServer, variant: string, inFlight: number) =>
    attempt(system, w1Workload, variant, async () => {
      const o = await redisPublish(s, plan.events, inFlight);
      const note = `${takeVersion()}ioredis pipeline() of ${BATCH_EVENTS} XADDs per batch, ${inFlight === 1 ? "1 batch in flight" : `${inFlight} batches in flight over ${inFlight} connections`}; ${durability}; ${costNote(o.cost)}${diskNote(s)}`;
      const metrics = rateMetrics(plan.events, o.cost);
      if (plan.workloads.has("W1")) emit(system, "W1", variant, metrics, o.check, note);
      if (isFsync && plan.workloads.has("fsync")) emit(system, "fsync", variant, metrics, o.check, note);
    });

  if (w1) await onFreshServer(start, system, [[w1Workload, W1_VARIANTS.one]], (s) => w1Row(s, W1_VARIANTS.one, 1));
  if (w1 || plan.workloads.has("W2")) {
    const failRows: [Workload, string][] = [...(w1 ? [[w1Workload, W1_VARIANTS.many] as [Workload, string]] : []), ...(plan.workloads.has("W2") ? [["W2", ""] as [Workload, string]] : [])];
    await onFreshServer(start, system, failRows, async (s) => {
      // Without W1 the stream is loaded untimed, the way the W1 row would.
      const loaded = w1 ? await w1Row(s, W1_VARIANTS.many, IN_FLIGHT) : await attempt(system, "W2", "", async () => void (await redisPublish(s, plan.events, IN_FLIGHT)));
      if (!plan.workloads.has("W2")) return;
      // A failed untimed load is already W2's error row.
      if (!loaded) return w1 ? emitError(system, "W2", "", new Error("no data: W1 did not complete")) : undefined;
      await attempt(system, "W2", "", async () => {
        const o = await redisReplay(s, plan.events);
        emit(system, "W2", "", rateMetrics(plan.events, o.cost), o.check, `${takeVersion()}ioredis xrange(), COUNT ${PAGE_EVENTS}, pages one after another, exclusive start after the last id; ${costNote(o.cost)}`);
      });
    });
  }
  for (const w of ["W3-20k", "W3-100k"] as const) {
    if (!plan.workloads.has(w)) continue;
    await onFreshServer(start, system, [[w, ""]], (s) =>
      attempt(system, w, "", async () => {
        const o = await latencyRow("redis", s.port, s.pid, W3_RATES[w], plan);
        const sender = plan.redisProducer === "resp" ? "raw RESP pipelines (as bench-consume's Redis rows; ioredis cannot offer 100,000 events/s from one thread here)" : "ioredis pipelines";
        emit(system, w, "", latencyMetrics(o), o.check, `${takeVersion()}producer thread: ${sender} of XADD bench * t <stamp> p <pad> on ${LANES} connections; reader: ioredis XREAD COUNT ${XREAD_COUNT} BLOCK 0 on its own connection; ${durability}; ${o.note}`);
      }),
    );
  }
  if (plan.workloads.has("W4")) {
    await onFreshServer(start, system, [["W4", ""]], (s) =>
      attempt(system, "W4", "", async () => {
        const o = await redisStreams(s);
        const rss = mib(processMemory(s.pid).rss);
        const metrics: Metric[] = [
          { metric: "s", value: Number(o.cost.wallS.toFixed(3)), better: "lower", text: `${o.cost.wallS.toFixed(2)} s` },
          { metric: "RSS MiB", value: Number(rss.toFixed(1)), better: "lower", text: `RSS ${rss.toFixed(1)} MiB` },
        ];
        if (system.persistence !== "none") {
          const disk = mib(diskBytes(s.dir));
          metrics.push({ metric: "disk MiB", value: Number(disk.toFixed(1)), better: "lower", text: `disk ${disk.toFixed(1)} MiB` });
        }
        emit(system, "W4", "", metrics, o.check, `${takeVersion()}${fmt(W4_STREAMS)} keys, one pipeline of ${W4_EVENTS_PER_STREAM} XADDs each, ${W4_IN_FLIGHT} in flight over ${W4_IN_FLIGHT} connections; RSS is VmRSS after; ${durability}; ${costNote(o.cost)}`);
      }),
    );
  }
}

async function runNats(system: SystemSpec, plan: Plan): Promise<void> {
  const found = await ensureNatsServer(runNotes);
  if ("reason" in found) {
    for (const w of plan.workloads) if (w !== "fsync") emitError(system, w, "", new Error(found.reason));
    return;
  }
  const v = await natsServerVersion(found.binary);
  const sync = await natsSyncAlwaysSupport(found.binary);
  let versionNote = `nats-server ${v.number} (\`${v.line}\`${v.debian ? `, Debian ${v.debian}` : ""}); `;
  const takeVersion = () => {
    const n = versionNote;
    versionNote = "";
    return n;
  };
  // Checked in the 2.9.10 source (server/filestore.go): each message is written to its block file
  // before the ack (flush in place, no fsync), and a timer fsyncs every block each defaultSyncInterval.
  const durability =
    `file storage; durability: acked once written to the stream's block file (write(2), no fsync), all blocks fsynced by a timer` +
    (v.number.startsWith("2.9.") ? " every 60 s (2.9's fixed defaultSyncInterval)" : " (sync_interval, default 2 min)") +
    `; \`sync_interval: always\` ${sync.supported ? "is accepted by this server" : `is not supported by this server (\`nats-server -t\`: ${sync.answer}), so there is no NATS fsync row`}`;
  runNotes.push(`NATS JetStream ${v.number}: ${durability}.`);
  const start = (config?: string) => () => NatsServer.start(found.binary, config);
  const clientNote = "nats.js (noAsyncTraces)";
  const publishNote = `${clientNote}, Error.stackTraceLimit = 0 while timed (nats.js captures a stack for every request it completes, ~25% of its CPU)`;

  if (plan.workloads.has("W1")) {
    await onFreshServer(start(), system, [["W1", W1_VARIANTS.one]], (s) =>
      attempt(system, "W1", W1_VARIANTS.one, async () => {
        const o = await natsPublish(s, plan.events, 1);
        emit(system, "W1", W1_VARIANTS.one, rateMetrics(plan.events, o.cost), o.check, `${takeVersion()}${publishNote}: ${BATCH_EVENTS} js.publish() started, then their acks awaited, 1 batch in flight; ${durability}; ${costNote(o.cost)}; data dir after: ${mib(diskBytes(s.dir)).toFixed(0)} MiB`);
      }),
    );
  }
  if (plan.workloads.has("W1") || plan.workloads.has("W2")) {
    const failRows: [Workload, string][] = [...(plan.workloads.has("W1") ? [["W1", W1_VARIANTS.many] as [Workload, string]] : []), ...(plan.workloads.has("W2") ? [["W2", ""] as [Workload, string]] : [])];
    await onFreshServer(start(), system, failRows, async (s) => {
      const loaded = plan.workloads.has("W1")
        ? await attempt(system, "W1", W1_VARIANTS.many, async () => {
            const o = await natsPublish(s, plan.events, IN_FLIGHT);
            emit(system, "W1", W1_VARIANTS.many, rateMetrics(plan.events, o.cost), o.check, `${takeVersion()}${publishNote}: as the plain row, ${IN_FLIGHT} batches in flight over ${IN_FLIGHT} connections; ${costNote(o.cost)}`);
          })
        : // Without W1 the stream is loaded untimed, the quicker way.
          await attempt(system, "W2", "", async () => void (await natsPublishAckInbox(s, plan.events, IN_FLIGHT)));
      if (!plan.workloads.has("W2")) return;
      if (!loaded) return plan.workloads.has("W1") ? emitError(system, "W2", "", new Error("no data: W1 did not complete")) : undefined;
      await attempt(system, "W2", "", async () => {
        const o = await natsReplay(s, plan.events);
        emit(system, "W2", "", rateMetrics(plan.events, o.cost), o.check, `${takeVersion()}${clientNote}: ordered push consumer (js.subscribe with consumerOpts().orderedConsumer().deliverAll() and a callback), time includes creating it; ${costNote(o.cost)}`);
      });
    });
  }
  if (plan.workloads.has("W1")) {
    // Not in the brief's list: the same W1 without js.publish()'s per-request client cost, to show the server's own rate.
    const variant = `${IN_FLIGHT} in flight, acks on one inbox`;
    await onFreshServer(start(), system, [["W1", variant]], (s) =>
      attempt(system, "W1", variant, async () => {
        const o = await natsPublishAckInbox(s, plan.events, IN_FLIGHT);
        emit(system, "W1", variant, rateMetrics(plan.events, o.cost), o.check, `${takeVersion()}${clientNote}: nc.publish() with a reply subject, ${BATCH_EVENTS} per batch, acks counted on one inbox subscription per connection (as the Go client's PublishAsync), ${IN_FLIGHT} batches in flight over ${IN_FLIGHT} connections: js.publish() spends ~30 µs of client CPU per event on its request machinery, this path does not; ${costNote(o.cost)}`);
      }),
    );
  }
  if (plan.workloads.has("fsync") && sync.supported) {
    for (const [variant, inFlight] of [
      ["sync_interval always", 1],
      [`sync_interval always, ${IN_FLIGHT} in flight`, IN_FLIGHT],
    ] as const) {
      await onFreshServer(start(SYNC_ALWAYS_CONFIG), system, [["fsync", variant]], (s) =>
        attempt(system, "fsync", variant, async () => {
          const o = await natsPublish(s, plan.events, inFlight);
          emit(system, "fsync", variant, rateMetrics(plan.events, o.cost), o.check, `${takeVersion()}${publishNote}: W1 as its js.publish() rows, on a server configured with \`${SYNC_ALWAYS_CONFIG.trim()}\`; ${costNote(o.cost)}`);
        }),
      );
    }
  }
  for (const w of ["W3-20k", "W3-100k"] as const) {
    if (!plan.workloads.has(w)) continue;
    await onFreshServer(start(), system, [[w, ""]], (s) =>
      attempt(system, w, "", async () => {
        await natsAddStream(s.port, STREAM_KEY, [STREAM_KEY]);
        const o = await latencyRow("nats", s.port, s.pid, W3_RATES[w], plan);
        emit(system, w, "", latencyMetrics(o), o.check, `${takeVersion()}producer thread: JetStream publishes of [float64 stamp, pad] with acks counted on one inbox per connection (js.publish() cannot offer 100,000 events/s from one Node thread); consumer: ordered push consumer (deliver all) with a callback on its own connection, receive time per message; file storage, no fsync before the ack (see W1); ${o.note}`);
      }),
    );
  }
  if (plan.workloads.has("W4")) {
    await onFreshServer(start(), system, [["W4", ""]], (s) =>
      attempt(system, "W4", "", async () => {
        const o = await natsStreams(s);
        const rss = mib(processMemory(s.pid).rss);
        const disk = mib(diskBytes(s.dir));
        emit(
          system,
          "W4",
          "",
          [
            { metric: "s", value: Number(o.cost.wallS.toFixed(3)), better: "lower", text: `${o.cost.wallS.toFixed(2)} s` },
            { metric: "RSS MiB", value: Number(rss.toFixed(1)), better: "lower", text: `RSS ${rss.toFixed(1)} MiB` },
            { metric: "disk MiB", value: Number(disk.toFixed(1)), better: "lower", text: `disk ${disk.toFixed(1)} MiB` },
          ],
          o.check,
          `${takeVersion()}${clientNote}: ONE stream on subjects \`${W4_PREFIX}.*\`, so a "stream" here is a subject (a NATS stream is a heavier thing: its own store and limits), ${W4_EVENTS_PER_STREAM} publishes to each of ${fmt(W4_STREAMS)} subjects with acks counted on one inbox per connection (as W1's "acks on one inbox" row; js.publish() would time the client), acks awaited per subject, ${W4_IN_FLIGHT} subjects in flight over ${W4_IN_FLIGHT} connections; stream creation not timed; RSS is VmRSS after; ${costNote(o.cost)}`,
        );
      }),
    );
  }
}

// ---- report -------------------------------------------------------------------------

const WORKLOAD_ORDER: Workload[] = ["W1", "fsync", "W2", "W3-20k", "W3-100k", "W4"];

function table(): string {
  const sorted = [...rows].sort((a, b) => WORKLOAD_ORDER.indexOf(a.workload) - WORKLOAD_ORDER.indexOf(b.workload));
  const esc = (s: string) => s.replaceAll("|", "\\|");
  const lines = ["| workload | system | variant | result | check |", "|---|---|---|---|---|"];
  for (const r of sorted) lines.push(`| ${r.workload} | ${r.system} | ${esc(r.variant)} | ${r.error ? `**FAILED**: ${esc(r.error)}` : r.result} | ${esc(r.check)} |`);
  return lines.join("\n");
}

function commandLine(): string {
  const args = process.argv.slice(2).join(" ");
  if (process.env.npm_lifecycle_event === "bench:peers") return `npm run bench:peers${args ? ` -- ${args}` : ""}`;
  return `node dist/loadtest/bench-peers.js${args ? ` ${args}` : ""}`;
}

function cleanupNow(): void {
  killRedisNow();
  killNatsNow();
}

function parsePlan(): { systems: SystemSpec[]; plan: Plan } {
  const { values: opts } = parseArgs({
    options: {
      systems: { type: "string" },
      workloads: { type: "string" },
      quick: { type: "boolean", default: false },
      // The Redis W3 producer's client: "resp" (default) or "ioredis"; see RedisProducer.
      "redis-producer": { type: "string", default: "resp" },
      // Read by results.ts's resultsFile(); declared so that strict parsing accepts it.
      results: { type: "string" },
    },
    strict: true,
  });
  const pick = <T extends string>(flag: string, given: string | undefined, all: readonly T[]): T[] => {
    if (given === undefined) return [...all];
    const ids = given.split(",").map((s) => s.trim()).filter(Boolean);
    for (const id of ids) {
      if (!all.includes(id as T)) {
        console.error(`--${flag}: unknown "${id}"; choose from ${all.join(",")}`);
        process.exit(2);
      }
    }
    return all.filter((id) => ids.includes(id));
  };
  const systemIds = pick("systems", opts.systems, SYSTEM_IDS);
  const redisProducer = opts["redis-producer"];
  if (redisProducer !== "resp" && redisProducer !== "ioredis") {
    console.error(`--redis-producer must be "resp" or "ioredis"`);
    process.exit(2);
  }
  const workloads = new Set(pick("workloads", opts.workloads, WORKLOAD_IDS));
  return {
    systems: SYSTEMS.filter((s) => systemIds.includes(s.id)),
    plan: { workloads, events: opts.quick ? 100_000 : 1_000_000, warmupMs: opts.quick ? 1000 : 2000, measureMs: opts.quick ? 3000 : 10_000, quick: opts.quick, redisProducer },
  };
}

async function main(): Promise<number> {
  const { systems, plan } = parsePlan();
  resultsPath = resultsFile();
  const runStart = performance.now();
  const deadline = guardRun("bench-peers", RUN_DEADLINE_MS, cleanupNow);
  if (plan.quick) runNotes.push(`**--quick:** ${fmt(plan.events)} events per W1/W2 row and ${plan.measureMs / 1000} s latency windows: a smoke run, not figures to report.`);

  try {
    for (const system of systems) {
      try {
        if (system.kind === "redis") await runRedis(system, plan);
        else await runNats(system, plan);
      } catch (err) {
        runNotes.push(`**${system.name} stopped early:** ${(err as Error).message}`);
        console.error(`${system.name}: ${(err as Error).message}`);
      }
    }
  } finally {
    cleanupNow();
  }

  const runtimeS = (performance.now() - runStart) / 1000;
  const out = [
    "# Peer benchmarks: Redis Streams and NATS JetStream",
    "",
    `- **Date:** ${new Date().toISOString()}`,
    `- **Machine:** ${cpus()[0]?.model ?? "unknown"}, ${cpus().length} cores; Node ${process.version}`,
    `- **Command:** \`${commandLine()}\` (${runtimeS.toFixed(0)} s)`,
    ...(resultsPath ? [`- **Results:** appended to \`${resultsPath}\``] : []),
    "",
    table(),
    "",
    "## Notes",
    "",
    ...runNotes.map((n) => `- ${n}`),
    ...[...rows]
      .sort((a, b) => WORKLOAD_ORDER.indexOf(a.workload) - WORKLOAD_ORDER.indexOf(b.workload))
      .filter((r) => r.note || r.error)
      .map((r) => `- **${r.workload} · ${r.system}${r.variant ? ` · ${r.variant}` : ""}:** ${r.error ? `failed: ${r.error}` : r.note}`),
    "",
  ].join("\n");
  process.stdout.write(out);
  console.error(`bench-peers: ${rows.length} rows in ${runtimeS.toFixed(0)} s`);
  clearTimeout(deadline);
  return rows.some((r) => r.error) ? 1 : 0;
}

if (isMainThread) {
  runMain(main, cleanupNow);
} else if ((workerData as { role?: string } | null)?.role === PRODUCER_ROLE) {
  serveProducerThread(runProducer);
}
