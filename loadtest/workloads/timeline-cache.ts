// The page cache around bench:timelines' page points. This VM's page cache
// does not keep the 5.5 GiB data set: the host reclaims it (buff/cache
// ~1.1-1.7 GB right after a run and shrinking by MB/s with 22 GB free), so
// pages read from disk at random and a point's figures depend on what the
// cache happened to hold (the 32-stream points once went from 3,008 pages/s
// in one run to 78 in the next). So, with --cache warm, each set's segment
// and index files are read once before its points (the warm read), and with
// either mode the residency of the set (fincore) is measured before the warm
// read and at the start and end of every point, and reported beside it.
import { gib, readThrough, residency, residencyText, type Residency } from "../lib/page-cache.js";
import type { PageCacheRecord } from "../lib/results.js";
import { segmentFiles, type DataSet } from "./timeline-data.js";
import type { PagePoint } from "./timeline-pages.js";

export type CacheMode = PageCacheRecord["mode"];

export interface SetCache {
  mode: CacheMode;
  /** The set's segment and index files: what its pages read. */
  files: string[];
  /** Before the warm read (cold: before the first point). */
  before: Residency;
  /** The warm read, null when cold. */
  warmRead: { bytes: number; s: number } | null;
}

/** Measures what of the set is resident and, when warm, reads the set's files once. */
export function prepareSetCache(d: DataSet, streams: readonly string[], mode: CacheMode): SetCache {
  const files = segmentFiles(d, streams);
  const before = residency(files);
  return { mode, files, before, warmRead: mode === "warm" ? readThrough(files) : null };
}

/** The report's line on a set's page cache. */
export function setCacheLine(streams: number, c: SetCache): string {
  const head = `- **${streams} streams, page cache (${c.mode}):** ${residencyText(c.before)}`;
  if (c.warmRead === null) return `${head} before the first point; no warm read (--cache cold).`;
  const r = c.warmRead;
  return `${head} before the warm read, which read ${gib(r.bytes)} GiB in ${r.s.toFixed(2)} s (${gib(r.bytes / Math.max(r.s, 1e-3), 2)} GiB/s).`;
}

/** A point's table cell: "X / Y of Z" GiB resident at its start and end, of the set's size. */
export function pointCacheCell(p: PagePoint): string {
  const { cacheStart: a, cacheEnd: b } = p;
  if (!a.measured || !b.measured) return "not measured";
  return `${gib(a.residentBytes)} / ${gib(b.residentBytes)} of ${gib(a.totalBytes)}`;
}

/** A point's residency for its log line. */
export function pointCacheText(p: PagePoint): string {
  return `${residencyText(p.cacheStart)} at the start, ${residencyText(p.cacheEnd)} at the end`;
}

const bytesOf = (r: Residency, field: "residentBytes" | "totalBytes") => (r.measured ? r[field] : null);

/** The measurement records' page-cache fields of a point. */
export function cacheRecord(c: SetCache, p: PagePoint): PageCacheRecord {
  return {
    mode: c.mode,
    setBytes: bytesOf(p.cacheStart, "totalBytes") ?? bytesOf(c.before, "totalBytes"),
    residentBeforeWarmReadBytes: bytesOf(c.before, "residentBytes"),
    residentStartBytes: bytesOf(p.cacheStart, "residentBytes"),
    residentEndBytes: bytesOf(p.cacheEnd, "residentBytes"),
  };
}
