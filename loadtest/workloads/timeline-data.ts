// The timeline benchmark's data set (bench:timelines part B): `streams`
// streams of `eventsPerStream` events each (~100-byte JSON payloads), loaded
// once into a data dir that is kept between runs, since loading 32,000,000
// events takes minutes and the pages read the same data every time.
//
// Layout: <root>/<streams>x<events>/data is the server's data dir and
// <root>/<streams>x<events>/dataset.json says what was loaded, how and when.
// A later run reuses the data when the marker matches and every stream's
// info agrees (first_seq 1, head_seq = events); otherwise it loads again.
//
// Loading publishes FlatBuffers batches of BATCH_EVENTS over raw keep-alive
// sockets (W1's fastest path), LOAD_IN_FLIGHT requests at once, the streams
// taken in turn (batch 1 of every stream, then batch 2, ...), so the
// streams' ingest_ts interleave as in a merged feed rather than one stream
// after another. Streams keep their events for RETENTION_MS.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { idxPath, logPath, segmentBases, tidxPath } from "../../src/log/file-names.js";
import { escapeStreamId } from "../../src/shard/stream-config.js";
import { shardOf } from "../../src/shard/protocol.js";
import { encodePublishBatch } from "../../src/wire/client.js";
import type { TickerProcess } from "../../test/harness/ticker.js";
import { HttpRawClient } from "../../src/client/http.js";
import { diskBytes } from "../lib/proc.js";
import { commit } from "../lib/report.js";
import { BATCH_EVENTS, payloadText } from "../lib/results.js";
import { createStream, startTicker } from "../systems/ticker.js";

/** Requests in flight while loading: twice W1's, since the batches go to many streams on both shards. */
const LOAD_IN_FLIGHT = 16;
/** Distinct batches, sent round-robin (the server parses each afresh; nothing deduplicates). */
const BODY_POOL = 50;
/** Characters of the payload's text: the JSON payload {"n":<i>,"text":"..."} is ~100 bytes. */
const TEXT_CHARS = 80;
/** Ten years: the kept data must not age out between runs (the default retention is 7 days). */
const RETENTION_MS = 10 * 365 * 86_400_000;
const REQUEST_TIMEOUT_MS = 60_000;
/**
 * A restart on the whole data set is slow: the server reads back the
 * idempotency keys of every event in each stream's dedup window (a day by
 * default, so all of a freshly loaded set: ~30 s on this machine).
 */
export const READY_TIMEOUT_MS = 10 * 60_000;
/** Bumped when what is loaded changes, so an old data set is loaded again. */
const FORMAT_VERSION = 1;

export interface DataSetSpec {
  /** Where data sets are kept; each shape in its own subdirectory. */
  root: string;
  streams: number;
  eventsPerStream: number;
  /** Load again even if a matching data set is there. */
  reload: boolean;
}

interface Marker {
  version: number;
  streams: string[];
  events_per_stream: number;
  batch_events: number;
  payload: string;
  loaded_at: string;
  load_s: number;
  commit: string;
}

export interface DataSet {
  /** The data set's own dir (the marker, kept cursor pools), and the server's data dir inside it. */
  dir: string;
  dataDir: string;
  streams: string[];
  eventsPerStream: number;
  /** What happened: "loaded now in ..." or "reused, loaded ... at ...". */
  how: string;
  loadEventsPerS: number | null;
  diskBytes: number;
}

export const streamIds = (n: number) => Array.from({ length: n }, (_, i) => `tl-${String(i).padStart(2, "0")}`);

/** Which shard each stream lives on, for the report ("tl-00: 0, ..."), given the server's shard count. */
export const shardSplit = (streams: readonly string[], shards: number) => streams.map((s) => shardOf(s, shards));

/**
 * The segment and index files of some of the data set's streams (what a
 * timeline page reads), in each stream's seq order: the open segment has no
 * index files yet.
 */
export function segmentFiles(d: DataSet, streams: readonly string[]): string[] {
  return streams.flatMap((id) => {
    const dir = join(d.dataDir, "streams", escapeStreamId(id));
    const names = readdirSync(dir);
    const present = new Set(names);
    return segmentBases(names).flatMap((base) => [logPath(dir, base), idxPath(dir, base), tidxPath(dir, base)].filter((f) => present.has(basename(f))));
  });
}

function markerPath(dir: string): string {
  return join(dir, "dataset.json");
}

function readMarker(dir: string): Marker | null {
  try {
    return JSON.parse(readFileSync(markerPath(dir), "utf8")) as Marker;
  } catch {
    return null;
  }
}

