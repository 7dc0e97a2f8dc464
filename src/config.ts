// One typed config for the whole server. Sources, later ones winning:
// defaults < config file (--config / TICKER_CONFIG, JSON with snake_case keys)
// < TICKER_<KEY> environment variables < --kebab-case flags.
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { z } from "zod";
import { CONSUME_ATTEMPTS_MAX, limitProblems, TIMELINE_CURSOR_SECRET_CHARS_MAX, TIMELINE_CURSOR_SECRET_CHARS_MIN, TIMELINE_STREAMS_LIMIT } from "./limits.js";

const MiB = 1024 * 1024;
const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.coerce.number().int().min(min).max(max);
/** Empty (not set), or a secret of TIMELINE_CURSOR_SECRET_CHARS_MIN..MAX characters. */
const secret = z
  .string()
  .refine((v) => v === "" || (v.length >= TIMELINE_CURSOR_SECRET_CHARS_MIN && v.length <= TIMELINE_CURSOR_SECRET_CHARS_MAX), {
    message: `must be empty or ${TIMELINE_CURSOR_SECRET_CHARS_MIN} to ${TIMELINE_CURSOR_SECRET_CHARS_MAX} characters`,
  })
  .default("");
const bool = z.preprocess((v) => (v === "true" || v === "1" ? true : v === "false" || v === "0" ? false : v), z.boolean());

