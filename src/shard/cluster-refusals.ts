// The answers of a shard thread in cluster mode when it cannot take a write
// (src/shard/cluster.ts): each a 503 the client retries.
import { ApiError } from "../errors.js";

export const shardMoving = (shard: number) =>
  new ApiError(503, "shard_moving", `cluster shard ${shard} is moving to or from this node, or catching up with the database; retry`, { shard });

export const streamDeleting = (stream: string) =>
  new ApiError(503, "stream_deleting", `stream "${stream}" is being deleted; retry (a write after the delete makes the stream again)`, { stream });

/** A write of the owner's that PostgreSQL did not take (fenced, or out of reach; it may even have landed). */
export const commitFailed = (what: string, shard: number, err?: Error) =>
  new ApiError(503, "cluster_commit_failed", `${what} was not committed to the cluster${err ? ` (${err.message})` : ""}; retry`, { shard });
