import { describe, it, expect, afterEach } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, loadConfig } from "../../src/config.js";
import { shardOpenFilesMax } from "../../src/limits.js";

const dirs: string[] = [];
afterEach(() => {
  while (dirs.length) rmSync(dirs.pop()!, { recursive: true, force: true });
});

function configFile(obj: unknown): string {
  const d = mkdtempSync(join(tmpdir(), "ticker-cfg-"));
  dirs.push(d);
  const p = join(d, "ticker.json");
  writeFileSync(p, JSON.stringify(obj));
  return p;
}

describe("configuration", () => {
  it("defaults give the embedded node on 127.0.0.1:8080 with data in ./data", () => {
    const c = loadConfig({}, {});
    expect([c.host, c.port, c.data_dir, c.publish_events_max, c.request_bytes_max, c.replay_page_events_max]).toEqual([
      "127.0.0.1",
      8080,
      "./data",
      1000,
      16 * 1024 * 1024,
      10_000,
    ]);
  });

  it("flags win over TICKER_* environment, which wins over the config file", () => {
    const file = configFile({ port: 1111, data_dir: "/from/file", segment_bytes_max: 4096 });
    const c = loadConfig({ config: file, port: "3333" }, { TICKER_PORT: "2222", TICKER_DATA_DIR: "/from/env" });
    expect([c.port, c.data_dir, c.segment_bytes_max]).toEqual([3333, "/from/env", 4096]);
    expect(loadConfig({}, { TICKER_CONFIG: file }).port).toBe(1111);
    expect(loadConfig({ "auto-create-streams": "false" }, {}).auto_create_streams).toBe(false);
  });

  it("refuses unknown keys, values out of range and rings too small for the limits", () => {
    expect(() => loadConfig({ config: configFile({ prot: 1 }) }, {})).toThrow(ConfigError);
    expect(() => loadConfig({ port: "70000" }, {})).toThrow(/port/);
    expect(() => loadConfig({ "publish-events-max": "0" }, {})).toThrow(/publish_events_max/);
    expect(() => loadConfig({ "ring-bytes": String(1 << 20) }, {})).toThrow(/ring_bytes/);
    expect(() => loadConfig({ "replay-page-events-default": "20000" }, {})).toThrow(/replay_page_events_default/);
    expect(() => loadConfig({ config: "/nonexistent/ticker.json" }, {})).toThrow(/cannot read config file/);
  });

  it("open_files_max: 4096 by default, split across shards, and refused below 8 per shard", () => {
    expect(loadConfig({}, {}).open_files_max).toBe(4096);
    expect(shardOpenFilesMax(loadConfig({ "open-files-max": "100", shards: "3" }, {}))).toBe(33);
    expect(loadConfig({ "open-files-max": "32", shards: "4" }, {}).open_files_max).toBe(32);
    expect(() => loadConfig({ "open-files-max": "31", shards: "4" }, {})).toThrow(/open_files_max: must be at least 32/);
    expect(() => loadConfig({ "open-files-max": "7", shards: "1" }, {})).toThrow(/open_files_max/);
  });

  it("shard_young_generation_mb: 3 by default, 0 (V8's own) to 1024, nothing outside", () => {
    expect(loadConfig({}, {}).shard_young_generation_mb).toBe(3);
    expect(loadConfig({ "shard-young-generation-mb": "0" }, {}).shard_young_generation_mb).toBe(0);
    expect(loadConfig({}, { TICKER_SHARD_YOUNG_GENERATION_MB: "1024" }).shard_young_generation_mb).toBe(1024);
    expect(() => loadConfig({ "shard-young-generation-mb": "1025" }, {})).toThrow(/shard_young_generation_mb/);
    expect(() => loadConfig({ "shard-young-generation-mb": "-1" }, {})).toThrow(/shard_young_generation_mb/);
  });

  it("timeline limits: defaults, and each key's range accepted at its ends and refused one past them", () => {
    const c = loadConfig({}, {});
    expect([c.timeline_streams_max, c.timelines_max, c.timeline_readers_max, c.timeline_cursor_grace_ms]).toEqual([64, 10_000, 10_000, 86_400_000]);
    expect([c.timeline_cursor_secret, c.timeline_cursor_previous_secret]).toEqual(["", ""]);
    expect([c.timeline_page_events_max, c.timeline_wait_ms_max, c.timeline_source_timeout_ms, c.timeline_waiters_max]).toEqual([1000, 30_000, 200, 10_000]);
    const ranges: Array<[string, number, number]> = [
      ["timeline_streams_max", 1, 1024],
      ["timeline_page_events_max", 1, 100_000],
      ["timeline_wait_ms_max", 0, 600_000],
      ["timeline_source_timeout_ms", 1, 60_000],
      ["timeline_waiters_max", 1, 1_000_000],
      ["timelines_max", 1, 1_000_000],
      ["timeline_readers_max", 1, 1_000_000],
      ["timeline_cursor_grace_ms", 0, 31_536_000_000],
    ];
    for (const [key, min, max] of ranges) {
      const flag = key.replaceAll("_", "-");
      expect(loadConfig({ [flag]: String(min) }, {})[key as "timelines_max"]).toBe(min);
      expect(loadConfig({ [flag]: String(max) }, {})[key as "timelines_max"]).toBe(max);
      expect(() => loadConfig({ [flag]: String(min - 1) }, {})).toThrow(new RegExp(key));
      expect(() => loadConfig({ [flag]: String(max + 1) }, {})).toThrow(new RegExp(key));
    }
  });

  it("cursor secrets: 32 to 1024 characters, and a previous secret only beside a current one", () => {
    for (const key of ["timeline_cursor_secret", "timeline_cursor_previous_secret"] as const) {
      const flag = key.replaceAll("_", "-");
      const other = key === "timeline_cursor_secret" ? {} : { "timeline-cursor-secret": "c".repeat(32) };
      expect(loadConfig({ ...other, [flag]: "x".repeat(32) }, {})[key]).toBe("x".repeat(32));
      expect(loadConfig({ ...other, [flag]: "x".repeat(1024) }, {})[key]).toHaveLength(1024);
      expect(() => loadConfig({ ...other, [flag]: "x".repeat(31) }, {})).toThrow(new RegExp(`${key}: must be empty or 32 to 1024 characters`));
      expect(() => loadConfig({ ...other, [flag]: "x".repeat(1025) }, {})).toThrow(new RegExp(key));
    }
    expect(() => loadConfig({ "timeline-cursor-previous-secret": "p".repeat(32) }, {})).toThrow(
      /timeline_cursor_previous_secret: needs timeline_cursor_secret/,
    );
  });
});
