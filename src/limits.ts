// The size limits that follow from the config, derived in one place: the
// largest log frame, log page, ring message and consumer socket queue, each
// with the reason for its formula, and the relations between config keys the
// server refuses to start without (config.ts reports them, naming the key).
// The front derives them once and hands them to the shard workers; the log,
// the publisher, the readers and the consumer sockets take their bounds from
// here instead of computing them again.
//
// A leaf (the layer rule): it imports the config's type only. Two sizes of
// the formats below are restated here, and each end checks them against its
// owner at start: every shard that its frame bound is log/record.ts's frame
// of eventBodyBytesMax, the front and every shard that their rings carry
// ringMessageBytesMax.
import type { Config } from "./config.js";

/** log/record.ts: a frame is this header and its Event, padded to 8 bytes. */
const FRAME_HEADER_BYTES = 24;
/** ring/ring.ts: a message is this header and its payload, in a data area of a multiple of 8 bytes. */
const RING_MESSAGE_HEADER_BYTES = 8;
const align8 = (n: number) => (n + 7) & ~7;
const floor8 = (n: number) => n & ~7;

/** Strings an Event carries, each up to event_field_bytes_max: type, key, producer_id, idempotency_key. */
export const EVENT_STRING_FIELDS = 4;
/**
 * An Event's bytes besides its payload and strings: the FlatBuffers table,
 * vtable and scalars and the length, NUL and padding of each string and of
 * the payload (wire/event-layout.ts writes 111 at most); the rest is room for
 * a client's own FlatBuffers builder.
 */
export const EVENT_FIXED_BYTES_MAX = 256;
/** Bytes one payload byte may take in a rendered JSON event: 4/3 as base64, 1 as JSON text; 4 leaves room. */
export const RENDERED_PAYLOAD_BYTES_PER_BYTE = 4;
/** Bytes one string-field byte may take in JSON: a control character is written \u00XX. */
export const JSON_ESCAPED_BYTES_PER_BYTE = 6;
/** A rendered event's field names, quotes, stream id (128 characters) and numbers: about 330 bytes at most. */
export const RENDERED_EVENT_FIXED_BYTES_MAX = 1024;
/**
 * Room a ring message keeps beside its body: a request's header and metadata
 * (REQUEST_META_BYTES_MAX), an answer's header, a consumer message's head, an
 * EventBatch envelope with its stream id, a rendered event's field names and
 * numbers. Together they take about 2 KiB.
 */
export const RING_ENVELOPE_BYTES = 64 * 1024;
/** A request's metadata the front keeps room for beside the largest body: a publish's stream id (128 characters) and content type, as JSON. */
export const REQUEST_META_BYTES_MAX = 1024;
/**
 * A ring holds two of its largest message: a message never wraps around the
 * end of the data area (ring/ring.ts), so only half of it is sure to be free
 * in one piece.
 */
export const RING_LARGEST_MESSAGES = 2;
/**
 * The live path sends a batch (or a turn's batches, joined) as is up to this
 * many log pages; a consumer facing a larger one is served log pages instead.
 */
export const LIVE_MESSAGE_PAGES = 2;
/** Room past consumer_buffer_bytes_max on a consumer socket, in largest events: see socketBytesMax. */
export const SOCKET_SLACK_EVENTS = 8;
/**
 * A shard's answer to a timeline read (src/timeline/shard-page.ts): a head,
 * an entry per stream and one per event, beside the events' JSON.
 */
export const TIMELINE_PAGE_HEAD_BYTES = 32;
export const TIMELINE_STREAM_ENTRY_BYTES = 32;
export const TIMELINE_EVENT_ENTRY_BYTES = 24;
/**
 * A timeline read's request metadata per stream, as JSON: the id (128
 * characters), its index and a boundary seq of up to 16 digits, and the
 * punctuation around them (about 180 bytes).
 */
export const TIMELINE_READ_META_BYTES_PER_STREAM = 256;

/** Largest max_attempts: the bound of ?max_attempts= and of consume_max_attempts_default alike. */
export const CONSUME_ATTEMPTS_MAX = 1000;
/**
 * Largest timeline_streams_max: the bound of that key and of the streams a
 * cursor token can name (src/timeline/cursor.ts sizes its length check by it).
 */
