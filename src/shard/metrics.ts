// The shard's part of GET /metrics. What the thread counts as it works
// (append and fsync latency, retention deletions) sits in a prom-client
// registry of this thread; what streams and groups stand at (head, disk,
// lag) is read from them when a scrape asks (Op.Metrics). Nothing crosses to
// the front per event: the front asks once a scrape and merges the shards'
// answers (src/front/metrics.ts).
import { monitorEventLoopDelay } from "node:perf_hooks";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ShardBuffers } from "./buffers.js";
import { oldestUnackedAgeMs } from "./groups.js";
import type { Stream } from "./stream.js";

/** Seconds, from 50 µs (a write into the page cache) to 2.5 s (a stalled disk). */
export const LATENCY_BUCKETS_S = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** The stream (and group) label of what is past metrics_streams_max, summed into one series. */
export const OTHER_LABEL = "_other";

/** Event-loop delay is sampled this often (ms): finer costs a timer wake-up per sample. */
const LOOP_DELAY_RESOLUTION_MS = 10;

/**
 * A thread's event-loop lag: the p99 delay of a timer due every
 * LOOP_DELAY_RESOLUTION_MS, less that interval (the histogram holds the whole
 * time between firings: an idle loop reads ~10 ms), since the last take.
 */
export class LoopLag {
  private readonly delay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
  constructor() {
    this.delay.enable();
  }

  takeSeconds(): number {
    const d = this.delay;
    const lagMs = d.count > 0 ? Math.max(0, d.percentile(99) / 1e6 - LOOP_DELAY_RESOLUTION_MS) : 0;
    d.reset();
    return lagMs / 1000;
  }
}

export class ShardMetrics {
  private readonly registry = new Registry();
  private readonly shardLabel: { shard: string };
  private readonly appendSeconds: Histogram<"shard">;
  private readonly fsyncSeconds: Histogram<"shard">;
  private readonly retentionSegments: Counter;
  private readonly retentionBytes: Counter;
  private readonly loopDelay = new LoopLag();
  private readonly loopLag: Gauge<"thread">;
  private readonly streamCount: Gauge;
  private readonly perStream: Record<"head" | "first" | "disk" | "retentionS" | "retentionBytes", Gauge<"stream">>;
  private readonly perStreamTotals: Record<"events" | "bytes" | "replayEvents" | "replayPages", Counter<"stream">>;
  private readonly lagEvents: Gauge<"stream" | "group">;
  private readonly lagSeconds: Gauge<"stream" | "group">;
  /** Series of this shard's own: its share of metrics_streams_max. */
  private readonly seriesMax: number;

  constructor(
    private readonly shard: number,
    shards: number,
    streamsMax: number,
  ) {
    this.seriesMax = Math.ceil(streamsMax / shards);
    this.shardLabel = { shard: String(shard) };
    const registers = [this.registry];
    const histogram = (name: string, help: string) => new Histogram({ name, help, labelNames: ["shard"], buckets: LATENCY_BUCKETS_S, registers });
    this.appendSeconds = histogram("ticker_append_duration_seconds", "Time to frame-check and write one publish batch into its log (the page cache)");
    this.fsyncSeconds = histogram("ticker_fsync_duration_seconds", "Time of one fdatasync of a log segment (group commit of fsync streams, rolls)");
    this.retentionSegments = new Counter({ name: "ticker_retention_deleted_segments_total", help: "Log segments deleted by retention", registers });
    this.retentionBytes = new Counter({ name: "ticker_retention_deleted_bytes_total", help: "Bytes of log segments deleted by retention", registers });
    this.loopLag = new Gauge({
      name: "ticker_event_loop_lag_seconds",
      help: "p99 event-loop delay of a thread since the previous scrape",
      labelNames: ["thread"],
      registers,
    });
    this.streamCount = new Gauge({ name: "ticker_streams", help: "Streams open", registers });
    const gauge = (name: string, help: string) => new Gauge({ name, help, labelNames: ["stream"], registers });
    this.perStream = {
      head: gauge("ticker_stream_head_seq", "Seq of the newest event a reader can see"),
      first: gauge("ticker_stream_first_seq", "Seq of the oldest retained event (head + 1 when none is)"),
      disk: gauge("ticker_stream_disk_bytes", "Bytes of the stream's log segments on disk"),
      retentionS: gauge("ticker_stream_retention_seconds", "The stream's retention_ms, in seconds"),
      retentionBytes: gauge("ticker_stream_retention_bytes", "The stream's retention_bytes (only streams that set one)"),
    };
    const counter = (name: string, help: string) => new Counter({ name, help, labelNames: ["stream"], registers });
    this.perStreamTotals = {
      events: counter("ticker_events_published_total", "Events appended (duplicates left out)"),
      bytes: counter("ticker_published_bytes_total", "Bytes of the records appended"),
      replayEvents: counter("ticker_replay_events_total", "Events served by replay pages (GET /v1/streams/:id/events)"),
      replayPages: counter("ticker_replay_pages_total", "Replay pages served"),
    };
    // Max, not sum: the front merges shards with these aggregators, and _other's lag is the worst one.
    const lagGauge = (name: string, help: string) => new Gauge({ name, help, labelNames: ["stream", "group"], aggregator: "max", registers });
    this.lagEvents = lagGauge("ticker_group_lag_events", "Events between a group's checkpoint and the head");
    this.lagSeconds = lagGauge("ticker_group_lag_seconds", "Age of the oldest event a group has not acknowledged (0 when caught up)");
  }

