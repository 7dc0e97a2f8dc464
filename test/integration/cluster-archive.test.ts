// The archive of closed segments (src/cluster/archive.ts): a file:// archive
// on a real directory (whole puts, ranged gets, keys kept inside it) and the
// segment manifest in a real private PostgreSQL, fenced by the shard's lease.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import fc from "fast-check";
import { FileArchive, Manifest, openArchive, segmentKey } from "../../src/cluster/archive.js";
import { ShardLeases } from "../../src/cluster/leases.js";
import { clusterDb, sleep, type ClusterDb } from "../helpers/cluster-db.js";

let db: ClusterDb;
const dirs: string[] = [];
beforeAll(async () => {
  db = await clusterDb();
});
afterAll(async () => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  await db?.stop();
});

function archiveDir(): { dir: string; url: string } {
  const dir = mkdtempSync(join(tmpdir(), "ticker-archive-"));
  dirs.push(dir);
  return { dir, url: pathToFileURL(join(dir, "archive")).href };
}

describe("the file:// archive", () => {
  it("a put is whole under its key (no temp file left), a get reads any range of it, and a delete removes it", async () => {
    const { dir, url } = archiveDir();
    const a = openArchive(url);
    const bytes = randomBytes(100_000);
    const key = segmentKey("prices", 1, 3);
    await a.put(key, bytes);
    expect(readdirSync(join(dir, "archive", "prices"))).toEqual(["00000000000000000001-3.seg"]);
    expect((await a.get(key)).equals(bytes)).toBe(true);
    await fc.assert(
      fc.asyncProperty(fc.nat(120_000), fc.nat(120_000), async (x, y) => {
        const [start, end] = x <= y ? [x, y] : [y, x];
        expect((await a.get(key, { start, end })).equals(bytes.subarray(start, end))).toBe(true);
      }),
      { numRuns: 100 },
    );
    await a.put(key, bytes.subarray(0, 10)); // a put replaces what was there
    expect((await a.get(key)).length).toBe(10);
    await a.delete(key);
    expect(existsSync(join(dir, "archive", "prices", "00000000000000000001-3.seg"))).toBe(false);
    await expect(a.get(key)).rejects.toThrow("ENOENT");
  });

  it("keys never leave the archive's directory, and only file:// URLs are taken", async () => {
    const { url } = archiveDir();
    const a = new FileArchive(url);
    await expect(a.put("../outside", Buffer.from("x"))).rejects.toThrow("outside the archive");
    await expect(a.get("/etc/passwd")).rejects.toThrow("outside the archive");
    expect(() => openArchive("s3://bucket/prefix")).toThrow("only file:// archives are supported so far");
    expect(() => new FileArchive("/plain/path")).toThrow("a file archive is a file:// URL");
  });
});

describe("the segment manifest", () => {
  it("a segment is committed under a live lease and listed by seq; after the lease passes, the old owner's commit lands nothing", async () => {
    const open = await db.fresh();
    const a = new ShardLeases(open(), { nodeId: "a", leaseMs: 300, shards: 1 });
    const b = new ShardLeases(open(), { nodeId: "b", leaseMs: 30_000, shards: 1 });
    await a.ensureShards();
    const old = (await a.claim(0))!;
    const ma = new Manifest(open(), "a");
    const mb = new Manifest(open(), "b");
    const entry = (baseSeq: number, lastSeq: number, epoch: number) => ({
      stream: "prices",
      baseSeq,
      lastSeq,
      epoch,
      key: segmentKey("prices", baseSeq, epoch),
      bytes: 4096,
    });
    expect(await ma.archivedThrough("prices")).toBe(0);
    expect(await ma.commit(0, entry(1, 100, old.epoch))).toBe(true);
    expect(await ma.commit(0, entry(101, 250, old.epoch))).toBe(true);
    expect(await ma.archivedThrough("prices")).toBe(250);
    expect((await mb.segments("prices", 150)).map((s) => s.baseSeq)).toEqual([101]);
    expect((await mb.segments("prices", 1)).map((s) => [s.baseSeq, s.lastSeq, s.epoch])).toEqual([
      [1, 100, old.epoch],
      [101, 250, old.epoch],
    ]);
    await sleep(400);
    const taken = (await b.claim(0))!;
    expect(await ma.commit(0, entry(251, 300, old.epoch))).toBe(false);
    expect(await mb.commit(0, entry(251, 300, taken.epoch))).toBe(true);
    expect((await ma.segments("prices", 251)).map((s) => s.key)).toEqual([segmentKey("prices", 251, taken.epoch)]);
    await expect(mb.commit(0, entry(251, 300, taken.epoch))).rejects.toThrow("duplicate key");
  });
});
