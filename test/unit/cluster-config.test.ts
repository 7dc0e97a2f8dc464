// The cluster-mode keys, checked together: on with cluster_postgres_url and
// then complete, off and then absent; and their bounds, at the limit.
import { describe, it, expect } from "vitest";
import { ConfigError, loadConfig } from "../../src/config.js";

const CLUSTER = {
  cluster_postgres_url: "postgres://ticker@127.0.0.1:5432/ticker",
  node_id: "n1",
  advertise_url: "http://10.0.0.1:8080",
  archive: "file:///mnt/archive",
};
const refused = (flags: Record<string, string>, key: string) => {
  expect(() => loadConfig(flags, {})).toThrow(ConfigError);
  expect(() => loadConfig(flags, {})).toThrow(new RegExp(key));
};

describe("cluster-mode configuration", () => {
  it("takes a complete cluster setting, and none at all", () => {
    const c = loadConfig(CLUSTER, {});
    expect([c.node_id, c.advertise_url, c.archive, c.cluster_shards, c.cluster_lease_ms]).toEqual([
      "n1",
      "http://10.0.0.1:8080",
      "file:///mnt/archive",
      64,
      5000,
    ]);
    expect(loadConfig({}, {}).cluster_postgres_url).toBe("");
    expect(loadConfig({ ...CLUSTER, archive: "s3://bucket/prefix", advertise_url: "https://ticker-1.example:443/" }, {}).archive).toBe("s3://bucket/prefix");
  });

  it("refuses a cluster key without cluster_postgres_url: it would do nothing", () => {
    for (const key of ["node_id", "advertise_url", "archive"] as const) refused({ [key]: CLUSTER[key] }, key);
  });

  it("refuses cluster mode missing a node id, an advertised origin or an archive, or with one that cannot be used", () => {
    for (const key of ["node_id", "advertise_url", "archive"] as const) refused({ ...CLUSTER, [key]: "" }, key);
    refused({ ...CLUSTER, cluster_postgres_url: "mysql://x" }, "cluster_postgres_url");
    refused({ ...CLUSTER, node_id: "n 1" }, "node_id");
    refused({ ...CLUSTER, node_id: "n".repeat(65) }, "node_id");
    expect(loadConfig({ ...CLUSTER, node_id: "n".repeat(64) }, {}).node_id).toHaveLength(64);
    refused({ ...CLUSTER, advertise_url: "http://10.0.0.1:8080/ticker" }, "advertise_url");
    refused({ ...CLUSTER, advertise_url: "ftp://10.0.0.1" }, "advertise_url");
    refused({ ...CLUSTER, archive: "/mnt/archive" }, "archive");
  });

  it("holds each cluster number at its bounds", () => {
    const at = (key: string, v: number) => loadConfig({ ...CLUSTER, [key]: String(v) }, {});
    for (const [key, min, max] of [
      ["cluster_shards", 1, 4096],
      ["cluster_lease_ms", 1000, 600_000],
      ["cluster_archive_interval_ms", 10, 600_000],
      ["archive_manifest_ttl_ms", 1, 3_600_000],
      ["archive_cache_bytes_max", 1024 * 1024, 64 * 1024 * 1024 * 1024],
    ] as const) {
      expect((at(key, min) as unknown as Record<string, number>)[key]).toBe(min);
      expect((at(key, max) as unknown as Record<string, number>)[key]).toBe(max);
      expect(() => at(key, min - 1)).toThrow(new RegExp(key));
      expect(() => at(key, max + 1)).toThrow(new RegExp(key));
    }
  });
});
