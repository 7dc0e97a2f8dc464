// Every error a client can see, in one place. A handler throws ApiError (or
// returns it as a value); the front renders it as
// {"error": {"code", "message", ...extra}} with the status that fits.

/** Every code, as a list: the OpenAPI document (src/front/openapi-responses.ts) enumerates them. */
export const ERROR_CODES = [
  "invalid_stream",
  "invalid_json",
  "invalid_body",
  "invalid_event",
  "invalid_config",
  "invalid_parameter",
  "invalid_flatbuffer",
  "event_too_large",
  "batch_too_large",
  "request_too_large",
  "unsupported_media_type",
  "stream_not_found",
  "group_not_found",
  "invalid_group",
  "not_found",
  "method_not_allowed",
  "upgrade_required",
  "expired",
  "snapshot_expired",
  "snapshot_keys_exceeded",
  "shard_busy",
  "server_busy",
  "not_ready",
  "disk_full",
  "storage_error",
  "corrupt_record",
  "stream_deleted",
  "no_group",
  "not_active",
  "invalid_ack",
  "invalid_nack",
  "invalid_seek",
  "invalid_message",
  "message_too_large",
  "idle_timeout",
  "shutting_down",
  "unauthorized",
  "forbidden",
  "rate_limited",
  "held_full",
  "producers_full",
  "events_held",
  "head_mismatch",
  "invalid_cursor",
  "invalid_timeline",
  "invalid_reader",
  "timeline_not_found",
  "reader_not_found",
  "limit_reached",
  "secret_from_config",
  "shard_moving",
  "stream_deleting",
  "cluster_commit_failed",
  "not_owner",
  "shard_unowned",
  "internal",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }

  toJSON(): { error: Record<string, unknown> } {
    return { error: { code: this.code, message: this.message, ...this.extra } };
  }

  body(): string {
    return JSON.stringify(this.toJSON());
  }

  /** The error a shard answered with, parsed back from its JSON body. */
  static fromBody(status: number, body: unknown): ApiError {
    const e = (body as { error?: Record<string, unknown> } | null)?.error;
    if (!e || typeof e.code !== "string") return new ApiError(status, "internal", `unexpected answer (status ${status})`);
    const { code, message, ...extra } = e;
    return new ApiError(status, code as ErrorCode, String(message ?? ""), extra);
  }
}

/** Turns anything thrown into an ApiError; unexpected errors become 500 internal. */
export function asApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e && (e.code === "ENOSPC" || e.code === "EDQUOT")) {
    return new ApiError(503, "disk_full", "the data directory is out of space; nothing was appended");
  }
  if (e && e.code === "EIO") {
    return new ApiError(503, "storage_error", `the data directory could not be written (${e.message}); nothing was appended`);
  }
  return new ApiError(500, "internal", e?.message ? e.message : String(err));
}

export const STATUS_TEXT: Record<number, string> = {
  200: "200 OK",
  201: "201 Created",
  204: "204 No Content",
  400: "400 Bad Request",
  401: "401 Unauthorized",
  403: "403 Forbidden",
  404: "404 Not Found",
  408: "408 Request Timeout",
  405: "405 Method Not Allowed",
  409: "409 Conflict",
  410: "410 Gone",
  413: "413 Payload Too Large",
  415: "415 Unsupported Media Type",
  426: "426 Upgrade Required",
  429: "429 Too Many Requests",
  500: "500 Internal Server Error",
  503: "503 Service Unavailable",
};
