// The names of a log's files, formatted and parsed here only. A segment is
// <base seq>.log, its closed index <base seq>.idx and .tidx beside it, the
// base seq zero-padded to 20 digits (Kafka's layout): every seq below 2^64
// fits, and the names sort as text in seq order.
import { join } from "node:path";

const BASE_DIGITS = 20;
const SEGMENT_FILE = new RegExp(`^\\d{${BASE_DIGITS}}\\.log$`);

const baseName = (baseSeq: number) => String(baseSeq).padStart(BASE_DIGITS, "0");

export const logPath = (dir: string, baseSeq: number) => join(dir, `${baseName(baseSeq)}.log`);
export const idxPath = (dir: string, baseSeq: number) => join(dir, `${baseName(baseSeq)}.idx`);
export const tidxPath = (dir: string, baseSeq: number) => join(dir, `${baseName(baseSeq)}.tidx`);

/** Where a file is written before it is renamed into place (a crash leaves no half file under the real name). */
export const partialPath = (path: string) => `${path}.tmp`;

/** The base seqs of the segments among a directory's file names, ascending. */
export function segmentBases(fileNames: string[]): number[] {
  return fileNames
    .filter((f) => SEGMENT_FILE.test(f))
    .map((f) => Number(f.slice(0, BASE_DIGITS)))
    .sort((a, b) => a - b);
}
