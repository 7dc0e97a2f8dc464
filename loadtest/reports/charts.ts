// The charts of the reports: vega-lite specs compiled with vega-lite and
// rendered headless to SVG by vega (no canvas, no browser): the capacity
// report's three here, the flame graphs' in ./flame.ts. Each is laid out for a
// 640 px wide page: legends above the plot, not beside it. Without a canvas
// vega estimates text at 0.8 × font size per character, so a long title or
// subtitle line would widen the SVG past the plot: subtitles are short lines.
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import type { ConsumersSweep, PublishSweep, StreamsSweep } from "./capacity/sweeps.js";

/** Plot width: with the y axis and padding the SVG comes to about 620 px. */
const PLOT_WIDTH = 560;
const MiB = 2 ** 20;

const CONFIG = {
  font: "Helvetica, Arial, sans-serif",
  view: { stroke: null },
  axis: { labelFontSize: 11, titleFontSize: 12, gridColor: "#e6e6e6" },
  legend: { orient: "top", labelFontSize: 11, titleFontSize: 11, symbolStrokeWidth: 2 },
  title: { fontSize: 14, subtitleFontSize: 11, anchor: "start", subtitleColor: "#555" },
  line: { strokeWidth: 2 },
} as const;

/** Powers of ten covering `values` (ms): the ticks of a log latency axis, without the 2s and 5s that crowd it. */
function decades(values: number[]): number[] {
  const lo = Math.floor(Math.log10(Math.max(1e-3, Math.min(...values))));
  const hi = Math.ceil(Math.log10(Math.max(1e-3, ...values)));
  return Array.from({ length: hi - lo + 1 }, (_, i) => 10 ** (lo + i));
}

export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

const batchLabel = (n: number) => `${n.toLocaleString("en-US")} events`;

/**
 * Publish throughput and latency against connections: events/s on top,
 * request latency p50/p99 below, a line per batch size (and percentile).
 * Connections, not throughput, on x: on a shared machine the throughput of
 * neighbouring points is noisy, and a throughput x axis would zigzag.
 */
export function publishChart(s: PublishSweep): TopLevelSpec {
  const batches = [batchLabel(s.options.batch), batchLabel(s.options.largeBatch)];
  const throughput = s.points.map((p) => ({ connections: p.connections, eventsPerS: Math.round(p.eventsPerS), batch: batchLabel(p.batch) }));
  const latency = s.points.flatMap((p) =>
    (["p50", "p99"] as const).map((pct) => ({ connections: p.connections, ms: pct === "p50" ? p.p50Ms : p.p99Ms, percentile: pct, batch: batchLabel(p.batch) })),
  );
  const connections = [...new Set(s.points.map((p) => p.connections))].sort((a, b) => a - b);
  const x = { field: "connections", type: "quantitative", scale: { type: "log", base: 2 }, axis: { values: connections, format: "d" } };
  const color = { field: "batch", type: "nominal", title: "batch", scale: { domain: batches, range: ["#1f77b4", "#d62728"] } };
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: { text: "Publish: throughput and latency vs connections", subtitle: ["one stream, JSON batches of 100-byte events", "each connection keeps one request in flight"] },
    config: CONFIG,
    spacing: 14,
    vconcat: [
      {
        width: PLOT_WIDTH,
        height: 170,
        data: { values: throughput },
        mark: { type: "line", point: { filled: true, size: 36 } },
        encoding: {
          x: { ...x, title: null },
          y: { field: "eventsPerS", type: "quantitative", title: "throughput (events/s)", scale: { domainMin: 0 }, axis: { labelExpr: "datum.value === 0 ? '0' : format(datum.value, '~s')" } },
          color,
        },
      },
      {
        width: PLOT_WIDTH,
        height: 220,
        data: { values: latency },
        mark: { type: "line", point: { filled: true, size: 36 } },
        encoding: {
          x: { ...x, title: "connections (log scale)" },
          y: { field: "ms", type: "quantitative", scale: { type: "log" }, title: "request latency (ms, log scale)", axis: { format: "~g", values: decades(latency.map((d) => d.ms)) } },
          color,
          strokeDash: { field: "percentile", type: "nominal", title: "percentile", scale: { domain: ["p50", "p99"], range: [[1, 0], [5, 3]] }, legend: { symbolType: "stroke", symbolStrokeColor: "#333" } },
          detail: { field: "percentile" },
        },
      },
    ],
  } as TopLevelSpec;
}

