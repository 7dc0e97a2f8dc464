// The shard's retention timer: deletes each stream's segments past its retention_ms or
// retention_bytes, and the idempotency keys that go with them.
import type { Stream } from "./stream.js";

export function applyRetention(streams: Iterable<Stream>, nowMs: number): void {
  for (const s of streams) {
    try {
      if (s.log.applyRetention(nowMs, s.config.retention_ms, s.config.retention_bytes, s.config.durability === "fsync") > 0) {
        s.dedup.forgetBelow(s.log.firstSeq);
      }
      s.dedup.expire(nowMs);
    } catch (err) {
      // One stream's failure (a file it cannot delete) must not stop the others'.
      console.error(`stream ${s.id}: retention failed: ${(err as Error).message}`);
    }
  }
}
