// The OpenAPI 3.1 document of the HTTP API, served at /openapi.json and
// written to docs/openapi.json (npm run docs:openapi). Request bodies come
// from the zod schemas the routes validate with, and query parameters from
// the sets the routes accept (query-params.ts), so the document cannot drift
// from what a route takes; response bodies and the one Error component are
// openapi-responses.ts, checked against real answers by
// test/integration/openapi-conformance.test.ts.
import { extendZodWithOpenApi, OpenAPIRegistry, OpenApiGeneratorV31, type RouteConfig } from "@asteasolutions/zod-to-openapi";
import { z } from "zod";
import { streamConfigPatch } from "../shard/stream-config.js";
import { redriveBody } from "./dlq.js";
import {
  checkpointSchema,
  errorResponses,
  groupsSchema,
  lagSchema,
  publishAnswerSchema,
  readerPositionSchema,
  redriveOutcomeSchema,
  replayPageSchema,
  snapshotPageSchema,
  rotationSchema,
  streamInfoSchema,
  timelineListSchema,
  timelinePageSchema,
  timelineSchema,
} from "./openapi-responses.js";
import {
  CONSUME_PARAMS,
  GROUP_PARAM,
  NO_PARAMS,
  PUBLISH_PARAMS,
  REPLAY_PARAMS,
  SNAPSHOT_PARAMS,
  TIMELINE_AD_HOC_PARAMS,
  TIMELINE_NAMED_PARAMS,
} from "./query-params.js";
import { putReaderBody, putTimelineBody, rotateBody } from "./timeline-admin.js";

// The generator reads parameters through the .openapi() method this adds to zod.
extendZodWithOpenApi(z);

const FLATBUFFERS = "application/x-flatbuffers";
const WIRE_NOTE = "The binary form is a FlatBuffers table, schema in schemas/ and described in docs/wire.md.";

const anyObject = z.object({}).passthrough();
// Hand-checked bodies (no zod schema on the server to register): the
// checkpoint body is read field by field in src/shard/groups.ts
// setCheckpoint, and a publish batch by the JSON batch scanner
// (src/wire/json-batch.ts), which frames events without building objects.
// Described here once; the integration suites check the server refuses what
// these refuse.
const checkpointBody = z.object({ group: z.string().min(1), seq: z.number().int().min(0) }).strict();
const outgoingEvent = z.object({ type: z.string() }).passthrough();
const publishBody = z.object({ events: z.array(outgoingEvent) }).strict();

/** A filter value list: non-empty values, each with at most a trailing "*". */
const FILTER_LIST = /^[^,*]+\*?(,[^,*]+\*?)*$/;

