// The shard's retention timer: deletes each stream's segments past its retention_ms or
// retention_bytes, and the idempotency keys that go with them; a line per stream it cut.
import { logger } from "../logger.js";
import type { ShardMetrics } from "./metrics.js";
import type { Stream } from "./stream.js";

/** `keepFrom`: cluster mode, the first seq of a stream the archive does not hold yet (its segments stay until it does). */
export function applyRetention(streams: Iterable<Stream>, nowMs: number, metrics: ShardMetrics, keepFrom?: (s: Stream) => number): void {
  for (const s of streams) {
    try {
      const firstBefore = s.log.firstSeq;
      const bytesBefore = s.log.bytes;
      const segments = s.log.applyRetention(nowMs, s.config.retention_ms, s.config.retention_bytes, s.config.durability === "fsync", keepFrom?.(s));
      if (segments > 0) {
        metrics.noteRetention(segments, Math.max(0, bytesBefore - s.log.bytes));
        s.dedup.forgetBelow(s.log.firstSeq);
        const first = s.log.firstSeq;
        logger().info(
          { kind: "retention", stream: s.id, segments, deleted_from_seq: firstBefore, deleted_to_seq: first - 1, first_seq: first },
          `retention: stream ${s.id}: deleted ${segments} segment(s), seqs ${firstBefore}..${first - 1}; first seq now ${first}`,
        );
      }
      s.dedup.expire(nowMs);
    } catch (err) {
      // One stream's failure (a file it cannot delete) must not stop the others'.
      logger().error({ kind: "retention", stream: s.id, err }, `stream ${s.id}: retention failed: ${(err as Error).message}`);
    }
  }
}
