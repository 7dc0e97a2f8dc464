// A minimal HTTP/1.1 keep-alive client over node:net for the replay rows: it
// reads the status line and content-length and fills one preallocated body
// buffer, nothing else. The Redis rows read their replies from raw sockets;
// with this the Ticker replay rows pay the same small client cost.
import { connect, type Socket } from "node:net";

export interface RawReply {
  status: number;
  body: Buffer;
}

const CRLFCRLF = Buffer.from("\r\n\r\n");

/** Parses one response from the front of `head` (the bytes before the body). */
export function parseHead(head: Buffer): { status: number; contentLength: number } {
  const text = head.toString("latin1");
  const status = Number(text.slice(9, 12));
  if (!text.startsWith("HTTP/1.1 ") || !Number.isInteger(status)) throw new Error(`not an HTTP/1.1 response: ${JSON.stringify(text.slice(0, 40))}`);
  if (/\r\ntransfer-encoding:\s*chunked/i.test(text)) throw new Error("chunked responses are not supported by this client");
  const m = /\r\ncontent-length:\s*(\d+)/i.exec(text);
  if (!m) throw new Error("response without content-length");
  return { status, contentLength: Number(m[1]) };
}

/** One connection; requests on it are answered in order (HTTP/1.1 pipelining). */
class Connection {
  private readonly socket: Socket;
  private readonly waiting: Array<{ resolve: (r: RawReply) => void; reject: (e: Error) => void }> = [];
  private head: Buffer = Buffer.alloc(0);
  private body: Buffer | null = null;
  private bodyLen = 0;
  private status = 0;

  constructor(port: number) {
    this.socket = connect(port, "127.0.0.1");
    this.socket.setNoDelay(true);
    this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
    this.socket.on("error", (err) => this.failAll(err));
    this.socket.on("close", () => this.failAll(new Error("connection closed")));
  }

  get pending(): number {
    return this.waiting.length;
  }

  get(path: string, headers: Record<string, string>): Promise<RawReply> {
    let req = `GET ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\n`;
    for (const [k, v] of Object.entries(headers)) req += `${k}: ${v}\r\n`;
    this.socket.write(req + "\r\n");
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  private onData(chunk: Buffer): void {
    while (chunk.length > 0) {
      if (this.body === null) {
        this.head = this.head.length === 0 ? chunk : Buffer.concat([this.head, chunk]);
        const end = this.head.indexOf(CRLFCRLF);
        if (end === -1) return;
        const { status, contentLength } = parseHead(this.head.subarray(0, end));
        this.status = status;
        this.body = Buffer.allocUnsafe(contentLength);
        this.bodyLen = 0;
        chunk = this.head.subarray(end + 4);
        this.head = Buffer.alloc(0);
      }
      const take = Math.min(chunk.length, this.body.length - this.bodyLen);
      chunk.copy(this.body, this.bodyLen, 0, take);
      this.bodyLen += take;
      chunk = chunk.subarray(take);
      if (this.bodyLen === this.body.length) {
        const w = this.waiting.shift();
        const reply = { status: this.status, body: this.body };
        this.body = null;
        if (!w) return this.failAll(new Error("a response nobody asked for"));
        w.resolve(reply);
      }
    }
  }

  private failAll(err: Error): void {
    for (const w of this.waiting.splice(0)) w.reject(err);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** `sockets` connections; each request goes to the one with the fewest waiting. */
export class RawHttpClient {
  private readonly conns: Connection[] = [];

  constructor(port: number, sockets: number) {
    for (let i = 0; i < sockets; i++) this.conns.push(new Connection(port));
  }

  get(path: string, headers: Record<string, string> = {}): Promise<RawReply> {
    let best = this.conns[0];
    for (const c of this.conns) if (c.pending < best.pending) best = c;
    return best.get(path, headers);
  }

  close(): void {
    for (const c of this.conns) c.close();
  }
}
