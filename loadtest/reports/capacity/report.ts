// docs/CAPACITY.md and its charts, from the sweeps' results: the machine, the
// three charts with a two-line reading each, the raw figures, and a sizing
// table derived from per-event, per-message, per-stream and per-consumer
// costs measured in the same run. The whole file is rewritten on every run.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DOCS_DIR, f2, int, ms, table, type MachineFacts } from "../../lib/report.js";
import { consumersChart, publishChart, renderSvg, streamsChart } from "../charts.js";
import { SETTLE_MS, type ConsumerPoint, type ConsumersSweep, type PublishPoint, type PublishSweep, type StreamsSweep } from "./sweeps.js";

export interface CapacityResults {
  machine: MachineFacts;
  /** How the run was started, for the report. */
  command: string;
  runtimeS: number;
  publish: PublishSweep | null;
  consumers: ConsumersSweep | null;
  streams: StreamsSweep | null;
  /** Sweeps that failed, and anything else the run wants said. */
  notes: string[];
}

// ---- formatting --------------------------------------------------------------

const KiB = 1024;
const MiB = 2 ** 20;
const GiB = 2 ** 30;
const TiB = 2 ** 40;

function bytes(n: number): string {
  if (!Number.isFinite(n)) return "–";
  if (n >= TiB) return `${(n / TiB).toFixed(1)} TiB`;
  if (n >= GiB) return `${(n / GiB).toFixed(1)} GiB`;
  if (n >= MiB) return `${(n / MiB).toFixed(0)} MiB`;
  return `${(n / KiB).toFixed(1)} KiB`;
}

const mibText = (n: number) => (n / MiB).toFixed(0);

// ---- derived costs ---------------------------------------------------------------

export interface UnitCosts {
  /** Server CPU seconds per published event (whole server, and its front and shard threads), and the point they come from. */
  cpuSPerEvent: number;
  frontCpuSPerEvent: number;
  shardCpuSPerEvent: number;
  cpuPoint: PublishPoint;
  /** Events per publish request the sizing assumes: each publish reaches each consumer as at most one WebSocket message. */
  publishBatch: number;
  /** Front (main-thread) CPU seconds per WebSocket message to a consumer: the slope of a fit against messages/s, and the points fitted. */
  cpuSPerMessage: number;
  messageFitPoints: ConsumerPoint[];
  /** The fitted slope was below zero (noise larger than the effect) and is taken as 0. */
  messageFitClamped: boolean;
  bytesPerEvent: number;
  rssPerStreamBytes: number;
  rssPerConsumerBytes: number;
  consumerRssPoints: [ConsumerPoint, ConsumerPoint];
  /** A loaded server's RSS: VmHWM of the publish sweep's server. */
  baseRssBytes: number;
  /** The most events/s one stream took in the publish sweep, and with what batch. */
  singleStreamMax: number;
  singleStreamMaxBatch: number;
}

/** The batch-100 point whose throughput is nearest half the set's best: busy, but not the saturated end. */
function midLoadPoint(s: PublishSweep): PublishPoint {
  const set = s.points.filter((p) => p.batch === s.options.batch);
  const max = Math.max(...set.map((p) => p.eventsPerS));
  return set.reduce((best, p) => (Math.abs(p.eventsPerS - max / 2) < Math.abs(best.eventsPerS - max / 2) ? p : best));
}

/** Least-squares slope of y against x. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
  }
  return sxx > 0 ? sxy / sxx : NaN;
}

export const SIZING_STREAMS = 1000;
/** Cores are provisioned so that the computed load is at most this share of them; the same for one thread. */
export const CPU_TARGET_UTILISATION = 0.7;
/**
 * Per-message CPU is fitted over the complete points up to this many
 * consumers: above it the benchmark's own consumers take most of a core of
 * the two and the server is starved, so its CPU no longer follows the load.
 */
export const MESSAGE_FIT_CONSUMERS_MAX = 300;

