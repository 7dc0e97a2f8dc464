// Live batches of one stream as the front receives them from its shard, and
// the joining of consecutive ones into one message per format: under load a
// socket then gets one write for several pushes instead of one each.
import { EVENTS_MESSAGE_HEAD, EVENTS_MESSAGE_TAIL } from "../../wire/event-codec.js";
import { eventBatchHeaderBytes, writeEventBatchHeader } from "../../wire/event-batch.js";

export interface LiveBatch {
  /** 0: only the news that the head moved to `last` (the frames stayed in the log). */
  count: number;
  first: number;
  last: number;
  /** The stream's first_seq when the batch was pushed. */
  firstSeq: number;
  /** The binary `EventBatch` message, when a binary consumer follows the stream. */
  bin: Buffer | null;
  /** The JSON `events` message, when a JSON consumer follows the stream. */
  json: Buffer | null;
}

const HEAD_BYTES = Buffer.byteLength(EVENTS_MESSAGE_HEAD);
const TAIL_BYTES = Buffer.byteLength(EVENTS_MESSAGE_TAIL);
const COMMA = 0x2c;

/** Splits batches into runs that can be joined: consecutive seqs, frames present, same formats. */
export function runsOf(batches: LiveBatch[]): LiveBatch[][] {
  const runs: LiveBatch[][] = [];
  let run: LiveBatch[] = [];
  for (const b of batches) {
    const prev = run[run.length - 1];
    const joins =
      prev &&
      b.count > 0 &&
      prev.count > 0 &&
      b.first === prev.last + 1 &&
      (b.bin === null) === (prev.bin === null) &&
      (b.json === null) === (prev.json === null);
    if (!joins && run.length > 0) {
      runs.push(run);
      run = [];
    }
    run.push(b);
  }
  if (run.length > 0) runs.push(run);
  return runs;
}

/** One batch holding a run's events, in both of its formats. */
export function joinRun(stream: string, run: LiveBatch[]): LiveBatch {
  if (run.length === 1) return run[0];
  const first = run[0];
  const last = run[run.length - 1];
  let count = 0;
  for (const b of run) count += b.count;
  return {
    count,
    first: first.first,
    last: last.last,
    firstSeq: last.firstSeq,
    bin: first.bin ? joinBinary(stream, run, count, last) : null,
    json: first.json ? joinJson(run) : null,
  };
}

// A run is joined only when every batch in it carries the form asked for
// (the shard renders the forms its watchers want, for every batch alike).
function jsonOf(b: LiveBatch): Buffer {
  if (b.json === null) throw new Error("live batch invariant: a run mixes batches with and without JSON");
  return b.json;
}

function binOf(b: LiveBatch): Buffer {
  if (b.bin === null) throw new Error("live batch invariant: a run mixes batches with and without binary");
  return b.bin;
}

function joinJson(run: LiveBatch[]): Buffer {
  let bytes = HEAD_BYTES + TAIL_BYTES + run.length - 1;
  for (const b of run) bytes += jsonOf(b).length - HEAD_BYTES - TAIL_BYTES;
  const out = Buffer.allocUnsafe(bytes);
  let at = out.write(EVENTS_MESSAGE_HEAD, 0, "latin1");
  for (let i = 0; i < run.length; i++) {
    if (i > 0) out[at++] = COMMA;
    const j = jsonOf(run[i]);
    at += j.copy(out, at, HEAD_BYTES, j.length - TAIL_BYTES);
  }
  out.write(EVENTS_MESSAGE_TAIL, at, "latin1");
  return out;
}

function joinBinary(stream: string, run: LiveBatch[], count: number, last: LiveBatch): Buffer {
  const headerBytes = eventBatchHeaderBytes(Buffer.byteLength(stream));
  let frames = 0;
  for (const b of run) frames += binOf(b).length - headerBytes;
  const out = Buffer.allocUnsafe(headerBytes + frames);
  writeEventBatchHeader(out, 0, { stream, firstSeq: last.firstSeq, headSeq: last.last, next: last.last + 1, count }, frames);
  let at = headerBytes;
  for (const b of run) at += binOf(b).copy(out, at, headerBytes);
  return out;
}
