// Engine benchmark: publish (W1) and replay (W2) throughput of one stream
// against the real server, one fresh server process per workload, with the
// server's own CPU, memory and disk cost next to the client-side rate.
//
//   npm run bench:engine                        # 1,000,000 events per workload
//   npm run bench:engine -- --quick             # 100,000 events, smoke run
//   npm run bench:engine -- --no-peers          # Ticker only, no Redis rows
//
// After the Ticker rows it runs the same workloads against Redis Streams
// (./engine-redis.ts), so docs can put both side by side from one run.
// Prints a markdown report and writes it to docs/results/bench-engine-latest.md.
import { randomBytes } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { decodeEventBatch, encodePublishBatch } from "../../src/wire/client.js";
import type { TickerProcess } from "../../test/harness/ticker.js";
import { stoppedCleanly } from "../../test/harness/process.js";
import { HttpRawClient } from "../../src/client/http.js";
import { CLK_TCK, diskBytes, processMemory, ticksOf, timed } from "../lib/proc.js";
import { cell, commandLine, f1, f2, int, machineFacts, machineLine, mib, RESULTS_DIR, table, writeReport } from "../lib/report.js";
import { BATCH_EVENTS, IN_FLIGHT, PAGE_EVENTS, PAYLOAD_BYTES, payloadText, report as reportResults, resultsFile, type Measurement } from "../lib/results.js";
import { cleanupNow, guardRun, onCleanup, runMain, TempDirs } from "../lib/run.js";
import { uintAt } from "../lib/scan.js";
import { versionText } from "../systems/redis.js";
import { startTicker } from "../systems/ticker.js";
import { runRedisPeer, type PeerRow, type RedisPeerReport, type Workload } from "./engine-redis.js";

const REPORT_PATH = join(RESULTS_DIR, "bench-engine-latest.md");

const STREAM = "bench";
/**
 * Distinct pre-encoded bodies, sent round-robin. Encoding all 1,000 batches
 * up front would cost seconds and ~150 MB for no change in what the server
 * does: it parses every body afresh and nothing deduplicates without keys.
 */
const BODY_POOL = 50;
const CT_JSON = "application/json";
const CT_FLAT = "application/x-flatbuffers";

const REQUEST_TIMEOUT_MS = 60_000;
/** Before timing, the server must stay under 4% of a core for a whole window. */
const SETTLE_WINDOW_MS = 500;
const SETTLE_QUIET_CPU = 0.04;
const SETTLE_TIMEOUT_MS = 30_000;
/** The whole run must end well inside 10 minutes, even if the server hangs. */
const RUN_DEADLINE_MS = 9 * 60_000;

// ---- options -------------------------------------------------------------

const { values: opts } = parseArgs({
  options: {
    events: { type: "string" },
    quick: { type: "boolean", default: false },
    // Kept selectable so the choice of default below can be re-checked.
    client: { type: "string", default: "raw" },
    // Node 20's parseArgs has no --no-X negation, so the flag is its own option.
    "no-peers": { type: "boolean", default: false },
    // A JSON-lines file that gets this run's measurements (lib/results.ts), for `npm run bench`.
    results: { type: "string" },
  },
  strict: true,
});
const EVENTS = opts.events !== undefined ? Number(opts.events) : opts.quick ? 100_000 : 1_000_000;
if (!Number.isSafeInteger(EVENTS) || EVENTS <= 0 || EVENTS % BATCH_EVENTS !== 0) {
  console.error(`--events must be a positive multiple of ${BATCH_EVENTS}`);
  process.exit(2);
}
if (opts.client !== "raw" && opts.client !== "http" && opts.client !== "fetch") {
  console.error(`--client must be "raw", "http" or "fetch"`);
  process.exit(2);
}
const CLIENT_KIND = opts.client as "raw" | "http" | "fetch";
const CLIENT_NAMES = {
  raw: "raw HTTP/1.1 keep-alive sockets (src/client/http.ts, as a load generator such as autocannon drives a server)",
  http: "node:http with a keep-alive Agent",
  fetch: "Node's global fetch (undici)",
};

// ---- HTTP clients ----------------------------------------------------------

interface Reply {
  status: number;
  body: Buffer;
}

interface Client {
  request(method: string, path: string, body?: Buffer, headers?: Record<string, string>): Promise<Reply>;
  close(): void;
}

/**
 * Raw keep-alive sockets, one per request in flight, the default. The
 * benchmark's client shares the 2 cores with the server: node:http spent
 * ~0.4 s of client CPU per million published events (1,000 requests of
 * 184 KB), the raw client ~0.17 s, and the server got the difference.
 */
