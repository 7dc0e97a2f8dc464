// The three capacity sweeps, each against its own fresh server:
// - sweepPublish: autocannon POSTing JSON batches to one stream at rising
//   connection counts: events/s against request latency;
// - sweepConsumers: one stream at a fixed rate, rising WebSocket consumer
//   counts: publish-to-deliver latency over all deliveries, server CPU;
// - sweepStreams: streams created by publishing, cumulatively on one server:
//   RSS, disk and time per 1,000 streams.
// Every sweep returns plain data (no histograms) so a caller can keep it as
// JSON, and notes on anything that went wrong or looked odd.
import autocannon from "autocannon";
import { stoppedCleanly } from "../../../test/harness/process.js";
import type { TickerProcess } from "../../../test/harness/ticker.js";
import { HttpRawClient, type HttpRawConnection } from "../../../src/client/http.js";
import { newHistogram } from "../../lib/latency.js";
import { DRAIN_TIMEOUT_MS, PRODUCER_LANES, PRODUCER_TICK_MS, producerWindow } from "../../lib/pacing.js";
import { cpuMark, cpuSince, cpuWindow, diskBytes, processMemory, waitQuiet } from "../../lib/proc.js";
import { int } from "../../lib/report.js";
import { PAYLOAD_BYTES, payloadText } from "../../lib/results.js";
import { onCleanup, TempDirs } from "../../lib/run.js";
import { createStream, startTicker, WsConsumerSet } from "../../systems/ticker.js";
import { startProducer } from "../../workloads/producer.js";

/** Payload of the publish and streams sweeps: a 100-character JSON string, as in bench-engine's W1. */
const PAYLOAD = payloadText(PAYLOAD_BYTES);
/** The consumers sweep's payload is {"t":<stamp>,"p":"<PAD_CHARS>"}: about 100 bytes, as in bench-consume. */
const PAD_CHARS = 64;
const PAD = payloadText(PAD_CHARS);

/** Before a sweep and before each point, how long to wait for other work on the machine to stop. */
const QUIET_BEFORE_SWEEP_MS = 8000;
const QUIET_BEFORE_POINT_MS = 2000;


const tempDirs = new TempDirs("ticker-capacity-");
onCleanup(() => tempDirs.removeAll());

/** `ticker serve --port 0` with the default config, on a new temp data dir (removed again if the start fails). */
async function startServer(): Promise<TickerProcess> {
  const dir = tempDirs.make();
  try {
    return await startTicker(dir);
  } catch (err) {
    tempDirs.remove(dir);
    throw err;
  }
}

export interface Interference {
  /** Cores busy elsewhere on the machine during the measurement (not the server, not this process). */
  otherCores: number;
}

function batchBody(events: number): string {
  const event = `{"type":"tick","payload":"${PAYLOAD}"}`;
  return `{"events":[${Array.from({ length: events }, () => event).join(",")}]}`;
}

// ---- publish: throughput vs latency ------------------------------------------

export interface PublishOptions {
  /** Connections of the main point set (batches of `batch` events). */
  connections: number[];
  batch: number;
  /** A second point set with larger batches. */
  largeBatch: number;
  largeBatchConnections: number[];
  warmupS: number;
  measureS: number;
}

export const PUBLISH_DEFAULTS: PublishOptions = {
  connections: [1, 2, 4, 8, 16, 32, 64],
  batch: 100,
  largeBatch: 1000,
  largeBatchConnections: [1, 4, 16],
  warmupS: 1,
  measureS: 4,
};

export interface PublishPoint extends Interference {
  batch: number;
  connections: number;
  /** 2xx requests per second × batch. */
  eventsPerS: number;
  requestsPerS: number;
  /** Per-request response time of 2xx answers (autocannon's `response` event, fractional ms, in an HDR histogram of µs). */
  p50Ms: number;
  p99Ms: number;
  /** autocannon's own summary (whole milliseconds). */
  autocannonP50Ms: number;
  autocannonP99Ms: number;
  non2xx: number;
  errors: number;
  serverCores: number;
  serverMainCores: number;
  /** The busiest server thread but the main one: the stream's shard. */
  busiestWorkerCores: number;
  clientCores: number;
  /** Server CPU over the events answered. */
  serverCpuUsPerEvent: number;
}