export function unitCosts(r: CapacityResults): UnitCosts | null {
  const { publish, consumers, streams } = r;
  if (!publish || !consumers || !streams || publish.points.length === 0 || consumers.points.length < 2 || streams.steps.length < 2) return null;
  const cpuPoint = midLoadPoint(publish);
  const cps = [...consumers.points].sort((a, b) => a.consumers - b.consumers);
  const low = cps[0];
  const high = cps[cps.length - 1];
  let fit = cps.filter((p) => p.complete && p.consumers <= MESSAGE_FIT_CONSUMERS_MAX);
  if (fit.length < 2) fit = cps;
  const perMessage = slope(
    fit.map((p) => p.messagesPerS),
    fit.map((p) => p.serverMainCores),
  );
  const best = publish.points.reduce((a, p) => (p.eventsPerS > a.eventsPerS ? p : a));
  const firstStep = streams.steps[0];
  const lastStep = streams.steps[streams.steps.length - 1];
  return {
    cpuSPerEvent: cpuPoint.serverCpuUsPerEvent / 1e6,
    frontCpuSPerEvent: cpuPoint.serverMainCores / cpuPoint.eventsPerS,
    shardCpuSPerEvent: cpuPoint.busiestWorkerCores / cpuPoint.eventsPerS,
    cpuPoint,
    publishBatch: publish.options.batch,
    cpuSPerMessage: Math.max(0, perMessage),
    messageFitPoints: fit,
    messageFitClamped: !(perMessage >= 0),
    bytesPerEvent: publish.bytesPerEvent,
    rssPerStreamBytes: Math.max(0, (lastStep.rssBytes - firstStep.rssBytes) / (lastStep.streams - firstStep.streams)),
    rssPerConsumerBytes: Math.max(0, (high.rssBytes - low.rssBytes) / (high.consumers - low.consumers)),
    consumerRssPoints: [low, high],
    baseRssBytes: publish.peakRssBytes,
    singleStreamMax: best.eventsPerS,
    singleStreamMaxBatch: best.batch,
  };
}

export interface SizingRow {
  eventsPerS: number;
  consumers: number;
  retentionDays: number;
  busyCores: number;
  cores: number;
  /** The main thread alone (HTTP and every WebSocket write): it cannot use a second core. */
  frontCores: number;
  /** Streams needed so that no shard thread is over CPU_TARGET_UTILISATION of a core. */
  streamsMin: number;
  memoryBytes: number;
  diskBytes: number;
}

export function sizing(u: UnitCosts, rates = [10_000, 100_000, 500_000], consumerCounts = [1, 100], days = [1, 7]): SizingRow[] {
  const rows: SizingRow[] = [];
  for (const x of rates) {
    for (const y of consumerCounts) {
      const messagesPerS = y * (x / u.publishBatch);
      const busyCores = x * u.cpuSPerEvent + messagesPerS * u.cpuSPerMessage;
      for (const z of days) {
        rows.push({
          eventsPerS: x,
          consumers: y,
          retentionDays: z,
          busyCores,
          cores: Math.max(1, Math.ceil(busyCores / CPU_TARGET_UTILISATION)),
          frontCores: x * u.frontCpuSPerEvent + messagesPerS * u.cpuSPerMessage,
          streamsMin: Math.max(1, Math.ceil((x * u.shardCpuSPerEvent) / CPU_TARGET_UTILISATION)),
          memoryBytes: u.baseRssBytes + y * u.rssPerConsumerBytes + SIZING_STREAMS * u.rssPerStreamBytes,
          diskBytes: x * 86_400 * z * u.bytesPerEvent,
        });
      }
    }
  }
  return rows;
}

function sizingNote(s: SizingRow): string {
  const parts: string[] = [];
  if (s.streamsMin > 1) parts.push(`spread over ≥ ${s.streamsMin} streams (one shard thread each)`);
  if (s.frontCores > CPU_TARGET_UTILISATION) parts.push(`front thread at ${f2(s.frontCores)} cores, over ${CPU_TARGET_UTILISATION} of its one core: split the load over ≥ ${Math.ceil(s.frontCores / CPU_TARGET_UTILISATION)} nodes`);
  return parts.join("; ") || "–";
}

// ---- readings (two lines per chart) -------------------------------------------

/** Other processes this busy during a point (of 2 cores) visibly take from it. */
const DISTURBED_CORES = 0.5;

const bestOf = <T extends { eventsPerS: number }>(ps: T[]): T => ps.reduce((a, p) => (p.eventsPerS > a.eventsPerS ? p : a));

