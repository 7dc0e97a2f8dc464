// The shard's part of GET /metrics. What the thread counts as it works
// (append and fsync latency, retention deletions) is plain numbers here;
// what streams and groups stand at (head, disk, lag) is read from them when
// a scrape asks (Op.Metrics). Nothing crosses to the front per event: the
// front asks once a scrape, and formats and merges the shards' answers with
// prom-client (src/front/metrics.ts). The answer is prom-client's metrics
// JSON, built here directly: prom-client's own objects cost ~5 µs an
// observation and ~2 µs a labelled set (label checks and hashing), which a
// shard would pay per publish and, at a scrape, per series.
import { monitorEventLoopDelay } from "node:perf_hooks";
import { setImmediate as yieldToLoop } from "node:timers/promises";
import type { ShardBuffers } from "./buffers.js";
import { oldestUnackedAgeMs } from "./groups.js";
import type { Stream } from "./stream.js";

/** Seconds, from 50 µs (a write into the page cache) to 2.5 s (a stalled disk). */
export const LATENCY_BUCKETS_S = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** Streams and group reads a scrape goes through before it lets the shard's loop take requests (~0.2 ms of work). */
const SLICE_WORK = 256;

/** The stream (and group) label of what is past metrics_streams_max, summed into one series. */
export const OTHER_LABEL = "_other";

/** Event-loop delay is sampled this often (ms): finer costs a timer wake-up per sample. */
const LOOP_DELAY_RESOLUTION_MS = 10;

/** The window event-loop lag is measured over: scrape-independent, so two Prometheus servers read the same figure. */
const LOOP_LAG_WINDOW_MS = 10_000;

/**
 * A thread's event-loop lag: the p99 delay of a timer due every
 * LOOP_DELAY_RESOLUTION_MS, less that interval (the histogram holds the whole
 * time between firings: an idle loop reads ~10 ms), over the last complete
 * LOOP_LAG_WINDOW_MS window.
 */
export class LoopLag {
  private readonly delay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
  private lastSeconds = 0;

  constructor() {
    this.delay.enable();
    // unref: the window must not keep a thread (or a test's process) alive.
    setInterval(() => this.rotate(), LOOP_LAG_WINDOW_MS).unref();
  }

  private rotate(): void {
    const d = this.delay;
    this.lastSeconds = d.count > 0 ? Math.max(0, d.percentile(99) / 1e6 - LOOP_DELAY_RESOLUTION_MS) / 1000 : 0;
    d.reset();
  }

  get seconds(): number {
    return this.lastSeconds;
  }
}

/** One value of prom-client's metrics JSON (a sample line of the text format). */
export interface MetricValue {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

/** One metric of prom-client's metrics JSON; `aggregator` is how the front merges the shards' values. */
export interface MetricJson {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  aggregator: "sum" | "max";
  values: MetricValue[];
}

/** Counts by bucket (not cumulative), sum and count: an observation is a short loop and three adds. */
export class FixedHistogram {
  private readonly counts = new Float64Array(LATENCY_BUCKETS_S.length + 1);
  private sum = 0;
  private count = 0;

  observe(seconds: number): void {
    let i = 0;
    while (i < LATENCY_BUCKETS_S.length && seconds > LATENCY_BUCKETS_S[i]) i++;
    this.counts[i]++;
    this.sum += seconds;
    this.count++;
  }

  toJson(name: string, help: string, labels: Record<string, string>): MetricJson {
    const values: MetricValue[] = [];
    let cumulative = 0;
    for (let i = 0; i < LATENCY_BUCKETS_S.length; i++) {
      cumulative += this.counts[i];
      values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: LATENCY_BUCKETS_S[i] }, value: cumulative });
    }
    values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: "+Inf" }, value: this.count });
    values.push({ metricName: `${name}_sum`, labels, value: this.sum });
    values.push({ metricName: `${name}_count`, labels, value: this.count });
    return { name, help, type: "histogram", aggregator: "sum", values };
  }
}