/** Why the kept data set cannot be used, or null when it can (asked of a running server on it). */
async function staleReason(server: TickerProcess, m: Marker | null, spec: DataSetSpec, streams: string[]): Promise<string | null> {
  if (m === null) return "no dataset.json";
  if (m.version !== FORMAT_VERSION || m.events_per_stream !== spec.eventsPerStream || m.streams.join(",") !== streams.join(",")) {
    return "dataset.json describes another data set";
  }
  for (const id of streams) {
    const r = await fetch(`${server.url}/v1/streams/${id}`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    if (r.status !== 200) return `GET /v1/streams/${id}: HTTP ${r.status}`;
    const info = (await r.json()) as { first_seq: number; head_seq: number };
    if (info.first_seq !== 1 || info.head_seq !== spec.eventsPerStream) return `${id} holds seqs ${info.first_seq}..${info.head_seq}`;
  }
  return null;
}

function loadBodies(): Buffer[] {
  return Array.from({ length: BODY_POOL }, (_, b) => {
    const text = payloadText(TEXT_CHARS);
    const events = Array.from({ length: BATCH_EVENTS }, (_, i) => ({ type: "post", payload: { n: b * BATCH_EVENTS + i, text } }));
    const bytes = encodePublishBatch(events);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  });
}

/** Publishes every stream's events, the streams in turn; resolves with the wall time in s. */
async function load(server: TickerProcess, streams: string[], eventsPerStream: number, log: (line: string) => void): Promise<number> {
  for (const id of streams) await createStream(server, id, JSON.stringify({ retention_ms: RETENTION_MS }));
  const bodies = loadBodies();
  const batches = (streams.length * eventsPerStream) / BATCH_EVENTS;
  const client = await HttpRawClient.connect(server.port, LOAD_IN_FLIGHT, { timeoutMs: REQUEST_TIMEOUT_MS });
  const headers = { "Content-Type": "application/x-flatbuffers" };
  let next = 0;
  const t0 = performance.now();
  let lastLog = t0;
  try {
    const lane = async () => {
      for (let j = next++; j < batches; j = next++) {
        const id = streams[j % streams.length];
        const r = await client.post(`/v1/streams/${id}/events`, bodies[j % BODY_POOL], headers);
        if (r.status !== 200) throw new Error(`load: batch ${j + 1} to ${id}: HTTP ${r.status}: ${r.body.toString("utf8", 0, 300)}`);
        if (performance.now() - lastLog > 10_000) {
          lastLog = performance.now();
          log(`data set: ${Math.round((100 * j) / batches)}% loaded`);
        }
      }
    };
    await Promise.all(Array.from({ length: LOAD_IN_FLIGHT }, lane));
  } finally {
    client.close();
  }
  return (performance.now() - t0) / 1000;
}

/**
 * The data set, loaded now or reused; the server that checked it has
 * stopped again (a page run starts its own, on `dataDir`).
 */
export async function ensureDataSet(spec: DataSetSpec, log: (line: string) => void): Promise<DataSet> {
  const dir = join(spec.root, `${spec.streams}x${spec.eventsPerStream}`);
  const dataDir = join(dir, "data");
  const streams = streamIds(spec.streams);
  let marker = spec.reload ? null : readMarker(dir);
  if (marker !== null && existsSync(dataDir)) {
    const server = await startTicker(dataDir, { readyTimeoutMs: READY_TIMEOUT_MS });
    try {
      const why = await staleReason(server, marker, spec, streams);
      if (why === null) {
        return {
          dir,
          dataDir,
          streams,
          eventsPerStream: spec.eventsPerStream,
          how: `reused: loaded ${marker.loaded_at} at commit ${marker.commit} in ${marker.load_s.toFixed(0)} s`,
          loadEventsPerS: null,
          diskBytes: diskBytes(dataDir),
        };
      }
      log(`data set in ${dir} not used (${why}): loading it again`);
    } finally {
      await server.stop();
    }
  }
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dataDir, { recursive: true });
  const server = await startTicker(dataDir);
  let loadS: number;
  try {
    log(`data set: loading ${spec.streams} streams x ${spec.eventsPerStream.toLocaleString("en-US")} events into ${dataDir}`);
    loadS = await load(server, streams, spec.eventsPerStream, log);
  } finally {
    await server.stop();
  }
  marker = {
    version: FORMAT_VERSION,
    streams,
    events_per_stream: spec.eventsPerStream,
    batch_events: BATCH_EVENTS,
    payload: `JSON {"n":<i>,"text":"<${TEXT_CHARS} chars>"}, FlatBuffers batches, ${LOAD_IN_FLIGHT} in flight, streams in turn`,
    loaded_at: new Date().toISOString(),
    load_s: loadS,
    commit: commit(),
  };
  writeFileSync(markerPath(dir), `${JSON.stringify(marker, null, 2)}\n`);
  const events = spec.streams * spec.eventsPerStream;
  return {
    dir,
    dataDir,
    streams,
    eventsPerStream: spec.eventsPerStream,
    how: `loaded now in ${loadS.toFixed(1)} s (${Math.round(events / loadS).toLocaleString("en-US")} events/s)`,
    loadEventsPerS: events / loadS,
    diskBytes: diskBytes(dataDir),
  };
}
