// What the front counts for GET /metrics as it answers: plain numbers bumped
// on the request path (a Map entry, no label hashing), made into prom-client
// series only when a scrape collects them (metrics.ts).
import { performance } from "node:perf_hooks";
import { Histogram, Registry } from "prom-client";
import type { ErrorCode } from "../errors.js";
import { LATENCY_BUCKETS_S, OTHER_LABEL } from "../shard/metrics.js";

/** The front thread's registry; metrics.ts adds the series it reads from the hub and the shards. */
export const frontRegistry = new Registry();

/** The routes whose answers feed their own metrics (publish outcomes, replay duration). */
export type MeteredRoute = "publish" | "replay";

/** A count per label value, with at most `max` values of their own; the rest count under `_other`. */
export class CappedCounts {
  readonly counts = new Map<string, number>();
  constructor(public max: number) {}

  add(label: string, n = 1): void {
    const had = this.counts.get(label);
    if (had !== undefined) this.counts.set(label, had + n);
    else if (this.counts.size < this.max) this.counts.set(label, n);
    else this.counts.set(OTHER_LABEL, (this.counts.get(OTHER_LABEL) ?? 0) + n);
  }
}

/** Error codes and statuses are few and fixed; the cap only guards against a bug. */
const CODES_MAX = 200;

export const counts = {
  /** HTTP answers by status. */
  responses: new CappedCounts(CODES_MAX),
  /** 429s by error code, HTTP and WebSocket. */
  throttled: new CappedCounts(CODES_MAX),
  /** Publish requests: "ok" or the error code. */
  publishOutcomes: new CappedCounts(CODES_MAX),
  /** Recovery and scrub findings by kind. */
  recovery: new CappedCounts(CODES_MAX),
  /** Per stream, capped by metrics_streams_max (setStreamsMax). */
  deadLetters: new CappedCounts(1000),
  redeliveries: new CappedCounts(1000),
  /** Requests taken and not yet answered or aborted. */
  inFlight: 0,
};

/** One a replay page, not one an event: an observation costs about a microsecond. */
const replaySeconds = new Histogram({
  name: "ticker_replay_duration_seconds",
  help: "Time from a replay request (GET /v1/streams/:id/events) to its page being written, answers 200",
  buckets: LATENCY_BUCKETS_S,
  registers: [frontRegistry],
});

export function setStreamsMax(max: number): void {
  counts.deadLetters.max = max;
  counts.redeliveries.max = max;
}

// Series that alerts watch exist at 0 from the start: rate() sees the first
// failure only if a sample came before it (docs/alerts.yml).
for (const code of ["ok", "shard_busy", "internal", "storage_error", "disk_full"] satisfies Array<"ok" | ErrorCode>) counts.publishOutcomes.add(code, 0);
for (const code of ["shard_busy", "server_busy", "rate_limited", "held_full"] satisfies ErrorCode[]) counts.throttled.add(code, 0);

/** The error code of a JSON error body, or "unknown". */
function errorCode(body: Uint8Array | string | null): string {
  if (body === null) return "unknown";
  try {
    const code = (JSON.parse(typeof body === "string" ? body : Buffer.from(body).toString("utf8")) as { error?: { code?: unknown } }).error?.code;
    return typeof code === "string" ? code : "unknown";
  } catch {
    return "unknown";
  }
}

/** Every HTTP answer passes here (http.ts send). */
export function noteResponse(route: MeteredRoute | undefined, startedMs: number, status: number, body: Uint8Array | string | null): void {
  counts.responses.add(String(status));
  if (status === 429) counts.throttled.add(errorCode(body));
  if (route === "publish") counts.publishOutcomes.add(status === 200 ? "ok" : errorCode(body));
  else if (route === "replay" && status === 200) replaySeconds.observe((performance.now() - startedMs) / 1000);
}

/** A 429 that is not an HTTP answer: a WebSocket refused after the upgrade. */
export function noteThrottled(code: string): void {
  counts.throttled.add(code);
}