function publishReading(s: PublishSweep): string[] {
  const small = s.points.filter((p) => p.batch === s.options.batch);
  const large = s.points.filter((p) => p.batch === s.options.largeBatch);
  const best = bestOf(small);
  const first = small[0];
  const last = small[small.length - 1];
  const disturbed = s.points.filter((p) => p.otherCores >= DISTURBED_CORES);
  const noise =
    disturbed.length > 0
      ? ` Other processes kept ≥ ${DISTURBED_CORES} cores busy during ${disturbed.length} of the ${s.points.length} points ("other cores"): dips there are the shared machine, not the server.`
      : "";
  const lines = [
    `Batches of ${int(s.options.batch)}: ${int(first.eventsPerS)} events/s on ${first.connections} connection, at best ${int(best.eventsPerS)} (${best.connections} connections); the stream's shard thread is then at ${f2(best.busiestWorkerCores)} cores and the server at ${f2(best.serverCores)}, so more connections mostly queue: p99 goes from ${ms(first.p99Ms)} ms at ${first.connections} to ${ms(last.p99Ms)} ms at ${last.connections} connections.${noise}`,
  ];
  if (large.length > 0) {
    const bestL = bestOf(large);
    lines.push(
      `Batches of ${int(s.options.largeBatch)} reach ${int(bestL.eventsPerS)} events/s (${f2(bestL.eventsPerS / best.eventsPerS)}× the best of batches of ${int(s.options.batch)}) on ${bestL.connections} connections, p99 ${ms(bestL.p99Ms)} ms, at ${f2(bestL.serverCpuUsPerEvent)} µs of server CPU per event against ${f2(best.serverCpuUsPerEvent)}: each request has a fixed cost, so batch in the producer before adding connections.`,
    );
  }
  return lines;
}

function consumersReading(s: ConsumersSweep): string[] {
  const ps = [...s.points].sort((a, b) => a.consumers - b.consumers);
  const under = ps.filter((p) => p.p99Ms <= 50);
  const last = ps[ps.length - 1];
  const first = ps[0];
  const behind = last.eventsPerS < 0.95 * s.options.rate ? ` (the producer, on the same cores, managed only ${int(last.eventsPerS)} of ${int(s.options.rate)} events/s there)` : "";
  const l1 =
    under.length > 0
      ? `p99 stays at or under 50 ms up to ${int(under[under.length - 1].consumers)} consumers (${ms(under[under.length - 1].p99Ms)} ms); at ${int(last.consumers)} consumers p50 is ${ms(last.p50Ms)} ms and p99 ${ms(last.p99Ms)} ms, with ${f2(last.eventsPerMessage)} events per message: the consumers are behind and served in large catch-up batches${behind}.`
      : `p99 is above 50 ms at every point: ${ms(first.p99Ms)} ms at ${int(first.consumers)} consumer(s), ${ms(last.p99Ms)} ms at ${int(last.consumers)}${behind}.`;
  const l2 = `Server CPU stays between ${f2(Math.min(...ps.map((p) => p.serverCores)))} and ${f2(Math.max(...ps.map((p) => p.serverCores)))} cores at every point; at ${int(last.consumers)} consumers the machine is full (server ${f2(last.serverCores)} + benchmark ${f2(last.clientCores)} + other processes ${f2(last.otherCores)} of 2 cores), so the right end measures this shared box, not the server alone.`;
  return [l1, l2];
}

function streamsReading(s: StreamsSweep): string[] {
  const first = s.steps[0];
  const last = s.steps[s.steps.length - 1];
  const perStream = (last.rssBytes - first.rssBytes) / (last.streams - first.streams);
  const diskPer = (last.diskBytes - s.baselineDiskBytes) / last.streams;
  return [
    `RSS grows ~${(perStream / KiB).toFixed(1)} KiB per stream: ${mibText(s.baselineRssBytes)} MiB idle, ${mibText(first.rssBytes)} MiB at ${int(first.streams)} streams, ${mibText(last.rssBytes)} MiB at ${int(last.streams)}; on disk each stream takes ~${(diskPer / KiB).toFixed(1)} KiB (${s.options.eventsPerStream} events plus its segment and index files, in 4 KiB blocks).`,
    `Creating streams (by their first publish, ${s.options.concurrency} in flight) takes ${f2(first.sPer1000)} s per 1,000 in the first step and ${f2(last.sPer1000)} s in the last: ${last.sPer1000 > first.sPer1000 * 1.5 ? "it slows down as streams accumulate" : "no slowdown as streams accumulate"}.`,
  ];
}

// ---- the document -------------------------------------------------------------------

export /** Where the charts go, relative to CAPACITY.md: with the other generated outputs. */
const CHART_DIR = "results/capacity";
const CHART_FILES = {
  publish: "publish-throughput-latency.svg",
  consumers: "consumers-p99.svg",
  streams: "streams-rss.svg",
} as const;

