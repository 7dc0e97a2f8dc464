// Timeline cursors (src/timeline/cursor.ts): a cursor comes back exactly as
// it was written, for its own stream set only; any edit of the token, a
// truncation or an extension is 400 invalid_cursor; the secret lives in the
// data dir (0600, kept across restarts) or in the config, and a rotated-out
// secret verifies for the grace period and not after.
import { createHmac } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { ApiError } from "../../src/errors.js";
import { TIMELINE_STREAMS_LIMIT } from "../../src/limits.js";
import {
  CursorSigner,
  HmacSha256,
  PREVIOUS_SECRETS_MAX,
  SECRETS_FILE,
  SecretsFileError,
  cursorCharsMax,
  type CursorSignerOptions,
  type TimelineCursor,
} from "../../src/timeline/cursor.js";

const dirs: string[] = [];
afterEach(() => {
  while (dirs.length) rmSync(dirs.pop()!, { recursive: true, force: true });
});
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), "ticker-cursor-"));
  dirs.push(d);
  return d;
};

const GRACE_MS = 60_000;
/** A signer on a fresh data dir with a clock the test moves. */
function fileSigner(opts: Partial<CursorSignerOptions> = {}, dir = tempDir()) {
  const clock = { t: 1_700_000_000_000 };
  const signer = CursorSigner.open(dir, { secret: null, previousSecret: null, graceMs: GRACE_MS, now: () => clock.t, ...opts });
  return { signer, clock, dir };
}

/** The error a call throws; fails the test if it returns. */
function refusal(f: () => unknown): ApiError {
  try {
    f();
  } catch (err) {
    if (err instanceof ApiError) return err;
    throw err;
  }
  throw new Error("expected a refusal, the call returned");
}
const expectInvalid = (f: () => unknown, message?: RegExp) => {
  const e = refusal(f);
  expect([e.status, e.code]).toEqual([400, "invalid_cursor"]);
  if (message) expect(e.message).toMatch(message);
};

const streamId = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$/);
/** A normalised stream set: sorted, no repeats, 1..64 ids. */
const streamSet = fc.uniqueArray(streamId, { minLength: 1, maxLength: 64 }).map((ids) => [...ids].sort());
/** A set with a cursor of it. */
const setAndCursor = streamSet.chain((streams) =>
  fc.record({
    streams: fc.constant(streams),
    cursor: fc.record({
      direction: fc.constantFrom<TimelineCursor["direction"]>("forward", "backward"),
      seqs: fc.array(fc.maxSafeNat(), { minLength: streams.length, maxLength: streams.length }),
    }),
  }),
);
const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

