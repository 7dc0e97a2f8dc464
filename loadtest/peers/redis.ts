// Redis Streams as a peer for bench-engine: W1 (publish) and W2 (replay)
// mirrored with XADD and XRANGE against a private redis-server, measured the
// way the Ticker rows are (server CPU from /proc, client CPU of this process,
// the rest of the machine), so the two can sit in one report from one run.
//
// Each W1 row gets a fresh redis-server in a fresh temp dir, as each Ticker W1
// row gets a fresh server; W2 reads the stream the "8 in flight" row wrote.
//
// The client is as light as Ticker's: XADD pipelines are RESP encoded before
// timing (a pool of distinct ones, like bench-engine's pre-encoded bodies),
// written to raw node:net sockets, and their replies only counted
// (./resp.ts); XRANGE pages are walked once, as they arrive, for their count
// and last id.
//
// bench-consume uses the same private server, install step and connection
// (RedisServer, ensureRedisServer, RespConn) for its XADD → XREAD latency rows.
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { diskBytes, processMemory, ticksOf, timed } from "../proc.js";
import { daemonVersion, freePort, installed, lastLine, onPath, run, type DaemonVersion } from "./daemon.js";
import { encodeCommand, readScalar, ReplyCounter, XrangeReader, type StreamId } from "./resp.js";

export interface RedisWorkloadSpec {
  events: number;
  batchEvents: number;
  payloadBytes: number;
  pageEvents: number;
  /** The Ticker rows' "N in flight". */
  inFlight: number;
  /** Distinct pre-encoded pipelines, sent round-robin: the Ticker rows' body pool. */
  poolSize: number;
}

/** Which Ticker workload a row mirrors, for the ratio lines. */
export type Workload = "publish-1" | "publish-n" | "publish-n-fsync" | "replay";

export interface PeerMeasure {
  label: string;
  wallS: number;
  serverCpuS: number;
  clientCpuS: number;
  restCpuS: number;
  peakRss: number;
  rssAfter: number;
  /** Allocated bytes of the AOF over the events; NaN where nothing is persisted. */
  diskBytes: number;
  /** What was verified after the run, for the table. */
  check: string;
}

export interface PeerRow {
  label: string;
  workload: Workload;
  measure?: PeerMeasure;
  error?: string;
}

export type RedisPeerReport =
  | { available: true; version: RedisVersion; rows: PeerRow[]; notes: string[] }
  | { available: false; reason: string; notes: string[] };

const KEY = "bench";
const FIELD = "p";
const FIELD_BYTES = Buffer.from(FIELD);
const START_TIMEOUT_MS = 15_000;
/** redis-server exits within milliseconds of SIGTERM without an RDB save; more means it is stuck. */
const STOP_TIMEOUT_MS = 15_000;
const COMMAND_TIMEOUT_MS = 60_000;
/** apt-get can sit on a dead mirror for minutes; the bench's own deadline is 9 minutes in all. */
const APT_UPDATE_TIMEOUT_MS = 120_000;
const APT_INSTALL_TIMEOUT_MS = 180_000;

/** No AOF, or an AOF fsynced once a second (in a background thread) or before every reply. */
export type Persistence = "none" | "aof-everysec" | "aof-always";

const liveServers = new Set<RedisServer>();

/** Synchronous last resort for bench-engine's deadline and signal handlers. */
export function killRedisNow(): void {
  for (const s of liveServers) s.killNow();
}

// ---- finding or installing redis-server ------------------------------------

/**
 * redis-server's path, installing the Debian package first when it is not
 * on PATH (a fresh machine has no Redis). Returns a reason instead when
 * that fails, so the Ticker rows still get reported.
 */
