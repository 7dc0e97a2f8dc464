// The client's connections to one server: a pool of keep-alive HTTP/1.1
// connections (src/client/http.ts) that opens them as requests need them,
// up to `sockets`, sends each request on the least busy one (the server
// takes one request at a time per connection), and replaces a connection
// that broke. Every failure comes back as a TickerError: an error answer
// with the server's status and code, a lost connection as status 0.
import { HttpRawConnection, type HttpRawReply } from "./http.js";
import { errorFromAnswer, TickerError } from "./errors.js";

export interface TransportOptions {
  /** Connections at most (default 8). */
  sockets?: number;
  /** A request with no answer for this long fails with code "timeout" (default 30 s). */
  timeoutMs?: number;
  /** https: check the server's certificate (default true). */
  rejectUnauthorized?: boolean;
}

export class Transport {
  readonly base: URL;
  private readonly auth: Record<string, string>;
  /** Connections open or opening. */
  private open = 0;
  private readonly idle: HttpRawConnection[] = [];
  private readonly waiters: Array<{ resolve: (c: HttpRawConnection) => void; reject: (e: Error) => void }> = [];
  private readonly socketsMax: number;
  private readonly timeoutMs: number;
  private readonly rejectUnauthorized: boolean;
  private closed = false;

  constructor(url: string, token: string | undefined, options: TransportOptions = {}) {
    this.base = new URL(url);
    if (this.base.protocol !== "http:" && this.base.protocol !== "https:") {
      throw new TickerError(0, "bad_url", `the server url must be http:// or https://, not ${JSON.stringify(url)}`);
    }
    this.auth = token ? { Authorization: `Bearer ${token}` } : {};
    this.socketsMax = Math.max(1, options.sockets ?? 8);
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.rejectUnauthorized = options.rejectUnauthorized ?? true;
  }

  /** The path prefix of the url (e.g. "" or "/ticker"), joined to every request path. */
  private path(p: string): string {
    const prefix = this.base.pathname.replace(/\/+$/, "");
    return prefix + p;
  }

  /** Sends one request; resolves with any answer (2xx or not), rejects only when none came. */
  async send(method: string, path: string, body: Buffer | null = null, headers: Record<string, string> = {}): Promise<HttpRawReply> {
    const conn = await this.acquire();
    try {
      return await conn.request(method, this.path(path), { ...this.auth, ...headers }, body);
    } catch (err) {
      const e = err as Error;
      // A header or path refused before sending is the caller's mistake, not a lost connection.
      const code = /no response bytes/.test(e.message) ? "timeout" : /CR or LF inside/.test(e.message) ? "invalid_parameter" : "connection_failed";
      throw new TickerError(0, code, `${method} ${path}: ${e.message}`);
    } finally {
      this.release(conn);
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

  /** A connection with nothing outstanding: an idle one, a new one, or the next one released. */
  private async acquire(): Promise<HttpRawConnection> {
    if (this.closed) throw new TickerError(0, "closed", "the client was closed");
    const idle = this.idle.pop();
    if (idle !== undefined && !idle.failed) return idle;
    if (idle !== undefined) {
      this.open--; // closed by the server while idle
      return this.acquire();
    }
    if (this.open >= this.socketsMax) return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.open++;
    try {
      const c = await HttpRawConnection.connect(Number(this.base.port) || (this.base.protocol === "https:" ? 443 : 80), {
        host: this.base.hostname.replace(/^\[|\]$/g, ""),
        tls: this.base.protocol === "https:",
        rejectUnauthorized: this.rejectUnauthorized,
        timeoutMs: this.timeoutMs,
      });
      if (this.closed) c.close();
      return c;
    } catch (err) {
      this.open--;
      this.wakeOne();
      throw new TickerError(0, "connection_failed", `cannot connect to ${this.base.host}: ${(err as Error).message}`);
    }
  }

  /** Hands a connection whose request settled to the next waiter, or keeps it idle; a broken one is dropped. */
  private release(c: HttpRawConnection): void {
    if (c.failed || this.closed) {
      c.close();
      this.open--;
      this.wakeOne();
      return;
    }
    const w = this.waiters.shift();
    if (w) w.resolve(c);
    else this.idle.push(c);
  }

  /** A slot freed: the next waiter opens a connection of its own. */
  private wakeOne(): void {
    const w = this.waiters.shift();
    if (w) this.acquire().then(w.resolve, w.reject);
  }

  close(): void {
    this.closed = true;
    for (const c of this.idle.splice(0)) c.close();
    for (const w of this.waiters.splice(0)) w.reject(new TickerError(0, "closed", "the client was closed"));
  }
}