describe("timeline cursors", () => {
  it("round-trips any set and positions, also the largest seqs", () => {
    const { signer } = fileSigner();
    fc.assert(
      fc.property(setAndCursor, ({ streams, cursor }) => {
        const token = signer.encode(streams, cursor);
        expect(token).toMatch(/^[A-Za-z0-9_-]+$/);
        expect(token.length).toBeLessThanOrEqual(cursorCharsMax(streams.length));
        expect(signer.decode(token, streams)).toEqual(cursor);
      }),
      { numRuns: 300 },
    );
  });

  it("refuses a token with any one byte changed", () => {
    const { signer } = fileSigner();
    fc.assert(
      fc.property(setAndCursor, fc.nat(), fc.integer({ min: 1, max: 255 }), ({ streams, cursor }, pos, xor) => {
        const bytes = Buffer.from(signer.encode(streams, cursor), "base64url");
        bytes[pos % bytes.length] ^= xor;
        expectInvalid(() => signer.decode(bytes.toString("base64url"), streams));
      }),
      { numRuns: 500 },
    );
  });

  it("refuses a token with any one character changed, also to one outside base64url", () => {
    const { signer } = fileSigner();
    const replacement = fc.oneof(fc.constantFrom(...B64URL), fc.constantFrom("=", "+", "/", ".", " ", "%", "\u00e9"));
    fc.assert(
      fc.property(setAndCursor, fc.nat(), replacement, ({ streams, cursor }, pos, ch) => {
        const token = signer.encode(streams, cursor);
        const i = pos % token.length;
        fc.pre(token[i] !== ch);
        expectInvalid(() => signer.decode(`${token.slice(0, i)}${ch}${token.slice(i + 1)}`, streams));
      }),
      { numRuns: 500 },
    );
    // Every position and every other character of two tokens: also the last
    // character, whose low bits decode to nothing (a token must re-encode to itself).
    for (const streams of [["a"], ["a", "b", "c"]]) {
      const token = signer.encode(streams, { direction: "forward", seqs: streams.map((_, i) => 1000 * i) });
      for (let i = 0; i < token.length; i++) {
        for (const ch of B64URL) {
          if (ch !== token[i]) expectInvalid(() => signer.decode(`${token.slice(0, i)}${ch}${token.slice(i + 1)}`, streams));
        }
      }
    }
  });

  it("refuses every truncation and every extension of a token", () => {
    const { signer } = fileSigner();
    fc.assert(
      fc.property(setAndCursor, fc.nat(), fc.string({ unit: fc.constantFrom(...B64URL), minLength: 1, maxLength: 24 }), ({ streams, cursor }, cut, tail) => {
        const token = signer.encode(streams, cursor);
        expectInvalid(() => signer.decode(token.slice(0, cut % token.length), streams));
        expectInvalid(() => signer.decode(token + tail, streams));
      }),
      { numRuns: 300 },
    );
  });

  it("refuses a cursor of another stream set, also of a subset or a superset", () => {
    const { signer } = fileSigner();
    fc.assert(
      fc.property(setAndCursor, streamSet, ({ streams, cursor }, other) => {
        fc.pre(other.join("\n") !== streams.join("\n"));
        const token = signer.encode(streams, cursor);
        expectInvalid(() => signer.decode(token, other), /another stream set|longer than/);
      }),
      { numRuns: 300 },
    );
    const token = signer.encode(["a", "b", "c"], { direction: "forward", seqs: [1, 2, 3] });
    expectInvalid(() => signer.decode(token, ["a", "b"]), /another stream set/);
    expectInvalid(() => signer.decode(token, ["a", "b", "c", "d"]), /another stream set/);
  });

  it("never throws anything but invalid_cursor for arbitrary text", () => {
    const { signer } = fileSigner();
    fc.assert(
      fc.property(fc.string({ maxLength: 400 }), streamSet, (text, streams) => {
        expectInvalid(() => signer.decode(text, streams));
      }),
      { numRuns: 500 },
    );
  });

  it("refuses a token one character past the longest cursor of its set before decoding it", () => {
    const { signer } = fileSigner();
    const streams = Array.from({ length: TIMELINE_STREAMS_LIMIT }, (_, i) => `s${String(i).padStart(4, "0")}`);
    const longest = signer.encode(streams, { direction: "backward", seqs: streams.map(() => Number.MAX_SAFE_INTEGER) });
    expect(longest.length).toBeLessThanOrEqual(cursorCharsMax(streams.length));
    expect(signer.decode(longest, streams).seqs.every((s) => s === Number.MAX_SAFE_INTEGER)).toBe(true);
    expectInvalid(() => signer.decode("A".repeat(cursorCharsMax(streams.length) + 1), streams), /longer than any cursor of 1024 streams/);
    expectInvalid(() => signer.decode("A".repeat(cursorCharsMax(1) + 1), ["one"]), /longer than any cursor of 1 streams/);
  });

  it("refuses a cursor signed by another server's secret", () => {
    const a = fileSigner().signer;
    const b = fileSigner().signer;
    const token = a.encode(["x"], { direction: "forward", seqs: [5] });
    expectInvalid(() => b.decode(token, ["x"]), /a secret this server does not have/);
  });
});

