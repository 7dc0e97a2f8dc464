// Flame graphs of V8 CPU profiles (`node --cpu-prof` writes one .cpuprofile
// per thread), drawn as SVG with the same charting library as the capacity
// report: one rectangle per call path, as wide as the time spent in it and
// below it, callers on top. Idle time is left out, so the width is the
// thread's busy time.
//
//   TICKER_BENCH_SERVER_FLAGS="--cpu-prof --cpu-prof-dir=.bench/prof" npm run bench:consume -- --rows w3-20k
//   npm run flame -- .bench/prof/CPU.*.cpuprofile --title "W3 at 20,000 events/s"   # → docs/results/profiles/
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import type { TopLevelSpec } from "vega-lite";
import { repoRelative, RESULTS_DIR } from "../lib/report.js";
import { renderSvg } from "./charts.js";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface Frame {
  name: string;
  kind: string;
  depth: number;
  /** Start and end along the x axis, ms of busy time. */
  x0: number;
  x1: number;
}

const WIDTH_PX = 1000;
const ROW_PX = 17;
/** Frames narrower than this share of the busy time are left out (unreadable slivers). */
const MIN_SHARE = 0.002;

function frameName(f: ProfileNode["callFrame"]): string {
  const fn = f.functionName || "(anonymous)";
  if (!f.url) return fn;
  const file = f.url.startsWith("node:") ? f.url : f.url.split("/").slice(-2).join("/");
  return `${fn} ${file}:${f.lineNumber + 1}`;
}

function frameKind(f: ProfileNode["callFrame"]): string {
  if (f.url.includes("/node_modules/")) return "dependency";
  if (f.url.includes("/dist/src/") || f.url.includes("/src/")) return "Ticker";
  if (f.url.startsWith("node:")) return "Node.js";
  if (f.functionName.startsWith("(")) return "V8 (GC, compiler, program)";
  return "native";
}

/** The profile's call tree laid out as flame-graph frames; also its busy ms. */
export function flameFrames(profile: CpuProfile): { frames: Frame[]; busyMs: number } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfMs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i];
    selfMs.set(id, (selfMs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
  }
  const totalMs = new Map<number, number>();
  const total = (id: number): number => {
    const n = byId.get(id)!;
    if (n.callFrame.functionName === "(idle)") return 0; // the thread waiting: not drawn
    let t = selfMs.get(id) ?? 0;
    for (const c of n.children ?? []) t += total(c);
    totalMs.set(id, t);
    return t;
  };
  const root = profile.nodes[0];
  const busyMs = total(root.id);
  const frames: Frame[] = [];
  const place = (id: number, depth: number, x0: number) => {
    const n = byId.get(id)!;
    const t = totalMs.get(id) ?? 0;
    if (t < busyMs * MIN_SHARE) return;
    frames.push({ name: frameName(n.callFrame), kind: frameKind(n.callFrame), depth, x0, x1: x0 + t });
    let x = x0;
    const children = [...(n.children ?? [])].sort((a, b) => frameName(byId.get(a)!.callFrame).localeCompare(frameName(byId.get(b)!.callFrame)));
    for (const c of children) {
      place(c, depth + 1, x);
      x += totalMs.get(c) ?? 0;
    }
  };
  let x = 0;
  for (const c of root.children ?? []) {
    place(c, 0, x);
    x += totalMs.get(c) ?? 0;
  }
  return { frames, busyMs };
}

export function flameChart(frames: Frame[], busyMs: number, title: string, subtitle: string): TopLevelSpec {
  const depth = Math.max(0, ...frames.map((f) => f.depth)) + 1;
  // A label fits when the frame is wider than its text (~6 px per character at 10 px).
  const pxPerMs = WIDTH_PX / Math.max(busyMs, 1e-9);
  const data = frames.map((f) => {
    const chars = Math.floor(((f.x1 - f.x0) * pxPerMs - 6) / 6);
    return { ...f, label: chars >= 4 ? (f.name.length <= chars ? f.name : f.name.slice(0, chars - 1) + "…") : "", ms: Math.round((f.x1 - f.x0) * 10) / 10 };
  });
  const x = { field: "x0", type: "quantitative" as const, title: "busy time (ms)", scale: { domain: [0, busyMs], nice: false } };
  const y = { field: "depth", type: "ordinal" as const, axis: null, scale: { domain: Array.from({ length: depth }, (_, i) => i) } };
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: { text: title, subtitle: [subtitle] },
    config: { font: "Helvetica, Arial, sans-serif", view: { stroke: null }, legend: { orient: "top", labelFontSize: 11 }, title: { anchor: "start", fontSize: 14, subtitleFontSize: 11 } },
    width: WIDTH_PX,
    height: depth * ROW_PX,
    data: { values: data },
    layer: [
      {
        mark: { type: "rect", stroke: "white", strokeWidth: 0.5 },
        encoding: {
          x,
          x2: { field: "x1" },
          y,
          color: {
            field: "kind",
            type: "nominal",
            title: null,
            scale: { domain: ["Ticker", "Node.js", "dependency", "native", "V8 (GC, compiler, program)"], range: ["#e4572e", "#f3a712", "#a8c686", "#669bbc", "#b0b0b0"] },
          },
          tooltip: [{ field: "name" }, { field: "ms", title: "ms" }],
        },
      },
      {
        mark: { type: "text", align: "left", dx: 3, fontSize: 10, baseline: "middle" },
        encoding: { x, y, text: { field: "label" } },
      },
    ],
  };
}

async function main(): Promise<void> {
  const { values: opts, positionals } = parseArgs({
    options: { out: { type: "string", default: join(RESULTS_DIR, "profiles") }, title: { type: "string", default: "CPU profile" } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length === 0) {
    console.error("usage: flame.js <profile.cpuprofile>... [--out dir] [--title text]");
    process.exit(2);
  }
  mkdirSync(opts.out!, { recursive: true });
  for (const file of positionals) {
    const { frames, busyMs } = flameFrames(JSON.parse(readFileSync(file, "utf8")) as CpuProfile);
    const name = basename(file).replace(/\.cpuprofile$/, "");
    const svg = await renderSvg(flameChart(frames, busyMs, opts.title!, `${name}: ${busyMs.toFixed(0)} ms busy; frames under ${MIN_SHARE * 100}% left out`));
    const out = join(opts.out!, `${name}.svg`);
    writeFileSync(out, svg);
    console.log(`${repoRelative(out)}: ${busyMs.toFixed(0)} ms busy, ${frames.length} frames`);
  }
}

if (process.argv[1] && import.meta.url.endsWith(basename(process.argv[1]))) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
