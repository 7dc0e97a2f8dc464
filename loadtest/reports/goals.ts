// The goals the report of `npm run bench` checks (issues 1, 13, 15 and 16),
// each against the median of the runs' series: Ticker alone, against a floor,
// or as a ratio to a peer measured in the same runs.
import type { Workload } from "../lib/results.js";
import { CLUSTER_GOALS } from "./cluster-section.js";
import { factor, fx, type Goal, isTicker, median, num, type Series } from "./series.js";

/** Ticker's best median of a metric over its variants. */
function tickerBest(all: Series[], workload: Workload, metric: string): Series | null {
  const t = all.filter((s) => s.workload === workload && s.metric === metric && isTicker(s));
  if (t.length === 0) return null;
  return t.reduce((a, b) => ((a.better === "higher" ? median(b.values) > median(a.values) : median(b.values) < median(a.values)) ? b : a));
}

function peerNamed(all: Series[], workload: Workload, metric: string, system: string): Series | null {
  const p = all.filter((s) => s.workload === workload && s.metric === metric && s.system === system);
  if (p.length === 0) return null;
  return p.reduce((a, b) => ((a.better === "higher" ? median(b.values) > median(a.values) : median(b.values) < median(a.values)) ? b : a));
}

function ratioGoal(workload: Workload, metric: string, system: string, times: number, what: string): Goal {
  return {
    text: `${what} ≥ ${times}x ${system}`,
    check: (all) => {
      const t = tickerBest(all, workload, metric);
      const p = peerNamed(all, workload, metric, system);
      if (!t || !p) return { measured: "not measured", met: null };
      const f = factor(t, p);
      return { measured: `${fx(f)} (${num(median(t.values))} vs ${num(median(p.values))} ${metric})`, met: f >= times };
    },
  };
}

/** The rows measured through ticker/client (bench:client), by variant. */
function clientRow(all: Series[], workload: Workload, metric: string, variant: string): Series | null {
  return all.find((x) => x.workload === workload && x.metric === metric && isTicker(x) && x.variant === variant) ?? null;
}

/** W1/W2 through the client: at least `floor` events/s and `times` x Redis Streams (ioredis, bench:peers) in the same runs. */
function clientRateGoal(workload: Workload, variant: string, floor: number, times: number, what: string): Goal {
  return {
    text: `${what} through ticker/client ≥ ${num(floor)} events/s and ≥ ${times}x Redis Streams (ioredis)`,
    check: (all) => {
      const t = clientRow(all, workload, "events/s", variant);
      const p = peerNamed(all, workload, "events/s", "Redis Streams");
      if (!t || !p) return { measured: "not measured", met: null };
      const f = factor(t, p);
      const rate = median(t.values);
      return { measured: `${num(rate)} events/s, ${fx(f)} Redis's ${num(median(p.values))}`, met: rate >= floor && f >= times };
    },
  };
}

function clientLatencyGoal(workload: "W3-20k" | "W3-100k"): Goal {
  return {
    text: `${workload} p99 through ticker/client ≤ Redis Streams p99 (ioredis)`,
    check: (all) => {
      const t = clientRow(all, workload, "p99 ms", "ticker/client consume");
      const p = peerNamed(all, workload, "p99 ms", "Redis Streams");
      if (!t || !p) return { measured: "not measured", met: null };
      return { measured: `${num(median(t.values))} ms vs ${num(median(p.values))} ms`, met: median(t.values) <= median(p.values) };
    },
  };
}

