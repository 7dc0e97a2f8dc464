// Damage to a real data dir, and what recovery must make of it.
//
// A fixture is written by a real server (several segments, closed ones with
// their .idx/.tidx, checkpoints of three groups, idempotency keys, batches of
// every size), then kept in memory. A case writes it out, damages one file
// (truncation at any byte, garbage appended, crafted frames appended, a bit
// flipped anywhere) and recovers it, in-process or through a server restart.
// The oracle below says, from the pristine files alone, what must still be
// served; the tests check that, that nothing else is, and the next seq.
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { scanSegment } from "../../src/log/scan.js";
import { BATCH_END, RECORD_HEADER_BYTES, checkFrameMarked, frameSeq, sealFrame } from "../../src/log/record.js";
import { writeU32, writeU64 } from "../../src/bytes.js";
import { crc32Range } from "../../src/crc.js";
import { escapeStreamId, type StreamDefaults } from "../../src/shard/stream-config.js";
import { COPY_FILE, MAIN_FILE } from "../../src/shard/descriptions.js";
import { loadConfig } from "../../src/config.js";
import { deriveLimits } from "../../src/limits.js";
import { api, startServer, tempDataDir, type TestServer } from "../helpers/server.js";

/** The server's defaults, for streams opened in process. */
export const STREAM_DEFAULTS: StreamDefaults = {
  retention_ms: 604_800_000,
  dedup_window_ms: 86_400_000,
  durability: "process",
  max_event_bytes: 1024 * 1024,
  ordered: { heldEventsMax: 10_000, heldBytesMax: 64 << 20, producersMax: 10_000, entryBytesMax: 2 << 20 },
};

export const STREAM = "dmg";
/** In the data dir, not the stream's. */
const DESCRIPTION_FILES = [MAIN_FILE, COPY_FILE];
export const OTHER = "dmg-other";
export const SERVER_ARGS = ["--segment-bytes-max", "16384", "--index-interval-bytes", "1024", "--shards", "2"];
/** The server's frame limit with its default event and field limits (src/limits.ts). */
export const FRAME_BYTES_MAX = deriveLimits(loadConfig({}, {})).frameBytesMax;
export const LOG_OPTS = { segmentBytesMax: 16384, indexIntervalBytes: 1024, frameBytesMax: FRAME_BYTES_MAX };
export const GROUPS = ["g1", "g2", "g3"];

export interface PristineRecord {
  seq: number;
  file: string;
  pos: number;
  bytes: Buffer;
  endsBatch: boolean;
}

export interface CheckpointRecord {
  start: number;
  end: number;
  group: string;
  seq: number;
}

export interface Fixture {
  /** Files of the stream's directory, by name. */
  files: Map<string, Buffer>;
  /** Frames of another stream, for "a valid frame from another stream". */
  foreignFrames: Buffer[];
  records: Map<number, PristineRecord>;
  head: number;
  /** .log files in base-seq order; the last one is the active segment. */
  logs: string[];
  checkpointRecords: CheckpointRecord[];
  /** Every idempotency key published, with its seq. */
  keys: Map<string, number>;
  /** The stream's info as the server reported it before stopping. */
  info: Record<string, unknown>;
}