export async function ensureRedisServer(notes: string[]): Promise<{ binary: string } | { reason: string }> {
  const found = onPath("redis-server");
  if (found) return { binary: found };
  console.error("redis: redis-server not on PATH; apt-get update && apt-get install -y redis-server");
  const t0 = performance.now();
  const update = await run("apt-get", ["update"], APT_UPDATE_TIMEOUT_MS);
  // A failed update may still leave usable package lists from an earlier one, so try the install anyway.
  const install = await run("apt-get", ["install", "-y", "redis-server"], APT_INSTALL_TIMEOUT_MS);
  const binary = onPath("redis-server");
  if (!install.ok || !binary) {
    const why = lastLine(install.out) || "apt-get install failed";
    return { reason: `redis-server not on PATH and apt-get install failed: ${why}${update.ok ? "" : `; apt-get update: ${lastLine(update.out)}`}` };
  }
  // The sync keeps dpkg's writeback out of the AOF fsync row.
  return installed("redis-server", "Redis", binary, t0, notes);
}

/** `line` is all of `redis-server --version`: build, allocator and sha are part of what was measured. */
export type RedisVersion = DaemonVersion;

export function serverVersion(binary: string): Promise<RedisVersion> {
  // "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=…"
  return daemonVersion(binary, "redis-server", /v=(\d+\.\d+\.\d+)/);
}

/** XRANGE takes an exclusive start, "(id", from Redis 6.2 on. */
function hasExclusiveRange(version: RedisVersion): boolean {
  const [major, minor] = version.number.split(".").map(Number);
  return major > 6 || (major === 6 && minor >= 2);
}

// ---- the server process ---------------------------------------------------