/** How each query parameter reads; a route documents exactly the names its set holds. */
const QUERY_SCHEMAS: Record<string, z.ZodTypeAny> = {
  group: z.string().min(1),
  from: z
    .union([z.string().regex(/^\d+$/), z.enum(["earliest", "latest", "snapshot"])])
    .describe("a seq, `earliest` or `latest`; `snapshot` on consume only (docs/consume.md)"),
  as_of_seq: z.string().regex(/^\d+$/),
  after_seq: z.string().regex(/^\d+$/),
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
  // Comma-separated exact values or prefixes ("trade*"); bounds: filter_values_max, filter_bytes_max.
  types: z.string().regex(FILTER_LIST),
  keys: z.string().regex(FILTER_LIST),
  max_rate: z.string().regex(/^\d+$/),
  conflate: z.enum(["key"]).describe("consume only: a consumer behind gets the newest event per key (docs/consume.md)"),
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

type Method = RouteConfig["method"];
interface Route {
  method: Method;
  path: string;
  summary: string;
  params?: ReadonlySet<string>;
  body?: RouteConfig["request"];
  ok: RouteConfig["responses"];
  /** The error statuses this route can answer (openapi-responses.ts describes each). */
  errors: readonly number[];
  /** Descriptions more precise than the shared one, per status. */
  notes?: Record<number, string>;
  open?: boolean;
}

const id = z.object({ id: z.string() });
const name = z.object({ name: z.string() });
const reader = z.object({ name: z.string(), reader: z.string() });
const jsonBodyOf = (schema: z.ZodTypeAny) => ({ content: { "application/json": { schema } } });

// The error statuses by kind of route. Every /v1 route is behind the key
// check (401, 403, and 429 for a key's requests_per_s), refuses unknown query
// parameters and bad ids (400), and answers 503 while not ready or draining.
const KEYED = [400, 401, 403, 405, 429, 503];

const clusterSchema = z
  .object({
    node_id: z.string(),
    advertise_url: z.string(),
    cluster_shards: z.number().int(),
    lease_ms: z.number().int(),
    serving: z.array(z.number().int()),
    nodes: z.array(z.object({ node_id: z.string(), url: z.string().nullable(), shards: z.number().int() }).strict()),
    shards: z.array(z.object({ shard: z.number().int(), owner: z.string().nullable(), epoch: z.number().int(), url: z.string().nullable() }).strict()),
  })
  .strict()
  .openapi("Cluster");
/** A route that reads a JSON body: too large (413) or another media type (415). */
const WITH_BODY = [...KEYED, 413, 415];

const ROUTES: Route[] = [
  {
    method: "get",
    path: "/healthz",
    summary: "Liveness",
    ok: { 200: json(z.object({ status: z.literal("ok") }).strict(), "Alive.") },
    errors: [400, 405],
    open: true,
  },
  {
    method: "get",
    path: "/readyz",
    summary: "Readiness",
    ok: { 200: json(z.object({ status: z.literal("ready") }).strict(), "Ready.") },
    errors: [400, 405, 503],
    open: true,
  },
  {
    method: "get",
    path: "/metrics",
    summary: "Prometheus metrics (docs/operations.md, Metrics); with API keys, an admin key without a prefix",
    ok: { 200: { description: "Prometheus text exposition format 0.0.4.", content: { "text/plain": { schema: z.string() } } } },
    errors: [400, 401, 403, 405, 429, 500],
  },
  {
    method: "get",
    path: "/v1/cluster",
    summary: "Cluster mode (docs/CLUSTER.md): this node, the nodes that own shards, and every cluster shard's owner and epoch; with API keys, an admin key",
    ok: { 200: json(clusterSchema, "The shard map as the lease table said last; `serving`: the shards this node serves now.") },
    errors: [400, 401, 403, 404, 405, 429, 503],
    notes: { 404: "A single node, not in cluster mode: it has no shard map." },
  },
  {
    method: "get",
    path: "/openapi.json",
    summary: "This document",
    ok: { 200: json(z.object({ openapi: z.literal("3.1.0"), info: anyObject, paths: anyObject }).passthrough(), "OpenAPI 3.1.") },
    errors: [400, 405],
    open: true,
  },
  {
    method: "get",
    path: "/console",
    summary: "The web console (docs/operations.md, Console); it reads this API with the key typed into it",
    ok: { 200: { description: "The console's page.", content: { "text/html": { schema: z.string() } } } },
    errors: [400, 405],
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
    errors: [400, 404, 405],
    open: true,
  },
  {
    method: "get",
    path: "/v1/streams",
    summary: "List streams",
    ok: {
      200: json(z.object({ streams: z.array(streamInfoSchema) }).strict(), "Streams the key may see, by id; in cluster mode, every node's (docs/CLUSTER.md)."),
    },
    errors: KEYED,
    notes: { 503: "Cluster mode: a shard has no live owner right now, or its owner did not list its streams (shard_unowned); retry." },
  },
  {
    method: "put",
    path: "/v1/streams/{id}",
    summary: "Create or configure a stream",
    body: { params: id, body: jsonBodyOf(streamConfigPatch) },
    ok: { 200: json(streamInfoSchema, "Updated."), 201: json(streamInfoSchema, "Created.") },
    errors: WITH_BODY,
  },
  {
    method: "get",
    path: "/v1/streams/{id}",
    summary: "Stream info",
    body: { params: id },
    ok: { 200: json(streamInfoSchema, "Head, first seq, size and config.") },
    errors: [...KEYED, 404],
  },
  {
    method: "delete",
    path: "/v1/streams/{id}",
    summary: "Delete a stream",
    body: { params: id },
    ok: { 204: { description: "Deleted." } },
    errors: [...KEYED, 404],
  },
  {
    method: "post",
    path: "/v1/streams/{id}/events",
    summary: "Publish a batch",
    params: PUBLISH_PARAMS,
    body: { params: id, body: jsonOrBinary(publishBody, "A batch of events.") },
    ok: { 200: json(publishAnswerSchema, "Appended (duplicates squeezed out, held events of an ordered stream listed).") },
    errors: [...WITH_BODY, 404, 409],
    notes: { 404: "Unknown stream, with auto_create_streams off.", 409: "expected_head_seq did not match the head (the error carries head_seq)." },
  },
  {
    method: "get",
    path: "/v1/streams/{id}/events",
    summary: "Replay a page",
    params: REPLAY_PARAMS,
    body: { params: id },
    ok: {
      200: jsonOrBinary(
        replayPageSchema,
        "A page of events. With types / keys, only matching ones, and next passes over the others; with max_rate, answered no sooner than min(limit, max_rate) / max_rate s after the request.",
      ),
    },
    errors: [...KEYED, 404, 410, 500],
  },
  {
    method: "get",
    path: "/v1/streams/{id}/snapshot",
    summary: "A page of the snapshot: the newest event of every key",
    params: SNAPSHOT_PARAMS,
    body: { params: id },
    ok: { 200: json(snapshotPageSchema, "Events ascending by seq, as of `as_of_seq`; pass `as_of_seq` and `next_after_seq` for the next page.") },
    errors: [...KEYED, 404, 409, 410, 500],
    notes: {
      409: "The stream holds more than snapshot_keys_max keys (`snapshot_keys_exceeded`).",
      500: "The log could not be read to its head for the key index, or a record of the page is damaged (`corrupt_record`).",
      410: "The snapshot named by `as_of_seq` is no longer held (`snapshot_expired`): take a new one.",
    },
  },
  {
    method: "post",
    path: "/v1/streams/{id}/checkpoint",
    summary: "Set a group's checkpoint",
    body: { params: id, body: jsonBodyOf(checkpointBody) },
    ok: { 200: json(checkpointSchema, "Stored.") },
    errors: [...WITH_BODY, 404],
  },
  {
    method: "get",
    path: "/v1/streams/{id}/checkpoint",
    summary: "A group's checkpoint",
    params: GROUP_PARAM,
    body: { params: id },
    ok: { 200: json(checkpointSchema, "The checkpoint.") },
    errors: [...KEYED, 404],
  },
  {
    method: "get",
    path: "/v1/streams/{id}/lag",
    summary: "A group's lag",
    params: GROUP_PARAM,
    body: { params: id },
    ok: { 200: json(lagSchema, "Lag in events and in time.") },
    errors: [...KEYED, 404],
  },
  {
    method: "get",
    path: "/v1/streams/{id}/groups",
    summary: "Groups with checkpoint, lag and members",
    body: { params: id },
    ok: { 200: json(groupsSchema, "Groups, by name.") },
    errors: [...KEYED, 404],
  },
  {
    method: "get",
    path: "/v1/streams/{id}/consume",
    summary: "Consume over WebSocket (docs/asyncapi.yaml)",
    params: CONSUME_PARAMS,
    body: { params: id },
    ok: { 101: { description: "Switching to the WebSocket protocol of docs/asyncapi.yaml." } },
    errors: [...KEYED, 426],
    notes: { 429: "consumers_max consumers are connected, or the key's rate; Retry-After says when to come back." },
  },
  {
    method: "post",
    path: "/v1/streams/{id}/dlq/redrive",
    summary: "Republish dead letters",
    body: { params: id, body: jsonBodyOf(redriveBody) },
    ok: { 200: json(redriveOutcomeSchema, "Redriven; next is where a repeat continues (null: done).") },
    errors: [...WITH_BODY, 404],
  },
  {
    method: "get",
    path: "/v1/timelines",
    summary: "Ad-hoc timeline page (with streams), or the named timelines",
    params: TIMELINE_AD_HOC_PARAMS,
    ok: { 200: json(z.union([timelinePageSchema, timelineListSchema]), "A page (with streams) or the list of timelines.") },
    errors: [...KEYED, 404, 500],
  },
  {
    method: "put",
    path: "/v1/timelines/{name}",
    summary: "Create or replace a named timeline",
    body: { params: name, body: jsonBodyOf(putTimelineBody) },
    ok: { 200: json(timelineSchema, "Updated."), 201: json(timelineSchema, "Created.") },
    errors: [...WITH_BODY, 404, 409],
    notes: { 404: "A stream of the set does not exist.", 409: "timelines_max timelines exist already." },
  },
  {
    method: "get",
    path: "/v1/timelines/{name}",
    summary: "A named timeline",
    body: { params: name },
    ok: { 200: json(timelineSchema, "The timeline.") },
    errors: [...KEYED, 404],
  },
  {
    method: "delete",
    path: "/v1/timelines/{name}",
    summary: "Delete a named timeline",
    body: { params: name },
    ok: { 204: { description: "Deleted." } },
    errors: [...KEYED, 404],
  },
  {
    method: "get",
    path: "/v1/timelines/{name}/events",
    summary: "A named timeline's page",
    params: TIMELINE_NAMED_PARAMS,
    body: { params: name },
    ok: { 200: json(timelinePageSchema, "A page.") },
    errors: [...KEYED, 404, 500],
  },
  {
    method: "put",
    path: "/v1/timelines/{name}/readers/{reader}",
    summary: "Store a reader's cursor",
    body: { params: reader, body: jsonBodyOf(putReaderBody) },
    ok: { 200: json(readerPositionSchema, "Stored."), 201: json(readerPositionSchema, "Stored, the reader's first.") },
    errors: [...WITH_BODY, 404, 409],
    notes: { 409: "timeline_readers_max readers have a position on the timeline already." },
  },
  {
    method: "get",
    path: "/v1/timelines/{name}/readers/{reader}",
    summary: "A reader's cursor",
    body: { params: reader },
    ok: { 200: json(readerPositionSchema, "The cursor.") },
    errors: [...KEYED, 404],
  },
  {
    method: "post",
    path: "/v1/timelines/_secret/rotate",
    summary: "Rotate the cursor signing secret",
    body: { body: jsonBodyOf(rotateBody) },
    ok: { 200: json(rotationSchema, "Rotated: the secret before verifies until previous_valid_until.") },
    errors: [...WITH_BODY, 409],
    notes: { 409: "The secret comes from the config (timeline_cursor_secret): rotate it there." },
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
      responses: { ...r.ok, ...errorResponses(r.errors, r.notes) },
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