export interface PublishSweep {
  options: PublishOptions;
  points: PublishPoint[];
  /** Events answered 2xx over the whole sweep, warm-ups included: what is in the data dir. */
  eventsStored: number;
  diskBytes: number;
  bytesPerEvent: number;
  /** The server after the sweep: VmRSS and VmHWM (peak over its life). */
  rssBytes: number;
  peakRssBytes: number;
  notes: string[];
}

interface CannonRun {
  result: autocannon.Result;
  /** µs, 2xx only. */
  hist: ReturnType<typeof newHistogram>;
}

function cannon(port: number, path: string, body: string, connections: number, durationS: number): Promise<CannonRun> {
  const hist = newHistogram();
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: `http://127.0.0.1:${port}${path}`,
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
        connections,
        duration: durationS,
        timeout: 30,
      },
      (err: unknown, result: autocannon.Result) => (err ? reject(err as Error) : resolve({ result, hist })),
    );
    instance.on("response", (_client, status, _bytes, responseTimeMs) => {
      if (status >= 200 && status < 300) hist.recordValue(Math.max(1, Math.round(responseTimeMs * 1000)));
    });
  });
}

/**
 * Publish throughput against latency: autocannon (in this process) POSTs the
 * same JSON batch to one stream on `connections` keep-alive connections, one
 * request outstanding on each, for warmupS (discarded) then measureS.
 */
export async function sweepPublish(partial: Partial<PublishOptions> = {}, log: (line: string) => void = () => {}): Promise<PublishSweep> {
  const options = { ...PUBLISH_DEFAULTS, ...partial };
  const notes: string[] = [];
  const points: PublishPoint[] = [];
  const server = await startServer();
  let eventsStored = 0;
  try {
    const path = "/v1/streams/capacity-publish/events";
    const q = await waitQuiet(QUIET_BEFORE_SWEEP_MS);
    if (!q.quiet) notes.push(`Publish sweep: the machine was not idle before it started (${q.busyCores.toFixed(2)} cores busy elsewhere).`);
    const sets = [
      { batch: options.batch, connections: options.connections },
      { batch: options.largeBatch, connections: options.largeBatchConnections },
    ];
    for (const set of sets) {
      const body = batchBody(set.batch);
      for (const connections of set.connections) {
        await waitQuiet(QUIET_BEFORE_POINT_MS);
        const warm = await cannon(server.port, path, body, connections, options.warmupS);
        eventsStored += warm.result["2xx"] * set.batch;
        const mark = cpuMark(server.pid);
        const { result: r, hist } = await cannon(server.port, path, body, connections, options.measureS);
        const cpu = cpuSince(mark, server.pid);
        eventsStored += r["2xx"] * set.batch;
        if (server.exit) throw new Error(`server exited (${server.exit}) during the publish sweep:\n${server.outputTail()}`);
        const requestsPerS = r["2xx"] / cpu.wallS;
        const p: PublishPoint = {
          batch: set.batch,
          connections,
          eventsPerS: requestsPerS * set.batch,
          requestsPerS,
          p50Ms: hist.getValueAtPercentile(50) / 1000,
          p99Ms: hist.getValueAtPercentile(99) / 1000,
          autocannonP50Ms: r.latency.p50,
          autocannonP99Ms: r.latency.p99,
          non2xx: r.non2xx,
          errors: r.errors,
          serverCores: cpu.serverCores,
          serverMainCores: cpu.serverMainCores,
          busiestWorkerCores: cpu.busiestWorkerCores,
          clientCores: cpu.clientCores,
          otherCores: cpu.otherCores,
          serverCpuUsPerEvent: r["2xx"] > 0 ? (cpu.serverCpuS * 1e6) / (r["2xx"] * set.batch) : NaN,
        };
        points.push(p);
        if (r.non2xx > 0) notes.push(`Publish, batch ${set.batch}, ${connections} connections: ${int(r.non2xx)} non-2xx answers (${int(r["4xx"])} 4xx, ${int(r["5xx"])} 5xx); not counted as throughput.`);
        if (r.errors > 0 || r.timeouts > 0) notes.push(`Publish, batch ${set.batch}, ${connections} connections: ${int(r.errors)} connection errors, ${int(r.timeouts)} timeouts.`);
        log(
          `publish batch ${set.batch} × ${connections} conn: ${int(p.eventsPerS)} events/s, p50 ${p.p50Ms.toFixed(2)} ms, p99 ${p.p99Ms.toFixed(2)} ms, server ${cpu.serverCores.toFixed(2)} cores, client ${cpu.clientCores.toFixed(2)}, other ${cpu.otherCores.toFixed(2)}`,
        );
      }
    }
    const mem = processMemory(server.pid);
    const disk = diskBytes(server.dir);
    return { options, points, eventsStored, diskBytes: disk, bytesPerEvent: disk / eventsStored, rssBytes: mem.rss, peakRssBytes: mem.peak, notes };
  } finally {
    await stopInto(server, "Publish sweep", notes);
  }
}

