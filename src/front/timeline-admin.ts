// The timeline control plane on the front: named timelines (PUT, GET,
// DELETE, the list), reader positions (PUT, GET) and the rotation of the
// cursor secret. Everything lives in the front's TimelineStores; the shards
// are asked only whether the streams of a PUT exist. A key's prefix must
// cover every stream of the timeline it touches (auth.ts, checkStreams).
// The page reads (/v1/timelines?streams=, .../events) are not here: they are
// src/front/timelines.ts, which the list route hands a GET with ?streams=.
import type uWS from "uWebSockets.js";
import { z } from "zod";
import type { Config } from "../config.js";
import { ApiError, asApiError } from "../errors.js";
import { ContentType, Op, responseJson } from "../shard/protocol.js";
import type { NamedTimeline } from "../timeline/names.js";
import { checkTimelineName, timelineNotFound } from "../timeline/names.js";
import { checkReaderId, readerNotFound } from "../timeline/readers.js";
import type { TimelineStores } from "../timeline/stores.js";
import { streamSet } from "../timeline/stream-set.js";
import { checkQuery, jsonBody, parseBody } from "../validate.js";
import { type ApiKey, checkStreams, type GuardedApp, Refusal, sendRefusal } from "./auth.js";
import { CT_JSON, contentTypeOf, type Exchange, exchange, methodNotAllowed, send, sendError } from "./http.js";
import type { ShardPool } from "./shards.js";

export interface TimelineAdminDeps {
  config: Config;
  pool: ShardPool;
  stores: TimelineStores;
  /** The 503 to answer while the server is not ready or is draining, else null. */
  unavailable: () => ApiError | null;
  /** Reads a request body within the front's limits (app.ts). */
  body: (x: Exchange, contentLength: string, done: (b: Buffer) => void) => void;
  /** GET /v1/timelines with ?streams= is an ad hoc timeline's page (src/front/timelines.ts), not the list. */
  adHocPage: (res: uWS.HttpResponse, req: uWS.HttpRequest, key: ApiKey | null) => void;
}

export interface TimelineAdmin {
  /** Requests taken and not yet answered: a clean shutdown waits for them. */
  readonly inFlight: number;
}

const NO_PARAMS: ReadonlySet<string> = new Set();
export const putTimelineBody = z.object({ streams: z.array(z.string({ invalid_type_error: "must be a stream id" })) }).strict();
export const putReaderBody = z.object({ cursor: z.string({ invalid_type_error: "must be a string" }) }).strict();
export const rotateBody = z.object({}).strict();

const timelineJson = (t: NamedTimeline) => JSON.stringify({ name: t.name, streams: t.streams, created_at: t.created_at, updated_at: t.updated_at });

