// Who may do what (README, "Security"). Every route of the front is
// registered through guardRoutes with the access it needs, so the decision
// (key, scope, stream prefix, request rate) is made here, once, before a
// handler reads a body or asks a shard anything; a route cannot be added
// without saying what it needs.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import type uWS from "uWebSockets.js";
import { z } from "zod";
import { ApiError } from "../errors.js";
import type { ContentType } from "../shard/protocol.js";
import { countPublishEvents } from "../wire/event-count.js";
import { exchange, logAccess, noteRequest, sendError, type Exchange } from "./http.js";

export const SCOPES = ["publish", "consume", "admin"] as const;
export type Scope = (typeof SCOPES)[number];
/**
 * What a route needs: nothing ("open"), any known key ("key": answers that
 * reveal no stream, like 404 and 405), or a scope, which on a route with a
 * stream id in its path also needs the key's prefix to match that id.
 */
export type Access = "open" | "key" | Scope;

/** RFC 6750 b64token: what can follow "Bearer " in a header without quoting. */
const KEY_PATTERN = /^[A-Za-z0-9\-._~+/]+=*$/;
/** Characters of a key; longer ones are refused rather than hashed per request. */
const KEY_CHARS_MAX = 512;
const PREFIX_PATTERN = /^[A-Za-z0-9._-]{0,128}$/;

const keyEntrySchema = z
  .object({
    key: z
      .string({ invalid_type_error: "must be a string" })
      .min(1, "must not be empty")
      .max(KEY_CHARS_MAX, `must be at most ${KEY_CHARS_MAX} characters`)
      .regex(KEY_PATTERN, "may hold only letters, digits and -._~+/ (then = padding)"),
    scopes: z.array(z.enum(SCOPES)).min(1, "must name at least one scope"),
    prefix: z.string().regex(PREFIX_PATTERN, "must be at most 128 characters of a stream id").default(""),
    events_per_s: z.number().int().min(1).max(100_000_000).optional(),
    requests_per_s: z.number().int().min(1).max(100_000_000).optional(),
  })
  .strict();
type KeyEntry = z.infer<typeof keyEntrySchema>;

export class KeysFileError extends Error {}

/**
 * A per-key rate: `perSecond` tokens a second, holding at most one second's
 * worth, so a key idle for a while may spend one second's allowance at once.
 */
export class TokenBucket {
  private tokens: number;
  private at: number;
  constructor(
    readonly perSecond: number,
    now = performance.now(),
  ) {
    this.tokens = perSecond;
    this.at = now;
  }

  /** Takes `n` tokens and returns 0, or takes nothing and returns the whole seconds until `n` are there (>= 1). */
  take(n: number, now = performance.now()): number {
    this.tokens = Math.min(this.perSecond, this.tokens + ((now - this.at) / 1000) * this.perSecond);
    this.at = now;
    if (this.tokens >= n) {
      this.tokens -= n;
      return 0;
    }
    return Math.max(1, Math.ceil((n - this.tokens) / this.perSecond));
  }

  give(n: number): void {
    this.tokens = Math.min(this.perSecond, this.tokens + n);
  }
}

export interface ApiKey {
  readonly scopes: ReadonlySet<Scope>;
  readonly prefix: string;
  readonly requests: TokenBucket | null;
  readonly events: TokenBucket | null;
  /** Identifies the entry across reloads (limits included), so a reload keeps its buckets. */
  readonly identity: string;
}

const digestOf = (key: string) => createHash("sha256").update(key).digest("hex");

/** Where JSON.parse stopped, as line:column; its message may quote the file (and a key). */
function jsonErrorAt(text: string, err: unknown): string {
  const m = /position (\d+)/.exec((err as Error).message);
  if (!m) return "";
  const before = text.slice(0, Number(m[1])).split("\n");
  return ` at line ${before.length}, column ${before[before.length - 1].length + 1}`;
}

/**
 * Reads and checks a keys file strictly. The error names the file and the
 * entry index and never includes a key.
 */