/** Stops the sweep's server and removes its data dir; what went wrong goes into `notes`. */
async function stopInto(server: TickerProcess, label: string, notes: string[]): Promise<void> {
  const how = await server.stop();
  tempDirs.remove(server.dir);
  if (!stoppedCleanly(how)) notes.push(`${label}: server stop: ${how}.`);
  if (server.errors.length > 0) notes.push(`${label}: the server wrote ${server.errors.length} line(s) to stderr, first: \`${server.errors.slice(0, 5).join(" / ")}\``);
}

// ---- consumers vs p99 ------------------------------------------------------------

export interface ConsumersOptions {
  consumers: number[];
  /** Producer events/s. */
  rate: number;
  warmupS: number;
  measureS: number;
}

export const CONSUMERS_DEFAULTS: ConsumersOptions = {
  consumers: [1, 10, 100, 300, 1000],
  rate: 1000,
  warmupS: 1,
  measureS: 5,
};

export interface ConsumerPoint extends Interference {
  consumers: number;
  /** Events the producer sent per second in the window. */
  eventsPerS: number;
  /** Publish requests per second (warm-up included): at 1,000 events/s on a 1 ms timer, one or two events each. */
  publishesPerS: number;
  /** Over every delivery of the window (events × consumers). */
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  deliveries: number;
  expectedDeliveries: number;
  /** Every consumer got every event of the window, in order, and caught up after the producer stopped. */
  complete: boolean;
  serverCores: number;
  serverMainCores: number;
  clientCores: number;
  /** Server VmRSS at the end of the window. */
  rssBytes: number;
  /** Events per WebSocket message in the window: above 1, the server joined events per socket write. */
  eventsPerMessage: number;
  /** Events messages sent per second over all consumers in the window. */
  messagesPerS: number;
  connectS: number;
  /** Producer ticks that found every connection busy: above 0, the publish side fell behind the rate. */
  producerStalls: number;
}

export interface ConsumersSweep {
  options: ConsumersOptions;
  points: ConsumerPoint[];
  notes: string[];
}

/**
 * Consumers against latency: one stream, a producer thread publishing at
 * `rate` (paced as in bench-consume), `consumers` WebSocket consumers
 * (`from=latest&format=json`, no group) in this process, per point. One
 * server for the sweep; each point connects a new set of consumers.
 */
