// The front's HTTP routes (uWebSockets.js, main thread): checks, request bodies, routing to a stream's shard.
// It parses and checks
// what it can without touching stream state (ids, content types, sizes),
// routes each request to the shard that owns the stream, and writes the
// shard's answer back, corked into one send.
import uWS from "uWebSockets.js";
import type { Config } from "../config.js";
import { ApiError, asApiError } from "../errors.js";
import { checkQuery, intParam, intValue } from "../validate.js";
import { ContentType, Op, responseJson, type RequestMeta, type Response } from "../shard/protocol.js";
import { CT_FLATBUFFERS, CT_JSON, contentTypeOf, exchange, methodNotAllowed, RETRY_AFTER_S, send, sendError, type Exchange } from "./http.js";
import { checkStreamId } from "../stream-id.js";
import type { ShardPool } from "./shards.js";
import { ConsumeHub } from "./consume/hub.js";
import { consumeRoute } from "./consume/routes.js";
import { type Auth, chargeEvents, guardRoutes, Refusal, sendRefusal } from "./auth.js";
import type { TimelineStores } from "../timeline/stores.js";
import { type TimelineAdmin, timelineAdminRoutes } from "./timeline-admin.js";
import { Timelines } from "./timelines.js";
import { dlqRoutes } from "./dlq.js";
import { openApiJson } from "./openapi.js";
import { consoleRoutes } from "./console.js";
import { BodyBudget, readBody } from "./body.js";
import type { ClusterRuntime } from "./cluster-runtime.js";
import { clusterMapRoute, routeInCluster } from "./cluster.js";
import { clusterStreams, NODE_ONLY_HEADER } from "./cluster-streams.js";
import { clusterTimelineReadRoute, RemoteTimelineReads } from "./cluster-timelines.js";
import { GROUP_PARAM, NO_PARAMS, PUBLISH_PARAMS, REPLAY_PARAMS, SNAPSHOT_PARAMS } from "./query-params.js";
import type { MeteredRoute } from "./front-metrics.js";
import { metricsRoute } from "./metrics.js";
import { parseMaxRate } from "../wire/event-filter.js";

const notReady = () => new ApiError(503, "not_ready", "the server is still recovering its streams");
const shuttingDown = () => new ApiError(503, "shutting_down", "the server is shutting down; retry on another node or after the restart");

/** A shard's 429 says how long to wait (retry_after_s), or the ring's default. */
function retryAfter(r: Response): Record<string, string> {
  const s = (responseJson(r) as { error?: { retry_after_s?: unknown } } | null)?.error?.retry_after_s;
  return { "retry-after": typeof s === "number" && Number.isSafeInteger(s) && s > 0 ? String(s) : RETRY_AFTER_S };
}

const shardBusy = (stream: string) =>
  new ApiError(429, "shard_busy", "the shard owning this stream is at capacity (its ring is full or shard_requests_max requests are in flight); retry later", {
    stream,
  });

export class ListenError extends Error {}

/** LIBUS_LISTEN_EXCLUSIVE_PORT, exported by the binding as a plain number. */
const LISTEN_EXCLUSIVE_PORT: number = (uWS as unknown as { LIBUS_LISTEN_EXCLUSIVE_PORT: number }).LIBUS_LISTEN_EXCLUSIVE_PORT;

export interface Front {
  listen(): Promise<number>;
  /** Stops accepting connections; requests already taken are still answered. */
  stopListening(): void;
  readonly consumers: ConsumeHub;
  /** The timeline control plane, for its requests in flight. */
  readonly timelines: TimelineAdmin;
}