/** Consumers against p50/p99 delivery latency (top) and the server's and consumers' CPU (bottom). */
export function consumersChart(s: ConsumersSweep): TopLevelSpec {
  const latency = s.points.flatMap((p) => [
    { consumers: p.consumers, ms: Math.max(p.p50Ms, 0.001), series: "p50" },
    { consumers: p.consumers, ms: Math.max(p.p99Ms, 0.001), series: "p99" },
  ]);
  const cpu = s.points.flatMap((p) => [
    { consumers: p.consumers, cores: p.serverCores, series: "server" },
    { consumers: p.consumers, cores: p.clientCores, series: "benchmark (consumers, producer)" },
    { consumers: p.consumers, cores: p.otherCores, series: "other processes" },
  ]);
  const x = { field: "consumers", type: "quantitative", scale: { type: "log" }, title: "WebSocket consumers (log scale)", axis: { format: "~s", values: s.points.map((p) => p.consumers) } };
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: {
      text: "Fan-out: consumers vs publish-to-deliver latency",
      subtitle: [`one stream at ${s.options.rate.toLocaleString("en-US")} events/s, every delivery of a ${s.options.measureS} s window`, "the consumers run on the same 2 cores as the server"],
    },
    config: CONFIG,
    spacing: 14,
    resolve: { scale: { color: "independent" } },
    vconcat: [
      {
        width: PLOT_WIDTH,
        height: 240,
        data: { values: latency },
        mark: { type: "line", point: { filled: true, size: 36 } },
        encoding: {
          x: { ...x, title: null },
          y: { field: "ms", type: "quantitative", scale: { type: "log" }, title: "latency (ms, log scale)", axis: { format: "~g", values: decades(latency.map((d) => d.ms)) } },
          color: { field: "series", type: "nominal", title: "latency", scale: { domain: ["p50", "p99"], range: ["#1f77b4", "#d62728"] } },
        },
      },
      {
        width: PLOT_WIDTH,
        height: 120,
        data: { values: cpu },
        mark: { type: "line", point: { filled: true, size: 36 } },
        encoding: {
          x,
          y: { field: "cores", type: "quantitative", title: "CPU (cores)", scale: { domainMin: 0 } },
          color: { field: "series", type: "nominal", title: "CPU", scale: { domain: ["server", "benchmark (consumers, producer)", "other processes"], range: ["#2ca02c", "#9467bd", "#aaaaaa"] }, legend: { orient: "bottom", labelLimit: 320 } },
        },
      },
    ],
  } as TopLevelSpec;
}

/** Streams against server RSS and data dir size, both in MiB. */
export function streamsChart(s: StreamsSweep): TopLevelSpec {
  const rows = [
    { streams: 0, mib: s.baselineRssBytes / MiB, series: "server RSS (VmRSS)" },
    { streams: 0, mib: s.baselineDiskBytes / MiB, series: "data dir on disk (du)" },
    ...s.steps.flatMap((p) => [
      { streams: p.streams, mib: p.rssBytes / MiB, series: "server RSS (VmRSS)" },
      { streams: p.streams, mib: p.diskBytes / MiB, series: "data dir on disk (du)" },
    ]),
  ];
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: { text: "Streams vs memory and disk", subtitle: ["cumulative on one server", `each stream created by publishing ${s.options.eventsPerStream} events`] },
    width: PLOT_WIDTH,
    height: 280,
    config: CONFIG,
    data: { values: rows },
    mark: { type: "line", point: { filled: true, size: 36 } },
    encoding: {
      x: { field: "streams", type: "quantitative", title: "streams", axis: { format: ",d", values: [0, ...s.steps.map((p) => p.streams)] } },
      y: { field: "mib", type: "quantitative", title: "MiB", scale: { domainMin: 0 } },
      color: { field: "series", type: "nominal", title: null, scale: { domain: ["server RSS (VmRSS)", "data dir on disk (du)"], range: ["#1f77b4", "#ff7f0e"] }, legend: { labelLimit: 320 } },
      tooltip: [{ field: "streams" }, { field: "mib", format: ".1f" }],
    },
  } as TopLevelSpec;
}