function publishSection(s: PublishSweep): string[] {
  return [
    "## Publish: throughput vs latency",
    "",
    `![Publish throughput (events/s) and request latency p50 and p99 against connections, batches of ${int(s.options.batch)} and ${int(s.options.largeBatch)}](${CHART_DIR}/${CHART_FILES.publish})`,
    "",
    ...publishReading(s).map((l) => `- ${l}`),
    "",
    table(
      ["batch", "connections", "events/s", "requests/s", "p50 ms", "p99 ms", "autocannon p50 / p99 ms", "non-2xx", "server CPU cores", "front / shard cores", "server CPU µs/event", "benchmark cores", "other cores"],
      ["r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r"],
      s.points.map((p) => [
        int(p.batch),
        int(p.connections),
        int(p.eventsPerS),
        int(p.requestsPerS),
        ms(p.p50Ms),
        ms(p.p99Ms),
        `${p.autocannonP50Ms} / ${p.autocannonP99Ms}`,
        int(p.non2xx),
        f2(p.serverCores),
        `${f2(p.serverMainCores)} / ${f2(p.busiestWorkerCores)}`,
        f2(p.serverCpuUsPerEvent),
        f2(p.clientCores),
        f2(p.otherCores),
      ]),
    ),
    "",
    `After the sweep: ${int(s.eventsStored)} events stored (warm-ups included) in ${bytes(s.diskBytes)} on disk (${f2(s.bytesPerEvent)} B/event); server RSS ${mibText(s.rssBytes)} MiB, peak ${mibText(s.peakRssBytes)} MiB.`,
    "",
  ];
}

function consumersSection(s: ConsumersSweep): string[] {
  return [
    "## Consumers vs p99",
    "",
    `![Publish-to-deliver latency p50 and p99, and CPU, against WebSocket consumers; one stream at ${int(s.options.rate)} events/s](${CHART_DIR}/${CHART_FILES.consumers})`,
    "",
    ...consumersReading(s).map((l) => `- ${l}`),
    "",
    table(
      ["consumers", "events/s", "publishes/s", "deliveries", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "server CPU cores", "front cores", "messages/s", "events per message", "server RSS MiB", "benchmark cores", "other cores"],
      ["r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r"],
      s.points.map((p) => [
        int(p.consumers),
        int(p.eventsPerS),
        int(p.publishesPerS),
        `${int(p.deliveries)}${p.complete ? "" : ` of ${int(p.expectedDeliveries)} ✗`}`,
        ms(p.p50Ms),
        ms(p.p99Ms),
        ms(p.p999Ms),
        ms(p.maxMs),
        f2(p.serverCores),
        f2(p.serverMainCores),
        int(p.messagesPerS),
        f2(p.eventsPerMessage),
        mibText(p.rssBytes),
        f2(p.clientCores),
        f2(p.otherCores),
      ]),
    ),
    "",
  ];
}

function streamsSection(s: StreamsSweep): string[] {
  return [
    "## Streams vs RSS",
    "",
    `![Server RSS and data dir size (MiB) against streams, up to ${int(s.steps[s.steps.length - 1].streams)}](${CHART_DIR}/${CHART_FILES.streams})`,
    "",
    ...streamsReading(s).map((l) => `- ${l}`),
    "",
    table(
      ["streams", "server RSS MiB", "peak RSS MiB", "data dir MiB", "s per 1,000 new streams", "server CPU s per 1,000", "other cores"],
      ["r", "r", "r", "r", "r", "r", "r"],
      [
        ["0 (idle)", mibText(s.baselineRssBytes), "", (s.baselineDiskBytes / MiB).toFixed(1), "", "", ""],
        ...s.steps.map((p) => [int(p.streams), mibText(p.rssBytes), mibText(p.peakRssBytes), (p.diskBytes / MiB).toFixed(1), f2(p.sPer1000), f2(p.serverCpuSPer1000), f2(p.otherCores)]),
      ],
    ),
    "",
  ];
}

