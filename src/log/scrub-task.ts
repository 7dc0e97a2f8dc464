// A piscina task: verifies one closed segment file end to end (every frame's
// CRC and the seq chain) in the background after start-up, so damage in data
// that recovery did not need to read is found and reported before a reader
// trips on it. Stateless: it opens, reads and closes the file.
import { closeSync, fstatSync, openSync } from "node:fs";
import { scanSegment, type ScanResult } from "./scan.js";

export interface ScrubTask {
  path: string;
  baseSeq: number;
  /** The last seq the segment's index says it holds. */
  lastSeq: number;
  frameBytesMax: number;
}

/** Where the first damaged record is, as the scan reports it. */
export type ScrubResult = NonNullable<ScanResult["damage"]>;

export default function scrub(task: ScrubTask): ScrubResult | null {
  let fd: number;
  try {
    fd = openSync(task.path, "r");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Retention may delete a segment while it waits for its turn.
    if (code === "ENOENT") return null;
    throw err;
  }
  try {
    const r = scanSegment(fd, fstatSync(fd).size, task.baseSeq, task.frameBytesMax);
    if (r.damage) return r.damage;
    if (r.lastSeq !== task.lastSeq)
      return { position: r.validBytes, seq: r.lastSeq + 1, reason: `segment ends at seq ${r.lastSeq}, its index says ${task.lastSeq}` };
    return null;
  } finally {
    closeSync(fd);
  }
}