export async function sweepConsumers(partial: Partial<ConsumersOptions> = {}, log: (line: string) => void = () => {}): Promise<ConsumersSweep> {
  const options = { ...CONSUMERS_DEFAULTS, ...partial };
  const notes: string[] = [];
  const points: ConsumerPoint[] = [];
  const stream = "capacity-consume";
  const server = await startServer();
  try {
    await createStream(server, stream);
    const q = await waitQuiet(QUIET_BEFORE_SWEEP_MS);
    if (!q.quiet) notes.push(`Consumers sweep: the machine was not idle before it started (${q.busyCores.toFixed(2)} cores busy elsewhere).`);
    for (const n of options.consumers) {
      const label = `${int(n)} consumers`;
      const set = new WsConsumerSet({ port: server.port, stream, consumers: n });
      try {
        const tc = performance.now();
        await set.connect();
        const connectS = (performance.now() - tc) / 1000;
        await waitQuiet(QUIET_BEFORE_POINT_MS);
        const { t0, tStart, tEnd } = producerWindow(options.warmupS * 1000, options.measureS * 1000);
        set.window = { tStart, tEnd };
        const cpuP = cpuWindow(server.pid, tStart, tEnd);
        const p = await startProducer({ target: "ticker", port: server.port, stream, rate: options.rate, t0, tStart, tEnd, tickMs: PRODUCER_TICK_MS, lanes: PRODUCER_LANES, pad: PAD, stopAtEnd: false }).result;
        const cpu = await cpuP;
        const mem = processMemory(server.pid);
        if (p.errors.length > 0) throw new Error(`producer: ${p.errors.join("; ")}`);
        if (p.accepted !== p.sent) throw new Error(`producer sent ${p.sent} events, the server accepted ${p.accepted}`);
        const caughtUp = await set.waitFor(p.lastSeq, DRAIN_TIMEOUT_MS);
        const r = set.result();
        const expected = p.measured * n;
        const complete = caughtUp && r.minPerConsumer === p.measured && r.maxPerConsumer === p.measured && r.errors.length === 0;
        const h = r.hist;
        const point: ConsumerPoint = {
          consumers: n,
          eventsPerS: p.measured / options.measureS,
          publishesPerS: p.requests / ((tEnd - t0) / 1000),
          p50Ms: h.getValueAtPercentile(50) / 1000,
          p99Ms: h.getValueAtPercentile(99) / 1000,
          p999Ms: h.getValueAtPercentile(99.9) / 1000,
          maxMs: h.maxValue / 1000,
          deliveries: r.measured,
          expectedDeliveries: expected,
          complete,
          serverCores: cpu.serverCores,
          serverMainCores: cpu.serverMainCores,
          clientCores: cpu.clientCores,
          otherCores: cpu.otherCores,
          rssBytes: mem.rss,
          eventsPerMessage: r.measured / Math.max(1, r.messages),
          messagesPerS: r.messages / options.measureS,
          connectS,
          producerStalls: p.stalls,
        };
        points.push(point);
        if (!caughtUp) notes.push(`Consumers, ${label}: not every consumer had received up to seq ${int(p.lastSeq)} ${DRAIN_TIMEOUT_MS / 1000} s after the producer's last answer.`);
        if (r.errors.length > 0) notes.push(`Consumers, ${label}: ${r.errors.length} consumer errors, first: ${r.errors.slice(0, 3).join("; ")}`);
        if (r.measured !== expected) notes.push(`Consumers, ${label}: ${int(r.measured)} deliveries in the window, ${int(expected)} expected (per consumer ${int(r.minPerConsumer)}–${int(r.maxPerConsumer)} of ${int(p.measured)}).`);
        if (p.stalls > 0) notes.push(`Consumers, ${label}: the producer found all ${PRODUCER_LANES} connections busy on ${int(p.stalls)} ticks (largest backlog ${int(p.backlogMax)} events).`);
        if (r.negative > 0) notes.push(`Consumers, ${label}: ${int(r.negative)} latencies below zero (thread clocks apart), recorded as 0.`);
        log(
          `consumers ${n}: p50 ${point.p50Ms.toFixed(2)} ms, p99 ${point.p99Ms.toFixed(2)} ms, server ${cpu.serverCores.toFixed(2)} cores, client ${cpu.clientCores.toFixed(2)}, other ${cpu.otherCores.toFixed(2)}, ${complete ? "complete" : "INCOMPLETE"}`,
        );
      } finally {
        set.close();
      }
      if (server.exit) throw new Error(`server exited (${server.exit}) during the consumers sweep:\n${server.outputTail()}`);
      // Let the server take down the closed sockets before the next point connects.
      await new Promise((r) => setTimeout(r, 500));
    }
    return { options, points, notes };
  } finally {
    await stopInto(server, "Consumers sweep", notes);
  }
}

// ---- streams vs RSS --------------------------------------------------------------

export interface StreamsOptions {
  /** Cumulative stream counts after each step. */
  steps: number[];
  eventsPerStream: number;
  /** Publish requests in flight (keep-alive connections, one request each). */
  concurrency: number;
}

export const STREAMS_DEFAULTS: StreamsOptions = {
  steps: [1000, 2500, 5000, 10_000],
  eventsPerStream: 10,
  concurrency: 16,
};

