// A stream's description on disk: stream.json in its directory and its copy
// as a line of the data dir's stream-copies.log, and directories written
// before that file (stream.json + stream.json.bak), on real files.
import { afterEach, describe, expect, it } from "vitest";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { Stream } from "../../src/shard/stream.js";
import { escapeStreamId, fullConfig } from "../../src/shard/stream-config.js";
import { COPIES_FILE, compactCopies, StreamCopies } from "../../src/shard/stream-copies.js";
import { META_FILE, readMeta } from "../../src/shard/stream-meta.js";
import { LOG_OPTS, removeTempDirs, tempDir } from "../helpers/log-frames.js";
import { STREAM_DEFAULTS as DEFAULTS } from "../faults/damage.js";

afterEach(() => removeTempDirs());

/** A data dir with streams/ in it, and its copies file as a shard holds it. */
function dataDir(): { data: string; root: string; copies: StreamCopies } {
  const data = tempDir("ticker-meta-");
  const root = join(data, "streams");
  mkdirSync(root);
  return { data, root, copies: new StreamCopies(join(data, COPIES_FILE)) };
}

const create = (root: string, copies: StreamCopies, id: string, patch = {}) =>
  Stream.create(root, copies, id, fullConfig(patch, DEFAULTS), LOG_OPTS, 1000, DEFAULTS.ordered);

/** Reads and opens a stream directory as recovery does. */
function reopen(dir: string, copies: StreamCopies) {
  const read = readMeta(dir, () => fullConfig({}, DEFAULTS), copies);
  expect(read).not.toBeNull();
  const opened = Stream.open(dir, read!, LOG_OPTS, 1000, DEFAULTS, copies);
  opened.stream.close();
  return { read: read!, ...opened };
}

const copyLines = (data: string) => readFileSync(join(data, COPIES_FILE), "utf8").split("\n").filter(Boolean);

/** stream.json as the code before stream-copies.log wrote it: the same sealed text in both files. */
function legacyDir(root: string, id: string, retentionMs: number): string {
  const dir = join(root, escapeStreamId(id));
  mkdirSync(dir);
  const body = JSON.stringify({ id, created_at: 5, config: fullConfig({ retention_ms: retentionMs }, DEFAULTS), log_format: 2 });
  const text = `${body.slice(0, -1)},"crc32":${crc32(body)}}`;
  writeFileSync(join(dir, META_FILE), text);
  writeFileSync(join(dir, `${META_FILE}.bak`), text);
  return dir;
}

