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
// (lib/resp.ts); XRANGE pages are walked once, as they arrive, for their count
// and last id.
//
// The server is test/harness/redis.ts's; the client lib/resp.ts's.
import type { DaemonVersion } from "../../test/harness/apt.js";
import type { ServerProcess } from "../../test/harness/process.js";
import { startRedis, type Persistence } from "../../test/harness/redis.js";
import { diskBytes, processMemory, ticksOf, timed } from "../lib/proc.js";
import { int } from "../lib/report.js";
import { payloadText } from "../lib/results.js";
import { onFreshServer } from "../lib/run.js";
import { connectAll, encodeCommand, XrangeReader, type RespConn, type StreamId } from "../lib/resp.js";
import { findRedis } from "../systems/redis.js";

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
  | { available: true; version: DaemonVersion; rows: PeerRow[]; notes: string[] }
  | { available: false; reason: string; notes: string[] };

const KEY = "bench";
const FIELD = "p";
const FIELD_BYTES = Buffer.from(FIELD);
// ---- workloads ------------------------------------------------------------

/** Runs `body` between two samples of the server and of this process, as bench-engine's `measured` does. */
async function measured(label: string, server: ServerProcess, events: number, body: () => Promise<void>, persistence: Persistence): Promise<PeerMeasure> {
  const t = await timed(
    () => ticksOf(`/proc/${server.pid}/stat`),
    (ticks: number) => ticks,
    body,
  );
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
      const value = payloadText(spec.payloadBytes);
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
async function publish(label: string, server: ServerProcess, spec: RedisWorkloadSpec, inFlight: number, persistence: Persistence): Promise<PeerMeasure> {
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
async function replay(label: string, server: ServerProcess, spec: RedisWorkloadSpec, exclusive: boolean): Promise<PeerMeasure> {
  const [conn] = await connectAll(server.port, 1);
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

/** XRANGE takes an exclusive start, "(id", from Redis 6.2 on. */
function hasExclusiveRange(version: DaemonVersion): boolean {
  const [major, minor] = version.number.split(".").map(Number);
  return major > 6 || (major === 6 && minor >= 2);
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

/** Runs one row's workload, recording a failure in the row and the notes instead of throwing. */
async function attempt(row: PeerRow, notes: string[], events: number, work: () => Promise<PeerMeasure>): Promise<void> {
  try {
    row.measure = await work();
  } catch (err) {
    row.error = (err as Error).message.split("\n")[0];
    notes.push(`**Redis ${row.label} failed:** ${(err as Error).message}`);
  }
  console.error(row.error ? `redis ${row.label}: FAILED: ${row.error}` : `redis ${row.label}: ${int(events / row.measure!.wallS)} entries/s`);
}

/** Starts a fresh server, runs `rows` on it in order (a row after a failed one fails too), stops it; never throws. */
function onFresh(persistence: Persistence, notes: string[], events: number, rows: [PeerRow, (s: ServerProcess) => Promise<PeerMeasure>][]): Promise<void> {
  const first = rows[0][0].label;
  return onFreshServer(
    () => startRedis({ persistence }),
    (why) => {
      for (const [row] of rows) row.error = `redis-server did not start: ${why.message.split("\n")[0]}`;
      notes.push(`**Redis ${first}: server start failed:** ${why.message}`);
    },
    async (server) => {
      for (const [row, work] of rows) {
        if (rows.some(([r]) => r.error)) row.error ??= `no data: ${first} did not complete`;
        else await attempt(row, notes, events, () => work(server));
      }
    },
    (how) => notes.push(`Redis ${first}: server stop: ${how}.`),
  );
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
  const found = await findRedis(notes);
  if ("reason" in found) return { available: false, reason: found.reason, notes };
  const version = found.version;
  const exclusive = hasExclusiveRange(version);
  if (!exclusive) notes.push(`Redis ${version.number} predates exclusive XRANGE starts (6.2): W2 pages start at the last id's seq + 1 instead.`);

  const n = spec.inFlight;
  const pipe = `pipelines of ${spec.batchEvents}`;
  const one: PeerRow = { label: `W1 XADD, ${pipe}, 1 in flight`, workload: "publish-1" };
  const many: PeerRow = { label: `W1 XADD, ${pipe}, ${n} in flight`, workload: "publish-n" };
  const read: PeerRow = { label: `W2 XRANGE, COUNT ${spec.pageEvents}`, workload: "replay" };
  const fsync: PeerRow = { label: `W1 XADD, ${pipe}, ${n} in flight, AOF appendfsync always`, workload: "publish-n-fsync" };
  const ev = spec.events;

  await onFresh("none", notes, ev, [[one, (s) => publish(one.label, s, spec, 1, "none")]]);
  await onFresh("none", notes, ev, [
    [many, (s) => publish(many.label, s, spec, n, "none")],
    [read, (s) => replay(read.label, s, spec, exclusive)],
  ]);
  await onFresh("aof-always", notes, ev, [[fsync, (s) => publish(fsync.label, s, spec, n, "aof-always")]]);
  return { available: true, version, rows: [one, many, fsync, read], notes };
}
