// What the routes answer, for the OpenAPI document (openapi.ts): the body of
// every success answer with its real fields, and one Error component every
// error answer refers to. The servers' answers are built by hand (JSON text
// written into buffers on the data plane, objects on the control plane), so
// these schemas are their one written description; the conformance test
// (test/integration/openapi-conformance.test.ts) checks real answers against
// them, so a field added or renamed without its schema fails there.
import { extendZodWithOpenApi, type RouteConfig } from "@asteasolutions/zod-to-openapi";
import { z } from "zod";
import { ERROR_CODES } from "../errors.js";
import { streamConfigPatch } from "../shard/stream-config.js";

// The generator reads component names through the .openapi() method this adds to zod.
extendZodWithOpenApi(z);

const int = () => z.number().int();
const seq = () => z.number().int().min(0);

/** src/errors.ts ApiError.toJSON: the code a client branches on, a sentence, and fields named per error. */
export const errorSchema = z
  .object({
    error: z
      .object({ code: z.enum(ERROR_CODES), message: z.string() })
      .passthrough()
      .openapi({ description: "Fields beyond code and message are named per error." }),
  })
  .strict()
  .openapi("Error");

/** An event as a replay page, a timeline page and a consumer render it (src/wire/event-codec.ts JsonRenderer.event). */
export const eventSchema = z
  .object({
    seq: seq(),
    stream: z.string(),
    type: z.string(),
    key: z.string().optional(),
    producer_id: z.string().optional(),
    producer_seq: int().optional(),
    producer_ts: int().optional(),
    ingest_ts: int(),
    idempotency_key: z.string().optional(),
    payload: z.unknown().optional(),
    payload_base64: z.string().optional(),
  })
  .strict()
  .openapi("Event");

/** src/shard/stream.ts Stream.info: the log's figures, the whole config, and the damage or ordered state when there is some. */
export const streamInfoSchema = streamConfigPatch
  .required()
  .extend({
    id: z.string(),
    head_seq: seq(),
    first_seq: seq(),
    events: seq(),
    bytes: seq(),
    created_at: int(),
    segments: seq(),
    held_events: seq().optional(),
    held_bytes: seq().optional(),
    producers: seq().optional(),
    corruptions: z.array(z.object({ segment: int(), position: int(), seq: int(), reason: z.string() }).strict()).optional(),
    damaged_files: z.array(z.string()).optional(),
  })
  .strict()
  .openapi("StreamInfo");

/** src/shard/publish.ts afterAppend. */
export const publishAnswerSchema = z
  .object({
    stream: z.string(),
    first_seq: seq(),
    last_seq: seq(),
    count: seq(),
    duplicates: z.array(z.object({ index: seq(), seq: seq().optional(), producer_seq: int().optional() }).strict()),
    held: z.array(z.object({ index: seq(), producer_seq: int() }).strict()).optional(),
  })
  .strict()
  .openapi("PublishAnswer");

/** src/wire/event-codec.ts renderJsonPage. */
export const replayPageSchema = z
  .object({ events: z.array(eventSchema), next: seq(), head_seq: seq(), first_seq: seq() })
  .strict()
  .openapi("ReplayPage");

/** src/shard/snapshot.ts read. */
export const snapshotPageSchema = z
  .object({
    stream: z.string(),
    as_of_seq: seq(),
    keys: seq(),
    events: z.array(eventSchema),
    next_after_seq: seq().nullable(),
    first_seq: seq(),
    head_seq: seq(),
  })
  .strict()
  .openapi("SnapshotPage");

/** src/shard/groups.ts: what POST stores and GET shows. */
export const checkpointSchema = z.object({ group: z.string(), seq: seq() }).strict().openapi("Checkpoint");

/** src/shard/groups.ts lagOf. */
export const lagSchema = z.object({ group: z.string(), head_seq: seq(), checkpoint_seq: seq(), lag: seq(), lag_ms: seq() }).strict().openapi("Lag");

/** src/front/consume/groups.ts MemberInfo. */
const memberSchema = z.object({ role: z.enum(["active", "standby"]), connected_at: int(), next_seq: seq().nullable() }).strict();

