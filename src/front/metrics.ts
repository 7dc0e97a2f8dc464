// GET /metrics: Prometheus text of the front thread's registry and every
// shard's, merged by prom-client's AggregatorRegistry.aggregate (sums by
// label set; lag gauges take the largest) on a piscina thread
// (metrics-format.ts). Each shard is asked once a scrape (Op.Metrics) and
// answers from counters it already keeps; one that has not answered within
// SHARD_WAIT_MS is left out of that scrape and counted in
// ticker_metrics_shards_missing. Scrapes that arrive while one runs share it.
import { Piscina } from "piscina";
import { collectDefaultMetrics, Counter, Gauge } from "prom-client";
import type { Config } from "../config.js";
import { ApiError } from "../errors.js";
import { ContentType, Op } from "../shard/protocol.js";
import { LoopLag } from "../shard/metrics.js";
import type { GuardedApp } from "./auth.js";
import type { ConsumeHub } from "./consume/hub.js";
import { type CappedCounts, counts, frontRegistry, setStreamsMax } from "./front-metrics.js";
import { exchange, send, sendError } from "./http.js";
import { NO_PARAMS } from "./query-params.js";
import { checkQuery } from "../validate.js";
import type { FormatTask } from "./metrics-format.js";
import type { ShardPool } from "./shards.js";
import type { Ring } from "../ring/ring.js";

/** A shard busy for longer than this (a recovery, a stall) is left out of the scrape rather than hold it. */
const SHARD_WAIT_MS = 2000;
const PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8";
/** The format thread stays this long after a scrape: longer than Prometheus' usual 15 to 60 s interval, so it is not started anew each time. */
const FORMAT_THREAD_IDLE_MS = 120_000;

export interface MetricsDeps {
  config: Config;
  pool: ShardPool;
  hub: ConsumeHub;
  /** Recovered and not shutting down: what /readyz says. */
  ready: () => boolean;
}

/** A counter whose values are the front's plain counts under one label. */
function countsCounter(name: string, help: string, label: string, source: CappedCounts): void {
  new Counter({
    name,
    help,
    labelNames: [label],
    registers: [frontRegistry],
    collect() {
      this.reset();
      for (const [value, n] of source.counts) this.inc({ [label]: value }, n);
    },
  });
}

function registerFrontSeries(d: MetricsDeps, shardsMissing: () => number): void {
  const registers = [frontRegistry];
  collectDefaultMetrics({ register: frontRegistry });
  frontRegistry.removeSingleMetric("process_open_fds"); // counted on the format thread (metrics-format.ts)
  new Gauge({
    name: "ticker_ready",
    help: "1 when the server has recovered its streams and is not shutting down (as /readyz), else 0",
    registers,
    collect() {
      this.set(d.ready() ? 1 : 0);
    },
  });
  countsCounter("ticker_http_responses_total", "HTTP answers by status", "status", counts.responses);
  countsCounter("ticker_throttled_total", "429 answers (HTTP and WebSocket) by error code: backpressure and key rate limits", "reason", counts.throttled);
  countsCounter("ticker_publish_requests_total", 'Publish requests by outcome: "ok" or the error code', "outcome", counts.publishOutcomes);
  countsCounter("ticker_recovery_findings_total", "Damage recovery and the scrub found, by finding", "finding", counts.recovery);
  countsCounter("ticker_dead_letters_total", "Events dead-lettered to <stream>.dlq after max_attempts nacks", "stream", counts.deadLetters);
  countsCounter("ticker_redeliveries_total", "Nacks that redelivered an event", "stream", counts.redeliveries);
  new Gauge({
    name: "ticker_http_requests_in_flight",
    help: "HTTP requests taken and not yet answered",
    registers,
    collect() {
      this.set(counts.inFlight);
    },
  });
  new Gauge({
    name: "ticker_websocket_connections",
    help: "WebSocket consumers connected",
    registers,
    collect() {
      this.set(d.hub.consumers);
    },
  });
  new Gauge({
    name: "ticker_consumers",
    help: "Consumers by role: active (receives events; every consumer without a group) or standby (waits to take over its group)",
    labelNames: ["role"],
    registers,
    collect() {
      let active = 0;
      let standby = 0;
      for (const f of d.hub.feeds.values()) for (const s of f.sessions) s.role === "active" ? active++ : standby++;
      this.set({ role: "active" }, active);
      this.set({ role: "standby" }, standby);
    },
  });
  const rings = d.pool.rings();
  const ringGauge = (name: string, help: string, value: (r: Ring) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ["shard", "ring"],
      registers,
      collect() {
        rings.forEach((r, shard) => {
          this.set({ shard: String(shard), ring: "in" }, value(r.in));
          this.set({ shard: String(shard), ring: "out" }, value(r.out));
        });
      },
    });
  ringGauge("ticker_ring_used_bytes", "Bytes waiting in a shard's ring: in (requests to the shard) or out (answers and live batches to the front)", (r) =>
    r.usedBytes(),
  );
  ringGauge("ticker_ring_capacity_bytes", "Data bytes of a shard's ring (ring_bytes)", (r) => r.capacity);
  const loopLag = new LoopLag();
  new Gauge({
    name: "ticker_event_loop_lag_seconds",
    help: "p99 event-loop delay of a thread over the last complete 10 s window",
    labelNames: ["thread"],
    registers,
    collect() {
      this.set({ thread: "front" }, loopLag.seconds);
    },
  });
  new Gauge({
    name: "ticker_metrics_shards_missing",
    help: `Shards that did not answer this scrape within ${SHARD_WAIT_MS} ms (their series are absent from it)`,
    registers,
    collect() {
      this.set(shardsMissing());
    },
  });
}

