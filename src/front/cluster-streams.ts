// GET /v1/streams in cluster mode: every stream of the cluster, whichever
// node is asked. Each node lists the streams of the shards it serves (its
// copies of other shards' streams may be stale, and are left out); the node
// asked adds what every other owner lists, asked with the caller's own
// Authorization (the nodes of a cluster share their API keys) and the
// NODE_ONLY_HEADER, which makes the answer that node's part alone. A list
// that would miss a shard (nobody serves it right now, or its owner does not
// answer) is refused with 503, to be retried, rather than given short.
import { ApiError } from "../errors.js";
import type { ClusterRuntime } from "./cluster-runtime.js";

/** A node's answer to this header is the streams of the shards it serves, not the cluster's. */
export const NODE_ONLY_HEADER = "ticker-node-only";
/** How long the node asked waits for each other owner's part. */
const PEER_LIST_TIMEOUT_MS = 5000;

export interface ListedStream {
  id: string;
}

/**
 * The cluster's streams: `local` (this node's streams, all of its copies)
 * cut to the shards it serves, plus every other owner's part unless the
 * request is itself one node's part.
 */
export async function clusterStreams(rt: ClusterRuntime, local: ListedStream[], nodeOnly: boolean, authorization: string): Promise<ListedStream[]> {
  const mine = local.filter((s) => rt.route(s.id).kind === "local");
  if (nodeOnly) return mine;
  const { peers, unserved } = rt.placement();
  if (unserved.length > 0) throw unowned(`cluster shards ${unserved.join(", ")} have no live owner right now`, unserved);
  const parts = await Promise.all(
    [...peers].map(async ([node, url]) => {
      const headers: Record<string, string> = { [NODE_ONLY_HEADER]: "1" };
      if (authorization !== "") headers.authorization = authorization;
      let r: Response;
      try {
        r = await fetch(`${url}/v1/streams`, { headers, redirect: "error", signal: AbortSignal.timeout(PEER_LIST_TIMEOUT_MS) });
      } catch (err) {
        throw unowned(`node ${node} did not list its streams (${(err as Error).message})`);
      }
      if (r.status !== 200) throw unowned(`node ${node} did not list its streams (${r.status}: ${(await r.text()).slice(0, 200)})`);
      return ((await r.json()) as { streams: ListedStream[] }).streams;
    }),
  );
  return mine.concat(...parts);
}

const unowned = (why: string, shards?: number[]) =>
  new ApiError(503, "shard_unowned", `the stream list is incomplete: ${why}; retry`, { ...(shards ? { shards } : {}), retry_after_s: 1 });