/** A group with a checkpoint has its lag; one only connected (app.ts, the groups route) has nulls there. */
export const groupsSchema = z
  .object({
    groups: z.array(
      z
        .object({
          group: z.string(),
          head_seq: seq(),
          checkpoint_seq: seq().nullable(),
          lag: seq().nullable(),
          lag_ms: seq().nullable(),
          members: z.array(memberSchema),
        })
        .strict(),
    ),
  })
  .strict()
  .openapi("Groups");

/** src/front/dlq.ts Outcome. */
export const redriveOutcomeSchema = z
  .object({ moved: seq(), duplicates: seq(), skipped: seq(), from: seq(), to: seq(), next: seq().nullable() })
  .strict()
  .openapi("RedriveOutcome");

/** src/front/timeline-admin.ts timelineJson. */
export const timelineSchema = z
  .object({ name: z.string(), streams: z.array(z.string()), created_at: int(), updated_at: int() })
  .strict()
  .openapi("Timeline");

/** src/front/timelines.ts pageBody. */
export const timelinePageSchema = z
  .object({ events: z.array(eventSchema), next_cursor: z.string(), prev_cursor: z.string(), has_gap: z.boolean(), partial: z.array(z.string()).optional() })
  .strict()
  .openapi("TimelinePage");

export const timelineListSchema = z
  .object({ timelines: z.array(timelineSchema) })
  .strict()
  .openapi("TimelineList");

/** src/timeline/readers.ts ReaderPosition. */
export const readerPositionSchema = z
  .object({ timeline: z.string(), reader: z.string(), cursor: z.string(), updated_at: int() })
  .strict()
  .openapi("ReaderPosition");

/** src/timeline/cursor.ts CursorSigner.rotate. */
export const rotationSchema = z
  .object({
    key_id: int(),
    previous_valid_until: int(),
    signs_from: int().optional().describe("cluster mode: when the new secret starts signing (every node verifies it before)"),
  })
  .strict()
  .openapi("Rotation");

/**
 * What each error status means. A status sits on an operation only if that
 * route can answer it (openapi.ts lists them per route); 405 sits on every
 * operation of a path, since any other method on the path answers it.
 */
const ERROR_STATUS: Record<number, string> = {
  400: "Bad input: an unknown or repeated query parameter, an invalid id, value or body (the error names it).",
  401: "No key, an unknown key or another scheme, on a server with API keys.",
  403: "The key lacks the route's scope, or its prefix does not cover the stream.",
  404: "Unknown stream, group, timeline or reader.",
  405: "Another method on this path (Allow lists the methods the path takes).",
  409: "Conflict (the error's code says which).",
  410: "from is below the stream's first_seq (the error carries first_seq).",
  413: "Body above request_bytes_max (or a batch above a limit).",
  415: "Content type the route does not read.",
  426: "A plain GET: this is a WebSocket endpoint.",
  429: "A full shard, the request buffer, consumers_max, or the key's rate; Retry-After says when to come back.",
  500: "A damaged record where the page would start (corrupt_record, with its seq); a page otherwise stops before one.",
  503: "Not ready (recovering streams), shutting down, or the disk is full.",
};

const header = (description: string) => ({ required: true, description, schema: { type: "string" as const } });
/** Headers an error answer always carries with that status. */
const ERROR_HEADERS: Record<number, Record<string, ReturnType<typeof header>>> = {
  401: { "WWW-Authenticate": header("Bearer") },
  405: { Allow: header("The methods this path takes, comma-separated.") },
  426: { Upgrade: header("websocket") },
  429: { "Retry-After": header("Whole seconds to wait before retrying.") },
};

/** The error answers of an operation: each refers to the one Error component. */
export function errorResponses(statuses: readonly number[], notes: Record<number, string> = {}): RouteConfig["responses"] {
  const out: RouteConfig["responses"] = {};
  for (const status of statuses) {
    const description = notes[status] ?? ERROR_STATUS[status];
    if (description === undefined) throw new Error(`openapi: no description for error status ${status}`);
    out[status] = { description, headers: ERROR_HEADERS[status], content: { "application/json": { schema: errorSchema } } };
  }
  return out;
}
