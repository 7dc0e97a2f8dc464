// A stream's description on disk: a line in each of the data dir's two
// description files, and directories written before them (stream.json +
// stream.json.bak), on real files.
import { afterEach, describe, expect, it } from "vitest";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { Stream } from "../../src/shard/stream.js";
import { escapeStreamId, fullConfig } from "../../src/shard/stream-config.js";
import { COPY_FILE, compactDescriptions, Descriptions, MAIN_FILE } from "../../src/shard/descriptions.js";
import { hasMeta, META_FILE, readMeta } from "../../src/shard/stream-meta.js";
import { LOG_OPTS, removeTempDirs, tempDir } from "../helpers/log-frames.js";
import { STREAM_DEFAULTS as DEFAULTS } from "../faults/damage.js";

afterEach(() => removeTempDirs());

/** A data dir with streams/ in it, and its description files as a shard holds them. */
function dataDir(): { data: string; root: string; d: Descriptions } {
  const data = tempDir("ticker-meta-");
  const root = join(data, "streams");
  mkdirSync(root);
  return { data, root, d: new Descriptions(data) };
}

const create = (root: string, d: Descriptions, id: string, patch = {}) => {
  const s = Stream.create(root, d, id, fullConfig(patch, DEFAULTS), LOG_OPTS, 1000, DEFAULTS.ordered);
  s.close();
  return s;
};

/** Reads and opens a stream directory as recovery does, through description files read afresh. */
function reopen(data: string, dir: string) {
  const d = new Descriptions(data);
  try {
    const read = readMeta(dir, () => fullConfig({}, DEFAULTS), d);
    expect(read).not.toBeNull();
    const opened = Stream.open(dir, read!, LOG_OPTS, 1000, DEFAULTS, d);
    opened.stream.close();
    return { read: read!, ...opened };
  } finally {
    d.close();
  }
}

const lines = (data: string, file: string) => readFileSync(join(data, file), "utf8").split("\n").filter(Boolean);