/** Registers every route of this file, and their 405s. */
export function timelineAdminRoutes(routes: GuardedApp, deps: TimelineAdminDeps): TimelineAdmin {
  const { config, pool, stores } = deps;
  let inFlight = 0;

  /** Runs a handler's async part; whatever it throws is answered as the error it is. */
  const run = (x: Exchange, work: () => Promise<void>) => {
    inFlight++;
    work()
      .catch((err) => (err instanceof Refusal ? sendRefusal(x, err) : sendError(x, asApiError(err))))
      .finally(() => inFlight--);
  };

  /** The checks every route here makes first: the path's names, the query, readiness. Null when answered. */
  const begin = (res: uWS.HttpResponse, req: uWS.HttpRequest, names: { timeline?: boolean; reader?: boolean }): Exchange | null => {
    const x = exchange(res);
    const name = req.getParameter(0) ?? "";
    const reader = req.getParameter(1) ?? "";
    const query = req.getQuery() ?? "";
    try {
      if (names.timeline) checkTimelineName(name);
      if (names.reader) checkReaderId(reader);
      checkQuery(query, NO_PARAMS);
      const down = deps.unavailable();
      if (down) throw down;
    } catch (err) {
      sendError(x, asApiError(err));
      return null;
    }
    return x;
  };

  /** A JSON body, once it has all arrived; a media type other than JSON is 415 at once. */
  const withBody = (x: Exchange, ctHeader: string, len: string, what: string, done: (body: unknown) => Promise<void>) => {
    if (contentTypeOf(ctHeader) !== ContentType.Json) return sendError(x, new ApiError(415, "unsupported_media_type", `${what} must be ${CT_JSON}`));
    deps.body(x, len, (b) => {
      let parsed: unknown;
      try {
        parsed = jsonBody(b);
      } catch (err) {
        return sendError(x, asApiError(err));
      }
      run(x, () => done(parsed));
    });
  };

  /** The named timeline, and the key may use all its streams; else the 404 or 403 is thrown (run() answers it). */
  const existing = async (name: string, key: ApiKey | null, scope: "admin" | "consume"): Promise<NamedTimeline> => {
    const t = await stores.names.find(name);
    if (!t) throw timelineNotFound(name);
    const refused = checkStreams(key, scope, t.streams);
    if (refused) throw refused;
    return t;
  };

  routes.get("/v1/timelines", "key", (res, req, key) => {
    if (new URLSearchParams(req.getQuery() ?? "").has("streams")) return deps.adHocPage(res, req, key);
    const x = begin(res, req, {});
    if (!x) return;
    const refused = checkStreams(key, "admin", []);
    if (refused) return sendRefusal(x, refused);
    run(x, async () => {
      // As GET /v1/streams: a key with a prefix sees the timelines it could use.
      const timelines = (await stores.names.all()).filter((t) => checkStreams(key, "admin", t.streams) === null);
      send(x, 200, ContentType.Json, `{"timelines":[${timelines.map(timelineJson).join(",")}]}`);
    });
  });

  routes.put("/v1/timelines/:name", "admin", (res, req, key) => {
    const ct = req.getHeader("content-type");
    const len = req.getHeader("content-length");
    const name = req.getParameter(0) ?? "";
    const x = begin(res, req, { timeline: true });
    if (!x) return;
    withBody(x, ct, len, "timeline body", async (body) => {
      const streams = streamSet(parseBody(putTimelineBody, body, "invalid_body").streams, config.timeline_streams_max, "invalid_body");
      // The key must cover the new streams, and the old ones of a timeline it changes.
      const refused = checkStreams(key, "admin", [...streams, ...((await stores.names.find(name))?.streams ?? [])]);
      if (refused) throw refused;
      await (stores.streamsExist ?? ((s) => streamsExist(pool, s)))(streams);
      const r = await stores.names.put(name, streams);
      // The old set's cursors are foreign now; its readers' positions go with them.
      if (r.changed && !r.created) await stores.readers.forget(name);
      send(x, r.created ? 201 : 200, ContentType.Json, timelineJson(r.timeline));
    });
  });

  routes.get("/v1/timelines/:name", "admin", (res, req, key) => {
    const name = req.getParameter(0) ?? "";
    const x = begin(res, req, { timeline: true });
    if (!x) return;
    run(x, async () => send(x, 200, ContentType.Json, timelineJson(await existing(name, key, "admin"))));
  });

  routes.del("/v1/timelines/:name", "admin", (res, req, key) => {
    const name = req.getParameter(0) ?? "";
    const x = begin(res, req, { timeline: true });
    if (!x) return;
    run(x, async () => {
      await existing(name, key, "admin");
      if (!(await stores.names.remove(name))) throw timelineNotFound(name);
      await stores.readers.forget(name);
      send(x, 204, ContentType.None, null);
    });
  });

  routes.put("/v1/timelines/:name/readers/:reader", "consume", (res, req, key) => {
    const ct = req.getHeader("content-type");
    const len = req.getHeader("content-length");
    const name = req.getParameter(0) ?? "";
    const reader = req.getParameter(1) ?? "";
    const x = begin(res, req, { timeline: true, reader: true });
    if (!x) return;
    withBody(x, ct, len, "reader position body", async (body) => {
      const { cursor } = parseBody(putReaderBody, body, "invalid_body");
      // Looked up once the body is in: the timeline must be the one the cursor is checked against.
      const t = await existing(name, key, "consume");
      stores.signer.decode(cursor, t.streams);
      const r = await stores.readers.put(t, reader, cursor);
      send(x, r.created ? 201 : 200, ContentType.Json, JSON.stringify(r.position));
    });
  });

  routes.get("/v1/timelines/:name/readers/:reader", "consume", (res, req, key) => {
    const name = req.getParameter(0) ?? "";
    const reader = req.getParameter(1) ?? "";
    const x = begin(res, req, { timeline: true, reader: true });
    if (!x) return;
    run(x, async () => {
      const p = await stores.readers.get(await existing(name, key, "consume"), reader);
      if (!p) throw readerNotFound(name, reader);
      send(x, 200, ContentType.Json, JSON.stringify(p));
    });
  });

  // Static segments: uWS matches them before a parameter, and "_" cannot start a timeline name anyway.
  routes.post("/v1/timelines/_secret/rotate", "admin", (res, req, key) => {
    const ct = req.getHeader("content-type");
    const len = req.getHeader("content-length");
    const x = begin(res, req, {});
    if (!x) return;
    // The secret signs every timeline's cursors: not for a key limited to some streams.
    if (key && key.prefix !== "") {
      return sendError(x, new ApiError(403, "forbidden", "rotating the cursor secret needs an admin key without a prefix", { prefix: key.prefix }));
    }
    withBody(x, ct, len, "rotate body", async (body) => {
      parseBody(rotateBody, body, "invalid_body");
      send(x, 200, ContentType.Json, JSON.stringify(await stores.rotate()));
    });
  });

  routes.any("/v1/timelines", "key", methodNotAllowed("GET"));
  routes.any("/v1/timelines/_secret/rotate", "key", methodNotAllowed("POST"));
  routes.any("/v1/timelines/:name", "key", methodNotAllowed("GET, PUT, DELETE"));
  routes.any("/v1/timelines/:name/readers/:reader", "key", methodNotAllowed("GET, PUT"));

  return {
    get inFlight() {
      return inFlight;
    },
  };
}

/**
 * Every stream of the set exists: one GetStream per stream, to its shard.
 * The first one missing (in set order) is the shard's 404 stream_not_found
 * naming it; a full shard is 429.
 */
async function streamsExist(pool: ShardPool, streams: readonly string[]): Promise<void> {
  const answers = await Promise.all(
    streams.map(
      (stream) =>
        new Promise<{ stream: string; status: number; json: unknown }>((resolve, reject) => {
          const ok = pool.send(pool.shardFor(stream), Op.GetStream, { stream }, null, (r) => resolve({ stream, status: r.status, json: responseJson(r) }));
          if (!ok) reject(new ApiError(429, "shard_busy", "a shard owning one of the timeline's streams is at capacity; retry later", { stream }));
        }),
    ),
  );
  const failed = answers.find((a) => a.status !== 200);
  if (failed) throw ApiError.fromBody(failed.status, failed.json);
}