describe("stream descriptions", () => {
  it("a new stream is its directory, stream.json and a segment; the copy is a line of stream-copies.log and stands in for a damaged stream.json", () => {
    const { data, root, copies } = dataDir();
    const s = create(root, copies, "Ab_c", { retention_ms: 1234 });
    s.close();
    expect(readdirSync(s.dir).sort()).toEqual(["00000000000000000001.log", META_FILE]);
    expect(copyLines(data)).toEqual([`${escapeStreamId("Ab_c")}\t${readFileSync(join(s.dir, META_FILE), "utf8")}`]);
    writeFileSync(join(s.dir, META_FILE), '{"id":"Ab_c","created_at":1,');
    const r = reopen(s.dir, new StreamCopies(join(data, COPIES_FILE)));
    expect(r.read.rebuilt).toBe(false);
    expect(r.stream.config.retention_ms).toBe(1234);
    expect(r.report.files).toEqual([`${META_FILE}: not valid JSON`]);
    // Rewritten from the copy: intact again on the next start.
    expect(reopen(s.dir, copies).report.files).toEqual([]);
  });

  it("with stream.json and its copy both damaged the config is reset to keep everything, and that is reported", () => {
    const { data, root, copies } = dataDir();
    const s = create(root, copies, "both", { retention_ms: 1234 });
    s.close();
    copies.close();
    writeFileSync(join(s.dir, META_FILE), "");
    writeFileSync(join(data, COPIES_FILE), `${escapeStreamId("both")}\t{"id":"both"}\n`);
    const r = reopen(s.dir, new StreamCopies(join(data, COPIES_FILE)));
    expect(r.read.rebuilt).toBe(true);
    expect(r.stream.config).toMatchObject({ retention_ms: Number.MAX_SAFE_INTEGER, durability: "fsync" });
    expect(r.report.files[0]).toMatch(/stream\.json: not valid JSON; stream-copies\.log: no line for both; config reset/);
  });

  it("an update renames a new stream.json into place and appends its copy: the newest line wins", () => {
    const { data, root, copies } = dataDir();
    const s = create(root, copies, "u");
    s.update({ retention_ms: 1 });
    s.update({ retention_ms: 2 });
    s.close();
    expect(copyLines(data)).toHaveLength(3);
    expect(readdirSync(s.dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    writeFileSync(join(s.dir, META_FILE), "garbage");
    expect(reopen(s.dir, new StreamCopies(join(data, COPIES_FILE))).stream.config.retention_ms).toBe(2);
  });

  it("a directory written before stream-copies.log opens; its stream.json.bak stands in for a damaged stream.json; an update moves the copy to the file", () => {
    const { data, root, copies } = dataDir();
    const dir = legacyDir(root, "old", 777);
    const clean = reopen(dir, copies);
    expect(clean.stream.config.retention_ms).toBe(777);
    expect(clean.report.files).toEqual([]);
    expect(existsSync(join(dir, `${META_FILE}.bak`))).toBe(true);
    // Damaged stream.json: the legacy copy is used, and the rewrite moves the copy to stream-copies.log.
    writeFileSync(join(dir, META_FILE), "{}");
    const damaged = reopen(dir, copies);
    expect(damaged.stream.config.retention_ms).toBe(777);
    expect(damaged.report.files[0]).toMatch(/^stream\.json: not a stream description/);
    expect(existsSync(join(dir, `${META_FILE}.bak`))).toBe(false);
    expect(copyLines(data)).toHaveLength(1);
    // A damaged legacy copy beside a good stream.json is reported and replaced.
    const dir2 = legacyDir(root, "old2", 888);
    writeFileSync(join(dir2, `${META_FILE}.bak`), "x");
    expect(reopen(dir2, copies).report.files).toEqual([`${META_FILE}.bak: not valid JSON`]);
    expect(existsSync(join(dir2, `${META_FILE}.bak`))).toBe(false);
    expect(reopen(dir2, copies).report.files).toEqual([]);
  });

  it("start-up rewrites stream-copies.log to one line per stream directory once most lines are stale, and re-copies a stream whose line is damaged", () => {
    const { data, root, copies } = dataDir();
    const keep = create(root, copies, "keep");
    const gone = create(root, copies, "gone");
    keep.update({ retention_ms: 9 });
    gone.remove();
    keep.close();
    copies.close();
    // 3 lines, 1 live: more than half stale.
    expect(compactCopies(data, META_FILE)).toEqual([]);
    expect(copyLines(data)).toEqual([`keep\t${readFileSync(join(keep.dir, META_FILE), "utf8")}`]);
    // Half or more live: left as it is.
    const other = create(root, new StreamCopies(join(data, COPIES_FILE)), "other");
    other.close();
    const before = readFileSync(join(data, COPIES_FILE), "utf8");
    expect(compactCopies(data, META_FILE)).toEqual([]);
    expect(readFileSync(join(data, COPIES_FILE), "utf8")).toBe(before);
    // A flipped digit in keep's line: dropped, reported, and keep's intact stream.json copied again.
    writeFileSync(join(data, COPIES_FILE), before.replace('"retention_ms":9', '"retention_ms":8'));
    expect(compactCopies(data, META_FILE)).toEqual([`${COPIES_FILE}: 1 damaged lines dropped, their streams' stream.json copied again`]);
    expect(copyLines(data).sort()).toEqual(before.split("\n").filter(Boolean).sort());
  });
});
