// A world for the tests of history from the archive: a private PostgreSQL
// with a live lease on shard 0, a real file:// archive in a temp dir, and
// streams' local logs that roll real segments for an owner to archive.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { expect } from "vitest";
import type postgres from "postgres";
import { ArchivedHistory, type ArchivedHistoryOptions } from "../../src/cluster/archived-history.js";
import { FileArchive, Manifest, segmentKey } from "../../src/cluster/archive.js";
import { ShardLeases } from "../../src/cluster/leases.js";
import { ARCHIVE_CHUNK_BYTES, chunkPointsOf } from "../../src/cluster/segment-chunks.js";
import { StreamLog, type FramePage } from "../../src/log/log.js";
import { frameSeq } from "../../src/log/record.js";
import { clusterDb } from "./cluster-db.js";
import { LOG_OPTS, appendN, removeTempDirs, tempDir } from "./log-frames.js";

/** Counts the gets that reach the archive's directory, and the bytes they read; `held` keeps them waiting. */
export class CountingArchive extends FileArchive {
  gets = 0;
  bytesRead = 0;
  /** The ranges asked for, as [key, start, end]. */
  readonly ranges: Array<[string, number, number]> = [];
  held: Promise<void> | null = null;
  /** Called as each get's bytes come back. */
  onGot: (() => void) | null = null;
  override async get(key: string, r?: { start: number; end: number }): Promise<Buffer> {
    this.gets++;
    this.ranges.push([key, r?.start ?? 0, r?.end ?? Number.POSITIVE_INFINITY]);
    await this.held;
    const bytes = await super.get(key, r);
    this.bytesRead += bytes.length;
    this.onGot?.();
    return bytes;
  }
}

/** A closed segment's .log bytes and the seqs the owner says it holds. */
export interface Written {
  baseSeq: number;
  lastSeq: number;
  bytes: Buffer;
}

export interface ArchiveWorld {
  sql: postgres.Sql;
  manifest: Manifest;
  archive: CountingArchive;
  /** The epoch of the live lease on shard 0 that manifest rows are committed under. */
  epoch: number;
  /**
   * Puts segments in the archive and commits their manifest rows, as the stream's owner does: with
   * the points of chunks of `chunkBytes` (ARCHIVE_CHUNK_BYTES unless told), or none (null: a segment
   * archived before points).
   */
  archiveSegments(stream: string, segs: Written[], chunkBytes?: number | null): Promise<void>;
  /** An ArchivedHistory over this archive (16 MiB cache, LOG_OPTS' frame bound, a minute's TTL unless told). */
  history(o?: Partial<ArchivedHistoryOptions>): ArchivedHistory;
  /**
   * A stream's local log as its owner writes it (LOG_OPTS unless told: 64 KiB segments; batches of 64,
   * 128-byte frames: 512 a segment): each call appends `n` records, rolls, and returns the segments that closed.
   */
  owner(bodyBytes?: number, segmentBytesMax?: number): (n: number) => Written[];
  stop(): Promise<void>;
}

export async function archiveWorld(): Promise<ArchiveWorld> {
  const db = await clusterDb();
  const open = await db.fresh();
  const leases = new ShardLeases(open(), { nodeId: "a", leaseMs: 3_600_000, shards: 1 });
  await leases.ensureShards();
  const epoch = (await leases.claim(0))!.epoch;
  const manifest = new Manifest(open(), "a");
  const root = mkdtempSync(join(tmpdir(), "ticker-archived-history-"));
  const archive = new CountingArchive(pathToFileURL(root).href);
  const logs: StreamLog[] = [];
  return {
    sql: open(),
    manifest,
    archive,
    epoch,
    async archiveSegments(stream, segs, chunkBytes = ARCHIVE_CHUNK_BYTES) {
      for (const s of segs) {
        const key = segmentKey(stream, s.baseSeq, epoch);
        await archive.put(key, s.bytes);
        const points = chunkBytes === null ? null : await chunkPointsOf(s.bytes, LOG_OPTS.frameBytesMax, chunkBytes);
        expect(await manifest.commit(0, { stream, baseSeq: s.baseSeq, lastSeq: s.lastSeq, epoch, key, bytes: s.bytes.length, points })).toBe(true);
      }
    },
    history: (o = {}) =>
      new ArchivedHistory(archive, manifest, { cacheBytesMax: 16 << 20, frameBytesMax: LOG_OPTS.frameBytesMax, manifestTtlMs: 60_000, ...o }),
    owner(bodyBytes = 100, segmentBytesMax = LOG_OPTS.segmentBytesMax) {
      const log = new StreamLog(tempDir(), { ...LOG_OPTS, segmentBytesMax });
      log.open();
      logs.push(log);
      let closedThrough = 0;
      return (n) => {
        appendN(log, n, { bodyBytes, batch: 64 });
        log.roll(false);
        const closed = log.segments.filter((s) => !s.empty && s.baseSeq > closedThrough);
        closedThrough = log.headSeq;
        return closed.map((s) => ({ baseSeq: s.baseSeq, lastSeq: s.lastSeq, bytes: readFileSync(s.logPath) }));
      };
    },
    async stop() {
      for (const log of logs) log.close();
      removeTempDirs();
      rmSync(root, { recursive: true, force: true });
      await db.stop();
    },
  };
}

/** The seqs of a page's frames. */
export function seqsOf(page: FramePage): number[] {
  const seqs: number[] = [];
  for (let at = 0, i = 0; i < page.count; i++, at += page.buf.readUInt32LE(at)) seqs.push(frameSeq(page.buf, at));
  return seqs;
}
