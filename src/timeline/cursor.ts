// Timeline cursors: a page boundary (one seq per stream of the timeline's
// set) and a direction, as an opaque base64url token signed with a server
// secret, so that a client can hold a position but never forge or edit one.
//
// Token bytes (integers little-endian, varints unsigned LEB128):
//   u8 version (1) | u32 key id | u8 direction (0 forward, 1 backward)
//   | 8 bytes set digest | varint stream count | varint seq per stream
//   | 16 bytes MAC
// The MAC is HMAC-SHA256 over everything before it, truncated to its first
// 16 bytes (128 bits: a forger's chance per guess is 2^-128; docs/decisions.md
// says why not the full 32). The set digest is the first 8 bytes of SHA-256
// over the sorted stream ids joined with "\n": a cursor of one set is refused
// by any other, also by a named timeline whose streams changed.
//
// Secrets: the key id is derived from the secret itself, so a secret means
// the same id wherever it is configured. Either the data dir keeps them
// (<data_dir>/timeline-secrets.json, created on first start, rotated by
// rotate(): the secret before still verifies for graceMs), or the config
// gives them (timeline_cursor_secret, and timeline_cursor_previous_secret,
// which verifies as long as it is configured; rotation is then a config
// change).
import { createHash, createHmac, hash, randomBytes, timingSafeEqual } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { ApiError } from "../errors.js";
import { TIMELINE_CURSOR_SECRET_CHARS_MAX, TIMELINE_CURSOR_SECRET_CHARS_MIN, TIMELINE_STREAMS_LIMIT } from "../limits.js";
import { writeFileAtomicSync } from "./atomic-file.js";
import { isStreamSet } from "./stream-set.js";

export type Direction = "forward" | "backward";
export interface TimelineCursor {
  direction: Direction;
  seqs: number[];
}

/** The secret that signs, and the others that verify until their time (cluster mode's keys, src/cluster/secrets.ts). */
export interface CursorKeys {
  current: string;
  others: Array<{ secret: string; validUntil: number }>;
}

export interface CursorSignerOptions {
  /** The current secret from the config; null: the data dir's. */
  secret: string | null;
  /** With `secret`: one that still verifies. */
  previousSecret: string | null;
  /** How long a rotated-out data-dir secret still verifies. */
  graceMs: number;
  /** The clock (ms since the epoch); tests pass their own. */
  now?: () => number;
}

export const SECRETS_FILE = "timeline-secrets.json";

const VERSION = 1;
const HEADER_BYTES = 14; // version 1, key id 4, direction 1, digest 8
const DIGEST_BYTES = 8;
const MAC_BYTES = 16;
/** A safe integer (< 2^53) takes at most ceil(53 / 7) = 8 varint bytes. */
const VARINT_BYTES_MAX = 8;
/** Random bytes of a secret the data dir keeps: the full block of SHA-256's output, as HMAC's key. */
const GENERATED_SECRET_BYTES = 32;
/**
 * Rotated-out secrets kept verifying at once. Rotating again within the grace
 * period keeps the one before verifying too; past this many, the oldest stops
 * early (the safe direction, after a run of rotations for a leaked secret).
 */
export const PREVIOUS_SECRETS_MAX = 8;
const KEY_ID_LABEL = "ticker timeline cursor key id";

/** Bytes of an unsigned LEB128 varint of `v`. */
function varintBytes(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 0x80);
    n++;
  }
  return n;
}

/**
 * Longest token a set of `streamCount` streams can have, in characters: the
 * bound checked before a token is decoded at all (at the largest set,
 * TIMELINE_STREAMS_LIMIT streams of 8 varint bytes, about 11 KiB).
 */
export function cursorCharsMax(streamCount: number): number {
  const bytes = HEADER_BYTES + varintBytes(streamCount) + VARINT_BYTES_MAX * streamCount + MAC_BYTES;
  return Math.ceil((bytes * 4) / 3);
}

/** SHA-256's block: HMAC's key is padded (or first hashed) to it. */
const SHA256_BLOCK_BYTES = 64;
const SHA256_BYTES = 32;

/**
 * HMAC-SHA256 (RFC 2104) over one-shot hashes: H((K ^ opad) || H((K ^ ipad) || m)).
 * A page signs two cursors and verifies one. createHmac builds a stream
 * object and a digest Buffer each time (4.0 µs here); two hash() calls with
 * "binary" (latin1) output make neither (under 1 µs), and a fresh ArrayBuffer per digest
 * is memory outside the heap whose growth starts full collections. The
 * padded key blocks are made once per key; the message is hashed from one
 * reused buffer behind its block.
 */
export class HmacSha256 {
  private readonly inner: Buffer;
  private readonly outer = Buffer.alloc(SHA256_BLOCK_BYTES + SHA256_BYTES);

