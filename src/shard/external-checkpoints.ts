// Group checkpoints kept outside the data dir (src/consumer/external.ts), as
// a shard thread loads them: at start for every stream it opened, and in
// cluster mode for the streams of a shard it gains (their groups move with
// them). Their checkpoints win over the data dir's: Redis (set on every ack)
// first, then PostgreSQL (batched). The data dir may be new, restored or
// behind; those stores are shared.
import type { Config } from "../config.js";
import type { ExternalCheckpoints } from "../consumer/external.js";
import type { StreamAdmin } from "./admin.js";

/** The stores configured (null: none). Loaded only then: the PostgreSQL and Redis clients cost each shard thread megabytes of heap. */
export async function openExternalCheckpoints(c: Config): Promise<ExternalCheckpoints | null> {
  if (!c.postgres_url && !c.redis_url) return null;
  const { ExternalCheckpoints } = await import("../consumer/external.js");
  return ExternalCheckpoints.open({
    postgresUrl: c.postgres_url || undefined,
    redisUrl: c.redis_url || undefined,
    flushIntervalMs: c.checkpoint_flush_interval_ms,
    keyPrefix: c.redis_key_prefix,
  });
}

/** Sets the stored checkpoints of streams `ids` on those that are open. */
export async function applyExternalCheckpoints(external: ExternalCheckpoints, streams: StreamAdmin, ids: string[]): Promise<void> {
  const loaded = await external.load(ids);
  for (const [id, groups] of loaded) {
    const s = streams.get(id);
    if (!s) continue; // asked for the streams that are open: deleted since only
    for (const [group, seq] of groups) if (s.checkpoints.get(group)?.seq !== seq) s.checkpoints.set(group, seq);
  }
}
