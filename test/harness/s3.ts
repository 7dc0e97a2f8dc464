// An S3-compatible server for the s3:// archive's tests: s3rver (from npm) on
// a free loopback port, keeping objects under a temp dir. The AWS SDK takes
// its credentials from the environment; s3rver accepts its own fixed pair.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import S3rver from "s3rver";

export interface S3Server {
  endpoint: string;
  createBucket(name: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startS3(): Promise<S3Server> {
  const dir = mkdtempSync(join(tmpdir(), "ticker-s3-"));
  process.env.AWS_ACCESS_KEY_ID = "S3RVER";
  process.env.AWS_SECRET_ACCESS_KEY = "S3RVER";
  const server = new S3rver({ port: 0, address: "127.0.0.1", silent: true, directory: dir });
  const { port } = await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    async createBucket(name) {
      const r = await fetch(`${endpoint}/${name}`, { method: "PUT" });
      if (r.status !== 200) throw new Error(`s3rver: creating bucket ${name}: ${r.status} ${await r.text()}`);
    },
    async stop() {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
