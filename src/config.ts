// One typed config for the whole server. Sources, later ones winning:
// defaults < config file (--config / TICKER_CONFIG, JSON with snake_case keys)
// < TICKER_<KEY> environment variables < --kebab-case flags.
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { z } from "zod";
import {
  CONSUME_ATTEMPTS_MAX,
  limitProblems,
  OPEN_FILES_PER_SHARD_MIN,
  openFilesProblems,
  TIMELINE_CURSOR_SECRET_CHARS_MAX,
  TIMELINE_CURSOR_SECRET_CHARS_MIN,
  TIMELINE_STREAMS_LIMIT,
} from "./limits.js";
import { clusterProblems } from "./cluster-config.js";

const MiB = 1024 * 1024;
const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
const LOG_FORMATS = ["json", "pretty"] as const;
const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.coerce.number().int().min(min).max(max);
/** Empty (not set), or a secret of TIMELINE_CURSOR_SECRET_CHARS_MIN..MAX characters. */
const secret = z
  .string()
  .refine((v) => v === "" || (v.length >= TIMELINE_CURSOR_SECRET_CHARS_MIN && v.length <= TIMELINE_CURSOR_SECRET_CHARS_MAX), {
    message: `must be empty or ${TIMELINE_CURSOR_SECRET_CHARS_MIN} to ${TIMELINE_CURSOR_SECRET_CHARS_MAX} characters`,
  })
  .default("");
const bool = z.preprocess((v) => (v === "true" || v === "1" ? true : v === "false" || v === "0" ? false : v), z.boolean());

/** The default of `shards`: one thread per core, at least 2 (the front has the main thread) and at most 4. */
const SHARDS_DEFAULT = Math.min(4, Math.max(2, availableParallelism()));

