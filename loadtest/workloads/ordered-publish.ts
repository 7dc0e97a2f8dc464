// Ordered ingest's publish throughput (issue 12, bench:timelines part A):
// the same events published to a stream with `producer_ordering: true` and to
// a plain one, each on a fresh server. Several producers number their own
// events (producer_id + producer_seq) and each sends them in batches, one
// request at a time on its own connection; 1% of the events leave their
// place: pairs of events a few positions apart are swapped, inside a batch
// and across the end of one (so the ordered stream holds the events after
// the late one until the next batch brings it).
//
// After each row the stream is read back (untimed): the ordered stream must
// hold every event once, in producer_seq order per producer, no gap
// tombstone, held_events 0; the plain one every event once, in the order
// sent. Bodies are encoded before timing, as W1's are.
import { randomBytes } from "node:crypto";
import { decodeEventBatch, decodeRecords, encodePublishBatch } from "../../src/wire/client.js";
import { stoppedCleanly } from "../../test/harness/process.js";
import type { TickerProcess } from "../../test/harness/ticker.js";
import { HttpRawClient, type HttpRawConnection } from "../../src/client/http.js";
import { ticksOf, timed, waitQuiet } from "../lib/proc.js";
import { BATCH_EVENTS, PAGE_EVENTS, PAYLOAD_BYTES, payloadText } from "../lib/results.js";
import { TempDirs, onCleanup } from "../lib/run.js";
import { createStream, startTicker } from "../systems/ticker.js";
import { rng } from "../../test/helpers/rng.js"; // seeded: every run sends the same order

export type Format = "json" | "flatbuffers";
export type ClientKind = "raw" | "fetch";

export interface IngestShape {
  /** Producers, each one connection with one request in flight. */
  producers: number;
  /** Events of each producer: a multiple of BATCH_EVENTS. */
  eventsPerProducer: number;
}

/** Swaps per batch of BATCH_EVENTS: 5 swaps move 10 events, 1% of them. */
const SWAPS_PER_BATCH = 5;
/** A swapped pair is at most this many positions apart. */
const SWAP_DISTANCE_MAX = 8;
/** Distinct payloads, used round-robin: their bytes do not change what the server does. */
const PAYLOAD_POOL = 64;
const REQUEST_TIMEOUT_MS = 60_000;
/** Before a row, how long to wait for other work on the machine to stop. */
const QUIET_BEFORE_ROW_MS = 15_000;
const STREAM = "ordered-bench";
const CT_JSON = "application/json";
const CT_FLAT = "application/x-flatbuffers";

const tempDirs = new TempDirs("ticker-bench-ordered-");
onCleanup(() => tempDirs.removeAll());

// ---- the events ------------------------------------------------------------------

export interface SendOrder {
  /** producer_seq (from 1) at each send position of one producer. */
  seqs: Uint32Array;
  /** Events not at their own position, and those swapped across a batch's end. */
  displaced: number;
  acrossBatches: number;
}

/**
 * One producer's send order: producer_seqs 1..n with SWAPS_PER_BATCH swaps
 * per batch. Each batch is cut into that many slices; each slice but the
 * last gets a swap inside it, and the last slice's swap takes an event from
 * the batch's last few positions and one from the next batch's first few
 * (the last batch keeps it inside). Slices leave a margin, so no two swaps
 * touch.
 */
export function sendOrder(n: number, seed: number): SendOrder {
  const seqs = new Uint32Array(n);
  for (let i = 0; i < n; i++) seqs[i] = i + 1;
  const r = rng(seed);
  const pick = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  const swap = (i: number, j: number) => ([seqs[i], seqs[j]] = [seqs[j], seqs[i]]);
  const slice = BATCH_EVENTS / SWAPS_PER_BATCH;
  const margin = SWAP_DISTANCE_MAX + 2;
  let displaced = 0;
  let acrossBatches = 0;
  for (let b = 0; b < n / BATCH_EVENTS; b++) {
    const base = b * BATCH_EVENTS;
    const last = base + BATCH_EVENTS >= n;
    for (let s = 0; s < SWAPS_PER_BATCH; s++) {
      if (s === SWAPS_PER_BATCH - 1 && !last) {
        // From the last 4 positions of this batch to the first 4 of the next (inside their margin).
        const end = base + BATCH_EVENTS;
        const i = end - pick(1, 4);
        const j = end + pick(0, 3);
        swap(i, j);
        acrossBatches += 2;
      } else {
        const lo = base + s * slice + margin;
        const i = pick(lo, base + (s + 1) * slice - margin - SWAP_DISTANCE_MAX);
        swap(i, i + pick(1, SWAP_DISTANCE_MAX));
      }
      displaced += 2;
    }
  }
  return { seqs, displaced, acrossBatches };
}

const producerId = (p: number) => `producer-${p}`;

