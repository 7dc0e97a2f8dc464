// Retention: which of a log's oldest segments are deleted (Kafka's
// deleteOldSegments), by age and by size. Whole segments only, oldest
// first, and never the newest one, even empty: its base seq is what keeps
// head_seq across a restart. The log deletes what this decides.
import type { Segment } from "./segment.js";

/**
 * How many segments, oldest first, are past retention: those whose newest
 * record is older than `cutoffTs` (and empty ones among them), then as many
 * more as keep the log over `retentionBytes` (null: no size bound).
 */
export function segmentsPastRetention(segments: readonly Segment[], cutoffTs: number, retentionBytes: number | null): number {
  const deletable = segments.length - 1;
  let n = 0;
  while (n < deletable && (segments[n].empty || segments[n].lastTs < cutoffTs)) n++;
  if (retentionBytes !== null) {
    let total = 0;
    for (let i = n; i < segments.length; i++) total += segments[i].size;
    while (n < deletable && total > retentionBytes) total -= segments[n++].size;
  }
  return n;
}
