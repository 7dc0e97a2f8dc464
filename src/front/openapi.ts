// The OpenAPI 3.1 document of the HTTP API, served at /openapi.json and
// written to docs/openapi.json (npm run docs:openapi). Request bodies come
// from the zod schemas the routes validate with, and query parameters from
// the sets the routes accept (query-params.ts), so the document cannot drift
// from what a route takes; responses follow /work/shared/API.md.
import { extendZodWithOpenApi, OpenAPIRegistry, OpenApiGeneratorV31, type RouteConfig } from "@asteasolutions/zod-to-openapi";
import { z } from "zod";
import { streamConfigPatch } from "../shard/stream-config.js";
import { redriveBody } from "./dlq.js";
import { CONSUME_PARAMS, GROUP_PARAM, NO_PARAMS, PUBLISH_PARAMS, REPLAY_PARAMS, TIMELINE_AD_HOC_PARAMS, TIMELINE_NAMED_PARAMS } from "./query-params.js";
import { putReaderBody, putTimelineBody, rotateBody } from "./timeline-admin.js";

// The generator reads parameters through the .openapi() method this adds to zod.
extendZodWithOpenApi(z);

const FLATBUFFERS = "application/x-flatbuffers";
const WIRE_NOTE = "The binary form is a FlatBuffers table, schema in schemas/ and described in docs/wire.md.";

/** What every error answer carries (src/errors.ts): a code, a sentence, and fields named per error. */
const errorBody = z.object({ error: z.object({ code: z.string(), message: z.string() }).passthrough() });
const anyObject = z.object({}).passthrough();
const event = z
  .object({ seq: z.number().int(), stream: z.string(), type: z.string(), ingest_ts: z.number().int(), payload: z.unknown().optional() })
  .passthrough();
const checkpointBody = z.object({ group: z.string().min(1), seq: z.number().int().min(0) }).strict();
const outgoingEvent = z.object({ type: z.string() }).passthrough();
const publishBody = z.object({ events: z.array(outgoingEvent) }).strict();

/** How each query parameter reads; a route documents exactly the names its set holds. */
const QUERY_SCHEMAS: Record<string, z.ZodTypeAny> = {
  group: z.string().min(1),
  from: z.union([z.string().regex(/^\d+$/), z.enum(["earliest", "latest"])]),
  to: z.string().regex(/^\d+$/),
  limit: z.string().regex(/^\d+$/),
  from_time: z.string().regex(/^\d+$/),
  expected_head_seq: z.string().regex(/^\d+$/),
  cursor: z.string(),
  direction: z.enum(["forward", "backward"]),
  wait_ms: z.string().regex(/^\d+$/),
  streams: z.string(),
  format: z.enum(["json", "binary"]),
  window: z.string().regex(/^\d+$/),
  max_attempts: z.string().regex(/^\d+$/),
  token: z.string(),
};

function query(names: ReadonlySet<string>): z.AnyZodObject {
  const shape: Record<string, z.ZodTypeAny> = {};
  for (const n of names) shape[n] = (QUERY_SCHEMAS[n] as z.ZodTypeAny).optional();
  return z.object(shape);
}

const json = (schema: z.ZodTypeAny, description: string) => ({ description, content: { "application/json": { schema } } });
const jsonOrBinary = (schema: z.ZodTypeAny, description: string) => ({
  description: `${description} ${WIRE_NOTE}`,
  content: { "application/json": { schema }, [FLATBUFFERS]: { schema: { type: "string" as const, format: "binary" } } },
});

/** The errors any route can answer, besides its own. */
const COMMON_ERRORS: Record<number, string> = {
  400: "Bad input (unknown query parameter, invalid value or body).",
  401: "No key, or an unknown key, on a server with API keys.",
  403: "The key lacks the scope or the stream prefix.",
  404: "Unknown stream, group or timeline.",
  405: "Method not allowed on this path (Allow lists the methods).",
  413: "Body above the server's request_body_bytes_max.",
  415: "Content type the route does not read.",
  429: "Backpressure or a key's request rate; Retry-After says when to come back.",
  503: "Not ready, shutting down, or disk full.",
};

function errors(extra: Record<number, string> = {}): RouteConfig["responses"] {
  const out: RouteConfig["responses"] = {};
  for (const [status, description] of Object.entries({ ...COMMON_ERRORS, ...extra })) out[status] = json(errorBody, description);
  return out;
}

