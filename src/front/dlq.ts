// Dead-letter redrive: POST /v1/streams/:id/dlq/redrive reads replay
// pages of `{id}.dlq` and republishes its dead letters (src/front/consume/
// progress.ts writes them) to `{id}`, one publish each, in dlq order. Each
// carries the idempotency key `redrive:<dlq seq>`, so a repeat within the
// stream's dedup window is a duplicate, not a second copy. In cluster mode
// the stream's owner redrives (another node answers 307 to it): the dlq
// hashes with its stream, so both are in one shard and under one lease, and
// the owner's replay of the dlq reads the archive below its copy.
import { z } from "zod";
import type { Config } from "../config.js";
import { ApiError, asApiError } from "../errors.js";
import { ContentType, Op, type RequestMeta, type Response, responseJson } from "../shard/protocol.js";
import { checkStreamId } from "../stream-id.js";
import { checkQuery, jsonBody, parseBody } from "../validate.js";
import { checkStreams, type GuardedApp, sendRefusal } from "./auth.js";
import { CT_JSON, contentTypeOf, type Exchange, exchange, methodNotAllowed, send, sendError } from "./http.js";
import type { ShardPool } from "./shards.js";
import type { ClusterRuntime } from "./cluster-runtime.js";
import { routeInCluster } from "./cluster.js";

export interface RedriveDeps {
  config: Config;
  pool: ShardPool;
  /** The 503 to answer while the server is not ready or is draining, else null. */
  unavailable: () => ApiError | null;
  /** Reads a request body within the front's limits (app.ts). */
  body: (x: Exchange, contentLength: string, done: (b: Buffer) => void) => void;
  /** Cluster mode: the node's place in the cluster (null outside it, and before it joined). */
  cluster: () => ClusterRuntime | null;
}

const NO_PARAMS: ReadonlySet<string> = new Set();
const dlqSeq = z.number({ invalid_type_error: "must be a dlq seq" }).int("must be an integer").min(1, "must be at least 1");
export const redriveBody = z
  .object({ from: dlqSeq.optional(), to: dlqSeq.optional(), group: z.string({ invalid_type_error: "must be a group name" }).min(1).optional() })
  .strict()
  .refine((b) => b.from === undefined || b.to === undefined || b.to >= b.from, { message: '"to" is below "from"', path: ["to"] });
type RedriveBody = z.infer<typeof redriveBody>;

/** What a call did; `next` is the dlq seq to continue from (null: the range is done). */
interface Outcome {
  moved: number;
  duplicates: number;
  skipped: number;
  from: number;
  to: number;
  next: number | null;
}

/** A dlq event as the replay page renders it; only dead letters of `stream` are redriven. */
interface Letter {
  seq: number;
  type?: unknown;
  payload?: { stream?: unknown; group?: unknown; event?: Record<string, unknown> };
}

/**
 * The original event to publish again: its type, key, payload and
 * producer_ts. Not its producer_id and producer_seq: on a stream with
 * producer_ordering a producer_seq already appended is a duplicate, so the
 * redriven event would be dropped; nor its idempotency_key, which the
 * stream has already seen.
 */
function republished(letter: Letter): Record<string, unknown> {
  const e = letter.payload?.event ?? {};
  const out: Record<string, unknown> = { type: e.type, idempotency_key: `redrive:${letter.seq}` };
  for (const field of ["key", "payload", "payload_base64", "producer_ts"]) if (field in e) out[field] = e[field];
  return out;
}

const isLetterOf = (letter: Letter, stream: string) =>
  letter.type === "dead_letter" && letter.payload?.stream === stream && typeof letter.payload.event === "object" && letter.payload.event !== null;

/** Sends one request and hands over its status and JSON (the response's views end with the callback). */
function ask<O extends Op>(
  pool: ShardPool,
  stream: string,
  op: O,
  meta: RequestMeta<O>,
  body: Uint8Array | null,
  done: (status: number, json: unknown) => void,
): boolean {
  return pool.send(pool.shardFor(stream), op, meta, body, (r: Response) => done(r.status, responseJson(r)));
}

const shardBusy = (stream: string, extra: Record<string, unknown> = {}) =>
  new ApiError(429, "shard_busy", "the shard owning this stream is at capacity; retry later (a repeated redrive is a duplicate, not a copy)", {
    stream,
    ...extra,
  });

