// A stream's directory name and config rules: the config a PUT may set and
// the defaults a new stream gets. The id pattern itself is src/stream-id.ts.
import { createHash } from "node:crypto";
import { z } from "zod";
import { ApiError } from "../errors.js";
import { parseBody } from "../validate.js";
import type { OrderedLimits } from "./ordered.js";

/**
 * Directory name for a stream id: every byte outside [a-z0-9.-] becomes _XX
 * (hex), so ids that differ only in case stay distinct on any filesystem.
 * Ids whose escaped form would be long keep a prefix and a hash of the id,
 * under the 255-byte name limit (stream.json keeps the real id).
 */
export function escapeStreamId(id: string): string {
  const escaped = id.replace(/[^a-z0-9.-]/g, (c) => `_${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
  if (escaped.length <= DIR_NAME_BYTES_MAX) return escaped;
  return `${escaped.slice(0, DIR_NAME_BYTES_MAX - 41)}~${createHash("sha256").update(id).digest("hex").slice(0, 40)}`;
}

const DIR_NAME_BYTES_MAX = 200;

export interface StreamDefaults {
  retention_ms: number;
  dedup_window_ms: number;
  durability: "process" | "fsync";
  max_event_bytes: number;
  /** The server's bounds on an ordered stream's held events and producers (not stream config). */
  ordered: OrderedLimits;
}

/** How long a missing producer_seq is waited for, unless the stream says otherwise. */
export const GAP_TIMEOUT_MS_DEFAULT = 5000;
/** The longest gap_timeout_ms a stream may set: an hour. */
export const GAP_TIMEOUT_MS_MAX = 3_600_000;

export const streamConfigPatch = z
  .object({
    retention_ms: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
    retention_bytes: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).nullable(),
    max_event_bytes: z.number().int().min(1),
    dedup_window_ms: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    durability: z.enum(["process", "fsync"]),
    producer_ordering: z.boolean(),
    gap_timeout_ms: z.number().int().min(1).max(GAP_TIMEOUT_MS_MAX),
  })
  .partial()
  .strict();

export type StreamConfig = Required<z.infer<typeof streamConfigPatch>>;

/** Validates a PUT body against the contract and the server's own limits. */
export function parseStreamConfigPatch(body: unknown, eventBytesMax: number): Partial<StreamConfig> {
  // Only an empty body means "no changes"; a JSON null is not a config object.
  const r = { data: parseBody(streamConfigPatch, body === undefined ? {} : body, "invalid_config") };
  if (r.data.max_event_bytes !== undefined && r.data.max_event_bytes > eventBytesMax) {
    throw new ApiError(400, "invalid_config", `"max_event_bytes" must not exceed the server's event_bytes_max (${eventBytesMax})`);
  }
  return r.data;
}

/**
 * Ordered ingest keeps a producer's place for the dedup window: with a
 * window of 0 every producer would be forgotten at once, and every event
 * after its first would wait out gap_timeout_ms.
 */
export function checkOrdering(c: StreamConfig): void {
  if (c.producer_ordering && c.dedup_window_ms === 0) {
    throw new ApiError(400, "invalid_config", `"producer_ordering" needs a "dedup_window_ms" above 0: a producer's place is kept for the dedup window`);
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
    gap_timeout_ms: GAP_TIMEOUT_MS_DEFAULT,
    ...patch,
  };
}
