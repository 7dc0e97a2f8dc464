// A stream's description (id, creation time, config, log format). It is
// small and rarely written, and the stream cannot be routed or opened
// without it, so it is kept twice: a line in each of the data dir's two
// description files (descriptions.ts). Each copy carries a CRC of its own
// text: a bit flip that leaves valid JSON (a digit of retention_ms) is
// damage too, and the other copy is used. Directories written before those
// files hold theirs as stream.json and stream.json.bak, still read; the
// first write of such a stream's description moves it to the files.
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { basename, join } from "node:path";
import { z } from "zod";
import { escapeStreamId, streamConfigPatch, type StreamConfig } from "./stream-config.js";
import { STREAM_ID } from "../stream-id.js";
import { COPY_FILE as COPY_LOG, MAIN_FILE, SEAL, seal, sealedIntact, type Descriptions } from "./descriptions.js";

/** The description's file in directories written before the description files. */
export const META_FILE = "stream.json";
/** Its copy there. */
const COPY_FILE = "stream.json.bak";

export interface StreamMeta {
  id: string;
  created_at: number;
  config: StreamConfig;
  /**
   * 2: every appended batch ends with a commit-marked record (record.ts).
   * Absent in stream dirs written before marks existed; opening one marks
   * its last record and writes 2.
   */
  log_format?: number;
}

const metaSchema = z
  .object({
    id: z.string().regex(STREAM_ID),
    created_at: z.number().int().min(0),
    // Partial: files written by earlier versions may lack newer keys.
    config: streamConfigPatch,
    log_format: z.number().int().optional(),
    crc32: z.number().int().optional(),
  })
  .strict();

export interface MetaRead {
  meta: StreamMeta;
  /** What was wrong with the files, for the recovery report; null when both were fine. */
  damage: string | null;
  /** Both copies were unreadable: `meta` was rebuilt from the directory name with a safe config. */
  rebuilt: boolean;
}

/**
 * The directory is a stream's: described, or holding files (whose
 * description was lost: recovered with a safe config, and reported). A crash
 * between the mkdir of a create and its description leaves neither.
 */
export const hasMeta = (dir: string, descriptions: Descriptions) => descriptions.has(basename(dir)) || readdirSync(dir).length > 0;

/**
 * Appends the description to both files. A stream from before them (not
 * `fresh`) then loses its stream.json and copy: the files' lines are newer,
 * and read first.
 */
export function writeMeta(dir: string, meta: StreamMeta, descriptions: Descriptions, fresh = false): void {
  const body = JSON.stringify(meta);
  descriptions.write(basename(dir), seal(body), meta.config.durability === "fsync");
  if (fresh) return;
  for (const name of [META_FILE, COPY_FILE]) rmSync(join(dir, name), { force: true });
}

/**
 * Reads the description: the main file's line, else the copy's; for a
 * directory that neither describes, stream.json, else stream.json.bak. With
 * both unreadable, the id comes from the directory name when its escape can
 * be undone, and the config is the safest one (keep everything, fsync) until
 * an operator sets it again; null when even the id cannot be known.
 */
export function readMeta(dir: string, defaults: () => StreamConfig, descriptions: Descriptions): MetaRead | null {
  const name = basename(dir);
  const texts = descriptions.texts(name);
  const copy = texts.main === undefined ? texts.copy() : undefined;
  const problems: string[] = [];
  let found: StreamMeta | null = null;
  const take = (file: string, read: string | { text: string }) => {
    const r = checkCopy(dir, read);
    if (typeof r !== "string") found ??= r;
    else if (r !== "missing" || (file !== COPY_FILE && file !== META_FILE)) problems.push(`${file}: ${r}`);
  };
  if (texts.main !== undefined || copy !== undefined) {
    take(MAIN_FILE, texts.main === undefined ? "no intact line" : { text: texts.main });
    if (found === null) {
      const c = copy ?? texts.copy();
      take(COPY_LOG, c === undefined ? "no intact line" : { text: c });
    }
  } else {
    // Legacy: the copy is read while it exists, so its damage is reported
    // (and the caller's rewrite moves both to the files) while stream.json is good.
    take(META_FILE, readText(dir, META_FILE));
    take(COPY_FILE, readText(dir, COPY_FILE));
    if (found === null && problems.length === 0) problems.push(`no intact line in ${MAIN_FILE} or ${COPY_LOG}, no ${META_FILE}`);
  }
  if (found) return { meta: found, damage: problems.length ? problems.join("; ") : null, rebuilt: false };
  const id = unescapeStreamId(name);
  if (id === null) return null;
  const config: StreamConfig = { ...defaults(), retention_ms: Number.MAX_SAFE_INTEGER, retention_bytes: null, durability: "fsync" };
  return { meta: { id, created_at: 0, config }, damage: `${problems.join("; ")}; config reset to keep everything until it is set again`, rebuilt: true };
}

function readText(dir: string, name: string): string | { text: string } {
  try {
    return { text: readFileSync(join(dir, name), "utf8") };
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ENOENT" ? "missing" : (err as Error).message;
  }
}

function checkCopy(dir: string, read: string | { text: string }): StreamMeta | string {
  if (typeof read === "string") return read;
  const text = read.text;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return "not valid JSON";
  }
  const r = metaSchema.safeParse(parsed);
  if (!r.success) return `not a stream description (${r.error.issues[0].path.join(".") || "body"}: ${r.error.issues[0].message})`;
  // The CRC is of the text before it (as written), not of a re-serialisation.
  if (SEAL.test(text)) {
    if (!sealedIntact(text)) return "CRC mismatch";
  } else if (r.data.crc32 !== undefined) return "CRC not where it is written";
  const { crc32: _crc, ...meta } = r.data;
  if (escapeStreamId(meta.id) !== basename(dir)) return `id "${meta.id}" does not belong in directory ${basename(dir)}`;
  return meta as StreamMeta;
}

/** The id an escaped directory name stands for, or null (a hashed long id cannot be undone). */
export function unescapeStreamId(name: string): string | null {
  if (name.includes("~")) return null;
  const id = name.replace(/_([0-9a-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
  return STREAM_ID.test(id) && escapeStreamId(id) === name ? id : null;
}