function sizingSection(r: CapacityResults, u: UnitCosts): string[] {
  const rows = sizing(u);
  const [mLow, mHigh] = u.consumerRssPoints;
  const fitted = u.messageFitPoints;
  const p = u.cpuPoint;
  return [
    "## Sizing",
    "",
    `For X events/s published in JSON batches of ${int(u.publishBatch)} (~100-byte payloads), Y WebSocket consumers each reading every event live, and Z days of retention, one Ticker node on a machine like this one needs:`,
    "",
    table(
      ["events/s (X)", "consumers (Y)", "retention (Z)", "cores (busy)", "memory", "disk", "and"],
      ["r", "r", "r", "r", "r", "r", "l"],
      rows.map((s) => [int(s.eventsPerS), int(s.consumers), `${s.retentionDays} d`, `${s.cores} (${s.busyCores.toFixed(2)})`, bytes(s.memoryBytes), bytes(s.diskBytes), sizingNote(s)]),
    ),
    "",
    `How each number is derived, all from this run on this machine (${r.machine.cpuModel}, ${r.machine.cores} cores, shared; see the top):`,
    "",
    `- **Cores:** busy = X × ${f2(u.cpuSPerEvent * 1e6)} µs (server CPU per published event at the mid-load publish point: batch ${int(p.batch)}, ${p.connections} connection(s), ${int(p.eventsPerS)} events/s, the point nearest half the best throughput) + Y × X / ${int(u.publishBatch)} messages/s × ${f2(u.cpuSPerMessage * 1e6)} µs (front CPU per WebSocket message: slope of a least-squares fit of the main thread's CPU against messages/s at ${fitted.map((q) => int(q.consumers)).join(", ")} consumers${u.messageFitClamped ? "; **the fitted slope came out below zero, i.e. this run's noise was larger than the effect, and is taken as 0**" : ""}; each publish reaches each consumer as at most one message); cores = busy / ${CPU_TARGET_UTILISATION}, rounded up.`,
    `- **Memory:** ${mibText(u.baseRssBytes)} MiB (peak RSS of the publish sweep's server: front, shards and their rings under load) + Y × ${(u.rssPerConsumerBytes / KiB).toFixed(1)} KiB (RSS rise from ${int(mLow.consumers)} to ${int(mHigh.consumers)} consumers, per consumer) + ${int(SIZING_STREAMS)} streams × ${(u.rssPerStreamBytes / KiB).toFixed(1)} KiB (RSS rise per stream in the streams sweep); every further 1,000 streams add ${bytes(1000 * u.rssPerStreamBytes)}. The OS page cache for replays from disk comes on top.`,
    `- **Disk:** X × 86,400 × Z × ${f2(u.bytesPerEvent)} B (the publish sweep's data dir, \`du\`, over the events it stored: record frames, FlatBuffers fields, indexes). No replication and no free-space headroom; each stream also keeps its open segment (up to 64 MiB) past retention.`,
    `- **Streams and nodes ("and"):** a stream lives on one shard thread, which took ${f2(u.shardCpuSPerEvent * 1e6)} µs per event at the mid-load point, so X needs ⌈X × that / ${CPU_TARGET_UTILISATION}⌉ streams; the front (HTTP and every WebSocket write) is one thread, at X × ${f2(u.frontCpuSPerEvent * 1e6)} µs + messages/s × ${f2(u.cpuSPerMessage * 1e6)} µs, and above ${CPU_TARGET_UTILISATION} of a core more cores do not help. The best one stream took here was ${int(u.singleStreamMax)} events/s (batches of ${int(u.singleStreamMaxBatch)}).`,
    `- **Limits:** linear extrapolation from 2 shared cores; at high rates the server joins a turn's events into one message per socket, so the message term is an upper bound; the consumers sweep shares the cores with its own consumers, so per-consumer figures lean high.`,
    "",
  ];
}

export function capacityMarkdown(r: CapacityResults): string {
  const m = r.machine;
  const u = unitCosts(r);
  const lines = [
    "# Capacity",
    "",
    `Written by \`loadtest/reports/capacity.ts\` (\`npm run capacity\`); the whole file and its charts are rewritten on every run. **Development figures:** one run on a shared ${m.cores}-core VM where other engineers build and benchmark at the same time (the "other cores" columns show how busy the rest of the machine was during each point), with the load generator on the same cores as the server.`,
    "",
    table(
      ["", ""],
      ["l", "l"],
      [
        ["Date", m.date],
        ["Machine", `${m.cpuModel}, ${m.cores} cores, ${(m.memoryBytes / GiB).toFixed(0)} GiB memory, ${m.kernel}`],
        ["Node", m.node],
        ["Commit", m.commit],
        ["Command", `\`${r.command}\``],
        ["Runtime", `${Math.round(r.runtimeS)} s`],
        ["Server", "`node dist/src/cli/main.js serve --port 0 --data-dir <tmp>`, default config (durability `process`), a fresh server and temp dir per sweep"],
      ],
    ),
    "",
    ...(r.publish ? publishSection(r.publish) : ["## Publish: throughput vs latency", "", "**Not measured in this run** (see the notes).", ""]),
    ...(r.consumers ? consumersSection(r.consumers) : ["## Consumers vs p99", "", "**Not measured in this run** (see the notes).", ""]),
    ...(r.streams ? streamsSection(r.streams) : ["## Streams vs RSS", "", "**Not measured in this run** (see the notes).", ""]),
    ...(u ? sizingSection(r, u) : ["## Sizing", "", "**Not derived:** a sweep it needs is missing from this run (see the notes).", ""]),
    "## How it was measured",
    "",
    ...method(r).map((l) => `- ${l}`),
    "",
  ];
  const notes = [...r.notes, ...(r.publish?.notes ?? []), ...(r.consumers?.notes ?? []), ...(r.streams?.notes ?? [])];
  if (notes.length > 0) lines.push("## Notes from this run", "", ...notes.map((n) => `- ${n}`), "");
  return lines.join("\n");
}