/** Exited, or a zombie nobody has reaped yet: the daemon's parent is init, not us. */
function gone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat[stat.lastIndexOf(")") + 2] === "Z";
  } catch {
    return true;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class RedisServer {
  private constructor(
    readonly pid: number,
    readonly port: number,
    readonly dir: string,
  ) {
    liveServers.add(this);
  }

  /**
   * A private redis-server, daemonized on a free loopback port with its
   * pidfile, log and any AOF in a fresh temp dir. `--save ""`: no RDB, ever,
   * so no fork for a snapshot runs beside the workload or at shutdown.
   */
  static async start(binary: string, persistence: Persistence): Promise<RedisServer> {
    const dir = mkdtempSync(join(tmpdir(), "ticker-bench-redis-"));
    try {
      const pidfile = join(dir, "redis.pid");
      const logfile = join(dir, "redis.log");
      const port = await freePort();
      const durability =
        persistence === "none"
          ? ["--appendonly", "no"]
          : // Percentage 0 turns off the automatic AOF rewrite: it forks a child whose
            // CPU is not in the server's /proc counters, and Ticker has no compaction
            // on this path either. What is left is append + fsync, as in Ticker's row.
            ["--appendonly", "yes", "--appendfsync", persistence === "aof-always" ? "always" : "everysec", "--auto-aof-rewrite-percentage", "0"];
      const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", ...durability, "--dir", dir, "--daemonize", "yes", "--pidfile", pidfile, "--logfile", logfile];
      const launched = await run(binary, args, START_TIMEOUT_MS);
      if (!launched.ok) throw new Error(`redis-server did not start: ${lastLine(launched.out)}`);
      const t0 = performance.now();
      let pid = NaN;
      while (performance.now() - t0 < START_TIMEOUT_MS) {
        // The daemon writes its pidfile after the fork, so it may lag the launcher's exit.
        if (existsSync(pidfile)) pid = Number(readFileSync(pidfile, "utf8").trim());
        if (pid > 0) break;
        await sleep(20);
      }
      if (!(pid > 0)) throw new Error(`no pidfile in ${START_TIMEOUT_MS} ms; log: ${RedisServer.logTail(logfile)}`);
      const server = new RedisServer(pid, port, dir);
      try {
        const conn = await RespConn.connect(port);
        try {
          const pong = await conn.command("PING");
          if (pong !== "PONG") throw new Error(`PING answered ${JSON.stringify(pong)}`);
        } finally {
          conn.close();
        }
      } catch (err) {
        await server.stop();
        throw new Error(`redis-server (pid ${pid}) not answering: ${(err as Error).message}; log: ${RedisServer.logTail(logfile)}`);
      }
      return server;
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  private static logTail(logfile: string): string {
    return existsSync(logfile) ? readFileSync(logfile, "utf8").trim().split("\n").slice(-3).join(" / ") : "(no log)";
  }

  cpuTicks(): number {
    return ticksOf(`/proc/${this.pid}/stat`);
  }

  /** Kills the pid from the pidfile and waits for it to exit, then removes the temp dir. */
  async stop(): Promise<string> {
    let how = "SIGTERM: exited";
    if (!gone(this.pid) && this.isRedis()) {
      process.kill(this.pid, "SIGTERM");
      const t0 = performance.now();
      while (!gone(this.pid) && performance.now() - t0 < STOP_TIMEOUT_MS) await sleep(20);
      if (!gone(this.pid)) {
        process.kill(this.pid, "SIGKILL");
        while (!gone(this.pid)) await sleep(20);
        how = `SIGTERM ignored for ${STOP_TIMEOUT_MS} ms, SIGKILLed`;
      }
    } else {
      how = "had already exited";
    }
    liveServers.delete(this);
    rmSync(this.dir, { recursive: true, force: true });
    return how;
  }

  killNow(): void {
    try {
      if (this.isRedis()) process.kill(this.pid, "SIGKILL");
    } catch {
      // Already gone.
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** A pid from a pidfile can outlive its process and be reused; kill only a redis-server. */
  private isRedis(): boolean {
    try {
      return readFileSync(`/proc/${this.pid}/comm`, "utf8").startsWith("redis-server");
    } catch {
      return false;
    }
  }
}

// ---- the client -----------------------------------------------------------

/** Reads the answer to one request from chunks split anywhere. */
export interface ReplyReader<T> {
  /** Takes the next bytes; true once the whole answer has arrived. Throws on a bad or error reply. */
  feed(chunk: Buffer): boolean;
  result(): T;
}

/**
 * The replies to `n` pipelined commands, counted by one connection's
 * ReplyCounter (idle between requests); their bytes are kept only if asked.
 */
class CountedReplies implements ReplyReader<Buffer | null> {
  private readonly counter = new ReplyCounter();
  private n = 0;
  private due = 0;
  private errorsBefore = 0;
  private chunks: Buffer[] | null = null;

  expect(n: number, keep: boolean): this {
    this.n = n;
    this.due = this.counter.replies + n;
    this.errorsBefore = this.counter.errors;
    this.chunks = keep ? [] : null;
    return this;
  }

  feed(chunk: Buffer): boolean {
    this.chunks?.push(chunk);
    this.counter.feed(chunk);
    if (this.counter.replies < this.due) return false;
    if (this.counter.replies > this.due || !this.counter.idle) throw new Error(`more than the ${this.n} replies due arrived`);
    const errors = this.counter.errors - this.errorsBefore;
    if (errors > 0) throw new Error(`${errors} of ${this.n} replies were errors, the last: ${this.counter.error}`);
    return true;
  }

  result(): Buffer | null {
    const c = this.chunks;
    return c ? (c.length === 1 ? c[0] : Buffer.concat(c)) : null;
  }
}

interface Waiter {
  reader: ReplyReader<unknown>;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/**
 * One raw socket to redis-server with one request in flight at a time: the
 * request is written as given, and its answer read by the request's own
 * ReplyReader as the bytes arrive. A connection that fails stays failed: a
 * benchmark wants the error, not a retry.
 */
export class RespConn {
  private readonly replies = new CountedReplies();
  private waiter: Waiter | null = null;
  private failure: Error | null = null;

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => this.fail(err));
    socket.on("close", () => this.fail(new Error("connection closed")));
    // Idle time, not per request: it only matters while an answer is awaited.
    socket.setTimeout(COMMAND_TIMEOUT_MS, () => {
      if (this.waiter) this.fail(new Error(`no reply in ${COMMAND_TIMEOUT_MS} ms`));
    });
  }

  static connect(port: number): Promise<RespConn> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: "127.0.0.1", port });
      const onError = (err: Error) => reject(err);
      socket.once("error", onError);
      socket.once("connect", () => {
        socket.off("error", onError);
        resolve(new RespConn(socket));
      });
    });
  }

  /** Writes `request` and resolves with what `reader` made of the answer. */
  request<T>(request: Buffer, reader: ReplyReader<T>): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.waiter) return Promise.reject(new Error("a request is already in flight on this connection"));
    return new Promise<T>((resolve, reject) => {
      this.waiter = { reader, resolve: resolve as (value: unknown) => void, reject };
      this.socket.write(request);
    });
  }

  /**
   * Writes a pipeline of `replies` commands and resolves once all their
   * replies have arrived, with their bytes if `keep`, else null. Rejects if
   * any of them is an error reply.
   */
  send(request: Buffer, replies: number, keep = false): Promise<Buffer | null> {
    if (this.waiter) return Promise.reject(new Error("a request is already in flight on this connection"));
    return this.request(request, this.replies.expect(replies, keep));
  }

  /** One command, untimed: setup and checks. */
  async command(...args: string[]): Promise<string | number | null> {
    return readScalar((await this.send(encodeCommand(args), 1, true))!);
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    const w = this.waiter;
    if (!w) {
      this.fail(new Error(`${chunk.length} bytes arrived with no request in flight`));
      return;
    }
    let done: boolean;
    let value: unknown;
    try {
      done = w.reader.feed(chunk);
      if (done) value = w.reader.result();
    } catch (err) {
      // Replies past the request's or a malformed one leave the stream out of step: end it.
      this.fail(err as Error);
      return;
    }
    if (!done) return;
    this.waiter = null;
    w.resolve(value);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(err);
    this.socket.destroy();
  }
}