/** Every shard's metrics JSON (bytes); a shard that is not ready, full or slow gives null. */
function askShards(pool: ShardPool, ready: boolean): Promise<Array<Uint8Array | null>> {
  if (!ready) return Promise.resolve(new Array(pool.count).fill(null));
  return Promise.all(
    Array.from(
      { length: pool.count },
      (_, shard) =>
        new Promise<Uint8Array | null>((resolve) => {
          const timer = setTimeout(() => {
            pool.deliverReady(shard); // an answer already in the ring is not late
            resolve(null);
          }, SHARD_WAIT_MS);
          const ok = pool.send(shard, Op.Metrics, {}, null, (r) => {
            clearTimeout(timer);
            // A copy: the ring's bytes are reused once this callback returns.
            resolve(r.status === 200 ? Uint8Array.prototype.slice.call(r.body) : null);
          });
          if (!ok) {
            clearTimeout(timer);
            resolve(null);
          }
        }),
    ),
  );
}

export function metricsRoute(routes: GuardedApp, d: MetricsDeps): void {
  setStreamsMax(d.config.metrics_streams_max);
  let missing = 0;
  registerFrontSeries(d, () => missing);
  const formatter = new Piscina<FormatTask, string>({
    filename: new URL("./metrics-format.js", import.meta.url).href,
    minThreads: 0,
    maxThreads: 1,
    idleTimeout: FORMAT_THREAD_IDLE_MS,
  });
  let running: Promise<string> | null = null;
  const scrape = async (): Promise<string> => {
    const shards = await askShards(d.pool, d.ready());
    missing = shards.filter((s) => s === null).length;
    const front = Buffer.from(JSON.stringify(await frontRegistry.getMetricsAsJSON()));
    return formatter.run({ parts: [front, ...shards.filter((s): s is Uint8Array => s !== null)] });
  };
  routes.get("/metrics", "admin", (res, req, key) => {
    const x = exchange(res);
    try {
      checkQuery(req.getQuery() ?? "", NO_PARAMS);
    } catch (err) {
      return sendError(x, err as ApiError);
    }
    // Series name every stream: a key limited to a prefix must not read the others'.
    if (key !== null && key.prefix !== "") {
      return sendError(x, new ApiError(403, "forbidden", "GET /metrics names every stream: it needs an admin key without a prefix", { prefix: key.prefix }));
    }
    running ??= scrape().finally(() => {
      running = null;
    });
    running.then(
      (text) => send(x, 200, ContentType.None, text, { "content-type": PROMETHEUS_TEXT }),
      (err: unknown) => sendError(x, new ApiError(500, "internal", `metrics: ${(err as Error).message}`)),
    );
  });
}
