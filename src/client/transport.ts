// How the client's requests reach the server: one pool of keep-alive
// connections per node (./pool.ts), and, when the server is a cluster, the
// redirects to a stream's owner followed and remembered (./routes.ts). A
// request about a stream goes to its owner as last learned, else to the url
// given; a 307 or 308 is sent again, same method and body, to its Location,
// at most redirectsMax times. Every failure comes back as a TickerError: an
// error answer with the server's status and code, a lost connection as
// status 0.
import type { HttpRawReply } from "./http.js";
import { errorFromAnswer, TickerError } from "./errors.js";
import { Pool, type PoolOptions } from "./pool.js";
import { type Base, Routes, staleRoute, streamOfPath } from "./routes.js";

export interface TransportOptions {
  /** Connections at most, to each node (default 8). */
  sockets?: number;
  /** A request with no answer for this long fails with code "timeout" (default 30 s). */
  timeoutMs?: number;
  /** https: check the server's certificate (default true). */
  rejectUnauthorized?: boolean;
  /** Redirects (307, 308: a cluster node sending a stream's request to its owner) one request follows at most (default 5). */
  redirectsMax?: number;
  /** Streams whose owner (learned from a redirect) is remembered at most; past it the least recently used is forgotten (default 10,000). */
  routedStreamsMax?: number;
}

const isRedirect = (r: HttpRawReply) => (r.status === 307 || r.status === 308) && r.location !== null;

export class Transport {
  readonly routes: Routes;
  private readonly auth: Record<string, string>;
  private readonly pools = new Map<string, Pool>();
  private readonly pool: PoolOptions;
  private closed = false;

  constructor(url: string, token: string | undefined, options: TransportOptions = {}) {
    let base: URL;
    try {
      base = new URL(url);
    } catch {
      throw new TickerError(0, "bad_url", `the server url is not a URL: ${JSON.stringify(url)}`);
    }
    if (base.protocol !== "http:" && base.protocol !== "https:") {
      throw new TickerError(0, "bad_url", `the server url must be http:// or https://, not ${JSON.stringify(url)}`);
    }
    this.routes = new Routes(base, options.redirectsMax, options.routedStreamsMax);
    this.auth = token ? { Authorization: `Bearer ${token}` } : {};
    this.pool = {
      socketsMax: Math.max(1, options.sockets ?? 8),
      timeoutMs: options.timeoutMs ?? 30_000,
      rejectUnauthorized: options.rejectUnauthorized ?? true,
    };
  }

  /**
   * Sends one request; resolves with any answer (2xx or not) once no
   * redirect is left to follow, rejects only when none came. `path` is the
   * API path and query ("/v1/streams/orders/events?from=1"), joined to the
   * base it goes to (the url's path prefix kept).
   */
  async send(method: string, path: string, body: Buffer | null = null, headers: Record<string, string> = {}): Promise<HttpRawReply> {
    const stream = streamOfPath(path);
    const all = { ...this.auth, ...headers };
    let base: Base = this.routes.baseFor(stream);
    /** `base` is a route remembered from an earlier request, not yet confirmed by this one. */
    let remembered = base !== this.routes.origin;
    let target = new URL(base + path);
    for (let hops = 0; ; ) {
      const pool = this.poolOf(target);
      let conn: Awaited<ReturnType<Pool["acquire"]>>;
      try {
        conn = await pool.acquire();
      } catch (err) {
        if (remembered && err instanceof TickerError && err.code === "connection_failed") {
          // Nothing was sent to the owner we remembered: through the url given instead, once.
          this.routes.forget(stream, base);
          remembered = false;
          base = this.routes.origin;
          target = new URL(base + path);
          continue;
        }
        if (base !== this.routes.origin) this.routes.forget(stream, base);
        throw err;
      }
      let r: HttpRawReply;
      try {
        r = await pool.exchange(conn, method, target.pathname + target.search, body, all);
      } catch (err) {
        // Sent, and maybe served: the caller's retry decides; it goes through the url given.
        if (base !== this.routes.origin && err instanceof TickerError && staleRoute(err)) this.routes.forget(stream, base);
        throw err;
      }
      if (isRedirect(r)) {
        const next = this.routes.redirect(r.status, r.location as string, target.href, stream, path, hops++);
        target = new URL(next.url);
        base = next.base;
        remembered = false;
        continue;
      }
      // An owner that says the shard left it: forgotten; the caller's retry (if any) asks the url given.
      if (r.status === 503 && base !== this.routes.origin && staleRoute(errorFromAnswer(r.status, r.body, r.retryAfter))) this.routes.forget(stream, base);
      return r;
    }
  }

  /** As send, and an answer outside 2xx becomes a rejected TickerError. */
  async ok(method: string, path: string, body: Buffer | null = null, headers: Record<string, string> = {}): Promise<HttpRawReply> {
    const r = await this.send(method, path, body, headers);
    if (r.status >= 300) throw errorFromAnswer(r.status, r.body, r.retryAfter);
    return r;
  }

  /** A JSON request (body given as a value) whose JSON answer is returned; 204 gives undefined. */
  async json<T>(method: string, path: string, value?: unknown): Promise<T> {
    const body = value === undefined ? null : Buffer.from(JSON.stringify(value));
    const headers: Record<string, string> = body ? { "Content-Type": "application/json" } : {};
    const r = await this.ok(method, path, body, headers);
    if (r.body.length === 0) return undefined as T;
    try {
      return JSON.parse(r.body.toString("utf8")) as T;
    } catch {
      throw new TickerError(r.status, "bad_response", `${method} ${path}: the answer is not JSON`);
    }
  }

  /** The pool of `url`'s node (its origin), opened on first use. */
  private poolOf(url: URL): Pool {
    if (this.closed) throw new TickerError(0, "closed", "the client was closed");
    let p = this.pools.get(url.origin);
    if (p === undefined) {
      p = new Pool(url, this.pool);
      this.pools.set(url.origin, p);
    }
    return p;
  }

  close(): void {
    this.closed = true;
    for (const p of this.pools.values()) p.close();
  }
}
