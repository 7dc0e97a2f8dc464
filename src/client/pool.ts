// The client's connections to one node: a pool of keep-alive HTTP/1.1
// connections (src/client/http.ts) that opens them as requests need them,
// up to `sockets`, hands each request a connection with nothing outstanding
// (the server takes one request at a time per connection), and replaces a
// connection that broke. A cluster's client has one pool per node it was
// sent to (./transport.ts). Every failure comes back as a TickerError: a lost
// connection as status 0.
import { HttpRawConnection, type HttpRawReply } from "./http.js";
import { TickerError } from "./errors.js";

export interface PoolOptions {
  socketsMax: number;
  timeoutMs: number;
  rejectUnauthorized: boolean;
}

export class Pool {
  /** Connections open or opening. */
  private open = 0;
  private readonly idle: HttpRawConnection[] = [];
  private readonly waiters: Array<{ resolve: (c: HttpRawConnection) => void; reject: (e: Error) => void }> = [];
  private closed = false;

  constructor(
    private readonly url: URL,
    private readonly o: PoolOptions,
  ) {}

  /**
   * A connection with nothing outstanding: an idle one, a new one, or the
   * next one released. A TickerError connection_failed here means nothing
   * was sent: the caller may send the request elsewhere.
   */
  async acquire(): Promise<HttpRawConnection> {
    if (this.closed) throw new TickerError(0, "closed", "the client was closed");
    const idle = this.idle.pop();
    if (idle !== undefined && !idle.failed) return idle;
    if (idle !== undefined) {
      this.open--; // closed by the server while idle
      return this.acquire();
    }
    if (this.open >= this.o.socketsMax) return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.open++;
    try {
      const c = await HttpRawConnection.connect(Number(this.url.port) || (this.url.protocol === "https:" ? 443 : 80), {
        host: this.url.hostname.replace(/^\[|\]$/g, ""),
        tls: this.url.protocol === "https:",
        rejectUnauthorized: this.o.rejectUnauthorized,
        timeoutMs: this.o.timeoutMs,
      });
      if (this.closed) c.close();
      return c;
    } catch (err) {
      this.open--;
      this.wakeOne();
      throw new TickerError(0, "connection_failed", `cannot connect to ${this.url.host}: ${(err as Error).message}`);
    }
  }

  /** Sends one request on `conn` (from acquire) and gives the connection back; resolves with any answer, rejects only when none came. */
  async exchange(conn: HttpRawConnection, method: string, path: string, body: Buffer | null, headers: Record<string, string>): Promise<HttpRawReply> {
    try {
      return await conn.request(method, path, headers, body);
    } catch (err) {
      const e = err as Error;
      // A header or path refused before sending is the caller's mistake, not a lost connection.
      const code = /no response bytes/.test(e.message) ? "timeout" : /CR or LF inside/.test(e.message) ? "invalid_parameter" : "connection_failed";
      throw new TickerError(0, code, `${method} ${path}: ${e.message}`);
    } finally {
      this.release(conn);
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
