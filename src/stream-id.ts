// The stream-id rule: the names a stream (and a consumer group) may have,
// and the 400 a request with any other gets. A leaf module: the front checks
// ids before routing a request, the shard checks stream.json and group
// names, with this one pattern.
import { ApiError } from "./errors.js";

/** Longest id, in characters; the characters are ASCII, so in bytes too. */
export const STREAM_ID_CHARS_MAX = 128;
export const STREAM_ID = new RegExp(`^[A-Za-z0-9][A-Za-z0-9._-]{0,${STREAM_ID_CHARS_MAX - 1}}$`);

/** Refuses an id outside the rule: 400 invalid_stream, with (the start of) the id it was given. */
export function checkStreamId(id: string): void {
  if (!STREAM_ID.test(id)) throw new ApiError(400, "invalid_stream", `stream id must match ${STREAM_ID.source}`, { stream: id.slice(0, 200) });
}

/** Group names follow the stream id rule: 400 invalid_group otherwise. */
export function checkGroup(g: unknown): string {
  if (typeof g !== "string" || !STREAM_ID.test(g)) throw new ApiError(400, "invalid_group", `group must match ${STREAM_ID.source}`);
  return g;
}
