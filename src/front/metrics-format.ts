// A piscina task: merges the front's and the shards' metrics (prom-client
// JSON, as bytes) and renders the Prometheus text. At 10,000 streams that is
// ~9,000 series and ~100 ms of prom-client's label hashing and escaping:
// here, on a thread of its own, rather than on the front's event loop, where
// it held every request behind it (docs/BENCHMARKS.md, "GET /metrics").
import { readdirSync } from "node:fs";
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from "prom-client";

export interface FormatTask {
  /** Each registry's getMetricsAsJSON(), JSON-encoded. */
  parts: Uint8Array[];
}

const decoder = new TextDecoder();

type Part = Array<MetricObjectWithValues<MetricValue<string>>>;

/**
 * prom-client's process_open_fds, counted here: it lists /proc/self/fd, and
 * with a file or two open per stream that took ~12 ms of the front's loop
 * at 10,000 streams. The list is the process's, whichever thread reads it.
 */
function openFds(): Part {
  let fds: number;
  try {
    fds = readdirSync("/proc/self/fd").length - 1; // less the one reading the list
  } catch {
    return []; // not Linux
  }
  const metric = { name: "process_open_fds", help: "Number of open file descriptors.", type: "gauge", aggregator: "sum", values: [{ value: fds, labels: {} }] };
  return [metric] as unknown as Part;
}

export default function format(task: FormatTask): Promise<string> {
  const parts = task.parts.map((p) => JSON.parse(decoder.decode(p)) as Part);
  return AggregatorRegistry.aggregate([...parts, openFds()]).metrics();
}
