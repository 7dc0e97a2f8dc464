// Where a reader starts: `from` (a seq, `earliest` or `latest`) or
// `from_time`, resolved to a seq by one rule for replay and for consumers.
import { ApiError } from "../errors.js";
import { intValue } from "../validate.js";
import type { Stream } from "./stream.js";

/** The query parameters a start is given by, as sent (null: not given). */
export interface StartParams {
  from: string | null;
  from_time: string | null;
}

/** Where the routes' contracts differ (API.md, docs/consume.md). */
export interface StartRules {
  /** Neither given: replay starts at `earliest`; a consumer has no start of its own (null: its group's checkpoint + 1, else `latest`). */
  whenAbsent: "earliest" | null;
  /** `from` past head_seq + 1: replay answers an empty page whose next is `from`; a consumer is refused (400). */
  beyondHead: "empty page" | "refused";
}

export const REPLAY_START = { whenAbsent: "earliest", beyondHead: "empty page" } as const satisfies StartRules;
export const CONSUME_START = { whenAbsent: null, beyondHead: "refused" } as const satisfies StartRules;

/** What a start is resolved against: the log's bounds and its time index. */
type LogBounds = Pick<Stream["log"], "firstSeq" | "committedSeq" | "seqAtTime">;

/**
 * The head a reader is shown and starts after is the committed seq: what is
 * durable at the stream's level. On an fsync stream the log's head runs
 * ahead of it by the records still waiting for their sync, and a reader
 * started after those would never see them once they commit.
 *
 * `from_time` is a time, not the head: the records it passes over were
 * ingested before it, synced or not.
 */
export function resolveStart(log: LogBounds, p: StartParams, rules: StartRules & { whenAbsent: "earliest" }): number;
export function resolveStart(log: LogBounds, p: StartParams, rules: StartRules): number | null;
export function resolveStart(log: LogBounds, p: StartParams, rules: StartRules): number | null {
  if (p.from !== null && p.from_time !== null) throw new ApiError(400, "invalid_parameter", `give "from" or "from_time", not both`);
  const head = log.committedSeq;
  if (p.from_time !== null) return Math.max(log.seqAtTime(intValue("from_time", p.from_time, 0)), log.firstSeq);
  if (p.from === null) return rules.whenAbsent === "earliest" ? log.firstSeq : null;
  if (p.from === "earliest") return log.firstSeq;
  if (p.from === "latest") return head + 1;
  const from = intValue("from", p.from, 1);
  if (rules.beyondHead === "refused" && from > head + 1) {
    throw new ApiError(400, "invalid_parameter", `"from" ${from} is beyond head_seq + 1 (${head + 1})`, { head_seq: head });
  }
  return from;
}