async function rawClient(port: number, sockets: number): Promise<Client> {
  const raw = await HttpRawClient.connect(port, sockets, { timeoutMs: REQUEST_TIMEOUT_MS });
  return {
    request: (method, path, body, headers = {}) => {
      if (method === "GET" && !body) return raw.get(path, headers);
      if (method === "POST" && body) return raw.post(path, body, headers);
      // Other methods (the untimed PUT of the fsync row) go over node:http.
      const once = httpClient(port, 1);
      return once.request(method, path, body, headers).finally(() => once.close());
    },
    close: () => raw.close(),
  };
}

/**
 * node:http with a keep-alive Agent: in alternating runs of
 * 300,000 events on the 2-core VM it matched or beat Node 20's fetch
 * (undici behind WHATWG streams) in most rows, by up to 1.5x, and fetch's
 * extra per-request work is client CPU taken from the cores the server runs
 * on. The VM is noisy; `--client fetch` re-checks it.
 */
function httpClient(port: number, sockets: number): Client {
  const agent = new http.Agent({ keepAlive: true, maxSockets: sockets });
  return {
    request: (method, path, body, headers = {}) =>
      new Promise((resolve, reject) => {
        const req = http.request(
          { host: "127.0.0.1", port, method, path, agent, headers: body ? { ...headers, "content-length": String(body.byteLength) } : headers },
          (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks) }));
            res.on("error", reject);
          },
        );
        req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`${method} ${path}: no answer in ${REQUEST_TIMEOUT_MS} ms`)));
        req.on("error", reject);
        req.end(body);
      }),
    close: () => agent.destroy(),
  };
}

