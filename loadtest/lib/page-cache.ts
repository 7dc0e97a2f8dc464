// How much of a set of files the page cache holds (util-linux fincore(1),
// which asks mincore(2) of each file), and a warm-up that reads them once
// sequentially so that a benchmark's reads meet the cache rather than the
// disk. On this VM the host reclaims the guest's page cache (buff/cache
// shrinks by MB/s with most of the memory free), so what a read-heavy
// benchmark measures depends on what the cache happens to hold: both are
// reported beside its figures. No root tricks: the cache is never dropped.
import { execFileSync } from "node:child_process";
import { closeSync, openSync, readSync } from "node:fs";

/** Files per fincore call: keeps its argument list far under ARG_MAX (paths of ~100 bytes). */
const FINCORE_FILES_MAX = 256;
const FINCORE_TIMEOUT_MS = 30_000;
/** The warm-up's read size: large sequential reads, in one reused buffer (bounded memory). */
const WARM_READ_BYTES = 8 * 1024 * 1024;
const GIB = 1024 ** 3;

/** Bytes of the files in the page cache, of their total size; or why it could not be measured. */
export type Residency = { measured: true; residentBytes: number; totalBytes: number } | { measured: false; why: string };

interface FincoreRow {
  res: number | string;
  size: number | string;
}

/** One fincore call over a bounded slice of the files. */
function fincoreChunk(files: string[]): { resident: number; total: number } {
  const out = execFileSync("fincore", ["--json", "--bytes", "--output", "RES,SIZE", "--", ...files], {
    encoding: "utf8",
    timeout: FINCORE_TIMEOUT_MS,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const rows = (JSON.parse(out) as { fincore?: FincoreRow[] }).fincore ?? [];
  if (rows.length !== files.length) throw new Error(`fincore answered for ${rows.length} of ${files.length} files`);
  let resident = 0;
  let total = 0;
  for (const r of rows) {
    // util-linux before 2.39 may print the numbers as JSON strings.
    const res = Number(r.res);
    const size = Number(r.size);
    if (!Number.isFinite(res) || !Number.isFinite(size)) throw new Error(`fincore printed res ${r.res}, size ${r.size}`);
    // fincore counts the last page whole: a file's resident bytes never exceed its size.
    resident += Math.min(res, size);
    total += size;
  }
  return { resident, total };
}

/** How much of `files` is in the page cache now (fincore); "not measured" when fincore is missing or fails. */
export function residency(files: readonly string[]): Residency {
  let residentBytes = 0;
  let totalBytes = 0;
  try {
    for (let i = 0; i < files.length; i += FINCORE_FILES_MAX) {
      const c = fincoreChunk(files.slice(i, i + FINCORE_FILES_MAX));
      residentBytes += c.resident;
      totalBytes += c.total;
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    const why = e.code === "ENOENT" ? "fincore (util-linux) not found" : `fincore failed: ${(e.stderr || e.message).trim().split("\n")[0]}`;
    return { measured: false, why };
  }
  return { measured: true, residentBytes, totalBytes };
}

/** Reads every file once from start to end; returns the bytes read and the wall time in s. */
export function readThrough(files: readonly string[]): { bytes: number; s: number } {
  const buf = Buffer.allocUnsafe(WARM_READ_BYTES);
  const t0 = performance.now();
  let bytes = 0;
  for (const file of files) {
    const fd = openSync(file, "r");
    try {
      // Bounded by the file's size: each read moves forward or ends the loop.
      for (let n = readSync(fd, buf, 0, buf.length, null); n > 0; n = readSync(fd, buf, 0, buf.length, null)) bytes += n;
    } finally {
      closeSync(fd);
    }
  }
  return { bytes, s: (performance.now() - t0) / 1000 };
}

/** GiB, to 3 decimals by default: the quick data set's 3 streams are ~0.01 GiB. */
export const gib = (bytes: number, decimals = 3) => (bytes / GIB).toFixed(decimals);

/** "resident 1.204 of 5.510 GiB (22%)", or "resident: not measured (why)". */
export function residencyText(r: Residency): string {
  if (!r.measured) return `resident: not measured (${r.why})`;
  const pct = r.totalBytes > 0 ? Math.round((100 * r.residentBytes) / r.totalBytes) : 100;
  return `resident ${gib(r.residentBytes)} of ${gib(r.totalBytes)} GiB (${pct}%)`;
}
