// The archive of closed segments (src/cluster/archive.ts, s3-archive.ts): the
// same contract of a file:// archive on a real directory and of an s3://
// archive against a real S3 server on a socket (s3rver, in this process),
// and the segment manifest in a real private PostgreSQL, fenced by the
// shard's lease.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import fc from "fast-check";
import { FileArchive, Manifest, openArchive, segmentKey, type Archive } from "../../src/cluster/archive.js";
import { parseS3Url, type S3Archive } from "../../src/cluster/s3-archive.js";
import { startS3, type S3Server } from "../harness/s3.js";
import { ShardLeases } from "../../src/cluster/leases.js";
import { clusterDb, sleep, type ClusterDb } from "../helpers/cluster-db.js";
import { tcpProxy } from "../helpers/tcp-proxy.js";

let db: ClusterDb;
let s3: S3Server;
let buckets = 0;
const dirs: string[] = [];
const closers: Array<() => void> = [];
beforeAll(async () => {
  [db, s3] = await Promise.all([clusterDb(), startS3()]);
});
afterAll(async () => {
  for (const close of closers) close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  await Promise.allSettled([db?.stop(), s3?.stop()]);
});

function archiveDir(): { dir: string; url: string } {
  const dir = mkdtempSync(join(tmpdir(), "ticker-archive-"));
  dirs.push(dir);
  return { dir, url: pathToFileURL(join(dir, "archive")).href };
}

interface Kind {
  name: string;
  /** A fresh empty archive, and a way to tell whether a key's object exists outside the interface. */
  make(): Promise<{ archive: Archive; exists(key: string): Promise<boolean> }>;
}

const kinds: Kind[] = [
  {
    name: "file://",
    async make() {
      const { dir, url } = archiveDir();
      return { archive: openArchive(url), exists: async (key) => existsSync(join(dir, "archive", key)) };
    },
  },
  {
    name: "s3:// (against s3rver)",
    async make() {
      const bucket = `bucket-${++buckets}`;
      await s3.createBucket(bucket);
      const archive = openArchive(`s3://${bucket}/segments?endpoint=${s3.endpoint}&region=us-east-1&path_style=true`);
      closers.push(() => (archive as S3Archive).close());
      // Asked on the wire, beside the SDK: a HEAD of the object's path-style URL.
      return { archive, exists: async (key) => (await fetch(`${s3.endpoint}/${bucket}/segments/${key}`, { method: "HEAD" })).status === 200 };
    },
  },
];

describe.each(kinds)("the $name archive", (kind) => {
  it("a put is whole under its key, a get reads any range of it, a put replaces, a delete removes, and a missing key is an error", async () => {
    const { archive: a, exists } = await kind.make();
    const bytes = randomBytes(100_000);
    const key = segmentKey("prices", 1, 3);
    expect(key).toBe("prices/00000000000000000001-3.seg");
    await a.put(key, bytes);
    expect(await exists(key)).toBe(true);
    expect((await a.get(key)).equals(bytes)).toBe(true);
    await fc.assert(
      fc.asyncProperty(fc.nat(120_000), fc.nat(120_000), async (x, y) => {
        const [start, end] = x <= y ? [x, y] : [y, x];
        expect((await a.get(key, { start, end })).equals(bytes.subarray(start, end))).toBe(true);
      }),
      { numRuns: 50 },
    );
    await a.put(key, bytes.subarray(0, 10));
    expect((await a.get(key)).length).toBe(10);
    await a.delete(key);
    expect(await exists(key)).toBe(false);
    await expect(a.get(key)).rejects.toThrow();
  });
});

describe("ranged gets of an s3:// archive", () => {
  it("a range moves only its bytes over the wire (counted by a TCP proxy in front of s3rver), not the object", async () => {
    await s3.createBucket("ranged");
    const proxy = await tcpProxy(Number(new URL(s3.endpoint).port));
    const a = openArchive(`s3://ranged/p?endpoint=http://127.0.0.1:${proxy.port}&region=us-east-1&path_style=true`) as S3Archive;
    try {
      const bytes = randomBytes(8 << 20);
      await a.put("big", bytes);
      const before = proxy.bytesDown;
      expect((await a.get("big", { start: 5 << 20, end: (5 << 20) + 1000 })).equals(bytes.subarray(5 << 20, (5 << 20) + 1000))).toBe(true);
      // The answer's headers and 1,000 bytes of body, not 8 MiB.
      expect(proxy.bytesDown - before).toBeLessThan(4096);
      expect(proxy.bytesDown - before).toBeGreaterThan(1000);
    } finally {
      a.close();
      await proxy.close();
    }
  });

  it("a server that ignores Range (200, the whole object, no Content-Range) still gives a get its range", async () => {
    const object = randomBytes(10_000);
    const server = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": object.length, etag: '"x"' });
      res.end(object);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    const a = openArchive(`s3://plain/p?endpoint=http://127.0.0.1:${port}&region=us-east-1&path_style=true`) as S3Archive;
    try {
      expect((await a.get("k", { start: 1000, end: 3000 })).equals(object.subarray(1000, 3000))).toBe(true);
      expect((await a.get("k", { start: 9000, end: 20_000 })).equals(object.subarray(9000))).toBe(true);
      expect((await a.get("k")).equals(object)).toBe(true);
    } finally {
      a.close();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("archive URLs", () => {
  it("file:// keys never leave the archive's directory; s3:// URLs are checked; anything else is refused", async () => {
    const { dir, url } = archiveDir();
    const a = new FileArchive(url);
    await expect(a.put("../outside", Buffer.from("x"))).rejects.toThrow("outside the archive");
    await expect(a.get("/etc/passwd")).rejects.toThrow("outside the archive");
    expect(readdirSync(dir)).toEqual(["archive"]);
    expect(() => new FileArchive("/plain/path")).toThrow("a file archive is a file:// URL");
    expect(parseS3Url("s3://bucket/a/b")).toEqual({ bucket: "bucket", prefix: "a/b/", pathStyle: false, endpoint: undefined, region: undefined });
    expect(parseS3Url("s3://bucket").prefix).toBe("");
    expect(() => parseS3Url("s3://bucket/p?colour=red")).toThrow("unknown parameter colour");
    expect(() => parseS3Url("s3://bucket/p?path_style=yes")).toThrow("path_style is true or false");
    expect(() => openArchive("ftp://host/x")).toThrow("an archive is file:///dir or s3://bucket/prefix");
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
    // Where its chunks start, stored with the row; a row without them (archived before points) has none.
    const points = randomBytes(48);
    expect(await mb.commit(0, { ...entry(301, 400, taken.epoch), points })).toBe(true);
    const [withPoints] = await mb.segments("prices", 301);
    expect(Buffer.from(withPoints.points!).equals(points)).toBe(true);
    expect((await mb.segments("prices", 251))[0].points).toBeNull();
  });
});
