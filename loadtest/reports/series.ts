// What the report of `npm run bench` is made of: the runs' measurements
// grouped into series (one per workload, system, variant and metric, a value
// per run), their figures as the tables show them, the goals, and the facts
// of the run kept beside the results, so that a section of its own (the
// cluster's) reads them as the main report does.
import type { MachineLimits, Measurement, Workload } from "../lib/results.js";

export interface Series {
  workload: Workload;
  system: string;
  variant: string;
  metric: string;
  better: "higher" | "lower";
  values: number[];
  notes: string[];
}

export function aggregate(ms: Measurement[]): Series[] {
  const by = new Map<string, Series>();
  for (const m of ms) {
    const key = [m.workload, m.system, m.variant ?? "", m.metric].join("\u0000");
    let s = by.get(key);
    if (!s) {
      s = { workload: m.workload, system: m.system, variant: m.variant ?? "", metric: m.metric, better: m.better, values: [], notes: [] };
      by.set(key, s);
    }
    s.values.push(m.value);
    // The first run's note says how it was measured; later runs repeat it with other figures.
    if (m.note && s.notes.length === 0) s.notes.push(m.note);
  }
  return [...by.values()];
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** 1,234,567 / 12.3 / 0.123: rates as integers, small figures with 3 significant digits. */
export function num(x: number): string {
  if (!Number.isFinite(x)) return "?";
  if (Math.abs(x) >= 1000) return Math.round(x).toLocaleString("en-US");
  return Number(x.toPrecision(3)).toString();
}

export function seriesCell(s: Series): string {
  const m = median(s.values);
  if (s.values.length === 1) return num(m);
  return `${num(m)} (${num(Math.min(...s.values))}–${num(Math.max(...s.values))})`;
}

export const isTicker = (s: { system: string }) => s.system === "Ticker";

/** The best peer median for a workload and metric, or null. */
export function bestPeer(all: Series[], workload: Workload, metric: string): Series | null {
  const peers = all.filter((s) => s.workload === workload && s.metric === metric && !isTicker(s));
  if (peers.length === 0) return null;
  return peers.reduce((a, b) => ((a.better === "higher" ? median(b.values) > median(a.values) : median(b.values) < median(a.values)) ? b : a));
}

/** How many times better Ticker is than `peer` (> 1: Ticker better). */
export function factor(t: Series, peer: Series): number {
  const a = median(t.values);
  const b = median(peer.values);
  return t.better === "higher" ? a / b : b / a;
}

/** A ratio as the tables show it: 1.23x, 12x. */
export const fx = (f: number) => (Number.isFinite(f) ? `${f >= 10 ? f.toFixed(0) : f.toFixed(2)}x` : "?");

export interface Goal {
  text: string;
  check: (all: Series[]) => { measured: string; met: boolean | null };
}

export interface RunFacts {
  /** The machine and software lines, and the steps' commands, as they were when measured (--report-only must not take today's). */
  machine?: string[];
  steps?: string[];
  limits: MachineLimits | null;
  limitsErr: string | null;
  failures: string[];
  runtimeS: number;
  runs: number;
  commit: string;
  command: string;
  date: string;
  /** Later runs of some steps (--merge), whose series replaced theirs. */
  /** `machine`: the machine and software lines when they ran (the run above may have been on another day's VM). */
  reruns?: Array<{ date: string; commit: string; command: string; runs: number; steps: string[]; machine?: string[] }>;
}
