// A piscina task: merges the front's and the shards' metrics (prom-client
// JSON, as bytes) and renders the Prometheus text. At 10,000 streams that is
// ~9,000 series and ~100 ms of prom-client's label hashing and escaping:
// here, on a thread of its own, rather than on the front's event loop, where
// it held every request behind it (docs/BENCHMARKS.md, "GET /metrics").
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from "prom-client";

export interface FormatTask {
  /** Each registry's getMetricsAsJSON(), JSON-encoded. */
  parts: Uint8Array[];
}

const decoder = new TextDecoder();

export default function format(task: FormatTask): Promise<string> {
  const parts = task.parts.map((p) => JSON.parse(decoder.decode(p)) as Array<MetricObjectWithValues<MetricValue<string>>>);
  return AggregatorRegistry.aggregate(parts).metrics();
}
