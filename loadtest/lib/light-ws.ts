// A light WebSocket client for the fan-out benchmarks: thousands of
// consumers in one process, where `ws` costs each message ~15 µs of the
// consumers' own CPU (a Readable stream push, its Receiver's Writable, an
// event per message) on the same two cores the server needs. This one
// reads every socket into one buffer (net's `onread`: no Buffer or stream
// chunk per read) and cuts the server's unmasked frames in place; what it
// sends is the pong a ping asks for and a close. It is a benchmark client,
// not a general one: no fragmented messages, no extensions (the server
// sends neither), and a frame over `FRAME_BYTES_MAX` ends the connection.
import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";

/** The largest frame taken (the server's live messages are far smaller). */
export const FRAME_BYTES_MAX = 16 * 1024 * 1024;
/** The answer to the upgrade, up to its blank line. */
const HANDSHAKE_BYTES_MAX = 16 * 1024;
/** What every socket of the process reads into (reads are handled one at a time). */
const READ_BUFFER_BYTES = 256 * 1024;
const readBuffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);

const OP_TEXT = 1;
const OP_BINARY = 2;
const OP_CLOSE = 8;
const OP_PING = 9;
const OP_PONG = 10;

export interface LightWsHandlers {
  /** A whole message; `data` is valid only during the call (it may lie in the shared read buffer). */
  message(data: Buffer, isBinary: boolean): void;
  open(): void;
  /** Called once, when the connection is over (`error` null: a close frame or the caller's terminate). */
  close(code: number, error: Error | null): void;
}

/** One frame's header, read from `b` at `at` (null: not all of it is there yet). */
export function frameHead(b: Buffer, at: number, end: number): { op: number; start: number; len: number } | null {
  if (end - at < 2) return null;
  const b1 = b[at + 1];
  let len = b1 & 0x7f;
  let start = at + 2;
  if (len === 126) {
    if (end - at < 4) return null;
    len = b.readUInt16BE(at + 2);
    start = at + 4;
  } else if (len === 127) {
    if (end - at < 10) return null;
    const high = b.readUInt32BE(at + 2);
    // Past FRAME_BYTES_MAX either way: Infinity ends the connection below.
    len = high !== 0 ? Number.POSITIVE_INFINITY : b.readUInt32BE(at + 6);
    start = at + 10;
  }
  // A server's frame is never masked (RFC 6455 5.1); one that is, is refused as too large.
  if (b1 & 0x80) len = Number.POSITIVE_INFINITY;
  return { op: b[at] & 0x0f, start, len };
}

export interface FrameHandlers {
  /** A whole text or binary message; `data` is valid only during the call. */
  message(data: Buffer, isBinary: boolean): void;
  ping(data: Buffer): void;
  /** A close frame; nothing after it is read. */
  close(code: number): void;
  /** Bytes that are not the server's frames; nothing after them is read. */
  fail(err: Error): void;
}

/**
 * The server's frames out of a byte stream read in arbitrary pieces: each
 * whole frame handed on as it completes, the rest of a read carried (at
 * most one frame, bounded by FRAME_BYTES_MAX). Every pass over the bytes
 * moves on by at least a frame header or stops.
 */
export class FrameReader {
  private carry: Buffer = Buffer.alloc(0);
  private carryLen = 0;
  private over = false;

  constructor(private readonly on: FrameHandlers) {}

  /** Bytes held for the next read. */
  get carried(): number {
    return this.carryLen;
  }

  /** Takes buf[0, n); false once the stream is over (a close or a bad frame). */
  push(buf: Buffer, n: number): boolean {
    if (this.over) return false;
    let b = buf;
    let end = n;
    if (this.carryLen > 0) {
      this.keep(buf, 0, n);
      b = this.carry;
      end = this.carryLen;
      this.carryLen = 0;
    }
    const used = this.frames(b, end);
    if (used < 0) {
      this.over = true;
      this.carryLen = 0;
      return false;
    }
    if (used < end) {
      if (b === this.carry) b.copyWithin(0, used, end);
      else this.keep(b, used, end);
      this.carryLen = end - used;
    }
    return true;
  }

  private keep(src: Buffer, from: number, to: number): void {
    const need = this.carryLen + (to - from);
    if (need > this.carry.length) {
      const next = Buffer.allocUnsafe(Math.max(need, this.carry.length * 2, 4096));
      this.carry.copy(next, 0, 0, this.carryLen);
      this.carry = next;
    }
    src.copy(this.carry, this.carryLen, from, to);
    this.carryLen = need;
  }

