// A timeline's stream set, the one rule for named timelines (PUT body) and
// ad hoc ones (?streams=): stream ids of the stream id rule, sorted by
// string compare and without repeats, 1 to timeline_streams_max of them. The
// set's order is the order of a cursor's seqs and of the merge's tie-break.
import { type ErrorCode, ApiError } from "../errors.js";
import { TIMELINE_STREAMS_LIMIT } from "../limits.js";
import { checkStreamId } from "../stream-id.js";

/**
 * The normalised set of `ids`, or a 400: a bad id is invalid_stream naming
 * it; no id, or more than `streamsMax` distinct ones, is `code` (the route's:
 * invalid_body for a body, invalid_parameter for a query). Stops reading at
 * the first id past the bound.
 */
export function streamSet(ids: readonly string[], streamsMax: number, code: ErrorCode): string[] {
  const set = new Set<string>();
  for (const id of ids) {
    checkStreamId(id);
    set.add(id);
    if (set.size > streamsMax) {
      throw new ApiError(400, code, `a timeline has at most timeline_streams_max (${streamsMax}) streams`, { timeline_streams_max: streamsMax });
    }
  }
  if (set.size === 0) throw new ApiError(400, code, "a timeline needs at least one stream");
  return [...set].sort();
}

/** Whether `ids` is a normalised set (what a stored timeline must hold). */
export function isStreamSet(ids: readonly string[]): boolean {
  if (ids.length < 1 || ids.length > TIMELINE_STREAMS_LIMIT) return false;
  for (let i = 1; i < ids.length; i++) if (!(ids[i - 1] < ids[i])) return false;
  return true;
}
