// A minimal HTTP/1.1 keep-alive client over node:net (node:tls for https),
// the transport of ticker/client and of the benchmarks. node:http spent
// more CPU than the server it talked to: parsing, stream events, and a
// Buffer.concat of ~30 chunks per 1.9 MB replay page; at ~1,000 small
// requests a second it cost about twice the CPU per request (~0.45 ms
// against ~0.2 ms on the 2-core VM).
//
// It reads the status line and headers only for the status code,
// Content-Length and the three headers the client acts on (Retry-After,
// Content-Type, and Location: a cluster node's 307 to a stream's owner, which
// transport.ts follows), and reads each body straight into one buffer of that
// length: once a head is parsed, the socket's next reads go into the unfilled
// rest of the body (net's `onread` with a buffer chosen per read), so a page
// is not copied or reassembled in JavaScript and no chunk is allocated per
// read. Bytes that came in the same read as a head are copied once.
//
// Requests may be pipelined on a connection; its responses are matched to
// them in order. Chunked (or any Transfer-Encoding) responses are refused:
// the server (uWebSockets.js) sends Content-Length. A connection that fails
// stays failed and rejects everything outstanding: a benchmark wants the
// error, not a retry.
import { connect, type Socket } from "node:net";
import { connect as connectTls } from "node:tls";

export interface HttpRawReply {
  status: number;
  body: Buffer;
  /** The Retry-After header, when the answer has one. */
  retryAfter: string | null;
  /** The Content-Type header, lowercased, or "" when absent. */
  contentType: string;
  /** The Location header as sent (absolute or relative to the request), when the answer has one: a 307 names a stream's owner. */
  location: string | null;
}

export class HttpRawError extends Error {}

export interface HttpRawOptions {
  host?: string;
  /** https: TLS over the connection (reads then come as chunks, copied once into the body). */
  tls?: boolean;
  /** For TLS: check the server's certificate (default true). */
  rejectUnauthorized?: boolean;
  /** Fail the connection when requests are outstanding and nothing arrives for this long. */
  timeoutMs?: number;
}

/** A response head (status line and headers, blank line included) longer than this is refused. */
const HEAD_MAX = 16 * 1024;
/** Where reads go between bodies; a read may hold a head, a body's start and further responses. */
const SCRATCH_BYTES = 64 * 1024;
const DEFAULT_TIMEOUT_MS = 60_000;
const CR = 13;
const LF = 10;
const BAD_IN_LINE = /[\r\n]/;

/**
 * Parses a response head: the status line and headers, without the blank
 * line. Returns the status and the body length; throws on anything this
 * client does not read (chunked, no Content-Length, not HTTP/1.x).
 */
export interface ResponseHead {
  status: number;
  contentLength: number;
  retryAfter: string | null;
  contentType: string;
  location: string | null;
}

export function parseResponseHead(head: Buffer): ResponseHead {
  const text = head.toString("latin1");
  const lines = text.split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0]);
  if (!m) throw new HttpRawError(`not an HTTP/1.x status line: ${JSON.stringify(lines[0].slice(0, 60))}`);
  const status = Number(m[1]);
  let contentLength: number | null = null;
  let retryAfter: string | null = null;
  let contentType = "";
  let location: string | null = null;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const colon = line.indexOf(":");
    if (colon <= 0) throw new HttpRawError(`malformed header line in a ${status} response: ${JSON.stringify(line.slice(0, 60))}`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === "transfer-encoding") {
      throw new HttpRawError(
        `${status} response has "Transfer-Encoding: ${value}": this client reads only Content-Length bodies (chunked responses are not supported)`,
      );
    }
    if (name === "retry-after") retryAfter = value;
    if (name === "content-type") contentType = value.toLowerCase();
    if (name === "location") location = value;
    if (name === "content-length") {
      if (!/^\d{1,15}$/.test(value)) throw new HttpRawError(`${status} response has a bad Content-Length: ${JSON.stringify(value)}`);
      const n = Number(value);
      if (contentLength !== null && contentLength !== n) throw new HttpRawError(`${status} response has two different Content-Lengths`);
      contentLength = n;
    }
  }
  if (status < 200) throw new HttpRawError(`interim ${status} response: not expected (no request here asks for one)`);
  if (status === 204 || status === 304) return { status, contentLength: 0, retryAfter, contentType, location };
  if (contentLength === null) throw new HttpRawError(`${status} response without Content-Length (this client reads only Content-Length bodies)`);
  return { status, contentLength, retryAfter, contentType, location };
}

interface Waiter {
  resolve: (r: HttpRawReply) => void;
  reject: (e: Error) => void;
}

