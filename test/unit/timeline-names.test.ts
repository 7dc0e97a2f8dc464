// Named timelines in the data dir (src/timeline/names.ts) and the stream-set
// rule they share with ad hoc timelines (src/timeline/stream-set.ts): a
// timeline is there after a reopen exactly as last answered, a crash's
// leftovers are cleaned up, a damaged file is reported and not loaded, and
// timelines_max and timeline_streams_max hold at their limits.
import { afterEach, describe, expect, it } from "vitest";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { removeTempDirs, tempDir as tempDirOf } from "../helpers/log-frames.js";
import { refusal } from "../helpers/refusal.js";
import { NamedTimelines, TIMELINE_FILE, TIMELINES_DIR, checkTimelineName } from "../../src/timeline/names.js";
import { streamSet } from "../../src/timeline/stream-set.js";

afterEach(removeTempDirs);
const tempDir = () => tempDirOf("ticker-names-");

describe("stream sets", () => {
  it("are sorted by string compare without repeats", () => {
    expect(streamSet(["b", "a", "B", "a", "a.1"], 64, "invalid_body")).toEqual(["B", "a", "a.1", "b"]);
  });

  it("refuse a bad id naming it, an empty set, and one past timeline_streams_max (repeats do not count)", async () => {
    const bad = await refusal(() => streamSet(["ok", "no/slash"], 64, "invalid_body"));
    expect([bad.status, bad.code, bad.extra.stream]).toEqual([400, "invalid_stream", "no/slash"]);
    const empty = await refusal(() => streamSet([], 64, "invalid_parameter"));
    expect([empty.status, empty.code]).toEqual([400, "invalid_parameter"]);
    const ids = Array.from({ length: 65 }, (_, i) => `s${i}`);
    expect(streamSet(ids.slice(0, 64), 64, "invalid_body")).toHaveLength(64);
    expect(streamSet([...ids.slice(0, 64), "s0", "s1"], 64, "invalid_body")).toHaveLength(64);
    const over = await refusal(() => streamSet(ids, 64, "invalid_body"));
    expect([over.status, over.code, over.extra.timeline_streams_max]).toEqual([400, "invalid_body", 64]);
  });
});

describe("named timelines", () => {
  it("names follow the stream id rule", async () => {
    for (const ok of ["a", "A.b-c_d", "x".repeat(128)]) expect(() => checkTimelineName(ok)).not.toThrow();
    for (const bad of ["", "_secret", ".x", "a/b", "x".repeat(129), "a b"]) {
      const e = await refusal(() => checkTimelineName(bad));
      expect([e.status, e.code]).toEqual([400, "invalid_timeline"]);
    }
  });

  it("are created, changed, listed and deleted, and a reopen finds what was last answered", async () => {
    const dir = tempDir();
    const t = NamedTimelines.open(dir, 100);
    const a = await t.put("feed", ["a", "b"], 1000);
    expect(a).toMatchObject({ created: true, changed: true, timeline: { name: "feed", streams: ["a", "b"], created_at: 1000, updated_at: 1000 } });
    const same = await t.put("feed", ["a", "b"], 2000);
    expect([same.created, same.changed, same.timeline.updated_at]).toEqual([false, false, 1000]);
    const changed = await t.put("feed", ["a", "c"], 3000);
    expect(changed).toMatchObject({ created: false, changed: true, timeline: { streams: ["a", "c"], created_at: 1000, updated_at: 3000 } });
    await t.put("Feed", ["z"], 4000); // case matters, also on a case-insensitive filesystem
    await t.put("gone", ["z"], 5000);
    expect(await t.remove("gone")).toBe(true);
    expect(await t.remove("gone")).toBe(false);
    expect(t.list().map((x) => x.name)).toEqual(["Feed", "feed"]);

    const again = NamedTimelines.open(dir, 100);
    expect(again.list()).toEqual(t.list());
    expect(again.get("feed")).toEqual({ name: "feed", streams: ["a", "c"], created_at: 1000, updated_at: 3000 });
    expect(again.damage).toEqual([]);
    expect(readdirSync(join(dir, TIMELINES_DIR)).sort()).toHaveLength(2);
  });

  it("updated_at never goes back, also when the clock does", async () => {
    const t = NamedTimelines.open(tempDir(), 10);
    await t.put("x", ["a"], 5000);
    const r = await t.put("x", ["b"], 4000);
    expect(r.timeline.updated_at).toBe(5001);
  });

  it("a crash's leftovers are removed on open: a directory without its file, a half-written tmp", async () => {
    const dir = tempDir();
    const t = NamedTimelines.open(dir, 10);
    await t.put("kept", ["a"], 1);
    const root = join(dir, TIMELINES_DIR);
    mkdirSync(join(root, "crashed-create"));
    writeFileSync(join(root, "crashed-create", `${TIMELINE_FILE}.tmp`), "{");
    writeFileSync(join(root, "kept", `${TIMELINE_FILE}.tmp`), "{half");
    const again = NamedTimelines.open(dir, 10);
    expect(again.list().map((x) => x.name)).toEqual(["kept"]);
    expect(existsSync(join(root, "crashed-create"))).toBe(false);
    expect(existsSync(join(root, "kept", `${TIMELINE_FILE}.tmp`))).toBe(false);
    expect(again.damage).toEqual([]);
  });

  it("a damaged file is reported and not loaded; the others are", async () => {
    const dir = tempDir();
    const t = NamedTimelines.open(dir, 10);
    for (const n of ["a", "b", "c", "d"]) await t.put(n, ["s"], 1);
    const file = (n: string) => join(dir, TIMELINES_DIR, n, TIMELINE_FILE);
    writeFileSync(file("a"), "{not json");
    writeFileSync(file("b"), readFileSync(file("b"), "utf8").replace('["s"]', '["t","s"]'));
    writeFileSync(file("c"), readFileSync(file("c"), "utf8").replace('"name":"c"', '"name":"d"'));
    const again = NamedTimelines.open(dir, 10);
    expect(again.list().map((x) => x.name)).toEqual(["d"]);
    expect(again.damage).toHaveLength(3);
    expect(again.damage.join("\n")).toMatch(/timelines\/a\/timeline.json: not readable JSON/);
    expect(again.damage.join("\n")).toMatch(/timelines\/b\/timeline.json: not a timeline \(streams/);
    expect(again.damage.join("\n")).toMatch(/does not belong in directory c/);
  });

  it("timelines_max: the last one fits, one more is 409, a change of an existing one still works, a delete makes room", async () => {
    const t = NamedTimelines.open(tempDir(), 3);
    for (const n of ["a", "b", "c"]) await t.put(n, ["s"]);
    const e = await refusal(t.put("d", ["s"]));
    expect([e.status, e.code, e.extra.timelines_max]).toEqual([409, "limit_reached", 3]);
    expect(t.get("d")).toBeUndefined();
    expect((await t.put("a", ["s", "t"])).changed).toBe(true);
    await t.remove("b");
    expect((await t.put("d", ["s"])).created).toBe(true);
    expect(t.size).toBe(3);
  });

  it("concurrent puts of one new name create it once", async () => {
    const t = NamedTimelines.open(tempDir(), 10);
    const rs = await Promise.all([t.put("x", ["a"]), t.put("x", ["a"]), t.put("x", ["b"])]);
    expect(rs.map((r) => r.created)).toEqual([true, false, false]);
    expect(t.get("x")?.streams).toEqual(["b"]);
  });
});
