// Reads a GET /metrics answer (Prometheus text format 0.0.4) into samples,
// and sums them by name and labels, for tests that assert what a scrape shows.
import { api } from "./server.js";

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL_PAIR = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = SAMPLE_LINE.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const p of (m[2] ?? "").matchAll(LABEL_PAIR)) labels[p[1]] = p[2].replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/** A parsed scrape, with lookups by name and by labels. */
export class Scrape {
  constructor(readonly samples: Sample[]) {}

  /** Samples of `name` whose labels include `labels`. */
  find(name: string, labels: Record<string, string> = {}): Sample[] {
    return this.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  }

  /** The sum of those samples' values (0 when there are none). */
  sum(name: string, labels: Record<string, string> = {}): number {
    return this.find(name, labels).reduce((n, s) => n + s.value, 0);
  }

  /** Whether any sample of `name` (or its _bucket/_sum/_count) is there. */
  has(name: string): boolean {
    return this.samples.some((s) => s.name === name || s.name === `${name}_count`);
  }

  /** The distinct values of one label on `name`. */
  labelValues(name: string, label: string): string[] {
    return [...new Set(this.find(name).map((s) => s.labels[label]))].sort();
  }
}

export async function scrape(url: string, headers: Record<string, string> = {}): Promise<Scrape> {
  const r = await api(`${url}/metrics`, "GET", undefined, headers);
  if (r.status !== 200) throw new Error(`GET /metrics: ${r.status} ${Buffer.from(r.raw).toString("utf8")}`);
  if (!r.headers.get("content-type")?.startsWith("text/plain; version=0.0.4")) throw new Error(`GET /metrics content-type ${r.headers.get("content-type")}`);
  return new Scrape(parseMetrics(Buffer.from(r.raw).toString("utf8")));
}