export function readKeysFile(path: string): Map<string, KeyEntry> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new KeysFileError(`api_keys_file ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? "error"})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new KeysFileError(`api_keys_file ${path}: not valid JSON${jsonErrorAt(text, err)}`);
  }
  if (!Array.isArray(parsed)) throw new KeysFileError(`api_keys_file ${path}: must hold a JSON array of key entries`);
  const byDigest = new Map<string, KeyEntry>();
  const indexOf = new Map<string, number>();
  parsed.forEach((raw, index) => {
    const r = keyEntrySchema.safeParse(raw);
    if (!r.success) {
      const i = r.error.issues[0];
      const what =
        i.code === "unrecognized_keys"
          ? `unknown field(s) ${i.keys.map((k) => JSON.stringify(k.slice(0, 40))).join(", ")}`
          : `${i.path.length ? `"${i.path.join(".")}"` : "entry"}: ${i.message}`;
      throw new KeysFileError(`api_keys_file ${path}: entry ${index}: ${what}`);
    }
    const digest = digestOf(r.data.key);
    const first = indexOf.get(digest);
    if (first !== undefined) throw new KeysFileError(`api_keys_file ${path}: entry ${index}: the same key as entry ${first}`);
    indexOf.set(digest, index);
    byDigest.set(digest, r.data);
  });
  return byDigest;
}

/** Headers and error of a refused request. */
export class Refusal {
  constructor(
    readonly error: ApiError,
    readonly headers: Record<string, string> = {},
  ) {}
}

const unauthorized = (message: string) => new Refusal(new ApiError(401, "unauthorized", message), { "www-authenticate": "Bearer" });
const forbidden = (message: string, extra: Record<string, unknown> = {}) => new Refusal(new ApiError(403, "forbidden", message, extra));
const rateLimited = (what: string, perSecond: number, retryAfterS: number) =>
  new Refusal(
    new ApiError(429, "rate_limited", `this key's ${what} (${perSecond}) is used up; retry in ${retryAfterS} s`, {
      [what]: perSecond,
      retry_after_s: retryAfterS,
    }),
    {
      "retry-after": String(retryAfterS),
    },
  );

const BEARER = /^Bearer +(\S+) *$/i;

export class Auth {
  /**
   * Keys by the SHA-256 digest of their text: a lookup compares digests, so
   * its time says nothing about how much of a guessed key was right. null:
   * no keys file, every route open.
   */
  private keys: Map<string, ApiKey> | null;

  constructor(private readonly file: string) {
    this.keys = file ? this.build(readKeysFile(file)) : null;
  }

  get keyCount(): number {
    return this.keys?.size ?? 0;
  }

  get enabled(): boolean {
    return this.keys !== null;
  }

  /**
   * Reads the keys file again; the next request sees the new keys. On a bad
   * file the old keys stay. Says what happened, in a line to log (never a key).
   */
  reload(): { ok: boolean; message: string } {
    if (!this.file) return { ok: true, message: "SIGHUP: no api_keys_file is configured; nothing to reload" };
    let entries: Map<string, KeyEntry>;
    try {
      entries = readKeysFile(this.file);
    } catch (err) {
      if (!(err instanceof KeysFileError)) throw err;
      return { ok: false, message: `SIGHUP: ${err.message}; keeping the ${this.keyCount} keys loaded before` };
    }
    this.keys = this.build(entries);
    return { ok: true, message: `SIGHUP: api keys: ${this.keyCount} loaded from ${this.file}` };
  }

  private build(entries: Map<string, KeyEntry>): Map<string, ApiKey> {
    const keys = new Map<string, ApiKey>();
    for (const [digest, e] of entries) {
      const identity = `${digest}/${e.requests_per_s ?? 0}/${e.events_per_s ?? 0}`;
      const before = this.keys?.get(digest);
      // A key that is still there with the same limits keeps what it has spent.
      const reuse = before && before.identity === identity;
      keys.set(digest, {
        scopes: new Set(e.scopes),
        prefix: e.prefix,
        identity,
        requests: reuse ? before.requests : e.requests_per_s ? new TokenBucket(e.requests_per_s) : null,
        events: reuse ? before.events : e.events_per_s ? new TokenBucket(e.events_per_s) : null,
      });
    }
    return keys;
  }

  /**
   * The one decision: the key the request presents (the Authorization
   * header; on a WebSocket upgrade also ?token=), then the route's scope and
   * the stream's prefix, then the key's request rate. Returns the key (null
   * when no keys are configured or the route is open), or why not.
   */
  admit(req: uWS.HttpRequest, access: Access, stream: string | null, tokenInQuery: boolean): ApiKey | null | Refusal {
    if (this.keys === null || access === "open") return null;
    const header = req.getHeader("authorization");
    let presented: string | null = null;
    if (header !== "") {
      const m = BEARER.exec(header);
      if (!m) return unauthorized('the Authorization header must be "Bearer <key>"');
      presented = m[1];
    } else if (tokenInQuery) {
      presented = new URLSearchParams(req.getQuery() ?? "").get("token");
    }
    if (presented === null)
      return unauthorized(
        tokenInQuery ? "an API key is required: Authorization: Bearer <key>, or ?token=<key>" : "an API key is required: Authorization: Bearer <key>",
      );
    const key = presented.length <= KEY_CHARS_MAX ? this.keys.get(digestOf(presented)) : undefined;
    if (!key) return unauthorized("unknown API key");
    if (access !== "key") {
      if (!key.scopes.has(access)) return forbidden(`this key does not have the "${access}" scope`, { scope: access });
      if (stream !== null && !stream.startsWith(key.prefix))
        return forbidden(`this key may only use streams whose id starts with ${JSON.stringify(key.prefix)}`, { prefix: key.prefix });
    }
    if (key.requests) {
      const waitS = key.requests.take(1);
      if (waitS > 0) return rateLimited("requests_per_s", key.requests.perSecond, waitS);
    }
    return key;
  }
}

