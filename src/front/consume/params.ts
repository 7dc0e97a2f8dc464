// What a consumer may ask for: the consume upgrade's query, checked before
// the upgrade (what only the shard knows, it checks at ConsumeStart), and the
// client messages on the socket (ack, nack, seek).
import type { Config } from "../../config.js";
import { checkQuery, intParam } from "../../validate.js";
import { ApiError } from "../../errors.js";
import { checkGroup, checkStreamId } from "../../stream-id.js";
import { CONSUME_ATTEMPTS_MAX } from "../../limits.js";
import { CONSUME_PARAMS } from "../query-params.js";
import { parseFilter, parseMaxRate } from "../../wire/event-filter.js";

// "token": the API key, which a browser WebSocket cannot send as a header (src/front/auth.ts).
/** Client messages are small JSON objects; a nack reason is capped. */
export const CLIENT_MESSAGE_BYTES_MAX = 4096;
const NACK_REASON_CHARS_MAX = 1024;

export interface ConsumeParams {
  stream: string;
  group: string | null;
  binary: boolean;
  window: number;
  maxAttempts: number;
  /** `from=snapshot`: the snapshot first, then on from its as_of_seq + 1 (snapshot.ts). */
  snapshot: boolean;
  /** group / from / from_time, resolved by the shard. */
  query: string;
  /** `types` / `keys` as query text for the shard's reads; null without a filter. */
  filter: string | null;
  /** `max_rate` (events/s); null: as fast as the consumer takes them. */
  maxRate: number | null;
  /** `conflate=key`: log pages keep the newest event per key (src/wire/event-conflate.ts). */
  conflate: boolean;
}

/** Checks what the front can check alone; throws ApiError(400). */
export function parseParams(config: Config, stream: string, query: string): ConsumeParams {
  checkStreamId(stream);
  const q = checkQuery(query, CONSUME_PARAMS);
  const group = q.get("group");
  if (group !== null) checkGroup(group);
  if (q.get("from") !== null && q.get("from_time") !== null) throw new ApiError(400, "invalid_parameter", `give "from" or "from_time", not both`);
  const format = q.get("format") ?? "json";
  if (format !== "json" && format !== "binary") throw new ApiError(400, "invalid_parameter", `"format" must be "json" or "binary"`);
  const window = intParam(q, "window", config.consume_window_default, 1, config.consume_window_max);
  const maxAttempts = intParam(q, "max_attempts", config.consume_max_attempts_default, 1, CONSUME_ATTEMPTS_MAX);
  // Checked here so that a bad filter is a 400 at the upgrade; the shard parses the same text for its reads.
  const filter = parseFilter(q, config) === null ? null : filterQuery(q);
  const maxRate = parseMaxRate(q);
  const snapshot = q.get("from") === "snapshot";
  if (snapshot) checkSnapshot(group, format, filter !== null || maxRate !== null);
  const conflate = parseConflate(q.get("conflate"), group);
  const forward = new URLSearchParams();
  // A snapshot consumer's start is its snapshot's as_of_seq + 1, known once the first page is taken.
  for (const k of snapshot ? ["group"] : ["group", "from", "from_time"]) {
    const v = q.get(k);
    if (v !== null) forward.set(k, v);
  }
  return { stream, group, binary: format === "binary", window, maxAttempts, snapshot, query: forward.toString(), filter, maxRate, conflate };
}

/**
 * `conflate=key`. Not with a group: an ack of a seq past conflated events
 * would checkpoint events no member was sent, and a nack or seek of one
 * would name an event the consumer never saw (docs/decisions.md).
 */
function parseConflate(value: string | null, group: string | null): boolean {
  if (value === null) return false;
  if (value !== "key") throw new ApiError(400, "invalid_parameter", `"conflate" must be "key"`, { parameter: "conflate" });
  if (group !== null) throw new ApiError(400, "invalid_parameter", `"conflate" is for consumers without a group`, { parameter: "conflate" });
  return true;
}

function filterQuery(q: URLSearchParams): string {
  const f = new URLSearchParams();
  for (const k of ["types", "keys"]) {
    const v = q.get(k);
    if (v !== null) f.set(k, v);
  }
  return f.toString();
}

/**
 * A group's members start at its checkpoint, which a snapshot would skip
 * past, and snapshot events are rendered as JSON only (docs/consume.md).
 * Snapshot pages are neither filtered nor paced.
 */
function checkSnapshot(group: string | null, format: string, filteredOrPaced: boolean): void {
  if (group !== null) throw new ApiError(400, "invalid_parameter", `"from=snapshot" is for consumers without a group`, { parameter: "from" });
  if (format !== "json") throw new ApiError(400, "invalid_parameter", `"from=snapshot" needs "format=json"`, { parameter: "format" });
  if (filteredOrPaced) throw new ApiError(400, "invalid_parameter", `"from=snapshot" takes no "types", "keys" or "max_rate" yet`, { parameter: "from" });
}

export type ClientMessage = { type: "ack"; seq: number } | { type: "nack"; seq: number; reason: string } | { type: "seek"; seq: number };

export function parseClientMessage(data: ArrayBuffer, isBinary: boolean): ClientMessage {
  if (isBinary) throw new ApiError(400, "invalid_message", "client messages are JSON text frames");
  if (data.byteLength > CLIENT_MESSAGE_BYTES_MAX) throw new ApiError(413, "message_too_large", `client messages are at most ${CLIENT_MESSAGE_BYTES_MAX} bytes`);
  let m: unknown;
  try {
    m = JSON.parse(Buffer.from(data).toString("utf8"));
  } catch {
    throw new ApiError(400, "invalid_message", "message is not valid JSON");
  }
  if (typeof m !== "object" || m === null || Array.isArray(m)) throw new ApiError(400, "invalid_message", "message must be a JSON object");
  const o = m as Record<string, unknown>;
  if (o.type !== "ack" && o.type !== "nack" && o.type !== "seek") {
    throw new ApiError(400, "invalid_message", `"type" must be "ack", "nack" or "seek"`);
  }
  const seq = o.seq;
  if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 1) throw new ApiError(400, "invalid_message", `"seq" must be an integer >= 1`);
  if (o.type !== "nack") return { type: o.type, seq };
  const reason = o.reason ?? "";
  if (typeof reason !== "string" || reason.length > NACK_REASON_CHARS_MAX) {
    throw new ApiError(400, "invalid_message", `"reason" must be a string of at most ${NACK_REASON_CHARS_MAX} characters`);
  }
  return { type: "nack", seq, reason };
}