/** A directory as the code before the description files wrote it: the same sealed text in stream.json and stream.json.bak. */
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
  it("a new stream is its directory and a segment; its description is a line in each file, and the copy stands in for a damaged main line", () => {
    const { data, root, d } = dataDir();
    const s = create(root, d, "Ab_c", { retention_ms: 1234 });
    expect(readdirSync(s.dir)).toEqual(["00000000000000000001.log"]);
    const [line] = lines(data, MAIN_FILE);
    expect(line.startsWith(`${escapeStreamId("Ab_c")}\t{"id":"Ab_c",`)).toBe(true);
    expect(lines(data, COPY_FILE)).toEqual([line]);
    writeFileSync(join(data, MAIN_FILE), `${line.replace('"retention_ms":1234', '"retention_ms":1235')}\n`);
    const r = reopen(data, s.dir);
    expect(r.read.rebuilt).toBe(false);
    expect(r.stream.config.retention_ms).toBe(1234);
    expect(r.report.files).toEqual([`${MAIN_FILE}: no intact line`]);
    // Written again from the copy: the newest main line is intact.
    expect(reopen(data, s.dir).report.files).toEqual([]);
  });

  it("with both lines damaged the config is reset to keep everything, and that is reported", () => {
    const { data, root, d } = dataDir();
    const s = create(root, d, "both", { retention_ms: 1234 });
    d.close();
    writeFileSync(join(data, MAIN_FILE), "both\tx\n");
    writeFileSync(join(data, COPY_FILE), 'both\t{"id":"both"}\n');
    // Its segment makes it a stream's directory still.
    expect(hasMeta(s.dir, new Descriptions(data))).toBe(true);
    const r = readMeta(s.dir, () => fullConfig({}, DEFAULTS), new Descriptions(data));
    expect(r!.rebuilt).toBe(true);
    expect(r!.meta.config).toMatchObject({ retention_ms: Number.MAX_SAFE_INTEGER, durability: "fsync" });
    expect(r!.damage).toBe(`no intact line in ${MAIN_FILE} or ${COPY_FILE}, no stream.json; config reset to keep everything until it is set again`);
    // A directory that mkdir made and nothing described is passed by.
    mkdirSync(join(root, "empty"));
    expect(hasMeta(join(root, "empty"), new Descriptions(data))).toBe(false);
  });

  it("an update appends to both files: the newest line wins", () => {
    const { data, root, d } = dataDir();
    const s = Stream.create(root, d, "u", fullConfig({}, DEFAULTS), LOG_OPTS, 1000, DEFAULTS.ordered);
    s.update({ retention_ms: 1 });
    s.update({ retention_ms: 2 });
    s.close();
    expect(lines(data, MAIN_FILE)).toHaveLength(3);
    expect(lines(data, COPY_FILE)).toHaveLength(3);
    expect(reopen(data, s.dir).stream.config.retention_ms).toBe(2);
  });

  it("a directory written before the description files opens; its stream.json.bak stands in for a damaged stream.json; a rewrite moves the description to the files", () => {
    const { data, root, d } = dataDir();
    const dir = legacyDir(root, "old", 777);
    expect(hasMeta(dir, d)).toBe(true);
    const clean = reopen(data, dir);
    expect(clean.stream.config.retention_ms).toBe(777);
    expect(clean.report.files).toEqual([]);
    expect(existsSync(join(dir, META_FILE))).toBe(true);
    writeFileSync(join(dir, META_FILE), "{}");
    const damaged = reopen(data, dir);
    expect(damaged.stream.config.retention_ms).toBe(777);
    expect(damaged.report.files[0]).toMatch(/^stream\.json: not a stream description/);
    expect(readdirSync(dir).filter((f) => f.startsWith(META_FILE))).toEqual([]);
    expect(lines(data, MAIN_FILE)).toHaveLength(1);
    expect(reopen(data, dir).stream.config.retention_ms).toBe(777);
    // A damaged legacy copy beside a good stream.json is reported, and moved too.
    const dir2 = legacyDir(root, "old2", 888);
    writeFileSync(join(dir2, `${META_FILE}.bak`), "x");
    expect(reopen(data, dir2).report.files).toEqual([`${META_FILE}.bak: not valid JSON`]);
    expect(readdirSync(dir2).filter((f) => f.startsWith(META_FILE))).toEqual([]);
    expect(reopen(data, dir2).report.files).toEqual([]);
  });

  it("start-up rewrites both files to one line per stream directory once most lines are stale, and from the undamaged one when a line is damaged", () => {
    const { data, root, d } = dataDir();
    const keep = Stream.create(root, d, "keep", fullConfig({}, DEFAULTS), LOG_OPTS, 1000, DEFAULTS.ordered);
    const gone = create(root, d, "gone");
    keep.update({ retention_ms: 9 });
    keep.close();
    gone.remove();
    d.close();
    // 3 lines, 1 live: more than half stale.
    expect(compactDescriptions(data)).toEqual([]);
    const keepLine = lines(data, MAIN_FILE)[0];
    expect(lines(data, MAIN_FILE)).toEqual([keepLine]);
    expect(keepLine).toMatch(/^keep\t.*"retention_ms":9/);
    expect(lines(data, COPY_FILE)).toEqual([keepLine]);
    // Half or more live: left as it is.
    const d2 = new Descriptions(data);
    create(root, d2, "other");
    d2.close();
    const before = readFileSync(join(data, MAIN_FILE), "utf8");
    expect(compactDescriptions(data)).toEqual([]);
    expect(readFileSync(join(data, MAIN_FILE), "utf8")).toBe(before);
    // A flipped digit in keep's main line, and the copy cut short: the counts differ, both are rewritten from the copy, and it is reported.
    writeFileSync(join(data, MAIN_FILE), before.replace('"retention_ms":9', '"retention_ms":8'));
    const copyBefore = readFileSync(join(data, COPY_FILE), "utf8");
    writeFileSync(join(data, COPY_FILE), copyBefore.slice(0, copyBefore.indexOf("\n") + 1));
    expect(compactDescriptions(data)).toEqual([
      `${MAIN_FILE} holds 2 lines and ${COPY_FILE} 1: one was cut or torn`,
      `${MAIN_FILE}: 1 damaged lines, rewritten from ${COPY_FILE}`,
    ]);
    expect(lines(data, MAIN_FILE).sort()).toEqual(before.split("\n").filter(Boolean).sort());
    expect(lines(data, COPY_FILE).sort()).toEqual(before.split("\n").filter(Boolean).sort());
    // A file cut inside its last line: the next line starts on a line of its own.
    writeFileSync(join(data, MAIN_FILE), before.slice(0, -5));
    const d3 = new Descriptions(data);
    create(root, d3, "next");
    d3.close();
    expect(lines(data, MAIN_FILE).at(-1)).toMatch(/^next\t/);
  });
});