async function connectAll(port: number, n: number): Promise<RespConn[]> {
  const settled = await Promise.allSettled(Array.from({ length: n }, () => RespConn.connect(port)));
  const conns = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  const failed = settled.find((s) => s.status === "rejected");
  if (failed) {
    for (const c of conns) c.close();
    throw (failed as PromiseRejectedResult).reason;
  }
  return conns;
}

// ---- workloads ------------------------------------------------------------

/** Runs `body` between two samples of the server and of this process, as bench-engine's `measured` does. */
async function measured(label: string, server: RedisServer, events: number, body: () => Promise<void>, persistence: Persistence): Promise<PeerMeasure> {
  const t = await timed(() => server.cpuTicks(), (ticks: number) => ticks, body);
  const mem = processMemory(server.pid);
  return {
    label,
    wallS: t.wallS,
    serverCpuS: t.serverCpuS,
    clientCpuS: t.clientCpuS,
    restCpuS: t.restCpuS,
    peakRss: mem.peak,
    rssAfter: mem.rss,
    diskBytes: persistence === "none" ? NaN : diskBytes(server.dir) / events,
    check: "",
  };
}

/**
 * `poolSize` distinct pipelines of `batchEvents` XADDs, RESP encoded, each
 * value a fresh random base64 text of `payloadBytes` characters, like the
 * Ticker JSON payloads. Built before timing, as Ticker's request bodies are.
 */
function pipelinePool(spec: RedisWorkloadSpec): Buffer[] {
  const head = `*5\r\n$4\r\nXADD\r\n$${KEY.length}\r\n${KEY}\r\n$1\r\n*\r\n$${FIELD.length}\r\n${FIELD}\r\n$${spec.payloadBytes}\r\n`;
  return Array.from({ length: spec.poolSize }, () => {
    const parts: string[] = [];
    for (let i = 0; i < spec.batchEvents; i++) {
      const value = randomBytes(Math.ceil((spec.payloadBytes * 3) / 4)).toString("base64").slice(0, spec.payloadBytes);
      parts.push(head, value, "\r\n");
    }
    return Buffer.from(parts.join(""), "latin1");
  });
}