/** One keep-alive connection; requests on it may be pipelined and are answered in order. */
export class HttpRawConnection {
  private readonly socket: Socket;
  private readonly waiting: Waiter[] = [];
  private failure: Error | null = null;
  private readonly requestTail: string;

  private readonly scratch = Buffer.allocUnsafe(SCRATCH_BYTES);
  private readonly head = Buffer.allocUnsafe(HEAD_MAX);
  private headLen = 0;
  /** How much of "\r\n\r\n" the head ends with so far. */
  private headEndMatched = 0;
  private status = 0;
  private retryAfter: string | null = null;
  private contentType = "";
  private location: string | null = null;
  /** The body being read, or null while reading a head. */
  private body: Buffer | null = null;
  private bodyLen = 0;

  private constructor(port: number, host: string, timeoutMs: number, options: HttpRawOptions) {
    this.requestTail = ` HTTP/1.1\r\nHost: ${host.includes(":") ? `[${host}]` : host}:${port}\r\n`;
    if (options.tls) {
      // TLS sockets take no onread: their chunks go the scratch path.
      this.socket = connectTls({ port, host, servername: host, rejectUnauthorized: options.rejectUnauthorized ?? true });
      this.socket.setNoDelay(true);
      this.socket.on("data", (chunk: Buffer) => this.onChunk(chunk, chunk.length));
    } else {
      this.socket = connect({
        port,
        host,
        noDelay: true,
        onread: {
          buffer: () => this.nextReadBuffer(),
          callback: (n, buf) => {
            this.onRead(n, buf as Buffer);
            return true;
          },
        },
      });
    }
    this.socket.on("error", (err) => this.fail(err));
    this.socket.on("end", () => this.fail(new HttpRawError("the server closed the connection")));
    this.socket.on("close", () => this.fail(new HttpRawError("connection closed")));
    // Idle time, not per request: only an error while something is outstanding.
    this.socket.setTimeout(timeoutMs, () => {
      if (this.waiting.length > 0) this.fail(new HttpRawError(`no response bytes for ${timeoutMs} ms with ${this.waiting.length} request(s) outstanding`));
    });
  }