export const configSchema = z
  .object({
    host: z.string().min(1).default("127.0.0.1"),
    port: int(0, 65535).default(8080),
    data_dir: z.string().min(1).default("./data"),
    /** Shard worker threads; each owns the streams that hash to it. */
    shards: int(1, 64).default(Math.min(4, Math.max(2, availableParallelism()))),
    /** Bytes of each SharedArrayBuffer ring (one in, one out per shard). */
    ring_bytes: int(1 * MiB, 1024 * MiB).default(48 * MiB),
    /**
     * Cap on each shard thread's V8 young generation (MiB; 0: V8's own,
     * which grows to 48 MiB under load). Small streams and steady publishing
     * leave little garbage per event, so a small cap costs little and keeps
     * an idle server's memory down.
     */
    shard_young_generation_mb: int(0, 1024).default(3),
    /** Requests a shard may have in flight (taken, not yet answered: e.g. waiting for fsync). */
    shard_requests_max: int(1, 1_000_000).default(4096),
    auto_create_streams: bool.default(true),

    publish_events_max: int(1, 100_000).default(1000),
    event_bytes_max: int(1, 64 * MiB).default(1 * MiB),
    event_field_bytes_max: int(16, 64 * 1024).default(1024),
    request_bytes_max: int(1024, 256 * MiB).default(16 * MiB),
    /** Request bodies held by the front at once, over all connections. */
    request_buffer_bytes_max: int(1024, 16 * 1024 * MiB).default(256 * MiB),
    replay_page_events_max: int(1, 1_000_000).default(10_000),
    replay_page_events_default: int(1, 1_000_000).default(1000),
    replay_page_bytes_max: int(64 * 1024, 256 * MiB).default(8 * MiB),
    /** Dead letters one POST .../dlq/redrive reads (in replay pages of the dlq; `next` continues). */
    redrive_letters_max: int(1, 1_000_000).default(1000),

    segment_bytes_max: int(4096, 1024 * MiB).default(64 * MiB),
    index_interval_bytes: int(64, 1 * MiB).default(4096),
    retention_check_interval_ms: int(10, 3_600_000).default(1000),
    dedup_keys_max: int(1, 100_000_000).default(1_000_000),
    /** Ordered ingest, per stream with producer_ordering: events held for a missing producer_seq (past it: 429). */
    held_events_max: int(1, 10_000_000).default(10_000),
    /** ...and their bytes (memory and held.log; past it: 429). */
    held_bytes_max: int(64 * 1024, 16 * 1024 * MiB).default(64 * MiB),
    /** ...and the producers whose place it keeps (past it a new producer is a 400 until one idles out). */
    producers_max: int(1, 1_000_000).default(10_000),

    default_retention_ms: int(1).default(604_800_000),
    default_dedup_window_ms: int(0).default(86_400_000),
    default_durability: z.enum(["process", "fsync"]).default("process"),
    shutdown_timeout_ms: int(100, 600_000).default(10_000),

    /** WebSocket consumers connected at once (active and standby). */
    consumers_max: int(1, 1_000_000).default(20_000),
    /** Unacked events a group member may have in flight, unless ?window= says less. */
    consume_window_default: int(1, 10_000_000).default(10_000),
    consume_window_max: int(1, 10_000_000).default(1_000_000),
    /** One log-path read for a consumer: events and frame bytes. */
    consume_page_events_max: int(1, 1_000_000).default(2000),
    consume_page_bytes_max: int(4096, 64 * MiB).default(1 * MiB),
    /** Bytes queued on a consumer's socket before it is moved to the log path. */
    consumer_buffer_bytes_max: int(4096, 1024 * MiB).default(1 * MiB),
    /** A heartbeat goes out when nothing was sent for this long. */
    consumer_heartbeat_interval_ms: int(50, 10_000).default(500),
    /** With standbys waiting, an active member silent this long (no pong, no message) is replaced. */
    consumer_takeover_ms: int(500, 600_000).default(3000),
    /** Any consumer silent this long is disconnected. */
    consumer_idle_timeout_ms: int(1000, 3_600_000).default(60_000),
    /** PostgreSQL for durable group checkpoints (postgres://...); empty: the data dir only. */
    postgres_url: z.string().default(""),
    /** Redis caching group checkpoints on every ack (redis://...); empty: none. */
    redis_url: z.string().default(""),
    redis_key_prefix: z.string().default("ticker:"),
    /** Checkpoints reach PostgreSQL in one batched write per interval (and on clean shutdown). */
    checkpoint_flush_interval_ms: int(10, 3_600_000).default(1000),
    /** Nacks of one event before it goes to the dead-letter stream, unless ?max_attempts= says otherwise. */
    consume_max_attempts_default: int(1, CONSUME_ATTEMPTS_MAX).default(5),

    /** Streams of one timeline (named or ad hoc). */
    timeline_streams_max: int(1, TIMELINE_STREAMS_LIMIT).default(64),
    /** Named timelines kept in the data dir. */
    timelines_max: int(1, 1_000_000).default(10_000),
    /** Reader positions kept per named timeline. */
    timeline_readers_max: int(1, 1_000_000).default(10_000),
    /** Signs timeline cursors instead of the secret kept in <data_dir>/timeline-secrets.json; empty: that file. */
    timeline_cursor_secret: secret,
    /** With timeline_cursor_secret: a secret that still verifies cursors (the one before it), as long as it is set. */
    timeline_cursor_previous_secret: secret,
    /** After a rotation of the data dir's secret, how long the one before it still verifies cursors. */
    timeline_cursor_grace_ms: int(0, 31_536_000_000).default(86_400_000),
    /** Events of one timeline page (`limit` above it: 400); its bytes are bounded by replay_page_bytes_max. */
    timeline_page_events_max: int(1, 100_000).default(1000),
    /** Longest long poll (`wait_ms`) of a forward timeline page. */
    timeline_wait_ms_max: int(0, 600_000).default(30_000),
    /** A shard that has not answered its part of a timeline page within this is left out of it (`partial`). */
    timeline_source_timeout_ms: int(1, 60_000).default(200),
    /** Timeline long polls waiting at once (more: 429). */
    timeline_waiters_max: int(1, 1_000_000).default(10_000),

    /** JSON array of API keys (README, "Security"), reloaded on SIGHUP; empty: every route is open. */
    api_keys_file: z.string().default(""),
    /** PEM certificate (chain) and private key for HTTPS/WSS; both or neither. */
    tls_cert_file: z.string().default(""),
    tls_key_file: z.string().default(""),
  })
  .strict()
  .superRefine((c, ctx) => {
    // Limits that depend on each other (src/limits.ts).
    for (const p of limitProblems(c)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [p.key], message: p.message });
    if (c.timeline_cursor_previous_secret !== "" && c.timeline_cursor_secret === "") {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ["timeline_cursor_previous_secret"],
        message: "needs timeline_cursor_secret (the data dir's secret is rotated with POST /v1/timelines/_secret/rotate instead)",
      });
    }
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