/**
 * W1: `events` XADDs to one stream, in pipelines of `batchEvents`, with
 * `inFlight` pipelines outstanding, each on its own socket: the Ticker
 * rows' "N in flight" is N keep-alive sockets with one request each.
 */
async function publish(label: string, server: RedisServer, spec: RedisWorkloadSpec, inFlight: number, persistence: Persistence): Promise<PeerMeasure> {
  const pool = pipelinePool(spec);
  const conns = await connectAll(server.port, inFlight);
  try {
    const batches = spec.events / spec.batchEvents;
    let nextBatch = 0;
    let accepted = 0;
    let failed = false;
    const lane = async (conn: RespConn) => {
      while (!failed && nextBatch < batches) {
        const i = nextBatch++;
        try {
          await conn.send(pool[i % pool.length], spec.batchEvents);
        } catch (err) {
          failed = true;
          throw new Error(`pipeline ${i + 1}/${batches}: ${(err as Error).message}`);
        }
        accepted += spec.batchEvents;
      }
    };
    const m = await measured(label, server, spec.events, async () => void (await Promise.all(conns.map(lane))), persistence);
    if (accepted !== spec.events) throw new Error(`replies acknowledged ${accepted} entries, expected ${spec.events}`);
    const len = await conns[0].command("XLEN", KEY);
    if (len !== spec.events) throw new Error(`XLEN is ${len} after adding ${spec.events}`);
    m.check = `XLEN ${spec.events.toLocaleString("en-US")}`;
    return m;
  } finally {
    for (const c of conns) c.close();
  }
}

/**
 * W2: XRANGE from the start in pages of `pageEvents`, one request at a time,
 * each page starting after the last id of the one before. Each page is
 * walked as it arrives (XrangeReader): every entry must be one field of the
 * payload's length, and every id must rise, across pages too.
 */
async function replay(label: string, server: RedisServer, spec: RedisWorkloadSpec, exclusive: boolean): Promise<PeerMeasure> {
  const conn = await RespConn.connect(server.port);
  try {
    const reader = new XrangeReader({ field: FIELD_BYTES, valueBytes: spec.payloadBytes });
    let pages = 0;
    let received = 0;
    let start = "-";
    let last: StreamId | null = null;
    let lastId = "";
    const m = await measured(
      label,
      server,
      spec.events,
      async () => {
        while (received < spec.events) {
          const page = await conn.request(encodeCommand(["XRANGE", KEY, start, "+", "COUNT", String(spec.pageEvents)]), reader.start(last));
          if (page.entries === 0) throw new Error(`page after ${lastId || "the start"} is empty after ${received} of ${spec.events} entries`);
          received += page.entries;
          last = page.last;
          lastId = page.lastId;
          start = exclusive ? `(${lastId}` : nextId(lastId);
          pages++;
        }
      },
      "none",
    );
    const rest = await conn.request(encodeCommand(["XRANGE", KEY, start, "+", "COUNT", "1"]), reader.start(last));
    if (received !== spec.events || rest.entries !== 0) throw new Error(`read ${received} entries, expected ${spec.events} and then none`);
    m.label += ` (${pages} pages)`;
    m.check = `${received.toLocaleString("en-US")} entries read, ids rising`;
    return m;
  } finally {
    conn.close();
  }
}

function parseId(id: string): [bigint, bigint] {
  const [ms, seq] = id.split("-");
  return [BigInt(ms), BigInt(seq)];
}

/** Before Redis 6.2 the start of XRANGE is inclusive: the smallest id after `id`. */
function nextId(id: string): string {
  const [ms, seq] = parseId(id);
  return `${ms}-${seq + 1n}`;
}