  static connect(port: number, options: HttpRawOptions = {}): Promise<HttpRawConnection> {
    const c = new HttpRawConnection(port, options.host ?? "127.0.0.1", options.timeoutMs ?? DEFAULT_TIMEOUT_MS, options);
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      // The socket's idle timeout counts only once connected: a connect that hangs (a full backlog) is bounded here.
      const timer = setTimeout(() => {
        c.socket.destroy();
        reject(new HttpRawError(`no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      const onError = (err: Error) => {
        clearTimeout(timer);
        reject(err);
      };
      c.socket.once("error", onError);
      c.socket.once(options.tls ? "secureConnect" : "connect", () => {
        clearTimeout(timer);
        c.socket.off("error", onError);
        resolve(c);
      });
    });
  }

  /** The connection is gone (e.g. the server closed it after its keep-alive idle time). */
  get failed(): boolean {
    return this.failure !== null;
  }

  /** Requests written and not yet answered. */
  get pending(): number {
    return this.waiting.length;
  }

  /** Sends `GET path`; `headers` are written as given (e.g. { Accept: "application/json" }). */
  get(path: string, headers: Record<string, string> = {}): Promise<HttpRawReply> {
    return this.request("GET", path, headers, null);
  }

  /** Sends `POST path` with `body` and its Content-Length; `headers` as for get (e.g. the Content-Type). */
  post(path: string, body: Buffer, headers: Record<string, string> = {}): Promise<HttpRawReply> {
    return this.request("POST", path, headers, body);
  }

  /** Sends any request; `body` with its Content-Length. Answers come back in the order requests were sent. */
  request(method: string, path: string, headers: Record<string, string>, body: Buffer | null): Promise<HttpRawReply> {
    if (this.failure) return Promise.reject(this.failure);
    let req = `${method} ${path}${this.requestTail}`;
    let unsafe = BAD_IN_LINE.test(path);
    for (const k in headers) {
      unsafe ||= BAD_IN_LINE.test(k) || BAD_IN_LINE.test(headers[k]);
      req += `${k}: ${headers[k]}\r\n`;
    }
    if (unsafe) return Promise.reject(new HttpRawError(`CR or LF inside the path or a header of ${method} ${JSON.stringify(path)}`));
    if (body) req += `Content-Length: ${body.byteLength}\r\n`;
    req += "\r\n";
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!body) return void this.socket.write(req, "latin1");
      // Head and body in one writev, not two packets.
      this.socket.cork();
      this.socket.write(req, "latin1");
      this.socket.write(body);
      this.socket.uncork();
    });
  }

  close(): void {
    this.fail(new HttpRawError("connection closed by the client"));
  }

  /** Reads go straight into the rest of the body being read, else into the scratch buffer. */
  private nextReadBuffer(): Buffer {
    return this.body !== null ? this.body.subarray(this.bodyLen) : this.scratch;
  }

  private onRead(n: number, buf: Buffer): void {
    if (this.failure) return;
    try {
      if (buf !== this.scratch) {
        // The kernel wrote into the body itself, never past its end.
        this.bodyLen += n;
        if (this.bodyLen === this.body?.length) this.finishBody();
        return;
      }
      this.onChunk(buf, n);
    } catch (err) {
      // A malformed response leaves the stream out of step: end the connection.
      this.fail(err as Error);
    }
  }

  /** Reads `buf[0, n)`: heads, and bodies copied into their buffers. */
  private onChunk(buf: Buffer, n: number): void {
    if (this.failure) return;
    try {
      let i = 0;
      while (i < n) {
        if (this.body === null) {
          i = this.readHead(buf, i, n);
        } else {
          const take = Math.min(n - i, this.body.length - this.bodyLen);
          buf.copy(this.body, this.bodyLen, i, i + take);
          this.bodyLen += take;
          i += take;
          if (this.bodyLen === this.body.length) this.finishBody();
        }
      }
    } catch (err) {
      // A malformed response leaves the stream out of step: end the connection.
      this.fail(err as Error);
    }
  }

  /** Consumes head bytes from buf[i, n); returns where it stopped (after the blank line, or n). */
  private readHead(buf: Buffer, i: number, n: number): number {
    if (this.waiting.length === 0) throw new HttpRawError(`${n - i} bytes arrived with no request outstanding`);
    let matched = this.headEndMatched;
    let len = this.headLen;
    const head = this.head;
    while (i < n) {
      const b = buf[i++];
      if (len === HEAD_MAX) throw new HttpRawError(`response head longer than ${HEAD_MAX} bytes`);
      head[len++] = b;
      // "\r\n\r\n": CR at even matches, LF at odd ones; a CR restarts the match at 1.
      if (b === (matched % 2 === 0 ? CR : LF)) matched++;
      else matched = b === CR ? 1 : 0;
      if (matched === 4) {
        this.headLen = 0;
        this.headEndMatched = 0;
        const { status, contentLength, retryAfter, contentType, location } = parseResponseHead(head.subarray(0, len - 4));
        this.status = status;
        this.retryAfter = retryAfter;
        this.contentType = contentType;
        this.location = location;
        this.bodyLen = 0;
        this.body = Buffer.allocUnsafe(contentLength);
        if (contentLength === 0) this.finishBody();
        return i;
      }
    }
    this.headLen = len;
    this.headEndMatched = matched;
    return i;
  }

  private finishBody(): void {
    const body = this.body ?? Buffer.alloc(0);
    this.body = null;
    this.bodyLen = 0;
    // readHead checked that a request is outstanding.
    this.waiting.shift()?.resolve({ status: this.status, body, retryAfter: this.retryAfter, contentType: this.contentType, location: this.location });
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const w of this.waiting.splice(0)) w.reject(this.failure);
    this.socket.destroy();
  }
}

/**
 * `sockets` keep-alive connections; each request goes to the connection with
 * the fewest outstanding. With as many sockets as requests in flight, that
 * is one request per socket, as an http.Agent with maxSockets does.
 */
export class HttpRawClient {
  private constructor(private readonly conns: HttpRawConnection[]) {}

  static async connect(port: number, sockets: number, options: HttpRawOptions = {}): Promise<HttpRawClient> {
    return new HttpRawClient(await HttpRawClient.connections(port, sockets, options));
  }

  /** `sockets` connections, or none: if one fails, the others are closed. */
  static async connections(port: number, sockets: number, options: HttpRawOptions = {}): Promise<HttpRawConnection[]> {
    const settled = await Promise.allSettled(Array.from({ length: sockets }, () => HttpRawConnection.connect(port, options)));
    const conns = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
    if (failed) {
      for (const c of conns) c.close();
      throw failed.reason as Error;
    }
    return conns;
  }

  get(path: string, headers: Record<string, string> = {}): Promise<HttpRawReply> {
    return this.leastBusy().get(path, headers);
  }

  post(path: string, body: Buffer, headers: Record<string, string> = {}): Promise<HttpRawReply> {
    return this.leastBusy().post(path, body, headers);
  }

  /** The connection with the fewest requests outstanding. */
  private leastBusy(): HttpRawConnection {
    let best = this.conns[0];
    for (const c of this.conns) if (c.pending < best.pending) best = c;
    return best;
  }

  close(): void {
    for (const c of this.conns) c.close();
  }
}
