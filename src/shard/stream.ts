// A stream as its owning shard worker sees it: config, log and dedup window.
// On disk: streams/<escaped id>/stream.json plus the log's segment files.
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { ApiError } from "../errors.js";
import { join } from "node:path";
import { StreamLog, type CorruptionInfo, type LogOptions, type RecoveryReport } from "../log/log.js";
import { syncDir } from "../log/segment.js";
import { frameSeq, frameTs } from "../log/record.js";
import { recordIdempotencyKey } from "../wire/event-codec.js";
import { EventFields } from "../wire/event-layout.js";
import { DedupWindow } from "./dedup.js";
import { CHECKPOINTS_FILE, CheckpointStore } from "../consumer/checkpoints.js";
import { checkOrdering, escapeStreamId, fullConfig, type StreamConfig, type StreamDefaults } from "./stream-config.js";
import { OrderedStream, type OrderedLimits } from "./ordered.js";
import { writeMeta, type MetaRead } from "./stream-meta.js";
import type { Descriptions } from "./descriptions.js";

/** stream.json's log_format: 2 means every batch carries a commit mark (record.ts). */
const LOG_FORMAT = 2;

/** What opening a stream found: the log's recovery and the damage of its other files. */
export interface StreamReport extends RecoveryReport {
  /** stream.json damage (the copy was used, or the config was reset), checkpoint file damage. */
  files: string[];
}

// A shard holds thousands of these: every field counts (~1 KB per idle
// stream in all, with its log and segment). Paths are derived when needed,
// the dedup window allocates on its first key, and corruptions are kept only
// when there are any.
export class Stream {
  readonly log: StreamLog;
  readonly dedup: DedupWindow;
  private checkpointStore: CheckpointStore | null = null;
  /** Damage found by recovery or by the scrub, shown in info(); null when none. */
  corruptions: CorruptionInfo[] | null = null;
  /** Damage recovery found in stream.json or checkpoints.log, shown in info(); null when none. */
  fileDamage: string[] | null = null;
  /** Ordered ingest's state, on a stream with producer_ordering; null otherwise. */
  ordered: OrderedStream | null = null;
  // Counted since this process opened the stream, read by a /metrics scrape (metrics.ts).
  publishedEvents = 0;
  publishedBytes = 0;
  replayEvents = 0;
  replayPages = 0;
  /**
   * Cluster mode: events stamped after the log's head and waiting for their
   * commit in PostgreSQL (src/shard/cluster.ts), and their ingest_ts: the
   * next batch is stamped after them, and they reach the log once committed.
   */
  pending = 0;
  pendingTs = 0;

  private constructor(
    readonly id: string,
    readonly dir: string,
    readonly createdAt: number,
    public config: StreamConfig,
    logOpts: LogOptions,
    dedupKeysMax: number,
    private readonly orderedLimits: OrderedLimits,
    /** The data dir's description files, where every write of the description goes. */
    private readonly descriptions: Descriptions,
  ) {
    this.log = new StreamLog(dir, logOpts); // segments sit beside stream.json
    this.dedup = new DedupWindow(config.dedup_window_ms, dedupKeysMax);
  }

  /** The stream's JSON literal, for rendering events without re-escaping it. */
  idJson(): string {
    return JSON.stringify(this.id);
  }

  static create(
    root: string,
    descriptions: Descriptions,
    id: string,
    config: StreamConfig,
    logOpts: LogOptions,
    dedupKeysMax: number,
    orderedLimits: OrderedLimits,
    /** The seq of its first record: 1, or past what a cluster's archive holds. */
    baseSeq = 1,
  ): Stream {
    checkOrdering(config);
    const dir = join(root, escapeStreamId(id));
    // Undefined when the directory was there: what a crash left of a create
    // or a delete (or a directory recovery could not read), recovered as a log.
    const fresh = mkdirSync(dir, { recursive: true }) !== undefined;
    const s = new Stream(id, dir, Date.now(), config, logOpts, dedupKeysMax, orderedLimits, descriptions);
    const durable = config.durability === "fsync";
    s.saveMeta(config, fresh);
    // A new directory holds nothing to recover: one file more (the first
    // segment), no directory read. Creation is on the publish path of every
    // first event, and a market has thousands of streams.
    if (fresh) s.log.create(baseSeq);
    else s.log.open(); // nothing to report: whatever it finds was never acknowledged
    // An fsync stream's events are acknowledged as durable from now on: the
    // entries of its segment and stream.json, and its own in streams/, first.
    if (durable) {
      syncDir(dir);
      syncDir(root);
    }
    if (config.producer_ordering) s.openOrdered();
    return s;
  }