// ---- run ------------------------------------------------------------------

const rate = (events: number, m: PeerMeasure) => Math.round(events / m.wallS).toLocaleString("en-US");

/** Runs one row's workload, recording a failure in the row and the notes instead of throwing. */
async function attempt(row: PeerRow, notes: string[], events: number, work: () => Promise<PeerMeasure>): Promise<void> {
  try {
    row.measure = await work();
  } catch (err) {
    row.error = (err as Error).message.split("\n")[0];
    notes.push(`**Redis ${row.label} failed:** ${(err as Error).message}`);
  }
  console.error(row.error ? `redis ${row.label}: FAILED: ${row.error}` : `redis ${row.label}: ${rate(events, row.measure!)} entries/s`);
}

/** Starts a fresh server, runs `rows` on it in order, stops it by pid; never throws. */
async function onFreshServer(binary: string, persistence: Persistence, notes: string[], events: number, rows: [PeerRow, (s: RedisServer) => Promise<PeerMeasure>][]): Promise<void> {
  let server: RedisServer;
  try {
    server = await RedisServer.start(binary, persistence);
  } catch (err) {
    for (const [row] of rows) row.error = `redis-server did not start: ${(err as Error).message.split("\n")[0]}`;
    notes.push(`**Redis ${rows[0][0].label}: server start failed:** ${(err as Error).message}`);
    return;
  }
  for (const [row, work] of rows) {
    if (rows.some(([r]) => r.error)) row.error ??= `no data: ${rows[0][0].label} did not complete`;
    else await attempt(row, notes, events, () => work(server));
  }
  const how = await server.stop();
  if (how !== "SIGTERM: exited") notes.push(`Redis ${rows[0][0].label}: server stop: ${how}.`);
}

/**
 * The Redis rows: W1 with 1 and `inFlight` pipelines in flight, W2 over
 * what the `inFlight` row wrote (same process: without persistence a
 * restart would empty it), and W1 again against an appendfsync-always
 * instance. Never throws: a failure is a row's error or, when there is no
 * redis-server to be had, the whole report's reason.
 */
export async function runRedisPeer(spec: RedisWorkloadSpec): Promise<RedisPeerReport> {
  const notes: string[] = [];
  const found = await ensureRedisServer(notes);
  if ("reason" in found) return { available: false, reason: found.reason, notes };
  let version: RedisVersion;
  try {
    version = await serverVersion(found.binary);
  } catch (err) {
    return { available: false, reason: (err as Error).message, notes };
  }
  const exclusive = hasExclusiveRange(version);
  if (!exclusive) notes.push(`Redis ${version.number} predates exclusive XRANGE starts (6.2): W2 pages start at the last id's seq + 1 instead.`);

  const n = spec.inFlight;
  const pipe = `pipelines of ${spec.batchEvents}`;
  const one: PeerRow = { label: `W1 XADD, ${pipe}, 1 in flight`, workload: "publish-1" };
  const many: PeerRow = { label: `W1 XADD, ${pipe}, ${n} in flight`, workload: "publish-n" };
  const read: PeerRow = { label: `W2 XRANGE, COUNT ${spec.pageEvents}`, workload: "replay" };
  const fsync: PeerRow = { label: `W1 XADD, ${pipe}, ${n} in flight, AOF appendfsync always`, workload: "publish-n-fsync" };
  const ev = spec.events;

  await onFreshServer(found.binary, "none", notes, ev, [[one, (s) => publish(one.label, s, spec, 1, "none")]]);
  await onFreshServer(found.binary, "none", notes, ev, [
    [many, (s) => publish(many.label, s, spec, n, "none")],
    [read, (s) => replay(read.label, s, spec, exclusive)],
  ]);
  await onFreshServer(found.binary, "aof-always", notes, ev, [[fsync, (s) => publish(fsync.label, s, spec, n, "aof-always")]]);
  return { available: true, version, rows: [one, many, fsync, read], notes };
}