/**
 * Charges a publish body's events to the key's events_per_s before the body
 * goes to its shard: a batch over what is left is refused whole. Returns the
 * refund to call if the shard does not append it (null: nothing charged).
 */
export function chargeEvents(key: ApiKey | null, body: Buffer, ct: ContentType): (() => void) | null | Refusal {
  const bucket = key?.events;
  if (!bucket) return null;
  const n = countPublishEvents(body, ct);
  if (n > bucket.perSecond) {
    // It would never fit: waiting would not help, so this is not a 429.
    return new Refusal(
      new ApiError(413, "batch_too_large", `the batch holds ${n} events, more than this key's events_per_s (${bucket.perSecond}) allows at once; split it`, {
        events_per_s: bucket.perSecond,
      }),
    );
  }
  const waitS = bucket.take(n);
  if (waitS > 0) return rateLimited("events_per_s", bucket.perSecond, waitS);
  return () => bucket.give(n);
}

/**
 * The scope and prefix rule for a request that names several streams (a
 * timeline): the key needs `scope` and its prefix must cover every one of
 * them, else 403 (naming none of them: a stored timeline's streams are not
 * the key's to learn). Null: allowed (also when no keys are configured).
 * The route's own admission has checked the key.
 */
export function checkStreams(key: ApiKey | null, scope: Scope, streams: readonly string[]): Refusal | null {
  if (key === null) return null;
  if (!key.scopes.has(scope)) return forbidden(`this key does not have the "${scope}" scope`, { scope });
  if (streams.every((s) => s.startsWith(key.prefix))) return null;
  return forbidden(`this key may only use streams whose id starts with ${JSON.stringify(key.prefix)}, and this timeline has streams outside it`, {
    prefix: key.prefix,
  });
}

export function sendRefusal(x: Exchange, r: Refusal): void {
  sendError(x, r.error, r.headers);
}

type Handler = (res: uWS.HttpResponse, req: uWS.HttpRequest, key: ApiKey | null) => void;
type Method = "get" | "post" | "put" | "del" | "any";

/** The app's routes, each registered with the access it needs. */
export type GuardedApp = { [M in Method]: (pattern: string, access: Access, handler: Handler) => void } & {
  ws<T>(pattern: string, access: Access, behavior: uWS.WebSocketBehavior<T>): void;
};

export function guardRoutes(app: uWS.TemplatedApp, auth: Auth): GuardedApp {
  /**
   * On /v1/streams/:id/... the first parameter is the stream id the prefix
   * applies to. A timeline route's streams are known only once its set is
   * (the body, the query, the stored timeline): its handler calls
   * checkStreams.
   */
  const check = (pattern: string, access: Access, tokenInQuery: boolean) => {
    const hasStream = pattern.startsWith("/v1/streams/:");
    return (res: uWS.HttpResponse, req: uWS.HttpRequest): ApiKey | null | false => {
      const key = auth.admit(req, access, hasStream ? (req.getParameter(0) ?? "") : null, tokenInQuery);
      if (!(key instanceof Refusal)) return key;
      sendRefusal(exchange(res), key);
      return false;
    };
  };
  const route = (m: Method) => (pattern: string, access: Access, handler: Handler) => {
    const admit = check(pattern, access, false);
    app[m](pattern, (res, req) => {
      noteRequest(res, req);
      const key = admit(res, req);
      if (key !== false) handler(res, req, key);
    });
  };
  return {
    get: route("get"),
    post: route("post"),
    put: route("put"),
    del: route("del"),
    any: route("any"),
    ws<T>(pattern: string, access: Access, behavior: uWS.WebSocketBehavior<T>) {
      // Checked before the upgrade: a refused client gets an HTTP answer, never a socket.
      const admit = check(pattern, access, true);
      const upgrade = behavior.upgrade;
      app.ws<T>(pattern, {
        ...behavior,
        upgrade: (res, req, context) => {
          noteRequest(res, req);
          if (admit(res, req) === false) return;
          if (upgrade) upgrade(res, req, context);
          else {
            logAccess(res, 101, 0);
            res.upgrade(
              {} as T,
              req.getHeader("sec-websocket-key"),
              req.getHeader("sec-websocket-protocol"),
              req.getHeader("sec-websocket-extensions"),
              context,
            );
          }
        },
      });
    },
  };
}