export function createFront(
  config: Config,
  pool: ShardPool,
  isReady: () => boolean,
  auth: Auth,
  timelineStores: TimelineStores,
  /** Cluster mode: the node's place in the cluster, once it has joined (null before, and always outside cluster mode). */
  cluster: () => ClusterRuntime | null = () => null,
): Front {
  const inCluster = config.cluster_postgres_url !== "";
  const app = config.tls_cert_file ? uWS.SSLApp({ cert_file_name: config.tls_cert_file, key_file_name: config.tls_key_file }) : uWS.App();
  // Every route says what access it needs (src/front/auth.ts); `app` itself is only for listening.
  const routes = guardRoutes(app, auth);
  const bodyLimit = pool.limits.requestBodyBytesMax;
  const budget = new BodyBudget(config.request_buffer_bytes_max);
  const body = (x: Exchange, len: string, done: (b: Buffer) => void) => readBody(x, len, bodyLimit, budget, config.request_buffer_bytes_max, done);
  let listenSocket: uWS.us_listen_socket | null = null;
  const consumers = new ConsumeHub(config, pool);
  /**
   * Set by stopListening (SIGTERM): keep-alive connections outlive the
   * listen socket, and a request they send now is answered 503 rather than
   * taken, so that everything the shards were given is answered before exit.
   */
  let draining = false;

  /** Routes a request to the stream's shard and relays its answer. */
  const forward = <O extends Op>(
    x: Exchange,
    op: O,
    stream: string,
    meta: RequestMeta<O>,
    body: Uint8Array | null,
    seen?: (r: Response) => void,
    /** The answer is sent no sooner than this long after the request came (a replay's max_rate). */
    holdMs = 0,
    /** Takes an answer instead of relaying it (true: taken). */
    divert?: (r: Response) => boolean,
  ): boolean => {
    if (x.aborted) return false;
    // A body that finished arriving after SIGTERM: refused, not taken (the
    // drain waits only for what the shards were given).
    if (draining) {
      sendError(x, shuttingDown());
      return false;
    }
    const ok = pool.send(pool.shardFor(stream), op, meta, body, (r) => {
      if (divert?.(r)) return;
      seen?.(r);
      const headers = r.status === 429 || r.status === 503 ? retryAfter(r) : undefined;
      const waitMs = x.startedMs + holdMs - performance.now();
      // Only a page is held: an error says at once what is wrong.
      if (waitMs < 1 || r.status !== 200) return send(x, r.status, r.ct, r.body, headers);
      // Copied: the ring's bytes are reused once this callback returns.
      const copy = Buffer.from(r.body);
      setTimeout(() => send(x, r.status, r.ct, copy, headers), waitMs);
    });
    if (!ok) sendError(x, shardBusy(stream));
    return ok;
  };

  /**
   * Common checks for /v1/streams/:id routes (readiness, stream id, the
   * route's query parameters); null when already answered.
   */
  const streamRoute = (
    res: uWS.HttpResponse,
    req: uWS.HttpRequest,
    params: ReadonlySet<string>,
    route?: MeteredRoute,
    /** Cluster mode: a node that does not own the stream may serve it from the archive (a replay). */
    fromArchive = false,
  ): { x: Exchange; stream: string; query: string; params: URLSearchParams; url: string; archiveOnly: boolean } | null => {
    const x = exchange(res);
    x.route = route;
    const stream = req.getParameter(0) ?? "";
    const query = req.getQuery() ?? "";
    if (!isReady() || draining) {
      sendError(x, draining ? shuttingDown() : notReady());
      return null;
    }
    try {
      checkStreamId(stream);
      const checked = checkQuery(query, params);
      // Checked here, served by the stream's owner (307 there from any other node).
      const rt = cluster();
      const url = req.getUrl();
      const archiveOnly = rt !== null && fromArchive && !checked.has("from_time") && rt.route(stream).kind !== "local";
      if (rt && !archiveOnly && !routeInCluster(x, rt, stream, url, query)) return null;
      return { x, stream, query, params: checked, url, archiveOnly };
    } catch (err) {
      sendError(x, err as ApiError);
      return null;
    }
  };

  /** A route outside /v1/streams/:id: only the query to check. */
  const plainRoute = (res: uWS.HttpResponse, req: uWS.HttpRequest): Exchange | null => {
    const x = exchange(res);
    try {
      checkQuery(req.getQuery() ?? "", NO_PARAMS);
    } catch (err) {
      sendError(x, err as ApiError);
      return null;
    }
    return x;
  };

  routes.get("/healthz", "open", (res, req) => {
    const x = plainRoute(res, req);
    if (x) send(x, 200, ContentType.Json, `{"status":"ok"}`);
  });
  // Open like /healthz: the document names routes, never a stream.
  routes.get("/openapi.json", "open", (res, req) => {
    const x = plainRoute(res, req);
    if (x) send(x, 200, ContentType.Json, openApiJson());
  });
  routes.get("/readyz", "open", (res, req) => {
    const x = plainRoute(res, req);
    if (!x) return;
    if (isReady() && !draining) send(x, 200, ContentType.Json, `{"status":"ready"}`);
    else sendError(x, draining ? shuttingDown() : notReady());
  });

  // Admin only, and an admin key with a prefix sees only the streams under it.
  routes.get("/v1/streams", "admin", (res, req, key) => {
    const x = plainRoute(res, req);
    if (!x) return;
    if (!isReady() || draining) return sendError(x, draining ? shuttingDown() : notReady());
    // Cluster mode: this node's part, and (unless this is a part itself) every other owner's.
    const rt = cluster();
    const nodeOnly = req.getHeader(NODE_ONLY_HEADER) !== "";
    const authorization = req.getHeader("authorization");
    void pool.broadcast(Op.ListStreams, {}).then(async (answers) => {
      if (!answers) return sendError(x, new ApiError(429, "shard_busy", "a shard is at capacity; retry later"));
      let streams = answers.flatMap((a) => (a.json as { streams: Array<{ id: string }> }).streams);
      try {
        if (rt) streams = await clusterStreams(rt, streams, nodeOnly, authorization);
      } catch (err) {
        return sendError(x, asApiError(err));
      }
      streams = streams.filter((s) => key === null || s.id.startsWith(key.prefix));
      streams.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      send(x, 200, ContentType.Json, JSON.stringify({ streams }));
    });
  });

  /** A control-plane route whose JSON body goes to the stream's shard as is. */
  const jsonBodyRoute =
    (op: Op.PutStream | Op.SetCheckpoint, what: string, seen?: (r: Response, stream: string) => void) => (res: uWS.HttpResponse, req: uWS.HttpRequest) => {
      const ctHeader = req.getHeader("content-type");
      const len = req.getHeader("content-length");
      const r = streamRoute(res, req, NO_PARAMS);
      if (!r) return;
      if (contentTypeOf(ctHeader) !== ContentType.Json) return sendError(r.x, new ApiError(415, "unsupported_media_type", `${what} must be ${CT_JSON}`));
      body(r.x, len, (b) => forward(r.x, op, r.stream, { stream: r.stream }, b, seen && ((answer) => seen(answer, r.stream))));
    };
  routes.put("/v1/streams/:id", "admin", jsonBodyRoute(Op.PutStream, "stream config"));
  /** A route without a body or query: the stream goes to its shard. */
  const streamOnlyRoute = (op: Op.GetStream | Op.DeleteStream) => (res: uWS.HttpResponse, req: uWS.HttpRequest) => {
    const r = streamRoute(res, req, NO_PARAMS);
    if (r) forward(r.x, op, r.stream, { stream: r.stream }, null);
  };
  /** A route without a body: the stream and the raw query go to its shard. */
  const queryRoute = (op: Op.GetCheckpoint | Op.Lag, params: ReadonlySet<string>) => (res: uWS.HttpResponse, req: uWS.HttpRequest) => {
    const r = streamRoute(res, req, params);
    if (r) forward(r.x, op, r.stream, { stream: r.stream, query: r.query }, null);
  };
  routes.get("/v1/streams/:id", "consume", streamOnlyRoute(Op.GetStream));
  routes.del("/v1/streams/:id", "admin", streamOnlyRoute(Op.DeleteStream));

  routes.post("/v1/streams/:id/events", "publish", (res, req, key) => {
    const ctHeader = req.getHeader("content-type");
    const len = req.getHeader("content-length");
    const r = streamRoute(res, req, PUBLISH_PARAMS, "publish");
    if (!r) return;
    // Read here, before the body arrives: a bad value is answered without buffering it.
    const expected = r.params.get("expected_head_seq");
    let expectedHeadSeq: number | undefined;
    try {
      expectedHeadSeq = expected === null ? undefined : intValue("expected_head_seq", expected, 0);
    } catch (err) {
      return sendError(r.x, err as ApiError);
    }
    const ct = contentTypeOf(ctHeader);
    if (ct === null) {
      sendError(
        r.x,
        new ApiError(415, "unsupported_media_type", `publish body must be ${CT_JSON} or ${CT_FLATBUFFERS}`, { content_type: ctHeader.slice(0, 100) }),
      );
      return;
    }
    body(r.x, len, (b) => {
      const refund = chargeEvents(key, b, ct);
      if (refund instanceof Refusal) return sendRefusal(r.x, refund);
      // Events the shard did not append are not the key's to pay for.
      const taken = forward(
        r.x,
        Op.Publish,
        r.stream,
        { stream: r.stream, ct, expectedHeadSeq },
        b,
        refund ? (answer) => answer.status !== 200 && refund() : undefined,
      );
      if (!taken) refund?.();
    });
  });
  routes.get("/v1/streams/:id/events", "consume", (res, req) => {
    const accept = req.getHeader("accept");
    const r = streamRoute(res, req, REPLAY_PARAMS, "replay", true);
    if (!r) return;
    const wantsBinary = accept.toLowerCase().includes(CT_FLATBUFFERS);
    let holdMs: number;
    try {
      holdMs = replayHoldMs(r.params, config);
    } catch (err) {
      return sendError(r.x, err as ApiError);
    }
    const meta = { stream: r.stream, query: r.query, accept: wantsBinary ? ContentType.FlatBuffers : ContentType.Json };
    if (!r.archiveOnly) return void forward(r.x, Op.Replay, r.stream, meta, null, undefined, holdMs);
    // Cluster mode, another node's stream: what the archive holds is served here, the rest by the owner.
    const rt = cluster();
    const pastArchive = (answer: Response) => {
      if (answer.status !== 307 || rt === null) return false;
      // Moved here meanwhile: the reader asks again, and this node serves it.
      if (routeInCluster(r.x, rt, r.stream, r.url, r.query))
        sendError(r.x, new ApiError(503, "shard_moving", `stream "${r.stream}" just moved to this node; retry`));
      return true;
    };
    forward(r.x, Op.Replay, r.stream, { ...meta, archiveOnly: true }, null, undefined, holdMs, pastArchive);
  });
  // Cluster mode: served by the owner, from the stream's whole history (the archive below its copy).
  routes.get("/v1/streams/:id/snapshot", "consume", (res, req) => {
    const r = streamRoute(res, req, SNAPSHOT_PARAMS);
    if (r) forward(r.x, Op.Snapshot, r.stream, { stream: r.stream, query: r.query, socket: false }, null);
  });

  routes.post(
    "/v1/streams/:id/checkpoint",
    "consume",
    jsonBodyRoute(Op.SetCheckpoint, "checkpoint body", (r, stream) => {
      if (r.status !== 200) return;
      const { group, seq } = responseJson(r) as { group: string; seq: number };
      consumers.noteCheckpoint(stream, group, seq);
    }),
  );
  routes.get("/v1/streams/:id/checkpoint", "consume", queryRoute(Op.GetCheckpoint, GROUP_PARAM));
  routes.get("/v1/streams/:id/lag", "consume", queryRoute(Op.Lag, GROUP_PARAM));
  // The shard knows checkpoints and lag; the front adds who is connected.
  routes.get("/v1/streams/:id/groups", "consume", (res, req) => {
    const r = streamRoute(res, req, NO_PARAMS);
    if (!r) return;
    const ok = pool.send(pool.shardFor(r.stream), Op.Groups, { stream: r.stream }, null, (answer) => {
      if (answer.status !== 200) return send(r.x, answer.status, answer.ct, answer.body);
      const body = responseJson(answer) as { groups: Array<Record<string, unknown>> };
      const live = consumers.members(r.stream);
      for (const g of body.groups) g.members = live.groups.get(g.group as string) ?? [];
      for (const [group, members] of live.groups) {
        if (!body.groups.some((g) => g.group === group))
          body.groups.push({ group, head_seq: live.head, checkpoint_seq: null, lag: null, lag_ms: null, members });
      }
      body.groups.sort((a, b) => ((a.group as string) < (b.group as string) ? -1 : 1));
      send(r.x, 200, ContentType.Json, JSON.stringify(body));
    });
    if (!ok) sendError(r.x, shardBusy(r.stream));
  });
  consumeRoute(routes, consumers, isReady, cluster);
  const unavailable = () => (draining ? shuttingDown() : isReady() ? null : notReady());
  // The page reads (src/front/timelines.ts) and the control plane (timeline-admin.ts) share /v1/timelines: a GET with ?streams= is a page.
  const pages = new Timelines({ config, pool, stores: timelineStores, unavailable, remote: inCluster ? new RemoteTimelineReads(cluster) : null });
  clusterMapRoute(routes, inCluster, cluster);
  const timelines: TimelineAdmin = timelineAdminRoutes(routes, {
    config,
    pool,
    stores: timelineStores,
    unavailable,
    body,
    adHocPage: (res, req, key) => pages.adHoc(res, req, key),
  });
  pages.register(routes);
  // Cluster mode: another node's page reads this node's part here.
  if (inCluster) clusterTimelineReadRoute(routes, { config, pool, cluster, unavailable, body });
  dlqRoutes(routes, { config, pool, unavailable, body, cluster });
  metricsRoute(routes, { config, pool, hub: consumers, ready: () => isReady() && !draining });
  consoleRoutes(routes);

  routes.any("/healthz", "open", methodNotAllowed("GET"));
  routes.any("/openapi.json", "open", methodNotAllowed("GET"));
  routes.any("/readyz", "open", methodNotAllowed("GET"));
  routes.any("/metrics", "key", methodNotAllowed("GET"));
  for (const path of ["/console", "/console/", "/console/:file"]) routes.any(path, "open", methodNotAllowed("GET"));
  routes.any("/v1/streams", "key", methodNotAllowed("GET"));
  routes.any("/v1/streams/:id", "key", methodNotAllowed("GET, PUT, DELETE"));
  routes.any("/v1/streams/:id/events", "key", methodNotAllowed("GET, POST"));
  routes.any("/v1/streams/:id/checkpoint", "key", methodNotAllowed("GET, POST"));
  routes.any("/v1/streams/:id/lag", "key", methodNotAllowed("GET"));
  routes.any("/v1/streams/:id/snapshot", "key", methodNotAllowed("GET"));
  routes.any("/v1/streams/:id/groups", "key", methodNotAllowed("GET"));
  if (!inCluster) routes.any("/v1/timelines/:name/events", "key", methodNotAllowed("GET"));
  routes.any("/v1/cluster", "key", methodNotAllowed("GET"));
  // A GET without the upgrade headers reaches here, not the WebSocket route.
  routes.get("/v1/streams/:id/consume", "consume", (res) => {
    sendError(exchange(res), new ApiError(426, "upgrade_required", "consume is a WebSocket endpoint: send a GET with Upgrade: websocket"), {
      upgrade: "websocket",
      connection: "Upgrade",
    });
  });
  routes.any("/v1/streams/:id/consume", "key", methodNotAllowed("GET"));
  routes.any("/*", "key", (res, req) => {
    sendError(exchange(res, req), new ApiError(404, "not_found", `no route for ${req.getMethod().toUpperCase()} ${req.getUrl()}`));
  });

  return {
    listen: () =>
      new Promise((resolve, reject) => {
        // Exclusive: uWS otherwise sets SO_REUSEPORT, and a second server on
        // the same port would start and take every other connection.
        // (The binding takes host, port, options; its typings miss that form.)
        const listen = app.listen as unknown as (host: string, port: number, options: number, cb: (s: uWS.us_listen_socket | false) => void) => void;
        listen.call(app, config.host, config.port, LISTEN_EXCLUSIVE_PORT, (s) => {
          if (!s) return reject(new ListenError(`cannot listen on ${config.host}:${config.port}: address in use (or not available on this host)`));
          listenSocket = s;
          resolve(uWS.us_socket_local_port(s as unknown as uWS.us_socket));
        });
      }),
    consumers,
    timelines,
    stopListening: () => {
      draining = true;
      pages.endWaits();
      if (listenSocket) uWS.us_listen_socket_close(listenSocket);
      listenSocket = null;
    },
  };
}

/**
 * How long a replay page with `max_rate` is held: the time its page size
 * (`limit`, at most max_rate: the shard sizes it so) takes at that rate,
 * whatever the page holds. A client that asks for the next page when one
 * comes then reads at most max_rate events a second, and no state is kept
 * between requests (docs/consume.md, "Rate-limited reads").
 */
function replayHoldMs(q: URLSearchParams, config: Config): number {
  const maxRate = parseMaxRate(q);
  if (maxRate === null) return 0;
  const limit = intParam(q, "limit", config.replay_page_events_default, 1, config.replay_page_events_max);
  return (Math.min(limit, maxRate) * 1000) / maxRate;
}