// Each key's .describe() is its one line in `ticker serve --help` and in the
// README's configuration table (test/unit/serve-help.test.ts holds the two equal).
export const configSchema = z
  .object({
    host: z.string().min(1).default("127.0.0.1").describe("listen address (anything else without API keys logs a warning)"),
    port: int(0, 65535).default(8080).describe("listen port (`0`: any free port, printed on start)"),
    data_dir: z
      .string()
      .min(1)
      .default("./data")
      .describe(
        "where streams live (`streams/<escaped id>/`, their descriptions in `stream-descriptions.log` and its `.copy.log`), named timelines and their readers (`timelines/<escaped name>/`), the cursor secrets (`timeline-secrets.json`, mode 0600)",
      ),
    shards: int(1, 64).default(SHARDS_DEFAULT).describe("shard worker threads; each owns the streams that hash to it"),
    ring_bytes: int(1 * MiB, 1024 * MiB)
      .default(48 * MiB)
      .describe(
        "bytes of each shard ring (one in, one out); must hold 2 of the largest message: a request, or a page and the event that overruns it rendered as JSON (`src/limits.ts`; too small: refused at start with the size needed)",
      ),
    // Small streams and steady publishing leave little garbage per event, so a
    // small cap costs little and keeps an idle server's memory down.
    shard_young_generation_mb: int(0, 1024)
      .default(3)
      .describe("cap on each shard thread's V8 young generation, MiB (0: V8's default, up to 48 under load); see docs/decisions.md"),
    open_files_max: int(OPEN_FILES_PER_SHARD_MIN, 10_000_000)
      .default(4096)
      .describe(
        "files of stream data (segments, checkpoint files, ordered streams' held.log) the server keeps open, split evenly across shards; the least recently used is closed and opened again on next use",
      ),
    shard_requests_max: int(1, 1_000_000).default(4096).describe("requests a shard may have in flight, e.g. waiting for an fsync (more: 429)"),
    auto_create_streams: bool.default(true).describe("publishing to an unknown stream creates it (else 404)"),

    publish_events_max: int(1, 100_000).default(1000).describe("events per publish request (more: 413)"),
    event_bytes_max: int(1, 64 * MiB)
      .default(1 * MiB)
      .describe("bytes per event payload; a stream's `max_event_bytes` can only lower it"),
    event_field_bytes_max: int(16, 64 * 1024)
      .default(1024)
      .describe("bytes of `type`, `key`, `producer_id`, `idempotency_key` each"),
    request_bytes_max: int(1024, 256 * MiB)
      .default(16 * MiB)
      .describe("bytes per request body (more: 413)"),
    request_buffer_bytes_max: int(1024, 16 * 1024 * MiB)
      .default(256 * MiB)
      .describe("request bodies the front holds at once, all connections together (more: 429)"),
    replay_page_events_max: int(1, 1_000_000).default(10_000).describe("events per replay page (`limit` above it: 400)"),
    replay_page_events_default: int(1, 1_000_000).default(1000).describe("events per page without `limit`"),
    replay_page_bytes_max: int(64 * 1024, 256 * MiB)
      .default(8 * MiB)
      .describe("bytes per replay page (at least one event is always sent)"),
    filter_values_max: int(1, 10_000).default(64).describe("values of `types` and `keys` together on a replay or consume (more: 400)"),
    filter_bytes_max: int(16, 1024 * 1024)
      .default(4096)
      .describe("bytes of `types` and `keys` together on a replay or consume (more: 400)"),
    redrive_letters_max: int(1, 1_000_000)
      .default(1000)
      .describe("dead letters one `POST .../dlq/redrive` reads (in replay pages of the dlq); `next` says where to continue"),

    segment_bytes_max: int(4096, 1024 * MiB)
      .default(64 * MiB)
      .describe("a segment is closed once the next batch would take it past this"),
    index_interval_bytes: int(64, 1 * MiB)
      .default(4096)
      .describe("bytes of log between sparse index points"),
    retention_check_interval_ms: int(10, 3_600_000).default(1000).describe("how often retention runs"),
    dedup_keys_max: int(1, 100_000_000).default(1_000_000).describe("idempotency keys remembered per stream (oldest dropped first)"),
    snapshot_keys_max: int(1, 100_000_000)
      .default(1_000_000)
      .describe("keys a stream's snapshot index holds (`from=snapshot`, `GET .../snapshot`); a stream with more: 409 `snapshot_keys_exceeded`"),
    held_events_max: int(1, 10_000_000)
      .default(10_000)
      .describe("ordered ingest: events a stream holds for missing `producer_seq`s (a batch that would hold more: 429 `held_full` with `Retry-After`)"),
    held_bytes_max: int(64 * 1024, 16 * 1024 * MiB)
      .default(64 * MiB)
      .describe("ordered ingest: bytes of those held events per stream, in memory and in `held.log` (past it: 429 `held_full`)"),
    producers_max: int(1, 1_000_000)
      .default(10_000)
      .describe(
        "ordered ingest: producers a stream keeps the place of (a new one past it: 400 `producers_full`, until one has been idle for the dedup window)",
      ),

    default_retention_ms: int(1).default(604_800_000).describe("`retention_ms` of new streams"),
    default_dedup_window_ms: int(0).default(86_400_000).describe("`dedup_window_ms` of new streams"),
    default_durability: z.enum(["process", "fsync"]).default("process").describe("`durability` of new streams (`process` or `fsync`)"),
    log_level: z.enum(LOG_LEVELS).default("info").describe("lowest level logged (`fatal`, `error`, `warn`, `info`, `debug`, `trace`, `silent`)"),
    log_format: z.enum(LOG_FORMATS).default("json").describe("`json` (one JSON object per line, for collectors) or `pretty` (for a terminal)"),
    access_log: bool.default(false).describe("one `info` line per HTTP request and WebSocket upgrade (method, path, status, ms)"),
    metrics_streams_max: int(1, 100_000)
      .default(1000)
      .describe(
        "streams (and, apart, consumer groups) with series of their own on `GET /metrics`: the first met, while they exist; the rest are summed into `_other`",
      ),
    shutdown_timeout_ms: int(100, 600_000).default(10_000).describe("on SIGTERM/SIGINT, how long in-flight requests may take"),

    consumers_max: int(1, 1_000_000).default(20_000).describe("WebSocket consumers connected at once (more: 429 at the upgrade)"),
    consume_window_default: int(1, 10_000_000).default(10_000).describe("unacked events in flight per group member without `?window=`"),
    consume_window_max: int(1, 10_000_000).default(1_000_000).describe("largest `?window=` (above: 400)"),
    consume_page_events_max: int(1, 1_000_000).default(2000).describe("events per log-path message to a consumer"),
    consume_page_bytes_max: int(4096, 64 * MiB)
      .default(1 * MiB)
      .describe("frame bytes per log-path message (at least one event is always sent)"),
    consumer_buffer_bytes_max: int(4096, 1024 * MiB)
      .default(1 * MiB)
      .describe("bytes queued on a consumer's socket before it is served from the log instead"),
    consumer_coalesce_ms_max: int(0, 1000)
      .default(100)
      .describe(
        "longest pause between two live writes to a stream's caught-up consumers: the pause is as long as the last round of writes took, up to this; events coming meanwhile go out together",
      ),
    consumer_heartbeat_interval_ms: int(50, 10_000).default(500).describe("a heartbeat goes out after this long without a message"),
    consumer_takeover_ms: int(500, 600_000)
      .default(3000)
      .describe("with a standby waiting, an active member silent this long (no pong, no message) is replaced"),
    consumer_idle_timeout_ms: int(1000, 3_600_000).default(60_000).describe("any consumer silent this long is disconnected"),
    postgres_url: z
      .string()
      .default("")
      .describe("PostgreSQL (`postgres://...`) for group checkpoints and timeline reader positions; the schema is migrated on start"),
    redis_url: z.string().default("").describe("Redis (`redis://...`) caching group checkpoints on every ack, and reader positions on every `PUT`"),
    redis_key_prefix: z
      .string()
      .default("ticker:")
      .describe("prefix of Redis keys (`<prefix>cp:<stream>`, a hash of group → seq; `<prefix>tl:<timeline>`, a hash of reader → `<updated_at ms>:<cursor>`)"),
    checkpoint_flush_interval_ms: int(10, 3_600_000)
      .default(1000)
      .describe("checkpoints and reader positions reach PostgreSQL in one batched write per interval, and on clean shutdown"),
    consume_max_attempts_default: int(1, CONSUME_ATTEMPTS_MAX).default(5).describe("nacks of one event before it is dead-lettered, without `?max_attempts=`"),

    timeline_streams_max: int(1, TIMELINE_STREAMS_LIMIT)
      .default(64)
      .describe(`streams of one timeline, named or ad hoc (1 to ${TIMELINE_STREAMS_LIMIT}; more: 400)`),
    timelines_max: int(1, 1_000_000).default(10_000).describe("named timelines (a new one past it: 409)"),
    timeline_readers_max: int(1, 1_000_000).default(10_000).describe("reader positions per named timeline (a new reader past it: 409)"),
    timeline_cursor_secret: secret.describe(
      `signs timeline cursors (${TIMELINE_CURSOR_SECRET_CHARS_MIN} to ${TIMELINE_CURSOR_SECRET_CHARS_MAX} characters) instead of the secret kept in \`<data_dir>/timeline-secrets.json\`; rotation is then a config change (rotate route: 409)`,
    ),
    timeline_cursor_previous_secret: secret.describe("with `timeline_cursor_secret`: a secret that still verifies cursors while it is set (the one before)"),
    timeline_cursor_grace_ms: int(0, 31_536_000_000)
      .default(86_400_000)
      .describe("after `POST /v1/timelines/_secret/rotate`, how long the secret before still verifies (0 to 31536000000)"),
    timeline_page_events_max: int(1, 100_000)
      .default(1000)
      .describe("events of one timeline page (`limit` above it: 400; without `limit`: 25); the bytes are bounded by `replay_page_bytes_max`"),
    timeline_wait_ms_max: int(0, 600_000).default(30_000).describe("longest `wait_ms` of a forward timeline page (above: 400)"),
    timeline_source_timeout_ms: int(1, 60_000)
      .default(200)
      .describe(
        "a shard that has not answered its part of a timeline page within this is left out (`partial`); a shard that gets to the read after it skips it, and one owing 8 such reads is not asked until it catches up (`partial`, or 429 `shard_busy`)",
      ),
    timeline_waiters_max: int(1, 1_000_000).default(10_000).describe("timeline long polls waiting at once (more: 429)"),

    cluster_postgres_url: z
      .string()
      .default("")
      .describe(
        "cluster mode (docs/CLUSTER.md): the PostgreSQL (`postgres://...`) holding shard leases, the open tail of every stream, the segment manifest and group checkpoints; needs `node_id`, `advertise_url` and `archive`; none: one node, nothing shared",
      ),
    node_id: z.string().default("").describe("cluster mode: this node's id, unique in the cluster (1 to 64 of `A-Za-z0-9._-`)"),
    advertise_url: z
      .string()
      .default("")
      .describe("cluster mode: where other nodes and clients reach this node (`http://host:port`), the target of their 307s"),
    archive: z.string().default("").describe("cluster mode: where closed segments go, `file:///dir` (a filesystem every node mounts) or `s3://bucket/prefix`"),
    cluster_shards: int(1, 4096)
      .default(64)
      .describe("cluster mode: cluster shards streams hash to, fixed for the life of the cluster (a node started with another number is refused)"),
    cluster_lease_ms: int(1000, 600_000)
      .default(5000)
      .describe("cluster mode: how long a shard lease holds; renewed every third of it, so an owner that dies is replaced within about this long"),
    cluster_archive_interval_ms: int(10, 600_000)
      .default(1000)
      .describe("cluster mode: how often an owner copies its streams' closed segments to the archive and drops their tail rows"),
    archive_manifest_ttl_ms: int(1, 3_600_000)
      .default(1000)
      .describe(
        "cluster mode: how long a shard thread trusts what it read of a stream's segment manifest before it reads it again (a node that does not own the stream sees newly archived segments after at most this)",
      ),
    archive_cache_bytes_max: int(1 * MiB, 64 * 1024 * MiB)
      .default(256 * MiB)
      .describe(
        "cluster mode: chunks of archived segments (4 MiB, docs/CLUSTER.md) each shard thread keeps in memory to serve history from, least recently read evicted first, bytes",
      ),

    api_keys_file: z.string().default("").describe("JSON file of API keys, reloaded on SIGHUP (see Security in the README); none: every route is open"),
    tls_cert_file: z.string().default("").describe("PEM certificate (chain) for HTTPS and WSS; flag `--tls-cert`; needs `tls_key_file`"),
    tls_key_file: z.string().default("").describe("PEM private key of that certificate (unencrypted); flag `--tls-key`; needs `tls_cert_file`"),
  })
  .strict()
  .superRefine((c, ctx) => {
    // Limits that depend on each other (src/limits.ts).
    for (const p of limitProblems(c)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [p.key], message: p.message });
    for (const message of openFilesProblems(c)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ["open_files_max"], message });
    if (c.timeline_cursor_previous_secret !== "" && c.timeline_cursor_secret === "") {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ["timeline_cursor_previous_secret"],
        message: "needs timeline_cursor_secret (the data dir's secret is rotated with POST /v1/timelines/_secret/rotate instead)",
      });
    }
    for (const p of clusterProblems(c)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [p.key], message: p.message });
    if ((c.tls_cert_file === "") !== (c.tls_key_file === "")) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: [c.tls_cert_file ? "tls_key_file" : "tls_cert_file"],
        message: "TLS needs both tls_cert_file and tls_key_file (--tls-cert and --tls-key)",
      });
    }
  });