/** Node's global fetch; its default dispatcher keeps connections alive. */
function fetchClient(port: number): Client {
  const base = `http://127.0.0.1:${port}`;
  return {
    request: async (method, path, body, headers = {}) => {
      const res = await fetch(base + path, { method, body, headers, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
      return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
    },
    close: () => {},
  };
}

// ---- server process and /proc sampling ------------------------------------

interface CpuSample {
  processTicks: number;
  threadTicks: Map<number, number>;
}

interface ThreadCpu {
  mainS: number;
  shardS: number[] | null;
  otherS: number;
}

/** How the last server's shard threads were identified, for the report. */
let shardThreadMethod = "not identified";

const tempDirs = new TempDirs("ticker-bench-");
onCleanup(() => tempDirs.removeAll());

/** The server with what this benchmark adds: its shard threads told apart, and settling. */
class Server {
  /** tid → shard label, or null when the shard threads could not be told apart. */
  private shardThreads: Map<number, string> | null = null;

  private constructor(
    readonly t: TickerProcess,
    /** Threads alive when the listening line arrived: shards yes, the scrub's piscina thread not yet. */
    private readonly earlyTids: number[],
  ) {}

  static async start(dataDir: string): Promise<Server> {
    let early: number[] = [];
    const t = await startTicker(dataDir, { onListening: (s) => (early = tidsOf(s.pid)) });
    return new Server(t, early);
  }

  get pid(): number {
    return this.t.pid;
  }

  get port(): number {
    return this.t.port;
  }

  /**
   * Waits until the server stops using CPU on its own, then finds its shard
   * threads (they must be idle for that). After a restart the server scrubs
   * every closed segment on a piscina thread; timing a replay during that
   * would measure the scrub too. Returns what settling cost, for the notes.
   */
  async settle(): Promise<string> {
    const stat = `/proc/${this.pid}/stat`;
    const t0 = performance.now();
    const c0 = ticksOf(stat);
    let last = c0;
    let quiet = false;
    while (!quiet && performance.now() - t0 < SETTLE_TIMEOUT_MS) {
      await new Promise((r) => setTimeout(r, SETTLE_WINDOW_MS));
      const now = ticksOf(stat);
      quiet = now - last <= Math.max(1, Math.floor((SETTLE_QUIET_CPU * CLK_TCK * SETTLE_WINDOW_MS) / 1000));
      last = now;
    }
    this.shardThreads = await this.findShardThreads();
    const scrub = /scrub: verified \d+ closed segments/.exec(this.t.output)?.[0];
    return (
      `${quiet ? "settled" : `NOT quiet after ${SETTLE_TIMEOUT_MS / 1000} s`}: ${((performance.now() - t0) / 1000).toFixed(1)} s, ` +
      `${((last - c0) / CLK_TCK).toFixed(2)} s server CPU after ready${scrub ? ` ("${scrub}")` : ""}`
    );
  }

  private tids(): number[] {
    return tidsOf(this.pid);
  }

  /**
   * If Node names a Worker's OS thread after its `name` option, comm says
   * "shard-N"; Node 20 leaves every thread "node". Then the shards are
   * found by what they do when idle: a Worker runs its own event loop and
   * so sleeps in epoll_wait, as do the main thread and, created before any
   * Worker, the platform's delayed-task thread; V8 helpers and the libuv
   * pool sleep on futexes. So the last `shards` epoll sleepers by tid are
   * the shards, in creation order (shard 0 first), counting only threads
   * that existed at the listening line: the scrub's piscina Worker, started
   * after ready, also sleeps in epoll_wait with a higher tid.
   */
  private async findShardThreads(): Promise<Map<number, string> | null> {
    const comm = (tid: number) => readFileSync(`/proc/${this.pid}/task/${tid}/comm`, "utf8").trim();
    const named = this.tids().filter((t) => comm(t).startsWith("shard-"));
    if (named.length > 0) {
      shardThreadMethod = "by thread name (/proc/<pid>/task/<tid>/comm)";
      return new Map(named.map((t) => [t, comm(t)]));
    }
    for (let attempt = 0; attempt < 20; attempt++) {
      const alive = new Set(this.tids());
      const sleepers = this.earlyTids.filter(
        (t) => t !== this.pid && alive.has(t) && readFileSync(`/proc/${this.pid}/task/${t}/wchan`, "utf8").includes("epoll"),
      );
      // A shard caught running is not sleeping: look again.
      if (sleepers.length === this.t.shardCount + 1) {
        shardThreadMethod =
          'inferred: the server\'s threads are all named "node", so the shards are the last epoll_wait sleepers by tid (see findShardThreads)';
        return new Map(sleepers.slice(-this.t.shardCount).map((t, i) => [t, `shard-${i}`]));
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    return null;
  }

  cpu(): CpuSample {
    const threadTicks = new Map<number, number>();
    for (const tid of this.tids()) {
      try {
        threadTicks.set(tid, ticksOf(`/proc/${this.pid}/task/${tid}/stat`));
      } catch {
        // The thread ended between the listing and the read.
      }
    }
    return { processTicks: ticksOf(`/proc/${this.pid}/stat`), threadTicks };
  }

  threadCpu(before: CpuSample, after: CpuSample): ThreadCpu {
    const delta = (tid: number) => ((after.threadTicks.get(tid) ?? 0) - (before.threadTicks.get(tid) ?? 0)) / CLK_TCK;
    const shards = this.shardThreads;
    let otherS = 0;
    for (const tid of after.threadTicks.keys()) if (tid !== this.pid && !shards?.has(tid)) otherS += delta(tid);
    return {
      mainS: delta(this.pid),
      shardS: shards ? [...shards.keys()].map(delta) : null,
      otherS: shards ? otherS : NaN,
    };
  }
}

function tidsOf(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`)
    .map(Number)
    .sort((a, b) => a - b);
}

// ---- workloads ------------------------------------------------------------

type Format = "json" | "flatbuffers";

interface Measure {
  label: string;
  wallS: number;
  serverCpuS: number;
  threads: ThreadCpu;
  clientCpuS: number;
  restCpuS: number;
  peakRss: number;
  rssAfter: number;
  diskBytes: number;
}

interface Row {
  label: string;
  /** What a peer row must mirror to be set against this one in the ratio lines. */
  workload: Workload;
  format: Format;
  measure?: Measure;
  error?: string;
}

function buildBodies(format: Format): Buffer[] {
  const bodies: Buffer[] = [];
  for (let b = 0; b < BODY_POOL; b++) {
    if (format === "json") {
      const events = Array.from({ length: BATCH_EVENTS }, () => `{"type":"tick","payload":"${payloadText(PAYLOAD_BYTES)}"}`);
      bodies.push(Buffer.from(`{"events":[${events.join(",")}]}`));
    } else {
      const bytes = encodePublishBatch(Array.from({ length: BATCH_EVENTS }, () => ({ type: "tick", payload_bytes: randomBytes(PAYLOAD_BYTES) })));
      bodies.push(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    }
  }
  return bodies;
}

async function makeClient(server: Server, inFlight: number): Promise<Client> {
  if (CLIENT_KIND === "raw") return rawClient(server.port, inFlight);
  return CLIENT_KIND === "http" ? httpClient(server.port, inFlight) : fetchClient(server.port);
}

/** Runs `body` between two samples of the server and the client process. */
async function measured(label: string, server: Server, events: number, body: () => Promise<void>): Promise<Measure> {
  const t = await timed(
    () => server.cpu(),
    (c) => c.processTicks,
    body,
  );
  const mem = processMemory(server.pid);
  return {
    label,
    wallS: t.wallS,
    serverCpuS: t.serverCpuS,
    threads: server.threadCpu(t.before, t.after),
    clientCpuS: t.clientCpuS,
    restCpuS: t.restCpuS,
    peakRss: mem.peak,
    rssAfter: mem.rss,
    diskBytes: diskBytes(server.t.dir) / events,
  };
}

async function headSeq(client: Client): Promise<number> {
  const r = await client.request("GET", `/v1/streams/${STREAM}`);
  if (r.status !== 200) throw new Error(`GET /v1/streams/${STREAM}: HTTP ${r.status}: ${r.body.toString("utf8", 0, 300)}`);
  return (JSON.parse(r.body.toString("utf8")) as { head_seq: number }).head_seq;
}

/** W1: `events` events in batches, `inFlight` requests outstanding at any time. */
async function publish(label: string, server: Server, format: Format, inFlight: number, fsync: boolean): Promise<Measure> {
  const client = await makeClient(server, inFlight);
  try {
    if (fsync) {
      const r = await client.request("PUT", `/v1/streams/${STREAM}`, Buffer.from(`{"durability":"fsync"}`), { "content-type": CT_JSON });
      if (r.status !== 201 && r.status !== 200) throw new Error(`PUT durability fsync: HTTP ${r.status}: ${r.body.toString()}`);
    }
    const bodies = buildBodies(format);
    const headers = { "content-type": format === "json" ? CT_JSON : CT_FLAT };
    const batches = EVENTS / BATCH_EVENTS;
    const path = `/v1/streams/${STREAM}/events`;
    let nextBatch = 0;
    let accepted = 0;
    let failed = false;
    const lane = async () => {
      while (!failed && nextBatch < batches) {
        const i = nextBatch++;
        const r = await client.request("POST", path, bodies[i % bodies.length], headers);
        if (r.status !== 200) {
          failed = true;
          throw new Error(`batch ${i + 1}/${batches}: HTTP ${r.status}: ${r.body.toString("utf8", 0, 300)}`);
        }
        accepted += (JSON.parse(r.body.toString("utf8")) as { count: number }).count;
      }
    };
    const m = await measured(label, server, EVENTS, async () => {
      await Promise.all(Array.from({ length: inFlight }, lane));
    });
    if (accepted !== EVENTS) throw new Error(`responses acknowledged ${accepted} events, expected ${EVENTS}`);
    const head = await headSeq(client);
    if (head !== EVENTS) throw new Error(`head_seq is ${head} after publishing ${EVENTS}`);
    return m;
  } finally {
    client.close();
  }
}

interface PageCount {
  count: number;
  next: number;
}

const SEQ_KEY = Buffer.from(`{"seq":`);
const NEXT_KEY = Buffer.from(`"next":`);

/**
 * Counts a JSON page's events and checks their seqs run on from `from`,
 * without JSON.parse: parsing ~2.5 MB per page would put more client CPU
 * into the timed loop than the server spends rendering it. Every event
 * object starts with {"seq":N and a base64 payload cannot contain that.
 */
function countJsonPage(body: Buffer, from: number): PageCount {
  let seq = from;
  for (let at = body.indexOf(SEQ_KEY); at !== -1; at = body.indexOf(SEQ_KEY, at + SEQ_KEY.length)) {
    const s = uintAt(body, at + SEQ_KEY.length);
    if (s !== seq) throw new Error(`JSON page from ${from}: seq ${s} where ${seq} was expected`);
    seq++;
  }
  const n = body.lastIndexOf(NEXT_KEY);
  const next = n === -1 ? NaN : uintAt(body, n + NEXT_KEY.length);
  if (next !== seq) throw new Error(`JSON page from ${from}: next is ${next}, events end at ${seq - 1}`);
  return { count: seq - from, next };
}

/** Counts a binary page by its header and checks every frame's seq (u64 LE at frame offset 8). */
function countFlatPage(body: Buffer, from: number): PageCount {
  const page = decodeEventBatch(body);
  const rec = page.records;
  const view = new DataView(rec.buffer, rec.byteOffset, rec.byteLength);
  let at = 0;
  let seq = from;
  for (let i = 0; i < page.count; i++) {
    // Seqs stay below 2^53, so the high word times 2^32 is exact.
    const s = view.getUint32(at + 8, true) + view.getUint32(at + 12, true) * 2 ** 32;
    if (s !== seq) throw new Error(`binary page from ${from}: frame ${i} has seq ${s} where ${seq} was expected`);
    seq++;
    at += view.getUint32(at, true);
  }
  if (at !== rec.byteLength) throw new Error(`binary page from ${from}: ${page.count} frames span ${at} of ${rec.byteLength} record bytes`);
  if (page.next !== seq) throw new Error(`binary page from ${from}: next is ${page.next}, frames end at ${seq - 1}`);
  return { count: page.count, next: page.next };
}

/**
 * W2: reads the whole stream back from seq 1 in pages. With `depth` 1 it
 * follows `next` one request at a time; with more, it keeps `depth` page
 * requests outstanding by seq range (from = 1, 1 + page, ...), which a batch
 * consumer can do because seqs are gap-free, the way Kafka consumers prefetch.
 * Pages are checked in order either way.
 */
async function replay(label: string, server: Server, format: Format, depth: number): Promise<Measure> {
  // head_seq (untimed) over the W1 client; pages over raw sockets, as the
  // Redis rows read theirs (src/client/http.ts): `depth` sockets, one page each.
  const raw = await HttpRawClient.connect(server.port, depth, { timeoutMs: REQUEST_TIMEOUT_MS });
  const client = await makeClient(server, 1);
  try {
    const head = await headSeq(client);
    if (head !== EVENTS) throw new Error(`stream holds head_seq ${head} after restart, expected ${EVENTS}`);
    const headers: Record<string, string> = format === "json" ? { accept: CT_JSON } : { accept: CT_FLAT };
    const countPage = format === "json" ? countJsonPage : countFlatPage;
    let received = 0;
    let from = 1;
    let pages = 0;
    let lastBody: Buffer | null = null;
    const get = (at: number) => raw.get(`/v1/streams/${STREAM}/events?from=${at}&limit=${PAGE_EVENTS}`, headers);
    const m = await measured(label, server, EVENTS, async () => {
      const ahead: Array<{ at: number; res: ReturnType<typeof get> }> = [];
      let nextAsk = 1;
      while (received < EVENTS) {
        // Following `next` when depth is 1; by range otherwise.
        while (ahead.length < depth && (depth === 1 ? ahead.length === 0 : nextAsk <= EVENTS)) {
          const at = depth === 1 ? from : nextAsk;
          ahead.push({ at, res: get(at) });
          nextAsk = at + PAGE_EVENTS;
        }
        const { at, res } = ahead.shift()!;
        const r = await res;
        if (at !== from) throw new Error(`page asked from ${at} while ${from} was due`);
        if (r.status !== 200) throw new Error(`page from ${from}: HTTP ${r.status}: ${r.body.toString("utf8", 0, 300)}`);
        const page = countPage(r.body, from);
        if (page.count === 0) throw new Error(`page from ${from} is empty after ${received} of ${EVENTS} events`);
        received += page.count;
        from = page.next;
        pages++;
        lastBody = r.body;
      }
      await Promise.all(ahead.map((a) => a.res));
    });
    if (received !== EVENTS) throw new Error(`received ${received} events, expected ${EVENTS}`);
    // One full parse, untimed, so a page that only looks right still fails the run.
    if (format === "json") JSON.parse(lastBody!.toString("utf8"));
    else if (decodeEventBatch(lastBody!).head_seq !== EVENTS) throw new Error(`last binary page reports head_seq ${decodeEventBatch(lastBody!).head_seq}`);
    m.label += ` (${pages} pages)`;
    return m;
  } finally {
    client.close();
    raw.close();
  }
}

/** Pages in flight for the prefetching W2 rows. */
const REPLAY_DEPTH = 4;

// ---- run ------------------------------------------------------------------

interface PublishSpec {
  label: string;
  format: Format;
  inFlight: number;
  fsync: boolean;
  /** Keep the data dir for the W2 run of this format. */
  keepFor?: Format;
}

const fmtName = (f: Format) => (f === "json" ? "JSON" : "FlatBuffers");
const PUBLISH: PublishSpec[] = [
  { label: "W1 publish JSON, 1 in flight", format: "json", inFlight: 1, fsync: false },
  { label: `W1 publish JSON, ${IN_FLIGHT} in flight`, format: "json", inFlight: IN_FLIGHT, fsync: false, keepFor: "json" },
  { label: "W1 publish FlatBuffers, 1 in flight", format: "flatbuffers", inFlight: 1, fsync: false },
  { label: `W1 publish FlatBuffers, ${IN_FLIGHT} in flight`, format: "flatbuffers", inFlight: IN_FLIGHT, fsync: false, keepFor: "flatbuffers" },
  { label: `W1 publish FlatBuffers, ${IN_FLIGHT} in flight, fsync`, format: "flatbuffers", inFlight: IN_FLIGHT, fsync: true },
];

const notes: string[] = [];

/** Starts a server on `dataDir`, runs `work`, stops the server; never throws. */
async function runWorkload(label: string, workload: Workload, format: Format, dataDir: string, work: (s: Server) => Promise<Measure>): Promise<Row> {
  let server: Server | null = null;
  const row: Row = { label, workload, format };
  try {
    server = await Server.start(dataDir);
    notes.push(`${label}: before timing, ${await server.settle()}.`);
    row.measure = await work(server);
    if (server.t.exit) throw new Error(`server exited (${server.t.exit}) during the workload`);
  } catch (err) {
    row.error = (err as Error).message.split("\n")[0];
    notes.push(`**${label} failed:** ${(err as Error).message}${server ? `\n\n\`\`\`\n${server.t.outputTail()}\n\`\`\`` : ""}`);
  }
  if (server) {
    const how = await server.t.stop();
    if (!stoppedCleanly(how)) notes.push(`${label}: server stop: ${how}.`);
    if (server.t.errors.length > 0) notes.push(`${label}: server stderr:\n\n\`\`\`\n${server.t.errors.slice(0, 20).join("\n")}\n\`\`\``);
  }
  console.error(row.error ? `${label}: FAILED: ${row.error}` : `${label}: ${fmtRate(row.measure!)} events/s`);
  return row;
}

/** A Ticker row as measurements for `npm run bench`: "W1 publish JSON, 8 in flight" → W1, "JSON, 8 in flight". */
function measurementsOf(r: Row): Measurement[] {
  if (!r.measure) return [];
  const fsync = r.workload === "publish-n-fsync";
  const workload = fsync ? "fsync" : r.workload === "replay" ? "W2" : "W1";
  const variant = r.label
    .replace(/^W[12] (publish|replay) /, "")
    .replace(/, fsync$/, "")
    .replace(/, limit \d+/, "");
  const m = r.measure;
  return [
    { workload, system: "Ticker", variant, metric: "events/s", value: EVENTS / m.wallS, better: "higher" },
    { workload, system: "Ticker", variant, metric: "server CPU s", value: m.serverCpuS, better: "lower" },
  ];
}

const fmtRate = (m: { wallS: number }) => int(EVENTS / m.wallS);
const mib0 = (bytes: number) => (Number.isFinite(bytes) ? mib(bytes).toFixed(0) : "?");

function tickerTable(rows: Row[]): string {
  const head = [
    "workload",
    "events/s",
    "wall s",
    "server CPU s",
    "main thread CPU s",
    "shard threads CPU s",
    "other threads CPU s",
    "client CPU s",
    "rest of machine CPU s",
    "server peak RSS MiB",
    "RSS after MiB",
    "disk B/event",
  ];
  return table(
    head,
    head.map((_, i) => (i === 0 ? "l" : "r")),
    rows.map((r) => {
      const m = r.measure;
      if (!m) return [r.label, `FAILED: ${cell(r.error!)}`, ...head.slice(2).map(() => "")];
      const t = m.threads;
      const shards = t.shardS ? t.shardS.map(f2).join(" / ") : "?";
      return [
        m.label,
        fmtRate(m),
        f2(m.wallS),
        f2(m.serverCpuS),
        f2(t.mainS),
        shards,
        f2(t.otherS),
        f2(m.clientCpuS),
        f2(m.restCpuS),
        mib0(m.peakRss),
        mib0(m.rssAfter),
        f1(m.diskBytes),
      ];
    }),
  );
}

function peerTable(rows: PeerRow[]): string {
  const head = [
    "workload",
    "events/s",
    "wall s",
    "redis-server CPU s",
    "client CPU s",
    "rest of machine CPU s",
    "redis peak RSS MiB",
    "redis RSS after MiB",
    "AOF B/event",
    "checked",
  ];
  return table(
    head,
    head.map((_, i) => (i === 0 || i === head.length - 1 ? "l" : "r")),
    rows.map((r) => {
      const m = r.measure;
      if (!m) return [r.label, `FAILED: ${cell(r.error!)}`, ...head.slice(2).map(() => "")];
      const disk = Number.isNaN(m.diskBytes) ? "–" : f1(m.diskBytes);
      return [m.label, fmtRate(m), f2(m.wallS), f2(m.serverCpuS), f2(m.clientCpuS), f2(m.restCpuS), mib0(m.peakRss), mib0(m.rssAfter), disk, m.check];
    }),
  );
}

const PEER_WORKLOADS: Record<Workload, string> = {
  "publish-1": "W1 publish, 1 in flight",
  "publish-n": `W1 publish, ${IN_FLIGHT} in flight`,
  "publish-n-fsync": `W1 publish, ${IN_FLIGHT} in flight, fsync on every write`,
  replay: `W2 replay, pages of ${PAGE_EVENTS}`,
};

/**
 * One line per workload: Ticker's events/s over Redis's, and the same for
 * server CPU per event (both sides handled the same number of events), for
 * every Ticker row of that workload (JSON and FlatBuffers differ a lot).
 */
function ratioLines(peerRows: PeerRow[], rows: Row[]): string[] {
  const x = (n: number) => (Number.isFinite(n) ? `${n.toFixed(2)}x` : "?");
  return peerRows.map((p) => {
    const head = `- **${PEER_WORKLOADS[p.workload]}:** `;
    const pm = p.measure;
    if (!pm) return `${head}no Redis figure (${p.error}).`;
    const parts = rows
      .filter((r) => r.workload === p.workload && r.measure)
      .map((r) => `${r.label}: ${x(pm.wallS / r.measure!.wallS)} events/s, ${x(r.measure!.serverCpuS / pm.serverCpuS)} server CPU`);
    // On 2 cores a client busier than the server takes CPU the server could have used, and may set the pace.
    const clientBound = pm.clientCpuS > pm.serverCpuS;
    const caveat = clientBound
      ? ` **Client-bound:** the client used ${f2(pm.clientCpuS)} s CPU in ${f2(pm.wallS)} s, more than redis-server's ${f2(pm.serverCpuS)} s, so this ratio is partly the client's cost.`
      : "";
    return `${head}${parts.length > 0 ? parts.join("; ") : "no Ticker row completed"}.${caveat}`;
  });
}

function peerSection(peer: RedisPeerReport, rows: Row[]): string[] {
  if (!peer.available) return ["## Redis Streams, same run", "", `redis: unavailable (${peer.reason})`];
  const v = peer.version;
  return [
    "## Redis Streams, same run",
    "",
    `- **redis-server:** ${versionText(v)}`,
    "",
    peerTable(peer.rows),
    "",
    "Ratio (Ticker / Redis), same workload and event count; above 1x means Ticker was faster, or used more server CPU:",
    "",
    ...ratioLines(peer.rows, rows),
    "",
    "How to read it:",
    "",
    `- Each Redis row mirrors the Ticker rows of its workload: ${EVENTS.toLocaleString("en-US")} XADDs of one field \`p\` with a ${PAYLOAD_BYTES}-character value to one stream key, in pipelines of ${BATCH_EVENTS} XADDs (one Ticker batch), then XRANGE \`- +\` with COUNT ${PAGE_EVENTS} (one Ticker page), each next page starting after the last id read (\`(id\`), one request at a time.`,
    `- A private redis-server per W1 row (daemonized, 127.0.0.1 on a free port, temp dir, stopped by the pid in its pidfile), with \`--save ""\` and \`--appendonly no\`: nothing persisted, so those rows compare the servers as processes, not as stores. The fsync row runs on its own instance with \`--appendonly yes --appendfsync always\` (automatic AOF rewrite off); Ticker's fsync row is a stream with \`durability: fsync\`. W2 reads the ${IN_FLIGHT}-in-flight row's stream from the same process, from memory, right after it was written; Ticker's W2 reads its log from a hot page cache after a restart.`,
    `- Client: raw \`node:net\` sockets in the benchmark's own process (\`loadtest/lib/resp.ts\`), no Redis client library. **Pipelines are RESP encoded before timing** (a pool of ${BODY_POOL} distinct pipelines of ${BATCH_EVENTS} XADDs, sent round-robin), as Ticker's request bodies are; "${IN_FLIGHT} in flight" is ${IN_FLIGHT} sockets with one pipeline outstanding on each, as the Ticker rows use ${IN_FLIGHT} keep-alive sockets with one request each. Replies are only counted by a streaming scanner that skips bulk bodies by length and fails the row on any error reply; each XRANGE page is walked once as its bytes arrive, for its entry count and last id (the next page's exclusive start), with no per-entry objects. A ratio line is flagged client-bound when the client used more CPU than redis-server.`,
    "- redis-server CPU is utime+stime of its pid from /proc/<pid>/stat over the timed part (all its threads; commands run on one). Peak RSS is VmHWM over the server's life, RSS after is VmRSS after the workload; AOF B/event is allocated bytes (`du`) of the instance's dir after the workload over the events. XLEN is checked after each W1 row, and W2 checks that every entry is one `p` field of the payload's length, that every id rises (within and across pages) and that nothing follows the last page.",
  ];
}

async function main(): Promise<number> {
  const deadline = guardRun("bench-engine", RUN_DEADLINE_MS);

  const rows: Row[] = [];
  const kept = new Map<Format, string>();
  try {
    for (const spec of PUBLISH) {
      const dir = tempDirs.make();
      const workload: Workload = spec.fsync ? "publish-n-fsync" : spec.inFlight === 1 ? "publish-1" : "publish-n";
      const row = await runWorkload(spec.label, workload, spec.format, dir, (s) => publish(spec.label, s, spec.format, spec.inFlight, spec.fsync));
      rows.push(row);
      if (spec.keepFor && row.measure) kept.set(spec.keepFor, dir);
      else tempDirs.remove(dir);
    }
    for (const format of ["json", "flatbuffers"] as const) {
      const dir = kept.get(format);
      for (const depth of [1, REPLAY_DEPTH]) {
        const label = `W2 replay ${fmtName(format)}, limit ${PAGE_EVENTS}, ${depth === 1 ? "following next" : `${depth} pages in flight`}`;
        if (!dir) {
          rows.push({ label, workload: "replay", format, error: `no data: W1 ${fmtName(format)}, ${IN_FLIGHT} in flight did not complete` });
          continue;
        }
        rows.push(await runWorkload(label, "replay", format, dir, (s) => replay(label, s, format, depth)));
      }
      if (dir) tempDirs.remove(dir);
    }
  } finally {
    cleanupNow();
  }
  reportResults(rows.flatMap(measurementsOf), opts.results ?? resultsFile());

  // After the Ticker rows, so a slow apt-get install or a broken Redis cannot change them.
  let peer: RedisPeerReport | null = null;
  if (!opts["no-peers"]) {
    try {
      peer = await runRedisPeer({
        events: EVENTS,
        batchEvents: BATCH_EVENTS,
        payloadBytes: PAYLOAD_BYTES,
        pageEvents: PAGE_EVENTS,
        inFlight: IN_FLIGHT,
        poolSize: BODY_POOL,
      });
    } finally {
      cleanupNow();
    }
    if (!peer.available) console.error(`redis: unavailable (${peer.reason})`);
  }

  const allNotes = [...notes, ...(peer?.notes ?? [])];
  const facts = machineFacts();
  const report = [
    "# Engine benchmark: latest run",
    "",
    "Written by `loadtest/workloads/engine.ts`; overwritten on every run.",
    "",
    `- **Date:** ${facts.date}`,
    `- **Machine:** ${machineLine(facts)}`,
    `- **Node:** ${facts.node}; CLK_TCK ${CLK_TCK}`,
    `- **Commit:** ${facts.commit}`,
    `- **Command:** \`${commandLine("bench:engine")}\``,
    "",
    tickerTable(rows),
    "",
    "How to read it:",
    "",
    `- ${EVENTS.toLocaleString("en-US")} events per workload, one stream (\`${STREAM}\`), a fresh server process (\`serve --port 0\`, default config) on a fresh temp data dir for each W1 row. W2 restarts a server on the data dir that the matching W1 "8 in flight" row wrote (JSON payloads for the JSON replay, binary payloads for the FlatBuffers one), so its pages come from a hot page cache.`,
    `- W1: batches of ${BATCH_EVENTS} events with ${PAYLOAD_BYTES}-byte payloads (JSON: \`{"type":"tick","payload":"<${PAYLOAD_BYTES} chars>"}\`; FlatBuffers: \`payload_bytes\` of ${PAYLOAD_BYTES} random bytes). **Request bodies are pre-encoded before timing** (a pool of ${BODY_POOL} distinct batches, sent round-robin), so client encoding is not measured. Every response is checked for 200 and its \`count\`; \`head_seq\` must equal the events sent.`,
    `- W2: pages of \`limit=${PAGE_EVENTS}\` from seq 1: one request at a time following \`next\`, and ${REPLAY_DEPTH} page requests outstanding by seq range (seqs are gap-free, so a batch consumer can prefetch), pages checked in order, read over raw \`node:net\` keep-alive sockets like the Redis rows (\`src/client/http.ts\`: status line and content-length only, each body read straight into one buffer of that length; ${REPLAY_DEPTH} in flight is ${REPLAY_DEPTH} sockets with one request each). The count and every seq are checked from frame headers (binary) or from the \`{"seq":N\` keys (JSON), without decoding events in the timed loop.`,
    `- Client: W1 uses ${CLIENT_NAMES[CLIENT_KIND]}; W2 uses raw sockets like the Redis rows (above; its untimed head_seq check uses the W1 client). Both run in the benchmark's own process, on the same ${facts.cores} cores as the server ("client CPU s" is its CPU during the timed part; "rest of machine" is all other busy CPU from /proc/stat over the same interval: other processes, kernel softirq work). No warm-up: each server starts cold, but timing starts only once it has been idle for ${SETTLE_WINDOW_MS} ms (see the notes).`,
    `- Server CPU is utime+stime from /proc/<pid>/stat over the timed part. Per-thread CPU is from /proc/<pid>/task/*/stat: the main thread (uWS front) is tid = pid; shard threads are listed shard-0 / shard-1 /… (${shardThreadMethod}); "other" is V8 helpers, the libuv pool (fdatasync) and the rest. Peak RSS is VmHWM (whole server life, start included); disk B/event is allocated bytes (\`du\`) of the data dir after the workload over the events.`,
    ...(peer ? ["", ...peerSection(peer, rows)] : []),
    ...(allNotes.length > 0 ? ["", "## Notes from this run", "", ...allNotes.map((n) => `- ${n}`)] : []),
    "",
  ].join("\n");
  writeReport(REPORT_PATH, report);
  clearTimeout(deadline);
  // An unavailable peer is the machine's state, not a failed run; a failed peer row is.
  return rows.some((r) => r.error) || (peer?.available && peer.rows.some((r) => r.error)) ? 1 : 0;
}

runMain(main);