/** Publishes a varied history through a real server, stops it cleanly and reads its files. */
export async function buildFixture(): Promise<Fixture> {
  const dataDir = tempDataDir("ticker-fixture-");
  const server: TestServer = await startServer({ dataDir, args: SERVER_ARGS });
  const keys = new Map<string, number>();
  let rnd = 7;
  const next = () => (rnd = (rnd * 1103515245 + 12345) & 0x7fffffff);
  try {
    for (let b = 0; b < 70; b++) {
      const n = 1 + (next() % 12) + (b % 10 === 0 ? 30 : 0);
      const events = Array.from({ length: n }, (_, i) => {
        const e: Record<string, unknown> = { type: "t", key: `k${i % 3}`, payload: { b, i, pad: "x".repeat(next() % 500) } };
        if ((b + i) % 4 === 0) e.idempotency_key = `idem-${b}-${i}`;
        return e;
      });
      const r = await api(`${server.url}/v1/streams/${STREAM}/events`, "POST", { events });
      if (r.status !== 200) throw new Error(`fixture publish: ${r.status} ${JSON.stringify(r.json)}`);
      events.forEach((e, i) => {
        if (e.idempotency_key) keys.set(e.idempotency_key as string, r.json.first_seq + i);
      });
      if (b % 7 === 3) {
        for (const g of GROUPS)
          await api(`${server.url}/v1/streams/${STREAM}/checkpoint`, "POST", { group: g, seq: Math.max(0, r.json.last_seq - (next() % 20)) });
      }
      if (b % 9 === 0)
        await api(`${server.url}/v1/streams/${OTHER}/events`, "POST", {
          events: [
            { type: "o", payload: b },
            { type: "o", payload: -b },
          ],
        });
    }
    const info = (await api(`${server.url}/v1/streams/${STREAM}`, "GET")).json;
    if ((await server.stop()) !== 0) throw new Error(`fixture server did not stop cleanly:\n${server.output()}`);
    const dir = join(dataDir, "streams", escapeStreamId(STREAM));
    const files = new Map<string, Buffer>();
    for (const name of readdirSync(dir)) if (!name.endsWith(".tmp")) files.set(name, readFileSync(join(dir, name)));
    // The data dir's description files, with the stream's lines only (the
    // other stream's directory is not written): damage may hit them too.
    const own = `${escapeStreamId(STREAM)}\t`;
    for (const name of DESCRIPTION_FILES)
      files.set(
        name,
        Buffer.from(
          readFileSync(join(dataDir, name), "utf8")
            .split("\n")
            .filter((l) => l.startsWith(own))
            .map((l) => `${l}\n`)
            .join(""),
        ),
      );
    const otherDir = join(dataDir, "streams", escapeStreamId(OTHER));
    const foreignFrames: Buffer[] = [];
    for (const name of readdirSync(otherDir).filter(isSegment)) foreignFrames.push(...framesOf(readFileSync(join(otherDir, name))).map((f) => f.bytes));
    const logs = [...files.keys()].filter(isSegment).sort();
    const records = new Map<number, PristineRecord>();
    for (const file of logs) for (const r of framesOf(files.get(file)!)) records.set(r.seq, { ...r, file });
    const head = Math.max(...records.keys());
    if (logs.length < 4 || head !== info.head_seq) throw new Error(`fixture: ${logs.length} segments, head ${head} vs ${info.head_seq}`);
    return { files, foreignFrames, records, head, logs, checkpointRecords: checkpointRecordsOf(files.get("checkpoints.log")!), keys, info };
  } finally {
    if (server.proc.exitCode === null) await server.kill9();
  }
}

const isSegment = (name: string) => /^\d{20}\.log$/.test(name);

function framesOf(log: Buffer): Array<{ seq: number; pos: number; bytes: Buffer; endsBatch: boolean }> {
  const out: Array<{ seq: number; pos: number; bytes: Buffer; endsBatch: boolean }> = [];
  for (let pos = 0; pos < log.length; ) {
    const r = checkFrameMarked(log, pos, log.length, FRAME_BYTES_MAX);
    if (r < 0) throw new Error(`fixture: bad frame at ${pos}`);
    const fb = r & ~BATCH_END;
    out.push({ seq: frameSeq(log, pos), pos, bytes: Buffer.from(log.subarray(pos, pos + fb)), endsBatch: (r & BATCH_END) !== 0 });
    pos += fb;
  }
  return out;
}

function checkpointRecordsOf(file: Buffer): CheckpointRecord[] {
  const out: CheckpointRecord[] = [];
  for (let at = 0; at + 24 <= file.length; ) {
    const bytes = file.readUInt32LE(at);
    out.push({ start: at, end: at + bytes, group: file.toString("latin1", at + 24, at + bytes), seq: Number(file.readBigUInt64LE(at + 8)) });
    at += bytes;
  }
  return out;
}

// ---- damage -------------------------------------------------------------