  constructor(key: Buffer, messageBytesMax: number) {
    const k = key.length > SHA256_BLOCK_BYTES ? hash("sha256", key, "buffer") : key;
    this.inner = Buffer.alloc(SHA256_BLOCK_BYTES + messageBytesMax);
    for (let i = 0; i < SHA256_BLOCK_BYTES; i++) {
      const b = i < k.length ? k[i] : 0;
      this.inner[i] = b ^ 0x36;
      this.outer[i] = b ^ 0x5c;
    }
  }

  /** Writes the first `bytes` (at most 32) of the MAC of message[0, end) at out[outAt]. */
  digestInto(message: Uint8Array, end: number, out: Buffer, outAt: number, bytes: number): void {
    if (end > this.inner.length - SHA256_BLOCK_BYTES)
      throw new Error(`hmac invariant: a ${end}-byte message, room for ${this.inner.length - SHA256_BLOCK_BYTES}`);
    this.inner.set(message.subarray(0, end), SHA256_BLOCK_BYTES);
    this.outer.write(hash("sha256", this.inner.subarray(0, SHA256_BLOCK_BYTES + end), "binary"), SHA256_BLOCK_BYTES, "binary");
    out.write(hash("sha256", this.outer, "binary"), outAt, Math.min(bytes, SHA256_BYTES), "binary");
  }
}

/** Bytes a cursor of TIMELINE_STREAMS_LIMIT streams signs at most (header, count, seqs). */
const SIGNED_BYTES_MAX = HEADER_BYTES + VARINT_BYTES_MAX + VARINT_BYTES_MAX * TIMELINE_STREAMS_LIMIT;

interface SigningKey {
  id: number;
  mac: HmacSha256;
  secret: string;
  /** Verifies while now <= validUntil (Infinity: the current one, or a configured previous one). */
  validUntil: number;
}

function signingKey(secret: string, validUntil: number): SigningKey {
  const key = Buffer.from(secret, "utf8");
  const id = createHmac("sha256", key).update(KEY_ID_LABEL).digest().readUInt32LE(0);
  return { id, mac: new HmacSha256(key, SIGNED_BYTES_MAX), secret, validUntil };
}

const secretText = z.string().min(TIMELINE_CURSOR_SECRET_CHARS_MIN).max(TIMELINE_CURSOR_SECRET_CHARS_MAX);
const secretsFileSchema = z
  .object({
    version: z.literal(1),
    current: z.object({ secret: secretText, created_at: z.number().int().min(0) }).strict(),
    previous: z.array(z.object({ secret: secretText, valid_until: z.number().int().min(0) }).strict()).max(PREVIOUS_SECRETS_MAX),
  })
  .strict();
type SecretsFile = z.infer<typeof secretsFileSchema>;

/** A secrets file the server cannot use: start-up stops rather than sign with a new secret and void every cursor. */
export class SecretsFileError extends Error {}

/** The MAC a token should carry, worked out by verify (the front's one thread). */
const macScratch = Buffer.alloc(MAC_BYTES);

const invalid = (why: string) => new ApiError(400, "invalid_cursor", `cursor ${why}`);

/**
 * Digests of the sets seen lately. A SHA-256 costs about as much as the HMAC
 * (5 vs 7 us here), and a page encodes two cursors and decodes one for the
 * same set, so each set is hashed once. Bounded: cleared when it holds this
 * many sets (ad hoc sets come from clients).
 */
const DIGEST_CACHE_SETS_MAX = 4096;
const digests = new Map<string, Buffer>();

/** The set digest: first 8 bytes of SHA-256 over the sorted ids joined with "\n". */
function setDigest(streams: readonly string[]): Buffer {
  const joined = streams.join("\n");
  let d = digests.get(joined);
  if (!d) {
    if (digests.size >= DIGEST_CACHE_SETS_MAX) digests.clear();
    d = createHash("sha256").update(joined).digest().subarray(0, DIGEST_BYTES);
    digests.set(joined, d);
  }
  return d;
}

/** Callers pass the normalised set (sorted, no repeats): another order would mean other seqs per position. */
function assertSet(streams: readonly string[]): void {
  if (!isStreamSet(streams)) throw new Error(`cursor invariant: ${streams.length} streams that are not a normalised stream set (stream-set.ts)`);
}

export class CursorSigner {
  private constructor(
    private current: SigningKey,
    private previous: SigningKey[],
    /** null: the secrets come from the config and are not rotated here. */
    private readonly file: string | null,
    private readonly graceMs: number,
    private readonly now: () => number,
  ) {}

