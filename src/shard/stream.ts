// A stream as its owning shard worker sees it: config, log and dedup window.
// On disk: streams/<escaped id>/stream.json plus the log's segment files.
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { z } from "zod";
import { ApiError } from "../errors.js";
import { parseBody } from "../validate.js";
import { StreamLog, type CorruptionInfo, type LogOptions, type RecoveryReport } from "../log/log.js";
import { frameSeq, frameTs } from "../log/record.js";
import { recordIdempotencyKey } from "../wire/event-codec.js";
import { EventFields } from "../wire/event-layout.js";
import { DedupWindow } from "./dedup.js";
import { CheckpointStore } from "../consumer/checkpoints.js";

export const STREAM_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * Directory name for a stream id: every byte outside [a-z0-9.-] becomes _XX
 * (hex), so ids that differ only in case stay distinct on any filesystem.
 * Ids whose escaped form would be long keep a prefix and a hash of the id,
 * under the 255-byte name limit (stream.json keeps the real id).
 */
export function escapeStreamId(id: string): string {
  const escaped = id.replace(/[^a-z0-9.-]/g, (c) => "_" + c.charCodeAt(0).toString(16).padStart(2, "0"));
  if (escaped.length <= DIR_NAME_BYTES_MAX) return escaped;
  return `${escaped.slice(0, DIR_NAME_BYTES_MAX - 41)}~${createHash("sha256").update(id).digest("hex").slice(0, 40)}`;
}

const DIR_NAME_BYTES_MAX = 200;

export interface StreamDefaults {
  retention_ms: number;
  dedup_window_ms: number;
  durability: "process" | "fsync";
  max_event_bytes: number;
}

export const streamConfigPatch = z
  .object({
    retention_ms: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
    retention_bytes: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).nullable(),
    max_event_bytes: z.number().int().min(1),
    dedup_window_ms: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    durability: z.enum(["process", "fsync"]),
    producer_ordering: z.boolean(),
  })
  .partial()
  .strict();

export type StreamConfig = Required<z.infer<typeof streamConfigPatch>>;

/** Validates a PUT body against the contract and the server's own limits. */
export function parseStreamConfigPatch(body: unknown, eventBytesMax: number): Partial<StreamConfig> {
  // Only an empty body means "no changes"; a JSON null is not a config object.
  const r = { data: parseBody(streamConfigPatch, body === undefined ? {} : body, "invalid_config") };
  // A setting that is accepted must act: ordered ingest is not built yet.
  if (r.data.producer_ordering === true) {
    throw new ApiError(400, "invalid_config", `"producer_ordering": true is not supported yet (ordered ingest is not built); only false is accepted`);
  }
  if (r.data.max_event_bytes !== undefined && r.data.max_event_bytes > eventBytesMax) {
    throw new ApiError(400, "invalid_config", `"max_event_bytes" must not exceed the server's event_bytes_max (${eventBytesMax})`);
  }
  return r.data;
}

export interface StreamMeta {
  id: string;
  created_at: number;
  config: StreamConfig;
  /**
   * 2: every appended batch ends with a commit-marked record (record.ts).
   * Absent in stream dirs written before marks existed; opening one marks
   * its last record and writes 2.
   */
  log_format?: number;
}

const LOG_FORMAT = 2;

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

  private constructor(
    readonly id: string,
    readonly dir: string,
    readonly createdAt: number,
    public config: StreamConfig,
    logOpts: LogOptions,
    dedupKeysMax: number,
  ) {
    this.log = new StreamLog(dir, logOpts); // segments sit beside stream.json
    this.dedup = new DedupWindow(config.dedup_window_ms, dedupKeysMax);
  }

  /** The stream's JSON literal, for rendering events without re-escaping it. */
  idJson(): string {
    return JSON.stringify(this.id);
  }

  static create(root: string, id: string, config: StreamConfig, logOpts: LogOptions, dedupKeysMax: number): Stream {
    const dir = join(root, escapeStreamId(id));
    mkdirSync(dir, { recursive: true });
    const s = new Stream(id, dir, Date.now(), config, logOpts, dedupKeysMax);
    s.saveMeta();
    s.log.open(config.durability === "fsync"); // a new log: nothing to report
    return s;
  }

  /** What a stream directory says about itself (its id routes it before it is opened). */
  static readMeta(dir: string): StreamMeta {
    return JSON.parse(readFileSync(join(dir, "stream.json"), "utf8")) as StreamMeta;
  }

  /** Opens an existing stream directory: recovery, then the dedup rebuild. */
  static open(dir: string, meta: StreamMeta, logOpts: LogOptions, dedupKeysMax: number, defaults: StreamDefaults): { stream: Stream; report: RecoveryReport } {
    const config = { ...fullConfig({}, defaults), ...meta.config };
    const s = new Stream(meta.id, dir, meta.created_at, config, logOpts, dedupKeysMax);
    const unmarked = meta.log_format !== LOG_FORMAT;
    const report = s.log.open(config.durability === "fsync", unmarked);
    if (unmarked) s.saveMeta();
    if (report.corruptions.length > 0) s.corruptions = [...report.corruptions];
    s.rebuildDedup();
    return { stream: s, report };
  }

  /** Records damage found after opening (the scrub); each place once. */
  noteCorruption(info: CorruptionInfo): void {
    if (this.corruptions?.some((c) => c.segment === info.segment && c.seq === info.seq)) return;
    (this.corruptions ??= []).push(info);
  }

  /** Reads the log's last dedup_window_ms of records back into the window. */
  private rebuildDedup(): void {
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
    return (this.checkpointStore ??= new CheckpointStore(this.dir));
  }

  saveMeta(): void {
    const meta: StreamMeta = { id: this.id, created_at: this.createdAt, config: this.config, log_format: LOG_FORMAT };
    const path = join(this.dir, "stream.json");
    writeFileSync(path + ".tmp", JSON.stringify(meta));
    renameSync(path + ".tmp", path);
  }

  update(patch: Partial<StreamConfig>): void {
    this.config = { ...this.config, ...patch };
    this.dedup.setWindow(this.config.dedup_window_ms);
    this.saveMeta();
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
      ...(this.corruptions ? { corruptions: this.corruptions } : {}),
    };
  }

  close(): void {
    this.log.close();
    this.checkpointStore?.close();
  }

  remove(): void {
    this.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The defaults' config, one frozen object shared by every stream created without a patch. */
const defaultConfigs = new WeakMap<StreamDefaults, StreamConfig>();

export function fullConfig(patch: Partial<StreamConfig>, d: StreamDefaults): StreamConfig {
  if (Object.keys(patch).length === 0) {
    let shared = defaultConfigs.get(d);
    if (!shared) defaultConfigs.set(d, (shared = Object.freeze(fullConfig({ durability: d.durability }, d))));
    return shared;
  }
  return {
    retention_ms: d.retention_ms,
    retention_bytes: null,
    max_event_bytes: d.max_event_bytes,
    dedup_window_ms: d.dedup_window_ms,
    durability: d.durability,
    producer_ordering: false,
    ...patch,
  };
}