export type Damage =
  | { kind: "truncate"; file: string; at: number }
  | { kind: "flip"; file: string; at: number; bit: number }
  | { kind: "garbage"; file: string; bytes: Uint8Array }
  | { kind: "frame"; file: string; variant: "length" | "wrong-seq" | "foreign" | "unmarked-next"; length: number; pick: number };

/** Damage to one file of the fixture; positions are taken modulo the file's size. */
export function damageArb(fx: Fixture): fc.Arbitrary<Damage> {
  const names = [...fx.files.keys()].sort();
  const file = fc.constantFrom(...names);
  const log = fc.constantFrom(...fx.logs);
  return fc.oneof(
    { weight: 3, arbitrary: fc.record({ kind: fc.constant("truncate" as const), file, at: fc.nat() }) },
    { weight: 4, arbitrary: fc.record({ kind: fc.constant("flip" as const), file, at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant("garbage" as const), file, bytes: fc.uint8Array({ minLength: 1, maxLength: 200 }) }) },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant("frame" as const),
        file: log,
        variant: fc.constantFrom("length" as const, "wrong-seq" as const, "foreign" as const, "unmarked-next" as const),
        // Every length from 0 to past the limit, and the small ones often.
        length: fc.oneof(fc.integer({ min: 0, max: 256 }), fc.integer({ min: 0, max: FRAME_BYTES_MAX + 4096 })),
        pick: fc.nat(),
      }),
    },
  );
}

/** The damaged bytes of `d.file` (the others are unchanged). */
export function applyDamage(fx: Fixture, d: Damage): Buffer {
  const orig = fx.files.get(d.file)!;
  switch (d.kind) {
    case "truncate":
      return Buffer.from(orig.subarray(0, d.at % (orig.length + 1)));
    case "flip": {
      if (orig.length === 0) return Buffer.from(orig);
      const b = Buffer.from(orig);
      b[d.at % b.length] ^= 1 << d.bit;
      return b;
    }
    case "garbage":
      return Buffer.concat([orig, d.bytes]);
    case "frame":
      return Buffer.concat([orig, craftedFrame(fx, d, orig)]);
  }
}

function craftedFrame(fx: Fixture, d: Extract<Damage, { kind: "frame" }>, orig: Buffer): Buffer {
  const lastSeq = orig.length > 0 ? lastFrameSeq(orig) : fx.records.get(Math.min(...fx.records.keys()))!.seq - 1;
  if (d.variant === "foreign") {
    // A whole, valid frame of another stream. Its seq is one the other
    // stream has, which this segment never continues with (that stream is
    // far shorter), so recovery must refuse it.
    const f = fx.foreignFrames[d.pick % fx.foreignFrames.length];
    if (frameSeq(f, 0) === lastSeq + 1) throw new Error("fixture: a foreign frame continues this segment");
    return f;
  }
  if (d.variant === "length") {
    // A header claiming `length` bytes, with whatever follows it.
    const body = Math.max(RECORD_HEADER_BYTES, Math.min(d.length, 4096));
    const b = Buffer.alloc(body, 0x5a);
    writeU32(b, 0, d.length);
    writeU64(b, 8, lastSeq + 1);
    if (d.length >= RECORD_HEADER_BYTES + 8 && d.length <= body && d.length % 8 === 0) writeU32(b, 4, crc32Range(b, 8, d.length));
    return b;
  }
  // A frame that checks out except for its place: a wrong seq, or the right
  // next seq without a commit mark (the start of a batch that was never
  // finished). A frame with the next seq *and* a mark would be a real append.
  const template = fx.records.get(fx.head)!.bytes;
  const b = Buffer.from(template);
  writeU64(b, 8, d.variant === "wrong-seq" ? lastSeq + 2 + (d.pick % 1000) : lastSeq + 1);
  sealFrame(b, 0, b.length);
  return b;
}

function lastFrameSeq(log: Buffer): number {
  let seq = 0;
  for (let pos = 0; pos < log.length; ) {
    const r = checkFrameMarked(log, pos, log.length, FRAME_BYTES_MAX);
    if (r < 0) break;
    seq = frameSeq(log, pos);
    pos += r & ~BATCH_END;
  }
  return seq;
}