  /**
   * The configured secrets, or the data dir's file (created with a new random
   * secret, mode 0600, if absent). Throws SecretsFileError for a file it
   * cannot read or trust.
   */
  static open(dataDir: string, opts: CursorSignerOptions): CursorSigner {
    const now = opts.now ?? Date.now;
    if (opts.secret) {
      const previous = opts.previousSecret ? [signingKey(opts.previousSecret, Number.POSITIVE_INFINITY)] : [];
      return new CursorSigner(signingKey(opts.secret, Number.POSITIVE_INFINITY), previous, null, opts.graceMs, now);
    }
    if (opts.previousSecret) throw new Error("a previous cursor secret needs a current one from the config");
    mkdirSync(dataDir, { recursive: true });
    const file = join(dataDir, SECRETS_FILE);
    let kept: SecretsFile;
    if (existsSync(file)) kept = readSecretsFile(file);
    else {
      kept = { version: 1, current: { secret: newSecret(), created_at: now() }, previous: [] };
      writeSecretsFile(file, kept);
    }
    const previous = kept.previous.map((p) => signingKey(p.secret, p.valid_until));
    return new CursorSigner(signingKey(kept.current.secret, Number.POSITIVE_INFINITY), previous, file, opts.graceMs, now);
  }

  /** The id of the secret new cursors are signed with. */
  get keyId(): number {
    return this.current.id;
  }

  /** The key id a secret has. */
  idOf(secret: string): number {
    return signingKey(secret, 0).id;
  }

  /**
   * Cluster mode (src/cluster/secrets.ts): the keys as the cluster's row
   * says at this moment, in place of the ones before. A key kept keeps its
   * MAC state; only new secrets are keyed.
   */
  useKeys(keys: CursorKeys): void {
    const had = new Map([this.current, ...this.previous].map((k) => [k.secret, k]));
    const keyOf = (secret: string, validUntil: number): SigningKey => {
      const k = had.get(secret);
      return k ? { ...k, validUntil } : signingKey(secret, validUntil);
    };
    this.current = keyOf(keys.current, Number.POSITIVE_INFINITY);
    this.previous = keys.others.map((o) => keyOf(o.secret, o.validUntil));
  }

  /** Whether rotate() may be called (false: the config gives the secrets). */
  get rotatable(): boolean {
    return this.file !== null;
  }

  encode(streams: readonly string[], c: TimelineCursor): string {
    assertSet(streams);
    if (c.seqs.length !== streams.length) throw new Error(`cursor invariant: ${c.seqs.length} seqs for ${streams.length} streams`);
    let bytes = HEADER_BYTES + varintBytes(streams.length) + MAC_BYTES;
    for (const seq of c.seqs) {
      if (!Number.isSafeInteger(seq) || seq < 0) throw new Error(`cursor invariant: seq ${seq} is not a non-negative safe integer`);
      bytes += varintBytes(seq);
    }
    // Every byte is written below: the pool's unzeroed memory is fine.
    const b = Buffer.allocUnsafe(bytes);
    b[0] = VERSION;
    b.writeUInt32LE(this.current.id, 1);
    b[5] = c.direction === "forward" ? 0 : 1;
    setDigest(streams).copy(b, 6);
    let at = writeVarint(b, HEADER_BYTES, streams.length);
    for (const seq of c.seqs) at = writeVarint(b, at, seq);
    this.current.mac.digestInto(b, at, b, at, MAC_BYTES);
    return b.toString("base64url");
  }

  /**
   * The cursor a token holds for this set, or 400 invalid_cursor: not a
   * string of base64url, longer than any cursor of the set, truncated or
   * extended, a version or key this server does not know (or whose grace
   * ended), a MAC that does not verify, another set's cursor.
   */
  decode(token: string, streams: readonly string[]): TimelineCursor {
    assertSet(streams);
    if (typeof token !== "string" || token.length === 0) throw invalid("is empty");
    // Before any decoding: the work done on a token is bounded by the set, not by what a client sends.
    const charsMax = cursorCharsMax(streams.length);
    if (token.length > charsMax) throw invalid(`is longer than any cursor of ${streams.length} streams (${charsMax} characters)`);
    if (!/^[A-Za-z0-9_-]+$/.test(token)) throw invalid("is not base64url (A-Z a-z 0-9 - _, no padding)");
    const b = Buffer.from(token, "base64url");
    // Node ignores stray trailing bits; a token that does not re-encode to itself was edited.
    if (b.toString("base64url") !== token) throw invalid("is not a token this server wrote (non-canonical base64url)");
    if (b.length < HEADER_BYTES + 1 + MAC_BYTES) throw invalid("is too short (truncated?)");
    if (b[0] !== VERSION) throw invalid(`has an unknown version ${b[0]}`);
    this.verify(b);
    return this.parse(b, streams);
  }