  observeAppend(seconds: number): void {
    this.appendSeconds.observe(this.shardLabel, seconds);
  }

  observeFsync(seconds: number): void {
    this.fsyncSeconds.observe(this.shardLabel, seconds);
  }

  noteRetention(segments: number, bytes: number): void {
    this.retentionSegments.inc(segments);
    this.retentionBytes.inc(bytes);
  }

  /**
   * This shard's registry as prom-client JSON, with the streams' series
   * filled in: the first `seriesMax` streams by id (and as many groups) get
   * their own, the rest are summed (lag: the largest) into `_other`. The
   * oldest unacked event is read only for the groups shown: one small read
   * each, so a scrape's cost is bounded by metrics_streams_max, not by the
   * number of streams.
   */
  snapshot(streams: Iterable<Stream>, buffers: ShardBuffers): Promise<unknown> {
    const all = [...streams].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const { head, first, disk, retentionS, retentionBytes } = this.perStream;
    const totals = this.perStreamTotals;
    for (const g of [head, first, disk, retentionS, retentionBytes, this.lagEvents, this.lagSeconds]) g.reset();
    for (const c of Object.values(totals)) c.reset();
    this.streamCount.set(all.length);
    const other = { disk: 0, events: 0, bytes: 0, replayEvents: 0, replayPages: 0, lag: -1 };
    let groupsShown = 0;
    const now = Date.now();
    for (let i = 0; i < all.length; i++) {
      const s = all[i];
      const log = s.log;
      const bytes = log.bytes;
      if (i < this.seriesMax) {
        const l = { stream: s.id };
        head.set(l, log.committedSeq);
        first.set(l, log.firstSeq);
        disk.set(l, bytes);
        retentionS.set(l, s.config.retention_ms / 1000);
        if (s.config.retention_bytes !== null) retentionBytes.set(l, s.config.retention_bytes);
        totals.events.inc(l, s.publishedEvents);
        totals.bytes.inc(l, s.publishedBytes);
        totals.replayEvents.inc(l, s.replayEvents);
        totals.replayPages.inc(l, s.replayPages);
      } else {
        other.disk += bytes;
        other.events += s.publishedEvents;
        other.bytes += s.publishedBytes;
        other.replayEvents += s.replayEvents;
        other.replayPages += s.replayPages;
      }
      const groups = s.groupsIfAny;
      if (!groups) continue;
      const names = [...groups.keys()].sort();
      for (const name of names) {
        const checkpoint = groups.get(name)?.seq ?? 0;
        const lag = Math.max(0, log.committedSeq - checkpoint);
        if (i < this.seriesMax && groupsShown < this.seriesMax) {
          const l = { stream: s.id, group: name };
          this.lagEvents.set(l, lag);
          this.lagSeconds.set(l, oldestUnackedAgeMs(s, checkpoint, buffers, now) / 1000);
          groupsShown++;
        } else other.lag = Math.max(other.lag, lag);
      }
    }
    if (all.length > this.seriesMax) {
      const l = { stream: OTHER_LABEL };
      disk.set(l, other.disk);
      totals.events.inc(l, other.events);
      totals.bytes.inc(l, other.bytes);
      totals.replayEvents.inc(l, other.replayEvents);
      totals.replayPages.inc(l, other.replayPages);
    }
    if (other.lag >= 0) this.lagEvents.set({ stream: OTHER_LABEL, group: OTHER_LABEL }, other.lag);
    this.loopLag.set({ thread: `shard-${this.shard}` }, this.loopDelay.takeSeconds());
    return this.registry.getMetricsAsJSON();
  }
}
