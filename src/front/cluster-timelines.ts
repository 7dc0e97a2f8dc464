// Timeline pages in cluster mode (docs/CLUSTER.md): a page's streams live on
// several nodes, and the node asked reads each owner's part the way it reads
// its own shards' parts. Another owner is asked over HTTP, at
// POST /v1/cluster/timeline-read, with the same TimelineRead a local shard
// gets (the page's set indexes, boundaries, limit, clock and deadline); it
// hands the read to its own shards and sends back their answers as they
// came, each a shard page (src/timeline/shard-page.ts). So the merge, the
// horizon and the cursors of timeline-page.ts are one rule for local and
// remote parts. A part that does not come back by the page's deadline
// (the owner slow, gone, or its shard just moved) leaves its streams
// `partial`, as a slow local shard does.
import { z } from "zod";
import type { Config } from "../config.js";
import { ApiError, asApiError } from "../errors.js";
import { ContentType, Op, TIMELINE_READ_EXPIRED, type RequestMeta, type Response } from "../shard/protocol.js";
import { checkStreamId } from "../stream-id.js";
import { checkQuery, jsonBody, parseBody } from "../validate.js";
import { checkStreams, type GuardedApp, sendRefusal } from "./auth.js";
import type { ClusterRuntime } from "./cluster-runtime.js";
import { CT_JSON, contentTypeOf, type Exchange, exchange, methodNotAllowed, send, sendError } from "./http.js";
import { NO_PARAMS } from "./query-params.js";
import type { ShardPool } from "./shards.js";

export const TIMELINE_READ_PATH = "/v1/cluster/timeline-read";
/** Each answer in the body: u32 status, u32 bytes, then the bytes. */
const ANSWER_HEAD_BYTES = 8;
/** Past the page's deadline, how long the asking node still waits for the bytes on the wire. */
const WIRE_MARGIN_MS = 50;

/** One shard's answer to a part, as it came. */
export interface PartAnswer {
  status: number;
  body: Buffer;
}

/** Where a stream's part of a page is read now. */
export type PartPlace = { kind: "local" } | { kind: "remote"; node: string; url: string } | { kind: "unowned" };

/** The asking side: where each stream is read, and the HTTP read of another owner's part. */
export class RemoteTimelineReads {
  /** `rt`: the node's place in the cluster, null until it has joined. */
  constructor(private readonly rt: () => ClusterRuntime | null) {}

  placeOf(stream: string): PartPlace {
    const r = this.rt()?.route(stream);
    if (!r) return { kind: "unowned" };
    if (r.kind === "local") return { kind: "local" };
    if (r.kind === "redirect") return { kind: "remote", node: r.owner, url: r.url };
    return { kind: "unowned" };
  }

  /** Reads a part at `url`; `done` gets the shards' answers, or null when none came (the part is then partial). */
  read(url: string, meta: RequestMeta<Op.TimelineRead>, authorization: string, done: (answers: PartAnswer[] | null) => void): void {
    const headers: Record<string, string> = { "content-type": CT_JSON };
    if (authorization !== "") headers.authorization = authorization;
    const timeoutMs = Math.max(1, meta.deadlineMs - Date.now()) + WIRE_MARGIN_MS;
    fetch(`${url}${TIMELINE_READ_PATH}`, { method: "POST", headers, body: JSON.stringify(meta), redirect: "error", signal: AbortSignal.timeout(timeoutMs) })
      .then(async (r) => (r.status === 200 ? readAnswers(Buffer.from(await r.arrayBuffer())) : null))
      .then(done, () => done(null));
  }
}

/**
 * The answers in a body, or null if it does not add up (a peer's bytes are
 * checked like any other input: each step takes a whole answer or stops).
 */
export function readAnswers(body: Buffer): PartAnswer[] | null {
  const out: PartAnswer[] = [];
  let at = 0;
  while (at < body.length) {
    if (at + ANSWER_HEAD_BYTES > body.length) return null;
    const status = body.readUInt32LE(at);
    const bytes = body.readUInt32LE(at + 4);
    at += ANSWER_HEAD_BYTES;
    if (bytes > body.length - at) return null;
    out.push({ status, body: body.subarray(at, at + bytes) });
    at += bytes;
  }
  return out;
}