export interface StreamsStep extends Interference {
  streams: number;
  rssBytes: number;
  peakRssBytes: number;
  diskBytes: number;
  /** Wall time of this step (its new streams only), per 1,000 streams. */
  sPer1000: number;
  /** Server CPU of this step per 1,000 new streams. */
  serverCpuSPer1000: number;
}

export interface StreamsSweep {
  options: StreamsOptions;
  /** The idle server before any stream. */
  baselineRssBytes: number;
  baselineDiskBytes: number;
  steps: StreamsStep[];
  notes: string[];
}

const RETRY_MS = 5;
/** Taken before RSS is read after a step: the shards finish their last appends and the front its last replies. */
export const SETTLE_MS = 500;

/**
 * Streams against memory: streams `capacity-s<n>` created by publishing
 * `eventsPerStream` events each (auto-create), `concurrency` requests in
 * flight, cumulatively on one server; RSS and disk read after each step.
 */
export async function sweepStreams(partial: Partial<StreamsOptions> = {}, log: (line: string) => void = () => {}): Promise<StreamsSweep> {
  const options = { ...STREAMS_DEFAULTS, ...partial };
  const notes: string[] = [];
  const steps: StreamsStep[] = [];
  const server = await startServer();
  const conns: HttpRawConnection[] = [];
  try {
    const q = await waitQuiet(QUIET_BEFORE_SWEEP_MS);
    if (!q.quiet) notes.push(`Streams sweep: the machine was not idle before it started (${q.busyCores.toFixed(2)} cores busy elsewhere).`);
    const base = processMemory(server.pid);
    const baselineDiskBytes = diskBytes(server.dir);
    conns.push(...(await HttpRawClient.connections(server.port, options.concurrency, { timeoutMs: 30_000 })));
    const body = Buffer.from(batchBody(options.eventsPerStream));
    const headers = { "Content-Type": "application/json" };
    let created = 0;
    let retries = 0;
    for (const target of options.steps) {
      const from = created;
      const mark = cpuMark(server.pid);
      let next = from;
      await Promise.all(
        conns.map(async (conn) => {
          while (next < target) {
            const id = `capacity-s${String(next++).padStart(6, "0")}`;
            for (;;) {
              const r = await conn.post(`/v1/streams/${id}/events`, body, headers);
              if (r.status === 429) {
                retries++;
                await new Promise((ok) => setTimeout(ok, RETRY_MS));
                continue;
              }
              if (r.status !== 200) throw new Error(`POST to ${id}: HTTP ${r.status}: ${r.body.toString("utf8", 0, 200)}`);
              const a = JSON.parse(r.body.toString("utf8")) as { count: number; last_seq: number };
              if (a.count !== options.eventsPerStream || a.last_seq !== options.eventsPerStream) throw new Error(`POST to ${id}: count ${a.count}, last_seq ${a.last_seq}`);
              break;
            }
          }
        }),
      );
      const cpu = cpuSince(mark, server.pid);
      created = target;
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      const mem = processMemory(server.pid);
      const step: StreamsStep = {
        streams: target,
        rssBytes: mem.rss,
        peakRssBytes: mem.peak,
        diskBytes: diskBytes(server.dir),
        sPer1000: (cpu.wallS * 1000) / (target - from),
        serverCpuSPer1000: (cpu.serverCpuS * 1000) / (target - from),
        otherCores: cpu.otherCores,
      };
      steps.push(step);
      log(`streams ${int(target)}: RSS ${(mem.rss / 2 ** 20).toFixed(0)} MiB, disk ${(step.diskBytes / 2 ** 20).toFixed(1)} MiB, ${step.sPer1000.toFixed(2)} s per 1,000`);
      if (server.exit) throw new Error(`server exited (${server.exit}) during the streams sweep:\n${server.outputTail()}`);
    }
    if (retries > 0) notes.push(`Streams sweep: ${int(retries)} publishes answered 429 and were retried.`);
    return { options, baselineRssBytes: base.rss, baselineDiskBytes, steps, notes };
  } finally {
    for (const c of conns) c.close();
    await stopInto(server, "Streams sweep", notes);
  }
}
