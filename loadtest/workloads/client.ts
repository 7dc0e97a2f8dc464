// W1 and W2 as a user's process gets them: through ticker/client, in this
// process, with the handler touching every event, against a fresh server.
// The raw rows of bench-engine show what the server can do; these show what
// reaches an application. Redis's rows in the same `npm run bench` run are
// ioredis (bench-peers), so the report's ratios compare client to client.
//
//   npm run bench:client
//   npm run bench:client -- --events 200000 --results out.jsonl
//
// Rows (1,000,000 events of 100 B each unless --events):
// - W1: one Producer (batches of 1,000, linger 5 ms, defaults otherwise) fed
//   with send() of 1,000 events at a time, then flush(); timed from the
//   first send to the flush; `exclusive: true` (the stream has no other
//   writer, so 8 batches in flight, kept in order by expected_head_seq). Payloads: 100 random bytes as payload_bytes; a
//   JSON payload value ({"t": n, "p": "<80 chars>"}, ~100 B of JSON text) per
//   event; the same in JSON bodies.
// - W2: replay() of a W1 stream from the start to its head, the handler
//   reading each event's seq and payload_bytes length (binary) or its
//   parsed payload's `t` (JSON values); seqs checked gap-free. Each also
//   by page: for await over replay().batches(), the kafkajs eachBatch way.
// - W3-20k, W3-100k: ticker.consume() (binary frames, no group, from
//   latest) while bench-consume's paced producer thread publishes
//   {"t": <send stamp>, "p": <pad>} at the rate over raw HTTP (as the peers'
//   W3 rows do: the offered rate is not the client's to cap); latency is the
//   time the handler gets an event in its for-await loop minus the stamp,
//   after a 2 s warm-up, over a 10 s window (1 s and 3 s with --quick).
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { type Format, Ticker, type TickerEvent } from "../../src/client/index.js";
import type { TickerProcess } from "../../test/harness/ticker.js";
import { newRecorder, record, wallNow } from "../lib/latency.js";
import { DRAIN_TIMEOUT_MS, PRODUCER_LANES, PRODUCER_TICK_MS, producerWindow } from "../lib/pacing.js";
import { BATCH_EVENTS, PAYLOAD_BYTES, payloadText, report, resultsFile, type Measurement, type Workload } from "../lib/results.js";
import { cleanupNow, onCleanup, runMain, TempDirs, within } from "../lib/run.js";
import { createStream, startTicker } from "../systems/ticker.js";
import { startProducer } from "./producer.js";

const tempDirs = new TempDirs("ticker-bench-client-");
onCleanup(() => tempDirs.removeAll());

const { values: opts } = parseArgs({
  options: { events: { type: "string", default: "1000000" }, quick: { type: "boolean", default: false }, results: { type: "string" } },
  strict: true,
});
const EVENTS = Number(opts.events);
if (!Number.isSafeInteger(EVENTS) || EVENTS < BATCH_EVENTS || EVENTS % BATCH_EVENTS !== 0) {
  console.error(`--events must be a positive multiple of ${BATCH_EVENTS}`);
  process.exit(2);
}

interface PublishRow {
  stream: string;
  variant: string;
  /** JSON payload values rather than payload_bytes. */
  json: boolean;
  format: Format;
}

const ROWS: PublishRow[] = [
  { stream: "w1-bytes", variant: "ticker/client, payload_bytes", json: false, format: "binary" },
  { stream: "w1-json", variant: "ticker/client, JSON payload values", json: true, format: "binary" },
  { stream: "w1-json-wire", variant: "ticker/client, JSON payload values, JSON bodies", json: true, format: "json" },
];

const cpuSeconds = (since: NodeJS.CpuUsage) => {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1e6;
};

async function publishRow(t: Ticker, row: PublishRow): Promise<Measurement[]> {
  const pad = payloadText(80);
  const bytes = randomBytes(PAYLOAD_BYTES);
  const producer = t.producer({ format: row.format, exclusive: true });
  const batch = Array.from({ length: BATCH_EVENTS }, (_, i) =>
    row.json ? { type: "tick", payload: { t: i, p: pad } } : { type: "tick", payload_bytes: bytes },
  );
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let sent = 0; sent < EVENTS; sent += BATCH_EVENTS) await producer.send(row.stream, batch);
  await producer.flush();
  const s = (performance.now() - t0) / 1000;
  const client = cpuSeconds(cpu0);
  if (producer.published !== EVENTS) throw new Error(`${row.variant}: ${producer.published} of ${EVENTS} published`);
  const rate = EVENTS / s;
  console.log(`W1 ${row.variant}: ${Math.round(rate).toLocaleString("en-US")} events/s, client CPU ${client.toFixed(2)} s`);
  const note = `${EVENTS.toLocaleString("en-US")} events, Producer with exclusive: true (the stream's only writer: batches of ${BATCH_EVENTS}, linger 5 ms, 8 in flight on the stream, each with expected_head_seq and one idempotency key), ${row.format === "json" ? "JSON" : "FlatBuffers"} bodies, send() of ${BATCH_EVENTS} at a time; client CPU ${client.toFixed(2)} s`;
  return [{ workload: "W1", system: "Ticker", variant: row.variant, metric: "events/s", value: rate, better: "higher", note }];
}