/** Every producer's batches as request bodies, in send order. */
export function buildBodies(format: Format, orders: SendOrder[]): Buffer[][] {
  const texts = Array.from({ length: PAYLOAD_POOL }, () => payloadText(PAYLOAD_BYTES));
  const bytes = Array.from({ length: PAYLOAD_POOL }, () => randomBytes(PAYLOAD_BYTES));
  return orders.map((o, p) => {
    const id = producerId(p);
    const bodies: Buffer[] = [];
    for (let at = 0; at < o.seqs.length; at += BATCH_EVENTS) {
      const seqs = o.seqs.subarray(at, at + BATCH_EVENTS);
      if (format === "json") {
        const events = Array.from(seqs, (s) => `{"type":"tick","producer_id":"${id}","producer_seq":${s},"payload":"${texts[s % PAYLOAD_POOL]}"}`);
        bodies.push(Buffer.from(`{"events":[${events.join(",")}]}`));
      } else {
        const b = encodePublishBatch(Array.from(seqs, (s) => ({ type: "tick", producer_id: id, producer_seq: s, payload_bytes: bytes[s % PAYLOAD_POOL] })));
        bodies.push(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
      }
    }
    return bodies;
  });
}

// ---- one row ------------------------------------------------------------------

export interface IngestRow {
  format: Format;
  client: ClientKind;
  ordered: boolean;
  events: number;
  wallS: number;
  serverCpuS: number;
  clientCpuS: number;
  restCpuS: number;
  /** Entries of `held` over all answers: events held at some point of their request. */
  heldInAnswers: number;
  /** What the read-back found, one line. */
  check: string;
}

/** A publish, as a producer's lane sends it. */
type Post = (body: Buffer) => Promise<{ status: number; text: string }>;

async function lanes(port: number, kind: ClientKind, n: number, contentType: string): Promise<{ posts: Post[]; close: () => void }> {
  const path = `/v1/streams/${STREAM}/events`;
  const headers = { "Content-Type": contentType };
  if (kind === "fetch") {
    const url = `http://127.0.0.1:${port}${path}`;
    const post: Post = async (body) => {
      const r = await fetch(url, { method: "POST", body, headers, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
      return { status: r.status, text: await r.text() };
    };
    return { posts: Array.from({ length: n }, () => post), close: () => {} };
  }
  const conns: HttpRawConnection[] = await HttpRawClient.connections(port, n, { timeoutMs: REQUEST_TIMEOUT_MS });
  return {
    posts: conns.map((c) => async (body) => {
      const r = await c.post(path, body, headers);
      return { status: r.status, text: r.body.toString("utf8") };
    }),
    close: () => {
      for (const c of conns) c.close();
    },
  };
}

interface Answer {
  count: number;
  held?: unknown[];
  duplicates: unknown[];
}

/**
 * Publishes every producer's batches, each producer one request at a time
 * on its own connection, all producers at once; resolves with the answers'
 * held entries and released counts once every batch is answered.
 */
async function publishAll(posts: Post[], bodies: Buffer[][]): Promise<{ held: number; answered: number }> {
  let held = 0;
  let answered = 0;
  await Promise.all(
    bodies.map(async (batches, p) => {
      for (let b = 0; b < batches.length; b++) {
        const r = await posts[p](batches[b]);
        if (r.status !== 200) throw new Error(`producer ${p}, batch ${b + 1}: HTTP ${r.status}: ${r.text.slice(0, 300)}`);
        const a = JSON.parse(r.text) as Answer;
        if (a.duplicates.length > 0) throw new Error(`producer ${p}, batch ${b + 1}: ${a.duplicates.length} duplicates in the answer`);
        held += a.held?.length ?? 0;
        answered += a.count;
      }
    }),
  );
  return { held, answered };
}

/**
 * Reads the whole stream back (binary pages) and checks it: producer p's
 * producer_seqs in stored order must be `expected[p]`, and nothing else may
 * be there (a gap tombstone would show as an event of no producer of ours).
 */
async function readBack(port: number, expected: readonly Uint32Array[]): Promise<void> {
  const total = expected.reduce((n, e) => n + e.length, 0);
  const producerOf = new Map(expected.map((_, p) => [producerId(p), p]));
  const stored = new Array<number>(expected.length).fill(0);
  const client = await HttpRawClient.connect(port, 1, { timeoutMs: REQUEST_TIMEOUT_MS });
  try {
    let from = 1;
    while (from <= total) {
      const r = await client.get(`/v1/streams/${STREAM}/events?from=${from}&limit=${PAGE_EVENTS}`, { Accept: CT_FLAT });
      if (r.status !== 200) throw new Error(`read back from ${from}: HTTP ${r.status}: ${r.body.toString("utf8", 0, 300)}`);
      const page = decodeEventBatch(r.body);
      if (page.count === 0) throw new Error(`read back: empty page from ${from} of ${total}`);
      for (const e of decodeRecords(page.records)) {
        const p = producerOf.get(e.producer_id ?? "");
        if (p === undefined || e.type !== "tick") throw new Error(`seq ${e.seq}: an event of type ${e.type} from ${e.producer_id}, not one that was sent`);
        const want = expected[p][stored[p]];
        if (e.producer_seq !== want)
          throw new Error(`seq ${e.seq}: ${e.producer_id}'s event ${stored[p] + 1} has producer_seq ${e.producer_seq}, expected ${want}`);
        stored[p]++;
      }
      from = page.next;
    }
    for (let p = 0; p < expected.length; p++) {
      if (stored[p] !== expected[p].length) throw new Error(`${producerId(p)}: ${stored[p]} events stored, ${expected[p].length} sent`);
    }
  } finally {
    client.close();
  }
}

async function streamInfo(server: TickerProcess): Promise<{ head_seq: number; held_events?: number }> {
  const r = await fetch(`${server.url}/v1/streams/${STREAM}`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  if (r.status !== 200) throw new Error(`GET /v1/streams/${STREAM}: HTTP ${r.status}: ${await r.text()}`);
  return (await r.json()) as { head_seq: number; held_events?: number };
}

export interface RowSpec {
  format: Format;
  client: ClientKind;
  ordered: boolean;
  orders: SendOrder[];
  bodies: Buffer[][];
}

/** One row on a fresh server and data dir: timed publish, then the read-back. */
export async function runIngestRow(spec: RowSpec, notes: string[]): Promise<IngestRow> {
  const dir = tempDirs.make();
  let server: TickerProcess | null = null;
  try {
    server = await startTicker(dir);
    await createStream(server, STREAM, spec.ordered ? `{"producer_ordering":true}` : "{}");
    const q = await waitQuiet(QUIET_BEFORE_ROW_MS);
    if (!q.quiet) notes.push(`${rowName(spec)}: the machine was not idle before the row (${q.busyCores.toFixed(2)} cores busy).`);
    const { posts, close } = await lanes(server.port, spec.client, spec.bodies.length, spec.format === "json" ? CT_JSON : CT_FLAT);
    const events = spec.orders.reduce((n, o) => n + o.seqs.length, 0);
    let result = { held: 0, answered: 0 };
    const pid = server.pid;
    const t = await timed(
      () => ticksOf(`/proc/${pid}/stat`),
      (ticks) => ticks,
      async () => {
        result = await publishAll(posts, spec.bodies).finally(close);
      },
    );
    if (result.answered !== events) throw new Error(`answers appended ${result.answered} events, ${events} were sent`);
    const info = await streamInfo(server);
    if (info.head_seq !== events) throw new Error(`head_seq ${info.head_seq} after ${events} events`);
    if (spec.ordered && info.held_events !== 0) throw new Error(`held_events is ${info.held_events} at the end, not 0`);
    const displaced = spec.orders.reduce((n, o) => n + o.displaced, 0);
    const across = spec.orders.reduce((n, o) => n + o.acrossBatches, 0);
    // Ordered: each producer's events in producer_seq order; plain: as they were sent.
    await readBack(
      server.port,
      spec.orders.map((o) => (spec.ordered ? Uint32Array.from(o.seqs).sort() : o.seqs)),
    );
    const check = spec.ordered
      ? `read back: all ${events.toLocaleString("en-US")} events once, each producer's in producer_seq order, no tombstone; held_events 0`
      : `read back: all ${events.toLocaleString("en-US")} events once, in send order (${displaced.toLocaleString("en-US")} out of producer_seq order, ${across.toLocaleString("en-US")} of them across a batch end)`;
    return {
      format: spec.format,
      client: spec.client,
      ordered: spec.ordered,
      events,
      wallS: t.wallS,
      serverCpuS: t.serverCpuS,
      clientCpuS: t.clientCpuS,
      restCpuS: t.restCpuS,
      heldInAnswers: result.held,
      check,
    };
  } finally {
    if (server) {
      const how = await server.stop();
      if (server.errors.length > 0) notes.push(`${rowName(spec)}: server stderr: ${server.errors.slice(0, 5).join(" / ")}`);
      if (!stoppedCleanly(how)) notes.push(`${rowName(spec)}: server stop: ${how}`);
    }
    tempDirs.remove(dir);
  }
}

export const formatName = (f: Format) => (f === "json" ? "JSON" : "FlatBuffers");
export const clientName = (c: ClientKind) => (c === "raw" ? "raw HTTP" : "fetch");
export const rowName = (r: { format: Format; client: ClientKind; ordered: boolean }) =>
  `${r.ordered ? "producer_ordering" : "plain"} stream, ${formatName(r.format)} over ${clientName(r.client)}`;

export const eventsPerS = (r: IngestRow) => r.events / r.wallS;
export const cpuUsPerEvent = (r: IngestRow) => (r.serverCpuS * 1e6) / r.events;
