// stream.json: what a stream directory says about itself (id, creation time,
// config, log format). It is small and rarely written, and the stream cannot
// be routed or opened without it, so it is kept twice (stream.json, and a
// line of the data dir's stream-copies.log) and each copy carries a CRC of
// its own text: a bit flip that leaves valid JSON (a digit of retention_ms)
// is damage too, and the other copy is used. Directories written before the
// shared copies file hold their copy as stream.json.bak, still read.
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { crc32 } from "node:zlib";
import { z } from "zod";
import { escapeStreamId, streamConfigPatch, type StreamConfig } from "./stream-config.js";
import { STREAM_ID } from "../stream-id.js";
import type { StreamCopies } from "./stream-copies.js";

export const META_FILE = "stream.json";
/** The copy's file in directories written before stream-copies.log. */
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

/**
 * Writes the description: its copy first (a crash before stream.json leaves
 * a directory recovery skips), then stream.json. In a directory mkdir just
 * made (`fresh`) stream.json is written in place: there is no older copy to
 * protect, and a process crash cuts no write(2) in half. Otherwise it is
 * written beside and renamed over, and a legacy stream.json.bak goes (the
 * copies file holds the newer copy).
 */
export function writeMeta(dir: string, meta: StreamMeta, copies: StreamCopies, fresh = false): void {
  const body = JSON.stringify(meta);
  const text = `${body.slice(0, -1)},"crc32":${crc32(body)}}`;
  const path = join(dir, META_FILE);
  if (fresh) {
    copies.append(basename(dir), text, meta.config.durability === "fsync");
    writeFileSync(path, text, { flag: "wx" });
    return;
  }
  // stream.json's new text is on disk before the copy is appended: a write
  // refused by a full disk changes nothing.
  try {
    writeFileSync(`${path}.tmp`, text);
    copies.append(basename(dir), text, meta.config.durability === "fsync");
  } catch (err) {
    rmSync(`${path}.tmp`, { force: true });
    throw err;
  }
  renameSync(`${path}.tmp`, path);
  rmSync(join(dir, COPY_FILE), { force: true });
}

/** The text ends with the CRC of what precedes it, and they agree (no parse: compaction checks every line). */
export function sealedIntact(text: string): boolean {
  const sealed = SEAL.exec(text);
  return sealed !== null && crc32(`${text.slice(0, sealed.index)}}`) === Number(sealed[1]);
}

const SEAL = /,"crc32":(\d+)\}$/;

/**
 * Reads stream.json, or its copy when it is damaged: the copies file's line,
 * else (a directory from before it) stream.json.bak. With both unreadable,
 * the id comes from the directory name when its escape can be undone, and
 * the config is the safest one (keep everything, fsync) until an operator
 * sets it again; null when even the id cannot be known.
 */
export function readMeta(dir: string, defaults: () => StreamConfig, copies: StreamCopies): MetaRead | null {
  const problems: string[] = [];
  const own = checkCopy(dir, readText(dir, META_FILE));
  // A legacy copy is read while it exists, so its damage is reported (and
  // the caller's rewrite replaces it) while stream.json is still good.
  const legacy = readText(dir, COPY_FILE);
  const oldCopy = legacy === "missing" ? legacy : checkCopy(dir, legacy);
  if (typeof own === "string") problems.push(`${META_FILE}: ${own}`);
  if (typeof oldCopy === "string" && oldCopy !== "missing") problems.push(`${COPY_FILE}: ${oldCopy}`);
  let found = typeof own === "string" ? null : own;
  if (found === null) {
    const line = copies.lookup(basename(dir));
    const copy = line === null ? `no line for ${basename(dir)}` : checkCopy(dir, { text: line });
    if (typeof copy !== "string") found = copy;
    else if (typeof oldCopy !== "string") found = oldCopy;
    else if (oldCopy === "missing") problems.push(`stream-copies.log: ${copy}`);
  }
  if (found) return { meta: found, damage: problems.length ? problems.join("; ") : null, rebuilt: false };
  const id = unescapeStreamId(basename(dir));
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
