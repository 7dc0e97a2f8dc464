// HTTP answers on uWS: every response is written corked, once, and never
// after the client went away.
import type uWS from "uWebSockets.js";
import { ApiError, STATUS_TEXT } from "../errors.js";
import { ContentType } from "../shard/protocol.js";
import { logger } from "../logger.js";
import { counts, type MeteredRoute, noteResponse } from "./front-metrics.js";

export const CT_JSON = "application/json";
export const CT_FLATBUFFERS = "application/x-flatbuffers";
/** Seconds a client should wait after a 429 from a full shard ring. */
export const RETRY_AFTER_S = "1";

export interface Exchange {
  res: uWS.HttpResponse;
  aborted: boolean;
  done: boolean;
  /** Frees what the request holds if the client goes away first. */
  onAbort?: () => void;
  /** A HEAD request (it reaches only the 404 and 405 answers): headers without the body (RFC 9110, 9.3.2). */
  head?: boolean;
  /** Set on the routes with metrics of their own (publish outcomes, replay duration). */
  route?: MeteredRoute;
  /** performance.now() when the request arrived. */
  startedMs: number;
}

export function contentTypeOf(header: string): ContentType | null {
  const base = header.split(";")[0].trim().toLowerCase();
  if (base === "" || base === CT_JSON) return ContentType.Json;
  if (base === CT_FLATBUFFERS) return ContentType.FlatBuffers;
  return null;
}

export function send(x: Exchange, status: number, ct: ContentType, body: Uint8Array | string | null, extraHeaders?: Record<string, string>): void {
  if (x.aborted || x.done) return;
  markDone(x);
  noteResponse(x.route, x.startedMs, status, body);
  if (accessLogOn) logAccess(x.res, status, body === null ? 0 : typeof body === "string" ? Buffer.byteLength(body) : body.byteLength);
  x.res.cork(() => {
    x.res.writeStatus(STATUS_TEXT[status] ?? String(status));
    if (ct !== ContentType.None) x.res.writeHeader("content-type", ct === ContentType.FlatBuffers ? CT_FLATBUFFERS : CT_JSON);
    if (extraHeaders) for (const k in extraHeaders) x.res.writeHeader(k, extraHeaders[k]);
    if (x.head) {
      // The length is written by hand: endWithoutBody(length) leaves this uWS build's response open.
      x.res.writeHeader("content-length", String(body === null ? 0 : typeof body === "string" ? Buffer.byteLength(body) : body.byteLength));
      x.res.endWithoutBody();
    } else x.res.end(body ?? undefined);
  });
}

export function sendError(x: Exchange, e: ApiError, headers?: Record<string, string>): void {
  // A 503 passes too (a node starting, stopping, or a cluster shard between owners): both say when to come back.
  send(x, e.status, ContentType.Json, e.body(), e.status === 429 || e.status === 503 ? { "retry-after": RETRY_AFTER_S, ...headers } : headers);
}

/** Pass `req` where a HEAD may arrive (the fallback answers): its answer then has no body. */
export function exchange(res: uWS.HttpResponse, req?: uWS.HttpRequest): Exchange {
  const x: Exchange = { res, aborted: false, done: false, head: req?.getMethod() === "head", startedMs: performance.now() };
  counts.inFlight++;
  res.onAborted(() => {
    if (!x.done) counts.inFlight--;
    x.aborted = true;
    x.onAbort?.();
  });
  return x;
}

/** The request is answered (or upgraded): nothing more is written for it. */
export function markDone(x: Exchange): void {
  if (!x.done && !x.aborted) counts.inFlight--;
  x.done = true;
}

// ---- the access log (config access_log): off, it costs one boolean test per answer.

interface AccessEntry {
  method: string;
  /** Without the query: a WebSocket's `?token=` must not reach the log. */
  path: string;
  startMs: number;
}

let accessLogOn = false;
const accessEntries = new WeakMap<uWS.HttpResponse, AccessEntry>();

export function enableAccessLog(): void {
  accessLogOn = true;
}

/** Called as a request arrives (its method and path are readable only then). */
export function noteRequest(res: uWS.HttpResponse, req: uWS.HttpRequest): void {
  if (accessLogOn) accessEntries.set(res, { method: req.getMethod().toUpperCase(), path: req.getUrl(), startMs: performance.now() });
}

/** The access line of `res`'s request, once its answer (or a WebSocket upgrade, status 101) is written. */
export function logAccess(res: uWS.HttpResponse, status: number, bytes: number): void {
  const e = accessEntries.get(res);
  if (!e) return;
  accessEntries.delete(res);
  const ms = Math.round((performance.now() - e.startMs) * 1000) / 1000;
  logger().info({ kind: "access", method: e.method, path: e.path, status, bytes, ms }, `${e.method} ${e.path} ${status} ${ms} ms`);
}

/** The 405 of a route's other methods, naming the ones it takes (`allowed`: "GET, PUT"), one rule on every route. */
export const methodNotAllowed = (allowed: string) => (res: uWS.HttpResponse, req: uWS.HttpRequest) => {
  const method = req.getMethod().toUpperCase();
  sendError(exchange(res, req), new ApiError(405, "method_not_allowed", `${method} is not allowed here; allowed: ${allowed}`, { allow: allowed }), {
    allow: allowed,
  });
};