async function replayRow(t: Ticker, row: PublishRow, byPage: boolean): Promise<Measurement[]> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let last = 0;
  let touched = 0;
  const handle = (e: TickerEvent) => {
    if (e.seq !== last + 1) throw new Error(`${row.stream}: seq ${e.seq} after ${last}`);
    last = e.seq;
    touched += row.json ? (e.payload as { t: number }).t : e.payload_bytes.length;
  };
  if (byPage) for await (const page of t.replay(row.stream).batches()) for (const e of page) handle(e);
  else for await (const e of t.replay(row.stream)) handle(e);
  const s = (performance.now() - t0) / 1000;
  const client = cpuSeconds(cpu0);
  if (last !== EVENTS || touched === 0) throw new Error(`${row.stream}: replay ended at ${last} of ${EVENTS}`);
  const variant = `${row.json ? "ticker/client, JSON payload values parsed" : "ticker/client, payload_bytes read"}${byPage ? ", by page" : ""}`;
  const rate = EVENTS / s;
  console.log(`W2 ${variant}: ${Math.round(rate).toLocaleString("en-US")} events/s, client CPU ${client.toFixed(2)} s`);
  const note = `replay() defaults (pages of 10,000, 4 prefetched), ${byPage ? "for await over batches() (a page of events at a time), for over each page" : "for await over events"}, ${row.json ? "each event's payload parsed (first access of .payload)" : "each event's payload_bytes view read"}; client CPU ${client.toFixed(2)} s`;
  return [{ workload: "W2", system: "Ticker", variant, metric: "events/s", value: rate, better: "higher", note }];
}

const WARMUP_MS = opts.quick ? 1000 : 2000;
const MEASURE_MS = opts.quick ? 3000 : 10_000;

async function latencyRow(workload: Workload, rate: number): Promise<Measurement[]> {
  const server = await startTicker(tempDirs.make());
  const t = new Ticker({ url: server.url });
  try {
    await createStream(server, "w3");
    const sub = t.consume("w3", { from: "latest" });
    await sub.ready;
    const w = producerWindow(WARMUP_MS, MEASURE_MS);
    const rec = newRecorder();
    let last = 0;
    let target = Number.POSITIVE_INFINITY;
    const reading = (async () => {
      for await (const e of sub) {
        const recv = wallNow();
        record(rec, (e.payload as { t: number }).t, recv, w.tStart, w.tEnd);
        if (e.seq !== last + 1) throw new Error(`W3 ${rate}/s: seq ${e.seq} after ${last}`);
        last = e.seq;
        if (last >= target) break;
      }
    })();
    const producer = startProducer({
      target: "ticker",
      port: server.port,
      stream: "w3",
      rate,
      ...w,
      tickMs: PRODUCER_TICK_MS,
      lanes: PRODUCER_LANES,
      pad: payloadText(64),
      stopAtEnd: false,
    });
    const p = await producer.result;
    if (p.errors.length > 0) throw new Error(`producer: ${p.errors.join("; ")}`);
    target = p.lastSeq;
    if (last < target) await within(reading, DRAIN_TIMEOUT_MS, `the consumer reading to seq ${target}`);
    else await sub.close();
    const q = (x: number) => rec.hist.getValueAtPercentile(x) / 1000;
    console.log(`${workload} ticker/client consume: p50 ${q(50).toFixed(2)} ms, p99 ${q(99).toFixed(2)} ms, ${rec.measured} events measured`);
    const variant = "ticker/client consume";
    const note = `ticker.consume() (binary frames, no group, from latest), the handler parsing each payload's stamp; producer thread over raw HTTP at ${rate.toLocaleString("en-US")} events/s, ${rec.measured.toLocaleString("en-US")} events in the ${MEASURE_MS / 1000} s window (${rec.negative} below 0, ${rec.clipped} clipped)`;
    return [
      { workload, system: "Ticker", variant, metric: "p99 ms", value: q(99), better: "lower", note },
      { workload, system: "Ticker", variant, metric: "p50 ms", value: q(50), better: "lower" },
      { workload, system: "Ticker", variant, metric: "p99.9 ms", value: q(99.9), better: "lower" },
    ];
  } finally {
    t.close();
    await server.stop();
  }
}

async function main(): Promise<number> {
  let server: TickerProcess | null = null;
  const ms: Measurement[] = [];
  try {
    server = await startTicker(tempDirs.make());
    const t = new Ticker({ url: server.url });
    for (const row of ROWS) ms.push(...(await publishRow(t, row)));
    for (const row of ROWS.filter((r) => r.format === "binary")) for (const byPage of [false, true]) ms.push(...(await replayRow(t, row, byPage)));
    t.close();
    await server.stop();
    ms.push(...(await latencyRow("W3-20k", 20_000)), ...(await latencyRow("W3-100k", 100_000)));
    report(ms, opts.results ?? resultsFile());
  } finally {
    cleanupNow();
  }
  return 0;
}

runMain(main);
