// The front's part in cluster mode (docs/CLUSTER.md): every stream request
// is served by the node that owns the stream's cluster shard. Another node
// answers 307 to the same path and query at the owner (HTTP clients follow
// it, keeping method and body), or 503 with Retry-After while nobody owns it.
// GET /v1/cluster shows the shard map. What is not one stream's (timeline
// pages across nodes, named timelines) is cluster-timelines.ts's and
// src/timeline/cluster-names.ts's.
import { ApiError } from "../errors.js";
import { ContentType } from "../shard/protocol.js";
import { checkQuery } from "../validate.js";
import type { ClusterRoute, ClusterRuntime } from "./cluster-runtime.js";
import { redirectLocation } from "../cluster/routing.js";
import type { GuardedApp } from "./auth.js";
import { exchange, send, sendError, type Exchange } from "./http.js";
import { NO_PARAMS } from "./query-params.js";

/**
 * What a stream request gets from the cluster: served here (its lease's
 * epoch), or already answered (null). A consumer's upgrade too: refused with
 * the owner's URL, which the client reconnects to.
 */
export function routeInCluster(x: Exchange, rt: ClusterRuntime, stream: string, url: string, query: string): { epoch: number } | null {
  const r: ClusterRoute = rt.route(stream);
  if (r.kind === "local") return { epoch: r.epoch };
  if (r.kind === "redirect") {
    const location = redirectLocation(r.url, query === "" ? url : `${url}?${query}`);
    sendError(x, new ApiError(307, "not_owner", `stream "${stream}" is served by node ${r.owner}`, { owner: r.owner, location }), { location });
    return null;
  }
  sendError(x, unowned(r.shard));
  return null;
}

const unowned = (shard: number) =>
  new ApiError(503, "shard_unowned", `cluster shard ${shard} has no live owner right now (a node left or is catching up); retry`, {
    shard,
    retry_after_s: 1,
  });

/** GET /v1/cluster: the shard map in cluster mode; a single node answers 404 (it has none). */
export function clusterMapRoute(routes: GuardedApp, inCluster: boolean, rt: () => ClusterRuntime | null): void {
  routes.get("/v1/cluster", "admin", (res, req) => {
    const x = exchange(res);
    try {
      checkQuery(req.getQuery() ?? "", NO_PARAMS);
    } catch (err) {
      return sendError(x, err as ApiError);
    }
    if (!inCluster) return sendError(x, new ApiError(404, "not_found", "this server is a single node, not in cluster mode (--cluster-postgres-url)"));
    const runtime = rt();
    if (!runtime) return sendError(x, new ApiError(503, "not_ready", "the node has not joined the cluster yet"));
    send(x, 200, ContentType.Json, JSON.stringify(runtime.describe()));
  });
}