/** Writes the fixture's stream directory, with `damaged` in place of its file. */
export function writeStreamDir(fx: Fixture, dataDir: string, d: Damage | null, damaged: Buffer | null): string {
  const dir = join(dataDir, "streams", escapeStreamId(STREAM));
  mkdirSync(dir, { recursive: true });
  for (const [name, bytes] of fx.files) writeFileSync(join(DESCRIPTION_FILES.includes(name) ? dataDir : dir, name), d && name === d.file ? damaged! : bytes);
  return dir;
}

// ---- the oracle ---------------------------------------------------------

export interface Expectation {
  /** Seqs that must be served, byte for byte as they were. */
  mustServe: Set<number>;
  /** The damage cannot be told from a clean log (a cut at a batch end, nothing appended). */
  undetectable: boolean;
  /** Checkpoints that must be recovered, exactly. */
  checkpoints: Map<string, number>;
}

/**
 * What recovery must keep. The rule: every record before the damage is
 * served, and in the active segment a torn tail (the file ends inside a
 * frame, or whole frames follow the last commit mark) is cut back to the
 * last commit mark: a batch is whole or absent.
 */
export function expect_(fx: Fixture, d: Damage, damaged: Buffer): Expectation {
  const all = new Set(fx.records.keys());
  const checkpoints = foldCheckpoints(fx.checkpointRecords, () => true);
  const out: Expectation = { mustServe: all, undetectable: false, checkpoints };
  if (d.file === "checkpoints.log") {
    if (d.kind === "truncate") out.checkpoints = foldCheckpoints(fx.checkpointRecords, (r) => r.end <= damaged.length);
    else if (d.kind === "flip") {
      const at = d.at % fx.files.get(d.file)!.length;
      out.checkpoints = foldCheckpoints(fx.checkpointRecords, (r) => at < r.start || at >= r.end);
    }
    return out;
  }
  if (!isSegment(d.file)) return out; // indexes are rebuilt, the description has its copy
  const inFile = [...fx.records.values()].filter((r) => r.file === d.file);
  const active = d.file === fx.logs[fx.logs.length - 1];
  const orig = fx.files.get(d.file)!;
  // The first byte that differs from the pristine file, and whether the file now ends inside a frame.
  let x: number;
  let torn = false;
  if (d.kind === "truncate") {
    x = damaged.length;
    torn = x < orig.length;
    // A cut at a batch end (or at the start: a segment rolled just before a crash) is a clean log.
    if (torn && (x === 0 || inFile.some((r) => r.endsBatch && r.pos + r.bytes.length === x))) out.undetectable = active;
  } else if (d.kind === "flip") {
    x = d.at % orig.length;
    const rec = inFile.find((r) => x >= r.pos && x < r.pos + r.bytes.length)!;
    // A flipped length that runs past the end of the file looks exactly like a torn write.
    if (x - rec.pos < 4) {
      const len = damaged.readUInt32LE(rec.pos);
      torn = len >= 32 && len <= FRAME_BYTES_MAX && len % 8 === 0 && rec.pos + len > damaged.length;
    }
    x = rec.pos;
  } else {
    x = orig.length; // appended: nothing before it is touched
    torn = d.kind === "frame" && d.variant === "unmarked-next";
  }
  let cut = x;
  if (active && torn) {
    const marks = inFile.filter((r) => r.endsBatch && r.pos + r.bytes.length <= x);
    cut = marks.length ? marks[marks.length - 1].pos + marks[marks.length - 1].bytes.length : 0;
  }
  const lost = new Set(inFile.filter((r) => r.pos + r.bytes.length > cut).map((r) => r.seq));
  out.mustServe = new Set([...all].filter((s) => !lost.has(s)));
  return out;
}

function foldCheckpoints(records: CheckpointRecord[], keep: (r: CheckpointRecord) => boolean): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of records) if (keep(r)) m.set(r.group, r.seq);
  return m;
}

/** Reads a file's bytes through a new descriptor (the server's own files, after a run). */
export function readFileBytes(path: string): Buffer {
  const fd = openSync(path, "r");
  try {
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

export { scanSegment };