export type Config = z.infer<typeof configSchema>;
export type ConfigKey = keyof Config;

export const CONFIG_KEYS = Object.keys(configSchema._def.schema.shape) as ConfigKey[];

/** Defaults that depend on the machine: the rule the docs give instead of this machine's value. */
const DEFAULT_RULES: Partial<Record<ConfigKey, string>> = { shards: "one per core, 2 to 4" };

export interface ConfigKeyDoc {
  key: ConfigKey;
  /** One line: what the key sets, its unit and what happens past it. */
  description: string;
  /** The default on this machine. */
  default: string | number | boolean;
  /** How the default is chosen, for a default that depends on the machine. */
  defaultRule?: string;
  /** The values an enum key takes. */
  values?: readonly string[];
}

/** Every key, in schema order, with its description and default: `ticker serve --help` and the README's table. */
export function configDocs(): ConfigKeyDoc[] {
  const shape = configSchema._def.schema.shape as Record<ConfigKey, z.ZodDefault<z.ZodTypeAny>>;
  const defaults = configSchema.parse({});
  return CONFIG_KEYS.map((key) => {
    const field = shape[key];
    if (!(field instanceof z.ZodDefault) || !field.description) throw new Error(`config key ${key} needs a default and a .describe()`);
    const inner = field._def.innerType;
    return {
      key,
      description: field.description,
      default: defaults[key],
      defaultRule: DEFAULT_RULES[key],
      values: inner instanceof z.ZodEnum ? (inner.options as string[]) : undefined,
    };
  });
}

export class ConfigError extends Error {}

export function loadConfig(flags: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): Config {
  const merged: Record<string, unknown> = {};
  const file = (flags.config as string | undefined) ?? env.TICKER_CONFIG;
  if (file) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, "utf8"));
    } catch (err) {
      throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new ConfigError(`config file ${file} must hold a JSON object`);
    }
    Object.assign(merged, parsed);
  }
  for (const key of CONFIG_KEYS) {
    const v = env[`TICKER_${key.toUpperCase()}`];
    if (v !== undefined) merged[key] = v;
  }
  for (const [k, v] of Object.entries(flags)) {
    if (k === "config" || v === undefined) continue;
    merged[k.replaceAll("-", "_")] = v;
  }
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const lines = result.error.issues.map((i) => `${i.path.join(".") || "config"}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n  ${lines.join("\n  ")}`);
  }
  return result.data;
}
