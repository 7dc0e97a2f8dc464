// Closed segments in an archive, behind one small interface, and the
// manifest in PostgreSQL that is the commit point of each (DESIGN.md "Beyond
// one machine"). An owner puts a closed segment's bytes under a key of its
// own epoch, then inserts the manifest row fenced by its lease; only then
// does the segment exist for anyone. A put that loses its lease before the
// row leaves an object nobody points at (the key has the epoch, so it never
// replaces a committed one); removing such leftovers is the next owner's
// sweep. So the archive needs no conditional PUT: puts are whole and
// idempotent, and the database orders them.
import { mkdirSync } from "node:fs";
import { mkdir, open, rename, rm } from "node:fs/promises";
import { threadId } from "node:worker_threads";
import { dirname, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import type postgres from "postgres";
import { fence } from "./leases.js";
import { S3Archive } from "./s3-archive.js";

export interface Archive {
  /** Stores `bytes` whole under `key` (replacing what was there); durable once it resolves. */
  put(key: string, bytes: Uint8Array): Promise<void>;
  /**
   * Bytes [start, end) of the object (all of it without a range). `into`: a
   * buffer the caller is done with, read into when it holds the range (the
   * answer is then a view of it), so a reader's chunks reuse memory.
   */
  get(key: string, range?: { start: number; end: number }, into?: Buffer): Promise<Buffer>;
  delete(key: string): Promise<void>;
}

/** `file:///dir`: a directory, typically on a filesystem every node mounts (NFS). */
export class FileArchive implements Archive {
  readonly root: string;

  constructor(url: string) {
    if (!url.startsWith("file://")) throw new Error(`a file archive is a file:// URL, not ${url}`);
    this.root = resolve(fileURLToPath(url));
    mkdirSync(this.root, { recursive: true });
  }

  // Asynchronous, in the thread pool: a shard thread archiving a 64 MiB
  // segment (and its fsyncs) must not stop taking publishes meanwhile.
  async put(key: string, bytes: Uint8Array): Promise<void> {
    const path = this.pathOf(key);
    await mkdir(dirname(path), { recursive: true });
    // Whole or not at all: a reader never sees half an object under its key.
    const tmp = `${path}.tmp-${process.pid}-${threadId}`;
    const f = await open(tmp, "w");
    try {
      await f.writeFile(bytes);
      await f.sync();
    } finally {
      await f.close();
    }
    await rename(tmp, path);
    const dir = await open(dirname(path), "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }

  async get(key: string, range?: { start: number; end: number }, into?: Buffer): Promise<Buffer> {
    const f = await open(this.pathOf(key), "r");
    try {
      const size = (await f.stat()).size;
      const start = Math.min(range?.start ?? 0, size);
      const end = Math.min(range?.end ?? size, size);
      const n = Math.max(0, end - start);
      const out = into && into.length >= n ? into.subarray(0, n) : Buffer.allocUnsafe(n);
      for (let at = 0; at < out.length; ) {
        const { bytesRead } = await f.read(out, at, out.length - at, start + at);
        if (bytesRead === 0) throw new Error(`archive object ${key} ended at ${start + at} of ${end}`);
        at += bytesRead;
      }
      return out;
    } finally {
      await f.close();
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.pathOf(key), { force: true });
  }

  /** Keys are ours (stream dir names and numbers), but never let one leave the root. */
  private pathOf(key: string): string {
    const path = resolve(this.root, key);
    if (!path.startsWith(this.root + sep)) throw new Error(`archive key ${JSON.stringify(key)} is outside the archive`);
    return path;
  }
}

export interface SegmentEntry {
  stream: string;
  baseSeq: number;
  lastSeq: number;
  /** The epoch of the owner that archived it (also in its key). */
  epoch: number;
  key: string;
  bytes: number;
  /** Records with an idempotency key (listed in the segment's .keys object, segment-keys.ts). */
  keyed?: number;
  /** ingest_ts of its last record. */
  lastTs?: number;
  /** Where its chunks start (segment-chunks.ts; none in a segment archived before them): given by segments() alone. */
  points?: Uint8Array | null;
}

/**
 * The key of a stream's segment archived under an epoch: stream dir name /
 * base seq, zero-padded so keys sort by seq. `unique` (random, at the
 * archiver) keeps a key from ever naming two contents: a stream deleted and
 * made again under the same epoch archives the same base seq again, and a
 * node's cache of the first object must not answer for the second.
 */
export function segmentKey(escapedStream: string, baseSeq: number, epoch: number, unique = ""): string {
  return `${escapedStream}/${String(baseSeq).padStart(20, "0")}-${epoch}${unique === "" ? "" : `-${unique}`}.seg`;
}

/** A manifest row as PostgreSQL gives it (bigints as text). */
interface SegmentRow {
  stream: string;
  base_seq: string;
  last_seq: string;
  epoch: string;
  key: string;
  bytes: string;
  keyed: number;
  points?: Buffer | null;
}

const entryOf = (r: SegmentRow): SegmentEntry => ({
  stream: r.stream,
  baseSeq: Number(r.base_seq),
  lastSeq: Number(r.last_seq),
  epoch: Number(r.epoch),
  key: r.key,
  bytes: Number(r.bytes),
  keyed: r.keyed,
  points: r.points ?? null,
});

/** Keyed segments one look for a stream's dedup window reads, at most (their keys are bounded by dedup_keys_max besides). */
const KEYED_SEGMENTS_MAX = 10_000;

/** The segment manifest: which archived objects hold which seqs of a stream. */
export class Manifest {
  constructor(
    private readonly sql: postgres.Sql,
    private readonly nodeId: string,
  ) {}

  /**
   * Commits an archived segment, fenced by the shard's lease: false (and no
   * row) if the epoch is no longer current. A segment is committed once; a
   * second commit of the same base seq is an error.
   */
  async commit(shard: number, e: SegmentEntry): Promise<boolean> {
    const sql = this.sql;
    const points = e.points ? Buffer.from(e.points.buffer, e.points.byteOffset, e.points.byteLength) : null;
    const r = await sql`insert into ticker_cluster_segments (stream, base_seq, last_seq, epoch, key, bytes, shard, keyed, last_ts, points)
      select ${e.stream}, ${e.baseSeq}, ${e.lastSeq}, ${e.epoch}, ${e.key}, ${e.bytes}, ${shard}, ${e.keyed ?? 0}, ${e.lastTs ?? 0}, ${points}
      from (${fence(sql, shard, this.nodeId, e.epoch)}) as lease`;
    return r.count === 1;
  }

  /** The committed segments of a stream holding seqs from `fromSeq` on, in seq order (at most `limit`), with their points. */
  async segments(stream: string, fromSeq: number, limit = 100): Promise<SegmentEntry[]> {
    const rows = await this.sql<SegmentRow[]>`
      select stream, base_seq, last_seq, epoch, key, bytes, keyed, points from ticker_cluster_segments
      where stream = ${stream} and last_seq >= ${fromSeq} order by base_seq limit ${limit}`;
    return rows.map(entryOf);
  }

  /**
   * The newest archived segments below `beforeSeq` with idempotency keys and
   * a record since `sinceTs`, newest first, until they hold `keysMax` keys:
   * where a new owner finds the keys of the stream's dedup window.
   */
  async keyedSince(stream: string, beforeSeq: number, sinceTs: number, keysMax: number): Promise<SegmentEntry[]> {
    const rows = await this.sql<SegmentRow[]>`
      select stream, base_seq, last_seq, epoch, key, bytes, keyed from ticker_cluster_segments
      where stream = ${stream} and last_seq < ${beforeSeq} and keyed > 0 and last_ts >= ${sinceTs} order by base_seq desc limit ${KEYED_SEGMENTS_MAX}`;
    const out: SegmentEntry[] = [];
    let keys = 0;
    for (const r of rows) {
      if (keys >= keysMax) break;
      keys += r.keyed;
      out.push(entryOf(r));
    }
    return out;
  }

  /**
   * Removes a stream's archived segments past retention, fenced by the
   * shard's lease: those whose last record is older than `cutoffTs`, then,
   * with `retentionBytes`, the oldest while the archive's bytes plus
   * `otherBytes` (the owner's segments not archived yet) exceed it; never
   * the newest. Returns what left the manifest: the objects to delete.
   */
  async expire(shard: number, epoch: number, stream: string, cutoffTs: number, retentionBytes: number | null, otherBytes: number): Promise<SegmentEntry[]> {
    const rows = await this.sql<{ base_seq: string; last_ts: string; bytes: string }[]>`
      select base_seq, last_ts, bytes from ticker_cluster_segments where stream = ${stream} order by base_seq`;
    let total = otherBytes + rows.reduce((n, r) => n + Number(r.bytes), 0);
    let n = 0;
    // Never the newest: its last seq is where a new owner's copy starts (archivedThrough).
    while (n < rows.length - 1 && (Number(rows[n].last_ts) < cutoffTs || (retentionBytes !== null && total > retentionBytes))) total -= Number(rows[n++].bytes);
    if (n === 0) return [];
    const sql = this.sql;
    const gone = await sql<SegmentRow[]>`
      with lease as (${fence(sql, shard, this.nodeId, epoch)})
      delete from ticker_cluster_segments t using lease where t.stream = ${stream} and t.base_seq <= ${rows[n - 1].base_seq}
      returning t.stream, t.base_seq, t.last_seq, t.epoch, t.key, t.bytes, t.keyed`;
    return gone.map(entryOf);
  }

  /** The streams of a cluster shard: those with tail rows, archived segments or a config set. */
  async streamsOf(shard: number): Promise<string[]> {
    const rows = await this.sql<{ stream: string }[]>`select stream from ticker_cluster_tail where shard = ${shard}
      union select stream from ticker_cluster_segments where shard = ${shard}
      union select stream from ticker_cluster_streams where shard = ${shard}`;
    return rows.map((r) => r.stream);
  }

  /** The last archived seq of a stream (0: none): a new owner's local log starts after it. */
  async archivedThrough(stream: string): Promise<number> {
    const [row] = await this.sql<{ last: string | null }[]>`select max(last_seq) as last from ticker_cluster_segments where stream = ${stream}`;
    return row.last === null ? 0 : Number(row.last);
  }
}

/** The archive a URL names: file:///dir or s3://bucket/prefix (s3-archive.ts). */
export function openArchive(url: string): Archive {
  if (url.startsWith("file://")) return new FileArchive(url);
  if (url.startsWith("s3://")) return new S3Archive(url);
  throw new Error(`archive ${JSON.stringify(url)}: an archive is file:///dir or s3://bucket/prefix`);
}