  /**
   * A new data-dir secret becomes current; the one before verifies for
   * graceMs more. Written to the file before it takes effect, so a failed
   * write changes nothing. 409 when the config gives the secrets.
   */
  rotate(nowMs: number = this.now()): { key_id: number; previous_valid_until: number } {
    if (this.file === null) {
      throw new ApiError(
        409,
        "secret_from_config",
        "the cursor secret comes from timeline_cursor_secret: rotate it in the config (the old one as timeline_cursor_previous_secret) and restart",
      );
    }
    const validUntil = nowMs + this.graceMs;
    const retired = { ...this.current, validUntil };
    const stillValid = this.previous.filter((p) => p.validUntil >= nowMs);
    const previous = [retired, ...stillValid].slice(0, PREVIOUS_SECRETS_MAX);
    const next = signingKey(newSecret(), Number.POSITIVE_INFINITY);
    writeSecretsFile(this.file, {
      version: 1,
      current: { secret: next.secret, created_at: nowMs },
      previous: previous.map((p) => ({ secret: p.secret, valid_until: p.validUntil })),
    });
    this.current = next;
    this.previous = previous;
    return { key_id: next.id, previous_valid_until: validUntil };
  }

  /** The MAC checks out with a key of the token's id that is still valid; constant time in the MAC bytes. */
  private verify(b: Buffer): void {
    const id = b.readUInt32LE(1);
    const end = b.length - MAC_BYTES;
    const mac = b.subarray(end);
    const now = this.now();
    let found: "no key" | "expired" | "mismatch" = "no key";
    // Ids are 32 bits of a hash: two keys may share one, so each is tried.
    for (const k of [this.current, ...this.previous]) {
      if (k.id !== id) continue;
      if (k.validUntil < now) {
        if (found === "no key") found = "expired";
        continue;
      }
      k.mac.digestInto(b, end, macScratch, 0, MAC_BYTES);
      if (timingSafeEqual(macScratch, mac)) return;
      found = "mismatch";
    }
    if (found === "mismatch") throw invalid("does not verify (tampered, or signed by another server)");
    throw invalid(
      found === "expired" ? "was signed with a secret whose grace period after rotation has ended" : "was signed with a secret this server does not have",
    );
  }

  /** The signed bytes after the header; signed by us, yet read with every bound checked. */
  private parse(b: Buffer, streams: readonly string[]): TimelineCursor {
    const end = b.length - MAC_BYTES;
    if (b[5] > 1) throw invalid(`has an unknown direction ${b[5]}`);
    if (!b.subarray(6, HEADER_BYTES).equals(setDigest(streams))) throw invalid("was made for another stream set");
    const count = readVarint(b, HEADER_BYTES, end);
    if (count === null || count.value !== streams.length) throw invalid("was made for another stream set");
    const seqs: number[] = [];
    let at = count.next;
    for (let i = 0; i < streams.length; i++) {
      const seq = readVarint(b, at, end);
      if (seq === null) throw invalid("holds a malformed position");
      seqs.push(seq.value);
      at = seq.next;
    }
    if (at !== end) throw invalid("has bytes after its positions");
    return { direction: b[5] === 0 ? "forward" : "backward", seqs };
  }
}

function writeVarint(b: Buffer, at: number, v: number): number {
  while (v >= 0x80) {
    b[at++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  b[at++] = v;
  return at;
}

/** A minimal varint of a safe integer in b[at, end), or null. Reads at most VARINT_BYTES_MAX bytes. */
function readVarint(b: Buffer, at: number, end: number): { value: number; next: number } | null {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < VARINT_BYTES_MAX && at + i < end; i++) {
    const byte = b[at + i];
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      // A zero last byte after others is a longer spelling of a shorter varint.
      if (i > 0 && byte === 0) return null;
      return Number.isSafeInteger(value) ? { value, next: at + i + 1 } : null;
    }
    scale *= 0x80;
  }
  return null;
}

const newSecret = () => randomBytes(GENERATED_SECRET_BYTES).toString("base64url");

function readSecretsFile(file: string): SecretsFile {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new SecretsFileError(
      `${file}: cannot read it (${(err as Error).message}); restore it, or delete it to start with a new secret (every cursor is then refused)`,
    );
  }
  const r = secretsFileSchema.safeParse(parsed);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new SecretsFileError(
      `${file}: ${i.path.join(".") || "file"}: ${i.message}; restore it, or delete it to start with a new secret (every cursor is then refused)`,
    );
  }
  return r.data;
}

/** Owner-only: anyone who reads the secret can write cursors. */
function writeSecretsFile(file: string, s: SecretsFile): void {
  writeFileAtomicSync(file, `${JSON.stringify(s, null, 2)}\n`, 0o600);
}
