// The metric contract of GET /metrics in one place: every series the server
// promises, its type and its labels. docs/alerts.yml and
// docs/grafana-dashboard.json are checked against it (test/unit/metric-contract.test.ts, test/integration/alerts.test.ts),
// and a test of the endpoint can check a real scrape against the same list, so
// a renamed metric breaks a test instead of a dashboard nobody looks at.

export type MetricType = "counter" | "gauge" | "histogram";

export interface MetricContract {
  name: string;
  type: MetricType;
  /** The labels the server sets; a scrape adds `job` and `instance`. */
  labels: readonly string[];
}

const m = (name: string, type: MetricType, labels: string[] = []): MetricContract => ({ name, type, labels });

export const METRICS: readonly MetricContract[] = [
  // The front (main thread).
  m("ticker_ready", "gauge"),
  m("ticker_publish_requests_total", "counter", ["outcome"]),
  m("ticker_throttled_total", "counter", ["reason"]),
  m("ticker_http_responses_total", "counter", ["status"]),
  m("ticker_http_requests_in_flight", "gauge"),
  m("ticker_websocket_connections", "gauge"),
  m("ticker_consumers", "gauge", ["role"]),
  m("ticker_dead_letters_total", "counter", ["stream"]),
  m("ticker_redeliveries_total", "counter", ["stream"]),
  m("ticker_replay_duration_seconds", "histogram"),
  m("ticker_recovery_findings_total", "counter", ["finding"]),
  m("ticker_ring_used_bytes", "gauge", ["shard", "ring"]),
  m("ticker_ring_capacity_bytes", "gauge", ["shard", "ring"]),
  m("ticker_event_loop_lag_seconds", "gauge", ["thread"]),
  m("ticker_metrics_shards_missing", "gauge"),
  // The shards, aggregated by the front on scrape.
  m("ticker_events_published_total", "counter", ["stream"]),
  m("ticker_published_bytes_total", "counter", ["stream"]),
  m("ticker_append_duration_seconds", "histogram", ["shard"]),
  m("ticker_fsync_duration_seconds", "histogram", ["shard"]),
  m("ticker_replay_events_total", "counter", ["stream"]),
  m("ticker_replay_pages_total", "counter", ["stream"]),
  m("ticker_streams", "gauge"),
  m("ticker_stream_head_seq", "gauge", ["stream"]),
  m("ticker_stream_first_seq", "gauge", ["stream"]),
  m("ticker_stream_disk_bytes", "gauge", ["stream"]),
  m("ticker_stream_retention_seconds", "gauge", ["stream"]),
  // Only for streams with a retention_bytes bound.
  m("ticker_stream_retention_bytes", "gauge", ["stream"]),
  m("ticker_group_lag_events", "gauge", ["stream", "group"]),
  // The age of the oldest unacknowledged event; 0 when caught up.
  m("ticker_group_lag_seconds", "gauge", ["stream", "group"]),
  m("ticker_retention_deleted_segments_total", "counter"),
  m("ticker_retention_deleted_bytes_total", "counter"),
];

/** Past `metrics_streams_max`, the other streams (and groups) are one series with this label value. */
export const OTHER_LABEL_VALUE = "_other";

/** The series a histogram is scraped as. */
export const HISTOGRAM_SUFFIXES = ["_bucket", "_sum", "_count"] as const;

/** The contract entry a scraped series name belongs to (a histogram's `_bucket`, `_sum`, `_count` included), or undefined. */
export function metricOf(series: string): MetricContract | undefined {
  const exact = METRICS.find((c) => c.name === series);
  if (exact) return exact;
  const suffix = HISTOGRAM_SUFFIXES.find((s) => series.endsWith(s));
  if (!suffix) return undefined;
  return METRICS.find((c) => c.type === "histogram" && c.name === series.slice(0, -suffix.length));
}