export const GOALS: Goal[] = [
  ratioGoal("W1", "events/s", "Redis Streams", 10, "W1 publish"),
  ratioGoal("W2", "events/s", "Redis Streams", 5, "W2 replay"),
  {
    text: "W2 replay ≥ 3,000,000 events/s",
    check: (all) => {
      const t = tickerBest(all, "W2", "events/s");
      return t ? { measured: `${num(median(t.values))} events/s (${t.variant})`, met: median(t.values) >= 3_000_000 } : { measured: "not measured", met: null };
    },
  },
  ...(["W3-20k", "W3-100k"] as const).map(
    (w): Goal => ({
      text: `${w} p99 ≤ Redis Streams p99`,
      check: (all) => {
        const t = tickerBest(all, w, "p99 ms");
        const p = peerNamed(all, w, "p99 ms", "Redis Streams");
        if (!t || !p) return { measured: "not measured", met: null };
        return { measured: `${num(median(t.values))} ms vs ${num(median(p.values))} ms`, met: median(t.values) <= median(p.values) };
      },
    }),
  ),
  {
    text: "W4 RSS ≤ 100 MiB after 10,000 streams",
    check: (all) => {
      const t = tickerBest(all, "W4", "RSS MiB");
      return t ? { measured: `${num(median(t.values))} MiB`, met: median(t.values) <= 100 } : { measured: "not measured", met: null };
    },
  },
  ...([
    ["fanout-1000", "1,000 consumers at 1,000 events/s", 50],
    ["fanout-10000", "10,000 consumers at 100 events/s", 250],
  ] as const).map(
    ([w, what, goalMs]): Goal => ({
      text: `fan-out to ${what}: p99 ≤ ${goalMs} ms`,
      check: (all) => {
        const t = tickerBest(all, w, "p99 ms");
        return t ? { measured: `${num(median(t.values))} ms`, met: median(t.values) <= goalMs } : { measured: "not measured", met: null };
      },
    }),
  ),
  ratioGoal("fsync", "events/s", "Redis Streams (AOF always)", 5, "fsync publish"),
  timelineGoal("paced", "timelines p99 ≤ 5 ms at 1,000 pages/s (3 and 32 streams)"),
  timelineGoal("unpaced", "timelines ≥ 12,000 pages/s with p99 ≤ 50 ms (3 and 32 streams)"),
  orderedGoal(),
  clientRateGoal("W1", "ticker/client, payload_bytes", 1_000_000, 5, "W1 publish"),
  clientRateGoal("W2", "ticker/client, payload_bytes read", 3_000_000, 5, "W2 replay (for await over events)"),
  clientRateGoal("W2", "ticker/client, payload_bytes read, by page", 3_000_000, 5, "W2 replay (for await over batches())"),
  clientLatencyGoal("W3-20k"),
  clientLatencyGoal("W3-100k"),
  ...CLUSTER_GOALS,
];

/**
 * The timeline goals, over both sets (variant names from bench:timelines):
 * the p99 of "<n> streams, 1,000 pages/s" (autocannon at that rate; the
 * evenly paced row beside it); or, of the "<n> streams, <c> connections,
 * unpaced" rows, the fastest with p99 <= 50 ms (else the fastest).
 */
function timelineGoal(rows: "paced" | "unpaced", text: string): Goal {
  return {
    text,
    check: (all) => {
      const parts: string[] = [];
      let met = true;
      const of = (variant: (v: string) => boolean, metric: string) =>
        all.filter((x) => x.workload === "timelines" && x.metric === metric && variant(x.variant));
      const same = (a: Series, metric: string) => of((v) => v === a.variant, metric)[0];
      for (const n of [3, 32]) {
        if (rows === "paced") {
          const p99 = of((v) => v === `${n} streams, 1,000 pages/s`, "p99 ms")[0];
          const even = of((v) => v === `${n} streams, 1,000 pages/s, evenly paced`, "p99 ms")[0];
          if (!p99) return { measured: "not measured", met: null };
          const p = median(p99.values);
          parts.push(`${n} streams: ${num(p)} ms${even ? ` (evenly paced ${num(median(even.values))} ms)` : ""}`);
          met &&= p <= 5;
          continue;
        }
        const rates = of((v) => v.startsWith(`${n} streams, `) && v.endsWith(" connections, unpaced"), "pages/s");
        if (rates.length === 0) return { measured: "not measured", met: null };
        const p99 = (r: Series) => median(same(r, "p99 ms")?.values ?? [Number.NaN]);
        const fastest = (xs: Series[]) => xs.reduce((a, b) => (median(b.values) > median(a.values) ? b : a));
        const within = rates.filter((r) => p99(r) <= 50);
        const best = fastest(within.length > 0 ? within : rates);
        const r = median(best.values);
        parts.push(`${n} streams: ${num(r)} pages/s, p99 ${num(p99(best))} ms (${best.variant.split(", ")[1]})`);
        met &&= r >= 12_000 && p99(best) <= 50;
      }
      return { measured: parts.join("; "), met };
    },
  };
}

/** Ordered ingest within 2x of a plain stream: the fastest publish path's two rows. */
function orderedGoal(): Goal {
  return {
    text: "ordered ingest (1% out of order) ≥ 0.5x a plain stream's events/s (FlatBuffers, raw HTTP)",
    check: (all) => {
      const rate = (variant: string) => all.find((x) => x.workload === "ordered-ingest" && x.metric === "events/s" && x.variant === variant);
      const o = rate("producer_ordering, FlatBuffers, raw HTTP");
      const p = rate("plain, FlatBuffers, raw HTTP");
      if (!o || !p) return { measured: "not measured", met: null };
      const f = median(o.values) / median(p.values);
      return { measured: `${fx(f)} (${num(median(o.values))} vs ${num(median(p.values))} events/s)`, met: f >= 0.5 };
    },
  };
}