  /**
   * Opens an existing stream directory (its metadata read by readMeta):
   * recovery of the log, the checkpoint file, then the dedup rebuild.
   */
  static open(
    dir: string,
    read: MetaRead,
    logOpts: LogOptions,
    dedupKeysMax: number,
    defaults: StreamDefaults,
    descriptions: Descriptions,
  ): { stream: Stream; report: StreamReport } {
    const meta = read.meta;
    const config = { ...fullConfig({}, defaults), ...meta.config };
    const s = new Stream(meta.id, dir, meta.created_at, config, logOpts, dedupKeysMax, defaults.ordered, descriptions);
    // A rebuilt description cannot know the log's format. Taking it as
    // unmarked keeps every whole record (at worst the start of a batch that
    // was never acknowledged); taking it as marked could cut acknowledged
    // records of a log that predates marks.
    const unmarked = read.rebuilt || meta.log_format !== LOG_FORMAT;
    const report: StreamReport = { ...s.log.open(config.durability === "fsync", unmarked), files: [] };
    if (read.damage) report.files.push(read.damage);
    if (unmarked || read.damage) s.saveMeta();
    if (existsSync(join(dir, CHECKPOINTS_FILE))) {
      const damage = s.checkpoints.damage;
      if (damage) report.files.push(`${CHECKPOINTS_FILE}: ${damage}`);
    }
    if (report.corruptions.length > 0) s.corruptions = [...report.corruptions];
    s.rebuildDedup();
    if (config.producer_ordering) {
      const damage = s.openOrdered().damage;
      if (damage) report.files.push(damage);
    }
    if (report.files.length > 0) s.fileDamage = report.files;
    return { stream: s, report };
  }

  /** Ordered ingest's state from the log and held.log (start-up, or producer_ordering turned on). */
  private openOrdered(): OrderedStream {
    const c = this.config;
    return (this.ordered = OrderedStream.open(this.dir, this.id, this.log, this.orderedLimits, c.gap_timeout_ms, c.dedup_window_ms, Date.now()));
  }

  /** Records damage found after opening (the scrub); each place once. */
  noteCorruption(info: CorruptionInfo): void {
    if (this.corruptions?.some((c) => c.segment === info.segment && c.seq === info.seq)) return;
    (this.corruptions ??= []).push(info);
  }

  /** Reads the log's last dedup_window_ms of records back into the window (also after a cluster owner appended what the database held). */
  rebuildDedup(): void {
    if (this.config.dedup_window_ms === 0 || this.log.headSeq === 0) return;
    const now = Date.now();
    const from = this.log.seqAtTime(now - this.config.dedup_window_ms);
    const fields = new EventFields();
    this.log.forEach(from, (buf, at) => {
      const key = recordIdempotencyKey(buf, at, fields);
      if (key !== null) this.dedup.add(key, frameSeq(buf, at), frameTs(buf, at));
    });
    this.dedup.expire(now);
  }

  /** Consumer-group checkpoints, opened on first use (most streams have none). */
  get checkpoints(): CheckpointStore {
    return (this.checkpointStore ??= new CheckpointStore(this.dir, this.log.files));
  }

  /** Group checkpoints without opening the store: null when the stream has none (recovery opens an existing file). */
  get groupsIfAny(): ReadonlyMap<string, { seq: number }> | null {
    return this.checkpointStore?.groups ?? null;
  }

  saveMeta(config = this.config, fresh = false): void {
    writeMeta(this.dir, { id: this.id, created_at: this.createdAt, config, log_format: LOG_FORMAT }, this.descriptions, fresh);
  }

  update(patch: Partial<StreamConfig>): void {
    const was = this.config;
    const config = { ...was, ...patch };
    checkOrdering(config);
    if (!config.producer_ordering && this.ordered !== null && this.ordered.held > 0) {
      throw new ApiError(
        409,
        "events_held",
        `"producer_ordering" cannot be switched off while ${this.ordered.held} events are held; retry once their gaps close or time out`,
        {
          held: this.ordered.held,
        },
      );
    }
    // Written first: a write that fails (a full disk) leaves the stream as it was.
    this.saveMeta(config);
    this.config = config;
    this.dedup.setWindow(this.config.dedup_window_ms);
    if (!config.producer_ordering) {
      this.ordered?.close();
      this.ordered = null;
    } else if (this.ordered === null) {
      this.openOrdered();
    } else if (was.gap_timeout_ms !== config.gap_timeout_ms || was.dedup_window_ms !== config.dedup_window_ms) {
      this.ordered.retime(config.gap_timeout_ms, config.dedup_window_ms);
    }
  }

  info(): Record<string, unknown> {
    const log = this.log;
    return {
      id: this.id,
      head_seq: log.headSeq,
      first_seq: log.firstSeq,
      events: log.headSeq - log.firstSeq + 1,
      bytes: log.bytes,
      created_at: this.createdAt,
      ...this.config,
      segments: log.segments.length,
      ...(this.ordered ? { held_events: this.ordered.held, held_bytes: this.ordered.bytes, producers: this.ordered.producers } : {}),
      ...(this.corruptions ? { corruptions: this.corruptions } : {}),
      ...(this.fileDamage ? { damaged_files: this.fileDamage } : {}),
    };
  }

  close(): void {
    this.log.close();
    this.checkpointStore?.close();
    this.ordered?.close();
  }

  remove(): void {
    this.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