type Method = RouteConfig["method"];
interface Route {
  method: Method;
  path: string;
  summary: string;
  params?: ReadonlySet<string>;
  body?: RouteConfig["request"];
  ok: RouteConfig["responses"];
  extraErrors?: Record<number, string>;
  open?: boolean;
}

const id = z.object({ id: z.string() });
const name = z.object({ name: z.string() });

const ROUTES: Route[] = [
  { method: "get", path: "/healthz", summary: "Liveness", ok: { 200: json(z.object({ status: z.literal("ok") }), "Alive.") }, open: true },
  { method: "get", path: "/readyz", summary: "Readiness", ok: { 200: json(z.object({ status: z.literal("ready") }), "Ready.") }, open: true },
  {
    method: "get",
    path: "/metrics",
    summary: "Prometheus metrics",
    ok: { 200: { description: "Prometheus text exposition format.", content: { "text/plain": { schema: z.string() } } } },
    open: true,
  },
  { method: "get", path: "/openapi.json", summary: "This document", ok: { 200: json(anyObject, "OpenAPI 3.1.") }, open: true },
  {
    method: "get",
    path: "/console",
    summary: "The web console (docs/operations.md, Console); it reads this API with the key typed into it",
    ok: { 200: { description: "The console's page.", content: { "text/html": { schema: z.string() } } } },
    open: true,
  },
  {
    method: "get",
    path: "/console/{file}",
    summary: "A file of the web console (its script, styles, the uPlot chart library)",
    body: { params: z.object({ file: z.string() }) },
    ok: {
      200: { description: "The file (JavaScript, CSS or HTML).", content: { "text/javascript": { schema: z.string() }, "text/css": { schema: z.string() } } },
    },
    open: true,
  },
  { method: "get", path: "/v1/streams", summary: "List streams", ok: { 200: json(z.object({ streams: z.array(anyObject) }), "Streams the key may see.") } },
  {
    method: "put",
    path: "/v1/streams/{id}",
    summary: "Create or configure a stream",
    body: { params: id, body: { content: { "application/json": { schema: streamConfigPatch } } } },
    ok: { 200: json(anyObject, "Updated."), 201: json(anyObject, "Created.") },
  },
  { method: "get", path: "/v1/streams/{id}", summary: "Stream info", body: { params: id }, ok: { 200: json(anyObject, "Head, first seq, size and config.") } },
  { method: "delete", path: "/v1/streams/{id}", summary: "Delete a stream", body: { params: id }, ok: { 204: { description: "Deleted." } } },
  {
    method: "post",
    path: "/v1/streams/{id}/events",
    summary: "Publish a batch",
    params: PUBLISH_PARAMS,
    body: { params: id, body: jsonOrBinary(publishBody, "A batch of events.") },
    ok: {
      200: json(z.object({ stream: z.string(), first_seq: z.number().int(), last_seq: z.number().int(), count: z.number().int() }).passthrough(), "Appended."),
    },
    extraErrors: { 409: "expected_head_seq did not match the head." },
  },
  {
    method: "get",
    path: "/v1/streams/{id}/events",
    summary: "Replay a page",
    params: REPLAY_PARAMS,
    body: { params: id },
    ok: { 200: jsonOrBinary(z.object({ events: z.array(event), next: z.number().int() }).passthrough(), "A page of events.") },
    extraErrors: { 410: "from is below first_seq (the error carries first_seq)." },
  },
  {
    method: "post",
    path: "/v1/streams/{id}/checkpoint",
    summary: "Set a group's checkpoint",
    body: { params: id, body: { content: { "application/json": { schema: checkpointBody } } } },
    ok: { 200: json(checkpointBody, "Stored.") },
  },
  {
    method: "get",
    path: "/v1/streams/{id}/checkpoint",
    summary: "A group's checkpoint",
    params: GROUP_PARAM,
    body: { params: id },
    ok: { 200: json(anyObject, "The checkpoint.") },
  },
  {
    method: "get",
    path: "/v1/streams/{id}/lag",
    summary: "A group's lag",
    params: GROUP_PARAM,
    body: { params: id },
    ok: { 200: json(anyObject, "Lag in events.") },
  },
  {
    method: "get",
    path: "/v1/streams/{id}/groups",
    summary: "Groups with checkpoint, lag and members",
    body: { params: id },
    ok: { 200: json(z.object({ groups: z.array(anyObject) }).passthrough(), "Groups.") },
  },
  {
    method: "get",
    path: "/v1/streams/{id}/consume",
    summary: "Consume over WebSocket (docs/asyncapi.yaml)",
    params: CONSUME_PARAMS,
    body: { params: id },
    ok: { 101: { description: "Switching to the WebSocket protocol of docs/asyncapi.yaml." } },
    extraErrors: { 426: "A plain GET: this is a WebSocket endpoint." },
  },
  {
    method: "post",
    path: "/v1/streams/{id}/dlq/redrive",
    summary: "Republish dead letters",
    body: { params: id, body: { content: { "application/json": { schema: redriveBody } } } },
    ok: { 200: json(anyObject, "Redriven.") },
  },
  {
    method: "get",
    path: "/v1/timelines",
    summary: "Ad-hoc timeline page, or the named timelines",
    params: TIMELINE_AD_HOC_PARAMS,
    ok: { 200: json(anyObject, "A page (with streams) or the list of timelines.") },
  },
  {
    method: "put",
    path: "/v1/timelines/{name}",
    summary: "Create or replace a named timeline",
    body: { params: name, body: { content: { "application/json": { schema: putTimelineBody } } } },
    ok: { 200: json(anyObject, "Updated."), 201: json(anyObject, "Created.") },
  },
  { method: "get", path: "/v1/timelines/{name}", summary: "A named timeline", body: { params: name }, ok: { 200: json(anyObject, "The timeline.") } },
  { method: "delete", path: "/v1/timelines/{name}", summary: "Delete a named timeline", body: { params: name }, ok: { 204: { description: "Deleted." } } },
  {
    method: "get",
    path: "/v1/timelines/{name}/events",
    summary: "A named timeline's page",
    params: TIMELINE_NAMED_PARAMS,
    body: { params: name },
    ok: { 200: json(z.object({ events: z.array(event) }).passthrough(), "A page.") },
  },
  {
    method: "put",
    path: "/v1/timelines/{name}/readers/{reader}",
    summary: "Store a reader's cursor",
    body: { params: z.object({ name: z.string(), reader: z.string() }), body: { content: { "application/json": { schema: putReaderBody } } } },
    ok: { 200: json(anyObject, "Stored.") },
  },
  {
    method: "get",
    path: "/v1/timelines/{name}/readers/{reader}",
    summary: "A reader's cursor",
    body: { params: z.object({ name: z.string(), reader: z.string() }) },
    ok: { 200: json(anyObject, "The cursor.") },
  },
  {
    method: "post",
    path: "/v1/timelines/_secret/rotate",
    summary: "Rotate the cursor signing secret",
    body: { body: { content: { "application/json": { schema: rotateBody } } } },
    ok: { 200: json(anyObject, "Rotated.") },
  },
];