export const TIMELINE_STREAMS_LIMIT = 1024;
/**
 * Shortest timeline_cursor_secret (and previous secret): 32 characters of
 * `openssl rand -base64 32` carry about 190 bits, well past what the 128-bit
 * truncated MAC asks of its key.
 */
export const TIMELINE_CURSOR_SECRET_CHARS_MIN = 32;
export const TIMELINE_CURSOR_SECRET_CHARS_MAX = 1024;

/** The config keys the limits follow from. */
export type LimitKeys = Pick<
  Config,
  | "ring_bytes"
  | "event_bytes_max"
  | "event_field_bytes_max"
  | "request_bytes_max"
  | "request_buffer_bytes_max"
  | "replay_page_bytes_max"
  | "replay_page_events_max"
  | "replay_page_events_default"
  | "redrive_letters_max"
  | "consume_page_bytes_max"
  | "consume_window_max"
  | "consume_window_default"
  | "consumer_buffer_bytes_max"
  | "timeline_streams_max"
  | "timeline_page_events_max"
>;

export interface Limits {
  /** Largest Event body publish lets through: the payload and strings at their limits and the table around them. */
  eventBodyBytesMax: number;
  /**
   * Largest frame the log holds: the largest event publish lets through,
   * framed. The publisher refuses a larger one and the log's append asserts
   * it; recovery, scans and reads take a frame that claims more as damage.
   */
  frameBytesMax: number;
  /** Largest page a log read is asked for (a replay page or a consumer's log page), in frame bytes. */
  pageBytesMax: number;
  /** The shard's page buffer: a page and the one frame a read may take past it (the first frame always goes). */
  pageBufferBytes: number;
  /** Largest event rendered as JSON: how far a rendered page may pass its byte bound (it stops after the event that reaches it). */
  renderedEventBytesMax: number;
  /**
   * Largest answer body a page makes: a JSON page is a page and the event that
   * overruns it; an EventBatch page holds at most a page of frames, or one frame.
   */
  pageAnswerBytesMax: number;
  /**
   * Largest answer to a timeline read: the entries of timeline_page_events_max
   * events and timeline_streams_max streams beside a replay page of JSON and
   * the event that overruns it.
   */
  timelineAnswerBytesMax: number;
  /** Largest timeline read request: its metadata for timeline_streams_max streams. */
  timelineRequestBytesMax: number;
  /** Largest message either side must be able to put in a ring: a request or a page answer, with its envelope. */
  ringMessageBytesNeeded: number;
  /** The smallest ring_bytes that holds RING_LARGEST_MESSAGES of ringMessageBytesNeeded. */
  ringBytesMin: number;
  /** Largest message a ring of ring_bytes carries (Ring.messageBytesMax): what both its writer and its reader check. */
  ringMessageBytesMax: number;
  /** Largest request body the front takes: request_bytes_max, which the ring holds with its metadata (checked at start). */
  requestBodyBytesMax: number;
  /** Largest live message a consumer is sent as is. */
  liveMessageBytesMax: number;
  /**
   * Bytes uWS may queue on a consumer socket (maxBackpressure). uWS drops a
   * send only when what is already queued exceeds this; the consumer hub sends
   * events only while less than consumer_buffer_bytes_max is queued, so one
   * message of either path lands on top of that, and heartbeats and errors
   * after it still go out.
   */
  socketBytesMax: number;
}