  /** Cuts whole frames from b[0, end): bytes used, or -1 once the stream is over. */
  private frames(b: Buffer, end: number): number {
    let at = 0;
    for (;;) {
      const h = frameHead(b, at, end);
      if (h === null) return at;
      if (h.len > FRAME_BYTES_MAX) return this.fail(new Error("a frame over FRAME_BYTES_MAX, or masked"));
      if (h.start + h.len > end) return at;
      if ((b[at] & 0x80) === 0 || h.op === 0) return this.fail(new Error("a fragmented message (the server sends whole ones)"));
      const data = b.subarray(h.start, h.start + h.len);
      at = h.start + h.len;
      if (h.op === OP_TEXT || h.op === OP_BINARY) this.on.message(data, h.op === OP_BINARY);
      else if (h.op === OP_PING) this.on.ping(data);
      else if (h.op === OP_CLOSE) {
        this.on.close(data.length >= 2 ? data.readUInt16BE(0) : 1005);
        return -1;
      } else if (h.op !== OP_PONG) return this.fail(new Error(`frame opcode ${h.op}`));
    }
  }

  private fail(err: Error): number {
    this.on.fail(err);
    return -1;
  }
}

/** One consumer's connection: the upgrade, then a FrameReader over what follows. */
export class LightWebSocket {
  private readonly socket: Socket;
  private readonly frames: FrameReader;
  /** The upgrade's answer, until its blank line has come. */
  private head: Buffer | null = Buffer.alloc(0);
  private over = false;

  constructor(
    port: number,
    path: string,
    private readonly on: LightWsHandlers,
  ) {
    const key = randomBytes(16).toString("base64");
    this.frames = new FrameReader({
      message: (data, isBinary) => on.message(data, isBinary),
      ping: (data) => this.control(OP_PONG, data),
      close: (code) => {
        this.control(OP_CLOSE, Buffer.from([code >> 8, code & 0xff]));
        this.socket.end();
        this.end(code, null);
      },
      fail: (err) => {
        this.socket.destroy();
        this.end(1002, err);
      },
    });
    this.socket = connect({
      host: "127.0.0.1",
      port,
      noDelay: true,
      onread: { buffer: readBuffer, callback: (n: number, buf: Uint8Array) => this.read(buf as Buffer, n) },
    });
    this.socket.on("connect", () => {
      this.socket.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    this.socket.on("error", (err) => this.end(1006, err));
    this.socket.on("close", () => this.end(1006, this.head === null ? null : new Error("closed before the upgrade")));
  }

  /** Drops the connection at once. */
  terminate(): void {
    this.socket.destroy();
    this.end(1006, null);
  }

  private read(buf: Buffer, n: number): boolean {
    if (this.over) return false;
    if (this.head === null) return this.frames.push(buf, n);
    // The upgrade's answer: collected (it is small) until its blank line.
    const head = Buffer.concat([this.head, buf.subarray(0, n)]);
    const headEnd = head.indexOf("\r\n\r\n", 0, "latin1");
    if (headEnd === -1) {
      if (head.length > HANDSHAKE_BYTES_MAX) return this.refuse(new Error("the upgrade's answer passed its size bound"));
      this.head = head;
      return true;
    }
    const status = head.toString("latin1", 0, Math.min(headEnd, 200)).split("\r\n")[0];
    if (!/^HTTP\/1\.1 101 /.test(status)) return this.refuse(new Error(`upgrade refused: ${status}`));
    this.head = null;
    this.on.open();
    const rest = head.subarray(headEnd + 4);
    return rest.length === 0 || this.frames.push(rest, rest.length);
  }

  /** A control frame to the server, masked with a zero key (RFC 6455 5.3: any key will do). */
  private control(op: number, payload: Buffer): void {
    const len = Math.min(payload.length, 125);
    const f = Buffer.alloc(6 + len);
    f[0] = 0x80 | op;
    f[1] = 0x80 | len;
    payload.copy(f, 6, 0, len);
    this.socket.write(f);
  }

  private refuse(err: Error): boolean {
    this.socket.destroy();
    this.end(1002, err);
    return false;
  }

  private end(code: number, error: Error | null): void {
    if (this.over) return;
    this.over = true;
    this.on.close(code, error);
  }
}
