// `s3://bucket/prefix`: closed segments in an S3-compatible bucket through the
// AWS SDK. The manifest in PostgreSQL is the commit point (archive.ts), so
// plain PUTs do: no conditional writes, no listing, no read-after-write
// question (a key is read only after its manifest row exists, and S3 is
// strongly consistent for a new object anyway). The SDK is loaded on first
// use, so a server without an s3:// archive never loads it.
//
// Where the bucket is: the SDK's own configuration (AWS_REGION,
// AWS_ENDPOINT_URL, credentials from the environment or the instance), or
// the URL's query for an S3-compatible server: `?endpoint=http://host:port`,
// `region=`, `path_style=true`.
import type { S3Client } from "@aws-sdk/client-s3";
import type { Archive } from "./archive.js";

const QUERY_KEYS = new Set(["endpoint", "region", "path_style"]);

export interface S3Location {
  bucket: string;
  /** Prepended to every key ("" or ending in "/"). */
  prefix: string;
  endpoint?: string;
  region?: string;
  pathStyle: boolean;
}

/** Reads `s3://bucket/prefix?...`; throws on anything else. */
export function parseS3Url(url: string): S3Location {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`archive ${JSON.stringify(url)} is not a URL`);
  }
  if (u.protocol !== "s3:" || u.hostname === "") throw new Error(`an S3 archive is s3://bucket/prefix, not ${url}`);
  for (const k of u.searchParams.keys())
    if (!QUERY_KEYS.has(k)) throw new Error(`archive ${url}: unknown parameter ${k} (known: ${[...QUERY_KEYS].join(", ")})`);
  const pathStyle = u.searchParams.get("path_style");
  if (pathStyle !== null && pathStyle !== "true" && pathStyle !== "false") throw new Error(`archive ${url}: path_style is true or false`);
  const path = decodeURIComponent(u.pathname).replace(/^\/+/, "");
  return {
    bucket: u.hostname,
    prefix: path === "" || path.endsWith("/") ? path : `${path}/`,
    endpoint: u.searchParams.get("endpoint") ?? undefined,
    region: u.searchParams.get("region") ?? undefined,
    pathStyle: pathStyle === "true",
  };
}

export class S3Archive implements Archive {
  readonly location: S3Location;
  private client: Promise<{ s3: S3Client; sdk: typeof import("@aws-sdk/client-s3") }> | null = null;

  constructor(url: string) {
    this.location = parseS3Url(url);
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    const { s3, sdk } = await this.sdk();
    await s3.send(new sdk.PutObjectCommand({ Bucket: this.location.bucket, Key: this.location.prefix + key, Body: bytes }));
  }

  async get(key: string, range?: { start: number; end: number }): Promise<Buffer> {
    if (range && range.end <= range.start) return Buffer.alloc(0);
    const { s3, sdk } = await this.sdk();
    try {
      const r = await s3.send(
        new sdk.GetObjectCommand({
          Bucket: this.location.bucket,
          Key: this.location.prefix + key,
          Range: range ? `bytes=${range.start}-${range.end - 1}` : undefined,
        }),
      );
      const got = (await r.Body?.transformToByteArray()) ?? new Uint8Array(0);
      const body = Buffer.from(got.buffer, got.byteOffset, got.byteLength);
      if (!range) return body;
      // A server that does not do ranges answers 200 with the whole object, no Content-Range: the range is cut from it.
      if (r.ContentRange === undefined) return body.subarray(Math.min(range.start, body.length), Math.min(range.end, body.length));
      if (body.length > range.end - range.start) throw new Error(`archive object ${key}: ${body.length} bytes for range ${range.start}-${range.end}`);
      return body;
    } catch (err) {
      // A range that starts past the end: nothing there, as a file archive answers.
      if (range && (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 416) return Buffer.alloc(0);
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    const { s3, sdk } = await this.sdk();
    await s3.send(new sdk.DeleteObjectCommand({ Bucket: this.location.bucket, Key: this.location.prefix + key }));
  }

  close(): void {
    void this.client?.then(({ s3 }) => s3.destroy());
    this.client = null;
  }

  private sdk(): Promise<{ s3: S3Client; sdk: typeof import("@aws-sdk/client-s3") }> {
    this.client ??= import("@aws-sdk/client-s3").then((sdk) => {
      const l = this.location;
      const s3 = new sdk.S3Client({
        ...(l.endpoint !== undefined ? { endpoint: l.endpoint } : {}),
        ...(l.region !== undefined ? { region: l.region } : {}),
        forcePathStyle: l.pathStyle,
      });
      return { s3, sdk };
    });
    return this.client;
  }
}