/** Registers the redrive route and its 405. */
export function dlqRoutes(routes: GuardedApp, deps: RedriveDeps): void {
  const { pool } = deps;

  /** Publishes the letters one by one, in order, then calls `done` (an error is answered here, with the progress). */
  const republish = (x: Exchange, stream: string, letters: Letter[], group: string | undefined, outcome: Outcome, done: () => void) => {
    let i = 0;
    const step = () => {
      if (x.aborted) return; // nothing more to tell anyone; a repeat picks up where this stopped
      while (i < letters.length && (!isLetterOf(letters[i], stream) || (group !== undefined && letters[i].payload?.group !== group))) {
        outcome.skipped++;
        i++;
      }
      if (i === letters.length) return done();
      const letter = letters[i];
      // What is done so far rides on an error, with where to continue.
      const progress = { moved: outcome.moved, duplicates: outcome.duplicates, skipped: outcome.skipped, next: letter.seq };
      const down = deps.unavailable();
      if (down) return sendError(x, new ApiError(down.status, down.code, down.message, progress));
      const body = Buffer.from(JSON.stringify({ events: [republished(letter)] }));
      const ok = ask(pool, stream, Op.Publish, { stream, ct: ContentType.Json }, body, (status, json) => {
        if (status !== 200) {
          const e = ApiError.fromBody(status, json);
          return sendError(x, new ApiError(e.status, e.code, e.message, progress));
        }
        if ((json as { duplicates: unknown[] }).duplicates.length > 0) outcome.duplicates++;
        else outcome.moved++;
        i++;
        step();
      });
      if (!ok) sendError(x, shardBusy(stream, progress));
    };
    step();
  };

  /**
   * Reads the dlq in the asked range, replay page by replay page, and
   * redrives each, up to redrive_letters_max letters a call; no dlq stream
   * is nothing to redrive.
   */
  const redrive = (x: Exchange, stream: string, b: RedriveBody) => {
    const dlq = `${stream}.dlq`;
    const max = deps.config.redrive_letters_max;
    const outcome: Outcome = { moved: 0, duplicates: 0, skipped: 0, from: b.from ?? 1, to: (b.from ?? 1) - 1, next: null };
    let read = 0;
    const page = (from: number | "earliest") => {
      const limit = Math.min(max - read, deps.config.replay_page_events_max);
      const query = `from=${from}&limit=${limit}${b.to === undefined ? "" : `&to=${b.to}`}`;
      const ok = ask(pool, dlq, Op.Replay, { stream: dlq, query, accept: ContentType.Json }, null, (status, json) => {
        if (status === 404 && read === 0) return send(x, 200, ContentType.Json, JSON.stringify(outcome));
        if (status !== 200) return sendError(x, ApiError.fromBody(status, json));
        const p = json as { events: Letter[]; next: number; head_seq: number; first_seq: number };
        if (read === 0) outcome.from = b.from ?? p.first_seq;
        read += p.events.length;
        outcome.to = p.next - 1;
        const more = p.next <= Math.min(b.to ?? Number.MAX_SAFE_INTEGER, p.head_seq);
        outcome.next = more ? p.next : null;
        republish(x, stream, p.events, b.group, outcome, () => {
          if (more && read < max && p.events.length > 0) page(p.next);
          else send(x, 200, ContentType.Json, JSON.stringify(outcome));
        });
      });
      if (!ok) sendError(x, shardBusy(dlq, { moved: outcome.moved, duplicates: outcome.duplicates, skipped: outcome.skipped, next: from }));
    };
    page(b.from ?? "earliest");
  };

  routes.post("/v1/streams/:id/dlq/redrive", "publish", (res, req, key) => {
    const x = exchange(res);
    const ct = req.getHeader("content-type");
    const len = req.getHeader("content-length");
    const stream = req.getParameter(0) ?? "";
    try {
      checkStreamId(stream);
      checkQuery(req.getQuery() ?? "", NO_PARAMS);
      const down = deps.unavailable();
      if (down) throw down;
    } catch (err) {
      return sendError(x, asApiError(err));
    }
    // Publish on the stream (the route's own check), and reading its dead letters.
    const refused = checkStreams(key, "consume", [`${stream}.dlq`]);
    if (refused) return sendRefusal(x, refused);
    const rt = deps.cluster();
    if (rt && !routeInCluster(x, rt, stream, req.getUrl(), req.getQuery() ?? "")) return;
    if (contentTypeOf(ct) !== ContentType.Json) return sendError(x, new ApiError(415, "unsupported_media_type", `redrive body must be ${CT_JSON}`));
    deps.body(x, len, (raw) => {
      let b: RedriveBody;
      try {
        b = parseBody(redriveBody, jsonBody(raw), "invalid_body");
      } catch (err) {
        return sendError(x, asApiError(err));
      }
      // The stream must exist: a publish would create it.
      const ok = ask(pool, stream, Op.GetStream, { stream }, null, (status, json) =>
        status === 200 ? redrive(x, stream, b) : sendError(x, ApiError.fromBody(status, json)),
      );
      if (!ok) sendError(x, shardBusy(stream));
    });
  });

  routes.any("/v1/streams/:id/dlq/redrive", "key", methodNotAllowed("POST"));
}