function method(r: CapacityResults): string[] {
  const p = r.publish?.options;
  const c = r.consumers?.options;
  const s = r.streams?.options;
  return [
    p
      ? `Publish: [autocannon](https://github.com/mcollina/autocannon) 8 in the benchmark process POSTs one pre-built JSON batch (\`{"type":"tick","payload":"<100 chars>"}\` × ${int(p.batch)}, and × ${int(p.largeBatch)}) to one stream, one request in flight per connection, ${p.warmupS} s warm-up (discarded) then ${p.measureS} s per point. events/s = 2xx answers/s × batch. Latency p50/p99 are per request, from autocannon's \`response\` event (fractional ms) in an HDR histogram; autocannon's own summary, in whole ms, is beside them.`
      : "Publish: not run.",
    c
      ? `Consumers: a producer thread (\`loadtest/workloads/producer.ts\`) publishes ${int(c.rate)} events/s on a 1 ms timer over 16 keep-alive connections, each event stamped with its send time; \`ws\` consumers (\`loadtest/systems/ticker.ts\`, \`from=latest&format=json\`, no group) in the benchmark process record receive − stamp of every delivery into one HDR histogram (µs). ${c.warmupS} s warm-up, then a ${c.measureS} s window per point; every consumer must get every event of the window in order (✗ otherwise). One server for the sweep; each point connects a fresh set of consumers.`
      : "Consumers: not run.",
    s
      ? `Streams: ${int(s.eventsPerStream)} events published to each new stream (auto-created), ${s.concurrency} requests in flight on raw keep-alive sockets (\`src/client/http.ts\`), cumulatively on one server; after each step, ${SETTLE_MS / 1000} s later, VmRSS and VmHWM from /proc/<pid>/status and \`du\` of the data dir (allocated blocks).`
      : "Streams: not run.",
    "CPU: utime + stime of the server's pid over the window (/proc/<pid>/stat, all threads; 1.00 = one core busy for the whole window); \"front\" is its main thread (uWS, which writes every socket); \"benchmark cores\" is this process (autocannon, consumers, producer thread); \"other cores\" is the rest of /proc/stat's busy time: other people's work on the machine. Before each sweep and each point the run waits (briefly) for the machine to go quiet.",
  ];
}

/** Renders the three charts and writes them and the markdown under `docsDir` (docs/CAPACITY.md, docs/results/capacity/*.svg). */
export async function writeCapacityReport(r: CapacityResults, docsDir = DOCS_DIR): Promise<{ markdown: string; charts: string[] }> {
  const chartDir = join(docsDir, CHART_DIR);
  mkdirSync(chartDir, { recursive: true });
  const charts: string[] = [];
  const renders: [PublishSweep | ConsumersSweep | StreamsSweep | null, string, () => Promise<string>][] = [
    [r.publish, CHART_FILES.publish, () => renderSvg(publishChart(r.publish!))],
    [r.consumers, CHART_FILES.consumers, () => renderSvg(consumersChart(r.consumers!))],
    [r.streams, CHART_FILES.streams, () => renderSvg(streamsChart(r.streams!))],
  ];
  for (const [data, file, render] of renders) {
    if (!data) continue;
    const path = join(chartDir, file);
    writeFileSync(path, (await render()) + "\n");
    charts.push(path);
  }
  const markdown = join(docsDir, "CAPACITY.md");
  writeFileSync(markdown, capacityMarkdown(r));
  return { markdown, charts };
}