/** The document's paths in the server's own pattern form (":id"), for the route-coverage test. */
export const DOCUMENTED_ROUTES = ROUTES.map((r) => ({ method: r.method, pattern: r.path.replace(/\{(\w+)\}/g, ":$1") }));

let built: string | null = null;

/** The document as JSON text; built once (the routes do not change while a server runs). */
export function openApiJson(): string {
  if (built !== null) return built;
  const registry = new OpenAPIRegistry();
  registry.registerComponent("securitySchemes", "bearer", { type: "http", scheme: "bearer" });
  for (const r of ROUTES) {
    const request = { ...r.body, ...(r.params && r.params !== NO_PARAMS ? { query: query(r.params) } : {}) };
    registry.registerPath({
      method: r.method,
      path: r.path,
      summary: r.summary,
      request,
      responses: { ...r.ok, ...errors(r.extraErrors) },
      ...(r.open ? { security: [] } : {}),
    });
  }
  const doc = new OpenApiGeneratorV31(registry.definitions).generateDocument({
    openapi: "3.1.0",
    info: { title: "Ticker", version: "1", description: 'Durable event streams. Errors: {"error": {"code", "message", ...}}.' },
    security: [{ bearer: [] }],
  });
  built = `${JSON.stringify(doc, null, 2)}\n`;
  return built;
}