export function deriveLimits(c: LimitKeys): Limits {
  const eventBodyBytesMax = c.event_bytes_max + EVENT_STRING_FIELDS * c.event_field_bytes_max + EVENT_FIXED_BYTES_MAX;
  const frameBytesMax = align8(FRAME_HEADER_BYTES + eventBodyBytesMax);
  const pageBytesMax = Math.max(c.replay_page_bytes_max, c.consume_page_bytes_max);
  const renderedEventBytesMax =
    RENDERED_PAYLOAD_BYTES_PER_BYTE * c.event_bytes_max +
    EVENT_STRING_FIELDS * JSON_ESCAPED_BYTES_PER_BYTE * c.event_field_bytes_max +
    RENDERED_EVENT_FIXED_BYTES_MAX;
  const pageAnswerBytesMax = pageBytesMax + renderedEventBytesMax;
  const timelineAnswerBytesMax =
    TIMELINE_PAGE_HEAD_BYTES +
    c.timeline_streams_max * TIMELINE_STREAM_ENTRY_BYTES +
    c.timeline_page_events_max * TIMELINE_EVENT_ENTRY_BYTES +
    c.replay_page_bytes_max +
    renderedEventBytesMax;
  const timelineRequestBytesMax = c.timeline_streams_max * TIMELINE_READ_META_BYTES_PER_STREAM + REQUEST_META_BYTES_MAX;
  const ringMessageBytesNeeded = Math.max(c.request_bytes_max, pageAnswerBytesMax, timelineAnswerBytesMax, timelineRequestBytesMax) + RING_ENVELOPE_BYTES;
  const liveMessageBytesMax = LIVE_MESSAGE_PAGES * c.consume_page_bytes_max;
  return {
    eventBodyBytesMax,
    frameBytesMax,
    pageBytesMax,
    pageBufferBytes: pageBytesMax + frameBytesMax,
    renderedEventBytesMax,
    pageAnswerBytesMax,
    timelineAnswerBytesMax,
    timelineRequestBytesMax,
    ringMessageBytesNeeded,
    ringBytesMin: RING_LARGEST_MESSAGES * ringMessageBytesNeeded,
    // The ring's data area is ring_bytes rounded down to 8; a message with its header takes at most half of it.
    ringMessageBytesMax: floor8(floor8(c.ring_bytes) / 2) - RING_MESSAGE_HEADER_BYTES,
    requestBodyBytesMax: c.request_bytes_max,
    liveMessageBytesMax,
    socketBytesMax: c.consumer_buffer_bytes_max + liveMessageBytesMax + SOCKET_SLACK_EVENTS * c.event_bytes_max,
  };
}

/** A relation between config keys that does not hold, and the key to change. */
export interface LimitProblem {
  key: keyof LimitKeys;
  message: string;
}

/**
 * The relations the server needs between its limits; config.ts refuses to
 * start while any fails, so a bad combination fails at start, not at 3 a.m.
 */
export function limitProblems(c: LimitKeys): LimitProblem[] {
  const l = deriveLimits(c);
  const problems: LimitProblem[] = [];
  // Or a legal request or page could never be taken.
  if (c.ring_bytes < l.ringBytesMin) {
    problems.push({ key: "ring_bytes", message: `must be at least ${l.ringBytesMin} bytes for the configured request, page and event limits` });
  }
  // Or one legal request alone would be refused as over the budget.
  if (c.request_buffer_bytes_max < c.request_bytes_max) problems.push({ key: "request_buffer_bytes_max", message: "must be at least request_bytes_max" });
  if (c.consume_window_default > c.consume_window_max) problems.push({ key: "consume_window_default", message: "must not exceed consume_window_max" });
  if (c.replay_page_events_default > c.replay_page_events_max)
    problems.push({ key: "replay_page_events_default", message: "must not exceed replay_page_events_max" });
  return problems;
}

/**
 * Open files a shard needs at least: a log's active segment, the closed one
 * it reads, the next one a roll opens, a checkpoint file, and room so one
 * stream's reads do not close and reopen another's segment every turn.
 */
export const OPEN_FILES_PER_SHARD_MIN = 8;

/** A shard's share of open_files_max (log/open-files.ts): the shards' shares add up to at most open_files_max. */
export const shardOpenFilesMax = (c: Pick<Config, "open_files_max" | "shards">) => Math.floor(c.open_files_max / c.shards);

/** open_files_max against the shards that split it. */
export function openFilesProblems(c: Pick<Config, "open_files_max" | "shards">): string[] {
  const needed = c.shards * OPEN_FILES_PER_SHARD_MIN;
  return c.open_files_max < needed ? [`must be at least ${needed} (${OPEN_FILES_PER_SHARD_MIN} per shard, ${c.shards} shards)`] : [];
}