describe("cursor secrets in the data dir", () => {
  it("are created on first start, owner-only, and kept across restarts", () => {
    const { signer, dir } = fileSigner();
    const file = join(dir, SECRETS_FILE);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const token = signer.encode(["a", "b"], { direction: "forward", seqs: [3, 4] });
    const again = fileSigner({}, dir).signer;
    expect(again.keyId).toBe(signer.keyId);
    expect(again.decode(token, ["a", "b"])).toEqual({ direction: "forward", seqs: [3, 4] });
  });

  it("after a rotation the previous secret verifies within the grace period and not after", () => {
    const { signer, clock } = fileSigner();
    const old = signer.encode(["a"], { direction: "forward", seqs: [7] });
    const before = signer.keyId;
    const r = signer.rotate();
    expect(r.key_id).not.toBe(before);
    expect(r.key_id).toBe(signer.keyId);
    expect(r.previous_valid_until).toBe(clock.t + GRACE_MS);
    const fresh = signer.encode(["a"], { direction: "forward", seqs: [7] });
    expect(fresh).not.toBe(old);
    clock.t += GRACE_MS; // the last millisecond of the grace period
    expect(signer.decode(old, ["a"]).seqs).toEqual([7]);
    clock.t += 1;
    expectInvalid(() => signer.decode(old, ["a"]), /grace period after rotation has ended/);
    expect(signer.decode(fresh, ["a"]).seqs).toEqual([7]);
  });

  it("a rotation is in the file: after a restart the previous secret still verifies until its grace ends", () => {
    const { signer, clock, dir } = fileSigner();
    const old = signer.encode(["a"], { direction: "backward", seqs: [1] });
    signer.rotate();
    const reopened = fileSigner({}, dir);
    reopened.clock.t = clock.t + GRACE_MS;
    expect(reopened.signer.keyId).toBe(signer.keyId);
    expect(reopened.signer.decode(old, ["a"]).direction).toBe("backward");
    reopened.clock.t += 1;
    expectInvalid(() => reopened.signer.decode(old, ["a"]));
    expect(statSync(join(dir, SECRETS_FILE)).mode & 0o777).toBe(0o600);
  });

  it(`keeps the ${PREVIOUS_SECRETS_MAX} latest rotated-out secrets verifying; one more rotation ends the oldest's grace early`, () => {
    const { signer } = fileSigner();
    const tokens = [signer.encode(["a"], { direction: "forward", seqs: [0] })];
    for (let i = 1; i <= PREVIOUS_SECRETS_MAX; i++) {
      signer.rotate();
      tokens.push(signer.encode(["a"], { direction: "forward", seqs: [i] }));
    }
    for (const [i, t] of tokens.entries()) expect(signer.decode(t, ["a"]).seqs).toEqual([i]);
    signer.rotate();
    expectInvalid(() => signer.decode(tokens[0], ["a"]), /does not have/);
    for (const [i, t] of tokens.slice(1).entries()) expect(signer.decode(t, ["a"]).seqs).toEqual([i + 1]);
  });

  it("with a grace of 0 the previous secret stops verifying the millisecond after the rotation", () => {
    const { signer, clock } = fileSigner({ graceMs: 0 });
    const old = signer.encode(["a"], { direction: "forward", seqs: [1] });
    signer.rotate();
    expect(signer.decode(old, ["a"]).seqs).toEqual([1]);
    clock.t += 1;
    expectInvalid(() => signer.decode(old, ["a"]));
  });

  it("a damaged secrets file stops the start instead of signing with a new secret", () => {
    const { dir } = fileSigner();
    const file = join(dir, SECRETS_FILE);
    const good = readFileSync(file, "utf8");
    for (const bad of ["", "{", "[]", good.replace('"version": 1', '"version": 2'), good.replace(/"secret": "[^"]+"/, '"secret": "short"')]) {
      writeFileSync(file, bad);
      expect(() => fileSigner({}, dir)).toThrow(SecretsFileError);
    }
    writeFileSync(file, good);
    expect(() => fileSigner({}, dir)).not.toThrow();
  });
});

describe("cursor secrets from the config", () => {
  const SECRET = "s".repeat(32);
  const PREVIOUS = "p".repeat(40);

  it("sign and verify without touching the data dir; the previous one verifies while configured", () => {
    const dir = tempDir();
    const before = CursorSigner.open(dir, { secret: PREVIOUS, previousSecret: null, graceMs: 0 });
    const old = before.encode(["a"], { direction: "forward", seqs: [2] });
    const signer = CursorSigner.open(dir, { secret: SECRET, previousSecret: PREVIOUS, graceMs: 0 });
    expect(() => statSync(join(dir, SECRETS_FILE))).toThrow();
    expect(signer.decode(old, ["a"]).seqs).toEqual([2]);
    const withoutPrevious = CursorSigner.open(dir, { secret: SECRET, previousSecret: null, graceMs: 0 });
    expectInvalid(() => withoutPrevious.decode(old, ["a"]), /does not have/);
    expect(withoutPrevious.decode(signer.encode(["a"], { direction: "forward", seqs: [3] }), ["a"]).seqs).toEqual([3]);
  });

  it("a secret means the same key wherever it is kept: the data dir's secret, configured, verifies its cursors", () => {
    const { signer, dir } = fileSigner();
    const token = signer.encode(["a"], { direction: "forward", seqs: [9] });
    const kept = JSON.parse(readFileSync(join(dir, SECRETS_FILE), "utf8")).current.secret as string;
    const configured = CursorSigner.open(tempDir(), { secret: "n".repeat(32), previousSecret: kept, graceMs: 0 });
    expect(configured.decode(token, ["a"]).seqs).toEqual([9]);
  });

  it("rotation is refused with 409: the config owns the secret", () => {
    const signer = CursorSigner.open(tempDir(), { secret: SECRET, previousSecret: null, graceMs: 0 });
    expect(signer.rotatable).toBe(false);
    const e = refusal(() => signer.rotate());
    expect([e.status, e.code]).toEqual([409, "secret_from_config"]);
  });
});

describe("HmacSha256", () => {
  it("is HMAC-SHA256: the same MAC as node:crypto's for any key (shorter or longer than a block) and message", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 200 }), fc.uint8Array({ minLength: 0, maxLength: 300 }), (key, message) => {
        const mac = new HmacSha256(Buffer.from(key), 300);
        const digest = (end: number) => {
          const out = Buffer.alloc(34, 0xee);
          mac.digestInto(message, end, out, 1, 32);
          // Exactly 32 bytes at the offset, nothing around them.
          expect([out[0], out[33]]).toEqual([0xee, 0xee]);
          return out.subarray(1, 33);
        };
        expect(digest(message.length).equals(createHmac("sha256", Buffer.from(key)).update(message).digest())).toBe(true);
        // Reused buffers: a second, shorter message is not mixed with the first.
        const half = message.length >> 1;
        expect(digest(half).equals(createHmac("sha256", Buffer.from(key)).update(message.subarray(0, half)).digest())).toBe(true);
        const short = Buffer.alloc(16);
        mac.digestInto(message, half, short, 0, 16);
        expect(short.equals(digest(half).subarray(0, 16))).toBe(true);
      }),
    );
  });

  it("refuses a message longer than it was made for", () => {
    expect(() => new HmacSha256(Buffer.from("k"), 8).digestInto(new Uint8Array(9), 9, Buffer.alloc(32), 0, 32)).toThrow(/hmac invariant/);
  });
});
