// Where a stream's requests go when the server is a cluster (docs/client.md,
// "Cluster"). Any node takes any stream's request, and a node that does not
// own the stream's cluster shard answers 307 with the owner's URL in
// Location (a consumer's upgrade is refused the same way). The client
// follows it, and remembers the owner of that stream, so its next requests
// go straight there instead of paying a redirect each: the shard map as this
// client has learned it, one stream at a time (GET /v1/cluster would give it
// whole, but only to an admin key). An owner that cannot be reached, or that
// says the shard is moving or unowned, is forgotten: the next request goes
// through the url the client was given, whose node knows the new owner.
import { TickerError } from "./errors.js";

/** Redirects one request follows by default before it fails with too_many_redirects. */
export const REDIRECTS_MAX_DEFAULT = 5;
/** Streams whose owner is remembered by default; past it the least recently used is forgotten. */
export const ROUTED_STREAMS_MAX_DEFAULT = 10_000;

/** A 503 code that says the node answering is not (or no longer) the stream's owner. */
const MOVED_CODES = new Set(["shard_moving", "shard_unowned"]);

/** A server's base: origin and path prefix, without a trailing slash ("http://10.0.0.2:8080", "https://lb/ticker"). */
export type Base = string;

export const baseOf = (u: URL): Base => `${u.origin}${u.pathname.replace(/\/+$/, "")}`;

/** The stream a request path is about, or null (GET /v1/streams, /v1/timelines...). */
export function streamOfPath(path: string): string | null {
  const m = /^\/v1\/streams\/([^/?]+)/.exec(path);
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return null;
  }
}

/**
 * Whether an error from a remembered owner means the route is stale: no
 * answer at all (the node is gone, or its connection broke), or a 503 that
 * says the shard is not served there.
 */
export function staleRoute(e: TickerError): boolean {
  return e.status === 0 ? e.code === "connection_failed" || e.code === "timeout" : e.status === 503 && MOVED_CODES.has(e.code);
}

export class Routes {
  /** Redirects followed so far, HTTP and consume upgrades: with a warm route cache it stops growing. */
  redirects = 0;
  /** The url the client was given, as a base: where every stream goes until its owner is known. */
  readonly origin: Base;
  private readonly secure: boolean;
  /** stream -> its owner's base, least recently used first. */
  private readonly owners = new Map<string, Base>();

  constructor(
    url: URL,
    readonly redirectsMax: number = REDIRECTS_MAX_DEFAULT,
    private readonly streamsMax: number = ROUTED_STREAMS_MAX_DEFAULT,
  ) {
    if (!Number.isSafeInteger(redirectsMax) || redirectsMax < 0)
      throw new TickerError(0, "invalid_parameter", `redirectsMax must be an integer >= 0, not ${redirectsMax}`, { parameter: "redirectsMax" });
    if (!Number.isSafeInteger(streamsMax) || streamsMax < 0)
      throw new TickerError(0, "invalid_parameter", `routedStreamsMax must be an integer >= 0, not ${streamsMax}`, { parameter: "routedStreamsMax" });
    this.origin = baseOf(url);
    this.secure = url.protocol === "https:";
  }

  /** Streams whose owner is remembered. */
  get size(): number {
    return this.owners.size;
  }

  /** Where a request about `stream` goes first: its owner as learned, else the url given. */
  baseFor(stream: string | null): Base {
    if (stream === null) return this.origin;
    const base = this.owners.get(stream);
    if (base === undefined) return this.origin;
    this.owners.delete(stream); // most recently used goes last
    this.owners.set(stream, base);
    return base;
  }

  /**
   * The URL a redirect sends a request to: Location read against the URL
   * the request went to (it may be relative). A WebSocket scheme is taken
   * as its HTTP one. Refused: anything but HTTP(S), and https to http (the
   * token would then travel in clear).
   */
  private target(location: string, from: string): URL {
    let u: URL;
    try {
      u = new URL(location, from);
    } catch {
      throw new TickerError(0, "bad_response", `a redirect's Location is not a URL: ${JSON.stringify(location.slice(0, 200))}`);
    }
    if (u.protocol === "ws:" || u.protocol === "wss:") u = new URL(`http${u.href.slice(2)}`);
    if (u.protocol !== "http:" && u.protocol !== "https:")
      throw new TickerError(0, "bad_response", `a redirect to ${u.protocol} is not followed (only http and https): ${u.href}`);
    if (this.secure && u.protocol === "http:")
      throw new TickerError(0, "bad_response", `a redirect from https to http is not followed (the token would travel in clear): ${u.href}`);
    return u;
  }

  /**
   * A redirect of the request for `path` (path and query, without the base)
   * to `target`: the owner's base is what comes before the same path and
   * query in it, remembered for `stream`. Null when the target does not end
   * with the path (a server that rewrote it): then that request follows it
   * and nothing is learned.
   */
  private learn(stream: string | null, target: URL, path: string): Base | null {
    const full = target.pathname + target.search;
    if (!full.endsWith(path)) return null;
    const base = target.origin + full.slice(0, full.length - path.length).replace(/\/+$/, "");
    if (stream === null || this.streamsMax === 0) return base;
    this.owners.delete(stream);
    if (base === this.origin) return base; // the url given is the owner: nothing to remember
    if (this.owners.size >= this.streamsMax) this.owners.delete(this.owners.keys().next().value as string);
    this.owners.set(stream, base);
    return base;
  }

  /** Forgets `stream`'s owner if it is still `base` (a newer route learned meanwhile stays). */
  forget(stream: string | null, base: Base): void {
    if (stream !== null && this.owners.get(stream) === base) this.owners.delete(stream);
  }

  /**
   * The request for `path` about `stream`, sent to `from`, was answered
   * `status` with `location`, after `hops` redirects already: where it goes
   * next (a URL, and the base it is at), the owner remembered on the way.
   * Throws too_many_redirects past redirectsMax, or a bad Location's error.
   */
  redirect(status: number, location: string, from: string, stream: string | null, path: string, hops: number): { url: string; base: Base } {
    if (hops >= this.redirectsMax)
      throw new TickerError(
        status,
        "too_many_redirects",
        `redirected more than ${this.redirectsMax} times (redirectsMax), last to ${location}: the cluster's nodes disagree on the owner, or a proxy loops`,
        { location },
      );
    const target = this.target(location, from);
    this.redirects++;
    const base = this.learn(stream, target, path);
    return base === null ? { url: target.href, base: target.origin } : { url: base + path, base };
  }
}