/** The answers, framed for the wire. */
export function writeAnswers(answers: readonly PartAnswer[]): Buffer {
  const out = Buffer.allocUnsafe(answers.reduce((n, a) => n + ANSWER_HEAD_BYTES + a.body.length, 0));
  let at = 0;
  for (const a of answers) {
    out.writeUInt32LE(a.status, at);
    out.writeUInt32LE(a.body.length, at + 4);
    at += ANSWER_HEAD_BYTES + a.body.copy(out, at + ANSWER_HEAD_BYTES);
  }
  return out;
}

export interface TimelineReadDeps {
  config: Config;
  pool: ShardPool;
  cluster: () => ClusterRuntime | null;
  unavailable: () => ApiError | null;
  body: (x: Exchange, contentLength: string, done: (b: Buffer) => void) => void;
}

/**
 * The part of another node's page: its shape is TimelineReadMeta, bounded by
 * the same limits as a page asked of this node.
 */
const partBody = (config: Config) =>
  z
    .object({
      streams: z
        .array(z.object({ id: z.string(), index: z.number().int().min(0).max(config.timeline_streams_max), seq: z.number().int().min(0) }).strict())
        .min(1)
        .max(config.timeline_streams_max),
      backward: z.boolean(),
      limit: z.number().int().min(1).max(config.timeline_page_events_max),
      nowMs: z.number().int().min(0),
      deadlineMs: z.number().int().min(0),
    })
    .strict();

/** The answering side: POST /v1/cluster/timeline-read. */
export function clusterTimelineReadRoute(routes: GuardedApp, deps: TimelineReadDeps): void {
  const schema = partBody(deps.config);
  routes.post(TIMELINE_READ_PATH, "key", (res, req, key) => {
    const x = exchange(res);
    const len = req.getHeader("content-length");
    try {
      checkQuery(req.getQuery() ?? "", NO_PARAMS);
      const down = deps.unavailable();
      if (down) throw down;
      if (contentTypeOf(req.getHeader("content-type")) !== ContentType.Json)
        throw new ApiError(415, "unsupported_media_type", `a part read must be ${CT_JSON}`);
    } catch (err) {
      return sendError(x, asApiError(err));
    }
    deps.body(x, len, (raw) => {
      let meta: RequestMeta<Op.TimelineRead>;
      try {
        meta = parseBody(schema, jsonBody(raw), "invalid_body");
        for (const s of meta.streams) checkStreamId(s.id);
      } catch (err) {
        return sendError(x, asApiError(err));
      }
      const refused = checkStreams(
        key,
        "consume",
        meta.streams.map((s) => s.id),
      );
      if (refused) return sendRefusal(x, refused);
      const rt = deps.cluster();
      const moved = meta.streams.find((s) => rt === null || rt.route(s.id).kind !== "local");
      if (moved) return sendError(x, new ApiError(503, "shard_moving", `stream "${moved.id}" is not served by this node now; retry`));
      readHere(deps.pool, meta, (answers) => send(x, 200, ContentType.None, writeAnswers(answers), { "content-type": "application/octet-stream" }));
    });
  });
  routes.any(TIMELINE_READ_PATH, "key", methodNotAllowed("POST"));
}

/** Sends each local shard its streams of the part; a shard that cannot take it now answers as expired (nothing read). */
function readHere(pool: ShardPool, meta: RequestMeta<Op.TimelineRead>, done: (answers: PartAnswer[]) => void): void {
  const byShard = new Map<number, RequestMeta<Op.TimelineRead>["streams"]>();
  for (const s of meta.streams) {
    const shard = pool.shardFor(s.id);
    const list = byShard.get(shard) ?? [];
    list.push(s);
    byShard.set(shard, list);
  }
  const answers: PartAnswer[] = [];
  let waiting = byShard.size;
  const landed = (a: PartAnswer) => {
    answers.push(a);
    if (--waiting === 0) done(answers);
  };
  for (const [shard, streams] of byShard) {
    const sent = pool.send(shard, Op.TimelineRead, { ...meta, streams }, null, (r: Response) => landed({ status: r.status, body: Buffer.from(r.body) }));
    if (!sent) landed({ status: TIMELINE_READ_EXPIRED, body: Buffer.alloc(0) });
  }
}
