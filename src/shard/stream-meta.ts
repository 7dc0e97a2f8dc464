// stream.json: what a stream directory says about itself (id, creation time,
// config, log format). It is small and rarely written, and the stream cannot
// be routed or opened without it, so it is kept twice (stream.json and
// stream.json.bak, each written whole and renamed into place) and each copy
// carries a CRC of its own text: a bit flip that leaves valid JSON (a digit
// of retention_ms) is damage too, and the other copy is used.
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { crc32 } from "node:zlib";
import { z } from "zod";
import { escapeStreamId, streamConfigPatch, type StreamConfig } from "./stream-config.js";
import { STREAM_ID } from "../stream-id.js";

export const META_FILE = "stream.json";
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

/** A stream directory's metadata files exist (a crash can leave an empty new dir). */
export const hasMeta = (dir: string) => existsSync(join(dir, META_FILE)) || existsSync(join(dir, COPY_FILE));

export function writeMeta(dir: string, meta: StreamMeta): void {
  const body = JSON.stringify(meta);
  const text = `${body.slice(0, -1)},"crc32":${crc32(body)}}`;
  // Both written before either is renamed: a write refused by a full disk
  // changes nothing. stream.json is renamed first: if a crash comes between
  // the two renames, the newer one wins on read.
  const paths = [META_FILE, COPY_FILE].map((name) => join(dir, name));
  try {
    for (const path of paths) writeFileSync(`${path}.tmp`, text);
  } catch (err) {
    for (const path of paths) rmSync(`${path}.tmp`, { force: true });
    throw err;
  }
  for (const path of paths) renameSync(`${path}.tmp`, path);
}

/**
 * Reads stream.json, or its copy when it is damaged. With both unreadable,
 * the id comes from the directory name when its escape can be undone, and
 * the config is the safest one (keep everything, fsync) until an operator
 * sets it again; null when even the id cannot be known.
 */
export function readMeta(dir: string, defaults: () => StreamConfig): MetaRead | null {
  // Both copies are read, so a damaged copy is reported (and rewritten by
  // the caller) while the other one is still good.
  const problems: string[] = [];
  let found: StreamMeta | null = null;
  for (const name of [META_FILE, COPY_FILE]) {
    const r = readCopy(dir, name);
    if (typeof r === "string") problems.push(`${name}: ${r}`);
    else found ??= r;
  }
  if (found) return { meta: found, damage: problems.length ? problems.join("; ") : null, rebuilt: false };
  const id = unescapeStreamId(basename(dir));
  if (id === null) return null;
  const config: StreamConfig = { ...defaults(), retention_ms: Number.MAX_SAFE_INTEGER, retention_bytes: null, durability: "fsync" };
  return { meta: { id, created_at: 0, config }, damage: `${problems.join("; ")}; config reset to keep everything until it is set again`, rebuilt: true };
}

function readCopy(dir: string, name: string): StreamMeta | string {
  let text: string;
  try {
    text = readFileSync(join(dir, name), "utf8");
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ENOENT" ? "missing" : (err as Error).message;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return "not valid JSON";
  }
  const r = metaSchema.safeParse(parsed);
  if (!r.success) return `not a stream description (${r.error.issues[0].path.join(".") || "body"}: ${r.error.issues[0].message})`;
  // The CRC is of the text before it (as written), not of a re-serialisation.
  const sealed = /,"crc32":(\d+)\}$/.exec(text);
  if (sealed) {
    if (crc32(`${text.slice(0, sealed.index)}}`) !== Number(sealed[1])) return "CRC mismatch";
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