const metric = (name: string, type: MetricJson["type"], help: string, aggregator: MetricJson["aggregator"] = "sum"): MetricJson => ({
  name,
  help,
  type,
  aggregator,
  values: [],
});

export class ShardMetrics {
  private readonly shardLabel: { shard: string };
  private readonly append = new FixedHistogram();
  private readonly fsync = new FixedHistogram();
  private retentionSegments = 0;
  private retentionBytes = 0;
  private readonly loopLag = new LoopLag();
  /** Series of this shard's own: its share of metrics_streams_max. */
  private readonly seriesMax: number;
  /** The streams, and `stream\0group` pairs, that have series of their own. */
  private readonly shownStreams = new Set<string>();
  private readonly shownGroups = new Set<string>();

  constructor(
    private readonly shard: number,
    shards: number,
    streamsMax: number,
  ) {
    this.seriesMax = Math.ceil(streamsMax / shards);
    this.shardLabel = { shard: String(shard) };
  }

  observeAppend(seconds: number): void {
    this.append.observe(seconds);
  }

  observeFsync(seconds: number): void {
    this.fsync.observe(seconds);
  }

  noteRetention(segments: number, bytes: number): void {
    this.retentionSegments += segments;
    this.retentionBytes += bytes;
  }

  /**
   * This shard's metrics as prom-client JSON. Up to `seriesMax` streams
   * (and as many groups) have series of their own: those it met first (by id
   * among those met at once), for as long as they exist, so a new stream
   * never pushes a shown one into `_other` (its counters would jump there,
   * which rate() takes for events). The rest are summed (lag: the largest)
   * into `_other`. The oldest unacked event is read only for the groups
   * shown, one small read each, so a scrape's cost grows with
   * metrics_streams_max, not with the number of groups. The work is taken
   * SLICE_WORK items (a stream, a group read) at a time with a turn of the
   * event loop between: requests that came meanwhile are served in between.
   * `isOpen` says whether a stream is still there after such a turn.
   */
  async snapshot(streams: Iterable<Stream>, isOpen: (s: Stream) => boolean, buffers: ShardBuffers): Promise<MetricJson[]> {
    const all = [...streams].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const ids = new Set(all.map((x) => x.id));
    for (const id of this.shownStreams) if (!ids.has(id)) this.shownStreams.delete(id);
    for (const x of all) if (this.shownStreams.size < this.seriesMax) this.shownStreams.add(x.id);
    const groupsSeen = new Set<string>();
    const head = metric("ticker_stream_head_seq", "gauge", "Seq of the newest event a reader can see");
    const first = metric("ticker_stream_first_seq", "gauge", "Seq of the oldest retained event (head + 1 when none is)");
    const disk = metric("ticker_stream_disk_bytes", "gauge", "Bytes of the stream's log segments on disk");
    const retentionS = metric("ticker_stream_retention_seconds", "gauge", "The stream's retention_ms, in seconds");
    const retentionBytes = metric("ticker_stream_retention_bytes", "gauge", "The stream's retention_bytes (only streams that set one)");
    const events = metric("ticker_events_published_total", "counter", "Events appended (duplicates left out)");
    const bytes = metric("ticker_published_bytes_total", "counter", "Bytes of the records appended");
    const replayEvents = metric("ticker_replay_events_total", "counter", "Events served by replay pages (GET /v1/streams/:id/events)");
    const replayPages = metric("ticker_replay_pages_total", "counter", "Replay pages served");
    // Max, not sum: _other's lag is the worst one, across shards too.
    const lagEvents = metric("ticker_group_lag_events", "gauge", "Events between a group's checkpoint and the head", "max");
    const lagSeconds = metric("ticker_group_lag_seconds", "gauge", "Age of the oldest event a group has not acknowledged (0 when caught up)", "max");
    const other = { disk: 0, events: 0, bytes: 0, replayEvents: 0, replayPages: 0, lag: -1 };
    let now = Date.now();
    let open = 0;
    let work = 0;
    for (const s of all) {
      if (work >= SLICE_WORK) {
        await yieldToLoop();
        now = Date.now();
        work = 0;
      }
      work++;
      if (!isOpen(s)) continue;
      open++;
      const log = s.log;
      const size = log.bytes;
      const shown = this.shownStreams.has(s.id);
      if (shown) {
        const labels = { stream: s.id };
        head.values.push({ labels, value: log.committedSeq });
        first.values.push({ labels, value: log.firstSeq });
        disk.values.push({ labels, value: size });
        retentionS.values.push({ labels, value: s.config.retention_ms / 1000 });
        if (s.config.retention_bytes !== null) retentionBytes.values.push({ labels, value: s.config.retention_bytes });
        events.values.push({ labels, value: s.publishedEvents });
        bytes.values.push({ labels, value: s.publishedBytes });
        replayEvents.values.push({ labels, value: s.replayEvents });
        replayPages.values.push({ labels, value: s.replayPages });
      } else {
        other.disk += size;
        other.events += s.publishedEvents;
        other.bytes += s.publishedBytes;
        other.replayEvents += s.replayEvents;
        other.replayPages += s.replayPages;
      }
      const groups = s.groupsIfAny;
      if (!groups) continue;
      for (const [name, c] of [...groups].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
        const lag = Math.max(0, log.committedSeq - c.seq);
        const key = `${s.id}\u0000${name}`;
        groupsSeen.add(key);
        if (shown && !this.shownGroups.has(key) && this.shownGroups.size < this.seriesMax) this.shownGroups.add(key);
        if (!this.shownGroups.has(key)) {
          other.lag = Math.max(other.lag, lag);
          continue;
        }
        const labels = { stream: s.id, group: name };
        lagEvents.values.push({ labels, value: lag });
        lagSeconds.values.push({ labels, value: oldestUnackedAgeMs(s, c.seq, buffers, now) / 1000 });
        work++;
      }
    }
    for (const key of this.shownGroups) if (!groupsSeen.has(key)) this.shownGroups.delete(key);
    if (all.length > this.shownStreams.size) {
      const labels = { stream: OTHER_LABEL };
      disk.values.push({ labels, value: other.disk });
      events.values.push({ labels, value: other.events });
      bytes.values.push({ labels, value: other.bytes });
      replayEvents.values.push({ labels, value: other.replayEvents });
      replayPages.values.push({ labels, value: other.replayPages });
    }
    if (other.lag >= 0) lagEvents.values.push({ labels: { stream: OTHER_LABEL, group: OTHER_LABEL }, value: other.lag });
    const single = (m: MetricJson, value: number, labels: Record<string, string> = {}) => {
      m.values.push({ labels, value });
      return m;
    };
    return [
      this.append.toJson("ticker_append_duration_seconds", "Time to write one publish batch's records into its log (the page cache)", this.shardLabel),
      this.fsync.toJson("ticker_fsync_duration_seconds", "Time of one fdatasync of a log segment (group commit of fsync streams, rolls)", this.shardLabel),
      single(metric("ticker_retention_deleted_segments_total", "counter", "Log segments deleted by retention"), this.retentionSegments),
      single(metric("ticker_retention_deleted_bytes_total", "counter", "Bytes of log segments deleted by retention"), this.retentionBytes),
      single(metric("ticker_event_loop_lag_seconds", "gauge", "p99 event-loop delay of a thread over the last complete 10 s window"), this.loopLag.seconds, {
        thread: `shard-${this.shard}`,
      }),
      single(metric("ticker_streams", "gauge", "Streams open"), open),
      head,
      first,
      disk,
      retentionS,
      retentionBytes,
      events,
      bytes,
      replayEvents,
      replayPages,
      lagEvents,
      lagSeconds,
    ];
  }
}
