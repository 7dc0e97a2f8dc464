// Just enough RESP2 for the Redis rows of the benchmarks, so that their client
// costs about what Ticker's does: commands are encoded once, written to a raw
// socket (RespConn), replies are counted by a streaming scanner that skips
// bulk bodies without copying them, and an XRANGE or XREAD reply is walked in
// place. Nothing builds a JS value per reply or per field.
import net from "node:net";
import { wallNow } from "./latency.js";
import { uintAt } from "./scan.js";

const CR = 13;
const LF = 10;
const PLUS = 43; // +  simple string
const MINUS = 45; // -  error (and a number's sign)
const COLON = 58; // :  integer
const DOLLAR = 36; // $  bulk string
const STAR = 42; // *  array
const ZERO = 48;
const NINE = 57;

/** An error text longer than this is cut: it is only reported. */
const ERROR_TEXT_MAX = 200;

export class RespProtocolError extends Error {}

/** One command as a RESP array of bulk strings. */
export function encodeCommand(args: readonly (string | Uint8Array)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`, "latin1")];
  for (const a of args) {
    const bytes = typeof a === "string" ? Buffer.from(a, "utf8") : Buffer.from(a.buffer, a.byteOffset, a.byteLength);
    parts.push(Buffer.from(`$${bytes.byteLength}\r\n`, "latin1"), bytes, Buffer.from("\r\n", "latin1"));
  }
  return Buffer.concat(parts);
}

const TYPE = 0; // at the first byte of a reply or array element
const LINE = 1; // inside the header line of `kind`
const BULK = 2; // inside a bulk body (and its CRLF)

/**
 * Counts complete top-level replies in a byte stream fed in chunks split
 * anywhere. Arrays nest: a reply is complete when its last element is.
 * Error replies (`-ERR …`) count as replies and are also counted in
 * `errors`, with the latest one's text in `error`. Bulk bodies are skipped
 * by length, never looked at.
 */
export class ReplyCounter {
  /** Complete top-level replies so far. */
  replies = 0;
  /** Error replies so far, at any depth. */
  errors = 0;
  /** The text of the latest error reply, without "-" and CRLF. */
  error: string | null = null;

  private state = TYPE;
  private kind = 0;
  private num = 0;
  private neg = false;
  private digits = 0;
  private errorBytes: number[] = [];
  /** Bulk bytes still to skip, its CRLF included. */
  private skip = 0;
  /** Elements still due in each open array, innermost last. */
  private readonly open: number[] = [];

  /** Scans `chunk`; returns how many top-level replies it completed. */
  feed(chunk: Uint8Array): number {
    const before = this.replies;
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      if (this.state === BULK) {
        const take = Math.min(this.skip, n - i);
        i += take;
        this.skip -= take;
        if (this.skip === 0) {
          this.state = TYPE;
          this.complete();
        }
        continue;
      }
      const b = chunk[i++];
      if (this.state === TYPE) {
        if (b !== PLUS && b !== MINUS && b !== COLON && b !== DOLLAR && b !== STAR) {
          throw new RespProtocolError(`byte 0x${b.toString(16)} where a reply starts (only RESP2 is read)`);
        }
        this.kind = b;
        this.state = LINE;
        this.num = 0;
        this.neg = false;
        this.digits = 0;
        if (b === MINUS) this.errorBytes = [];
        continue;
      }
      // LINE: everything up to LF; the CR before it is dropped.
      if (b === LF) {
        this.endLine();
      } else if (b === CR) {
        // The line's end follows.
      } else if (this.kind === MINUS) {
        if (this.errorBytes.length < ERROR_TEXT_MAX) this.errorBytes.push(b);
      } else if (this.kind !== PLUS) {
        if (b >= ZERO && b <= NINE) {
          this.num = this.num * 10 + (b - ZERO);
          this.digits++;
        } else if (b === MINUS && this.digits === 0 && !this.neg) {
          this.neg = true;
        } else {
          throw new RespProtocolError(`byte 0x${b.toString(16)} in a "${String.fromCharCode(this.kind)}" length or integer`);
        }
      }
    }
    return this.replies - before;
  }

  /** True between replies: no header line, bulk body or array is half read. */
  get idle(): boolean {
    return this.state === TYPE && this.open.length === 0;
  }

  private endLine(): void {
    this.state = TYPE;
    const kind = this.kind;
    if (kind === MINUS) {
      this.errors++;
      this.error = Buffer.from(this.errorBytes).toString("utf8");
      this.complete();
      return;
    }
    if (kind === PLUS || kind === COLON) {
      this.complete();
      return;
    }
    if (this.digits === 0) throw new RespProtocolError(`"${String.fromCharCode(kind)}" without a length`);
    // $-1 and *-1 are nulls: complete values, as is an empty array.
    if (this.neg || this.num === 0) {
      if (kind === DOLLAR && !this.neg) {
        this.state = BULK;
        this.skip = 2;
        return;
      }
      this.complete();
      return;
    }
    if (kind === DOLLAR) {
      this.state = BULK;
      this.skip = this.num + 2;
    } else {
      this.open.push(this.num);
    }
  }

  /** A value ended: it may end the arrays it closes, and then a top-level reply. */
  private complete(): void {
    const open = this.open;
    while (open.length > 0) {
      if (--open[open.length - 1] > 0) return;
      open.pop();
    }
    this.replies++;
  }
}

/** A stream entry id, `<ms>-<seq>`, as numbers (exact below 2^53, which both are here). */
export interface StreamId {
  ms: number;
  seq: number;
}

export interface XrangePage {
  entries: number;
  /** The last entry's id, or null for an empty page. */
  last: StreamId | null;
  /** The last entry's id as Redis wrote it, "" for an empty page. */
  lastId: string;
}

export interface XrangeExpect {
  /** Every entry must have exactly this one field… */
  field?: Uint8Array;
  /** …holding a value of this many bytes. */
  valueBytes?: number;
}

/** Returned by a read that ran past the bytes at hand: the walk resumes at the entry's start. */
const SHORT = -1;

/**
 * Reads one XRANGE reply, `*N` of `*2 [ $id, *2k [ $field, $value, … ] ]`,
 * from chunks split anywhere, in one pass: it counts the entries, checks
 * that their ids rise (past `after` too) and, if asked, that each is one
 * given field with a value of a given length, and keeps the last id. Only
 * headers and ids are read; values are skipped by length. An entry split
 * across chunks is carried over (the only copy); whole entries are walked
 * in the chunk itself. Throws on an error reply, another shape, or bytes
 * past the end of the reply. Reusable: `start` begins the next reply.
 */
export class XrangeReader {
  private readonly field: Uint8Array | undefined;
  private readonly valueBytes: number;
  private carry: Buffer = Buffer.allocUnsafe(0);
  private carryLen = 0;
  /** Entries in the reply, -1 until its header has been read. */
  private count = -1;
  private seen = 0;
  private prevMs = -1;
  private prevSeq = -1;
  private lastId = "";
  private done = false;
  /** Cursor state of `walk`, in fields so that `header` can move it. */
  private data: Uint8Array = this.carry;
  private at = 0;

  constructor(expect: XrangeExpect = {}) {
    this.field = expect.field;
    this.valueBytes = expect.valueBytes ?? -1;
  }

  /** Begins a new reply whose ids must rise past `after`. */
  start(after: StreamId | null = null): this {
    this.carryLen = 0;
    this.count = -1;
    this.seen = 0;
    this.prevMs = after ? after.ms : -1;
    this.prevSeq = after ? after.seq : -1;
    this.lastId = "";
    this.done = false;
    return this;
  }

  /** Takes the next bytes; true once the whole reply has been read. */
  feed(chunk: Uint8Array): boolean {
    if (this.done) throw new RespProtocolError(`${chunk.length} bytes after the XRANGE reply`);
    let data = chunk;
    if (this.carryLen > 0) {
      this.reserve(this.carryLen + chunk.length);
      this.carry.set(chunk, this.carryLen);
      data = this.carry.subarray(0, this.carryLen + chunk.length);
    }
    const used = this.walk(data);
    if (this.done) {
      if (used !== data.length) throw new RespProtocolError(`${data.length - used} bytes after the XRANGE reply`);
      this.carryLen = 0;
      return true;
    }
    const rest = data.length - used;
    if (data === chunk) {
      this.reserve(rest);
      this.carry.set(chunk.subarray(used));
    } else {
      this.carry.copyWithin(0, used, data.length);
    }
    this.carryLen = rest;
    return false;
  }

  /** The reply read; throws if it is not complete. */
  result(): XrangePage {
    if (!this.done) throw new RespProtocolError(`XRANGE reply cut short after ${this.seen} of ${this.count < 0 ? "?" : this.count} entries`);
    return { entries: this.count, last: this.count > 0 ? { ms: this.prevMs, seq: this.prevSeq } : null, lastId: this.lastId };
  }

  private reserve(bytes: number): void {
    if (this.carry.length >= bytes) return;
    const grown = Buffer.allocUnsafe(Math.max(bytes, 2 * this.carry.length, 1 << 16));
    this.carry.copy(grown, 0, 0, this.carryLen);
    this.carry = grown;
  }

  /** Walks whole entries of `data`; returns the bytes used, up to the start of an entry cut short. */
  private walk(data: Uint8Array): number {
    this.data = data;
    this.at = 0;
    const end = data.length;
    if (this.count < 0) {
      const n = this.header(STAR, "the entry array");
      if (n === SHORT) return 0;
      this.count = n;
    }
    const field = this.field;
    const valueBytes = this.valueBytes;
    let lastIdAt = -1;
    let lastIdLen = 0;
    let used = this.at;
    while (this.seen < this.count) {
      const e = this.seen;
      const pairs = this.header(STAR, "an entry");
      if (pairs === SHORT) break;
      if (pairs !== 2) throw new RespProtocolError(`entry ${e} is not [id, fields]`);
      const idLen = this.header(DOLLAR, "an entry id");
      if (idLen === SHORT) break;
      const idAt = this.at;
      const idEnd = idAt + idLen;
      if (idEnd + 2 > end) break;
      // <ms>-<seq>, both decimal.
      let p = idAt;
      let ms = 0;
      let seq = 0;
      for (let b = data[p]; p < idEnd && b >= ZERO && b <= NINE; b = data[++p]) ms = ms * 10 + (b - ZERO);
      const dash = p++;
      for (let b = data[p]; p < idEnd && b >= ZERO && b <= NINE; b = data[++p]) seq = seq * 10 + (b - ZERO);
      if (dash === idAt || data[dash] !== MINUS || p === dash + 1 || p !== idEnd)
        throw new RespProtocolError(`entry ${e}: bad id "${latin1(data, idAt, idLen)}"`);
      this.at = idEnd + 2;
      const fields = this.header(STAR, "an entry's fields");
      if (fields === SHORT) break;
      if (fields % 2 !== 0) throw new RespProtocolError(`entry ${e}: ${fields} field items, not name/value pairs`);
      if (field && fields !== 2) throw new RespProtocolError(`entry ${e}: ${fields / 2} fields, expected one`);
      let f = 0;
      for (; f < fields; f++) {
        const len = this.header(DOLLAR, "a field name or value");
        if (len === SHORT || this.at + len + 2 > end) break;
        if (f === 0 && field && !sameBytes(data, this.at, len, field)) throw new RespProtocolError(`entry ${e}: another field name`);
        if (f === 1 && valueBytes >= 0 && len !== valueBytes) throw new RespProtocolError(`entry ${e}: value of ${len} bytes, expected ${valueBytes}`);
        this.at += len + 2;
      }
      if (f < fields) break;
      // The entry is whole: only now does its id count.
      if (ms < this.prevMs || (ms === this.prevMs && seq <= this.prevSeq)) {
        throw new RespProtocolError(`entry ${e}: id ${latin1(data, idAt, idLen)} does not rise past ${this.prevMs}-${this.prevSeq}`);
      }
      this.prevMs = ms;
      this.prevSeq = seq;
      lastIdAt = idAt;
      lastIdLen = idLen;
      this.seen++;
      used = this.at;
    }
    // The id string is made once per chunk, not per entry.
    if (lastIdAt >= 0) this.lastId = latin1(data, lastIdAt, lastIdLen);
    if (this.seen === this.count) this.done = true;
    return used;
  }

  /** Reads a `<type><digits>CRLF` header at the cursor: its number, or SHORT. Throws on an error reply. */
  private header(type: number, what: string): number {
    const data = this.data;
    let at = this.at;
    if (at >= data.length) return SHORT;
    const t = data[at];
    if (t !== type) {
      if (t === MINUS) {
        const eol = indexOfCrlf(data, at);
        if (eol < 0) return SHORT;
        throw new RespProtocolError(`error reply: ${latin1(data, at + 1, eol - at - 1)}`);
      }
      throw new RespProtocolError(`"${String.fromCharCode(t)}" where ${what} ("${String.fromCharCode(type)}") was due`);
    }
    const first = ++at;
    let n = 0;
    for (let b = data[at]; b >= ZERO && b <= NINE; b = data[++at]) n = n * 10 + (b - ZERO);
    if (at + 1 >= data.length) return SHORT;
    if (at === first || data[at] !== CR || data[at + 1] !== LF) throw new RespProtocolError(`bad length of ${what}`);
    this.at = at + 2;
    return n;
  }
}

/** One complete XRANGE reply in `buf`; see XrangeReader. */
export function walkXrange(buf: Uint8Array, expect: XrangeExpect = {}, after: StreamId | null = null): XrangePage {
  const reader = new XrangeReader(expect).start(after);
  reader.feed(buf);
  return reader.result();
}

const latin1 = (buf: Uint8Array, at: number, len: number) => Buffer.from(buf.buffer, buf.byteOffset + at, len).toString("latin1");

/**
 * One complete simple reply: a status or bulk string, an integer, or null.
 * For setup and checks outside the timed part. Throws on an error reply.
 */
export function readScalar(buf: Uint8Array): string | number | null {
  const eol = indexOfCrlf(buf, 0);
  if (eol < 0) throw new RespProtocolError("reply without a CRLF");
  const line = Buffer.from(buf.buffer, buf.byteOffset + 1, eol - 1).toString("utf8");
  switch (buf[0]) {
    case PLUS:
      return line;
    case MINUS:
      throw new RespProtocolError(`error reply: ${line}`);
    case COLON:
      return Number(line);
    case DOLLAR: {
      const len = Number(line);
      return len < 0 ? null : Buffer.from(buf.buffer, buf.byteOffset + eol + 2, len).toString("utf8");
    }
    default:
      throw new RespProtocolError(`"${String.fromCharCode(buf[0])}" is not a simple reply`);
  }
}

function indexOfCrlf(buf: Uint8Array, from: number): number {
  for (let i = from; i + 1 < buf.length; i++) if (buf[i] === CR && buf[i + 1] === LF) return i;
  return -1;
}

function sameBytes(buf: Uint8Array, at: number, len: number, want: Uint8Array): boolean {
  if (len !== want.length) return false;
  for (let i = 0; i < len; i++) if (buf[at + i] !== want[i]) return false;
  return true;
}

// ---- the connection ----------------------------------------------------------

/** A command that gets no answer this long fails its connection. */
const COMMAND_TIMEOUT_MS = 60_000;

/** Reads the answer to one request from chunks split anywhere. */
export interface ReplyReader<T> {
  /** Takes the next bytes; true once the whole answer has arrived. Throws on a bad or error reply. */
  feed(chunk: Buffer): boolean;
  result(): T;
}

/**
 * The replies to `n` pipelined commands, counted by one connection's
 * ReplyCounter (idle between requests); their bytes are kept only if asked.
 */
class CountedReplies implements ReplyReader<Buffer | null> {
  private readonly counter = new ReplyCounter();
  private n = 0;
  private due = 0;
  private errorsBefore = 0;
  private chunks: Buffer[] | null = null;

  expect(n: number, keep: boolean): this {
    this.n = n;
    this.due = this.counter.replies + n;
    this.errorsBefore = this.counter.errors;
    this.chunks = keep ? [] : null;
    return this;
  }

  feed(chunk: Buffer): boolean {
    this.chunks?.push(chunk);
    this.counter.feed(chunk);
    if (this.counter.replies < this.due) return false;
    if (this.counter.replies > this.due || !this.counter.idle) throw new Error(`more than the ${this.n} replies due arrived`);
    const errors = this.counter.errors - this.errorsBefore;
    if (errors > 0) throw new Error(`${errors} of ${this.n} replies were errors, the last: ${this.counter.error}`);
    return true;
  }

  result(): Buffer | null {
    const c = this.chunks;
    return c ? (c.length === 1 ? c[0] : Buffer.concat(c)) : null;
  }
}

interface Waiter {
  reader: ReplyReader<unknown>;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/**
 * One raw socket to redis-server with one request in flight at a time: the
 * request is written as given, and its answer read by the request's own
 * ReplyReader as the bytes arrive. A connection that fails stays failed: a
 * benchmark wants the error, not a retry.
 */
export class RespConn {
  private readonly replies = new CountedReplies();
  private waiter: Waiter | null = null;
  private failure: Error | null = null;

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => this.fail(err));
    socket.on("close", () => this.fail(new Error("connection closed")));
    // Idle time, not per request: it only matters while an answer is awaited.
    socket.setTimeout(COMMAND_TIMEOUT_MS, () => {
      if (this.waiter) this.fail(new Error(`no reply in ${COMMAND_TIMEOUT_MS} ms`));
    });
  }

  static connect(port: number): Promise<RespConn> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: "127.0.0.1", port });
      const onError = (err: Error) => reject(err);
      socket.once("error", onError);
      socket.once("connect", () => {
        socket.off("error", onError);
        resolve(new RespConn(socket));
      });
    });
  }

  /** Writes `request` and resolves with what `reader` made of the answer. */
  request<T>(request: Buffer, reader: ReplyReader<T>): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.waiter) return Promise.reject(new Error("a request is already in flight on this connection"));
    return new Promise<T>((resolve, reject) => {
      this.waiter = { reader, resolve: resolve as (value: unknown) => void, reject };
      this.socket.write(request);
    });
  }

  /**
   * Writes a pipeline of `replies` commands and resolves once all their
   * replies have arrived, with their bytes if `keep`, else null. Rejects if
   * any of them is an error reply.
   */
  send(request: Buffer, replies: number, keep = false): Promise<Buffer | null> {
    if (this.waiter) return Promise.reject(new Error("a request is already in flight on this connection"));
    return this.request(request, this.replies.expect(replies, keep));
  }

  /** One command, untimed: setup and checks. */
  async command(...args: string[]): Promise<string | number | null> {
    return readScalar((await this.send(encodeCommand(args), 1, true))!);
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    const w = this.waiter;
    if (!w) {
      this.fail(new Error(`${chunk.length} bytes arrived with no request in flight`));
      return;
    }
    let done: boolean;
    let value: unknown;
    try {
      done = w.reader.feed(chunk);
      if (done) value = w.reader.result();
    } catch (err) {
      // Replies past the request's or a malformed one leave the stream out of step: end it.
      this.fail(err as Error);
      return;
    }
    if (!done) return;
    this.waiter = null;
    w.resolve(value);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(err);
    this.socket.destroy();
  }
}

/** `n` connections, or none: if one fails, the others are closed. */
export async function connectAll(port: number, n: number): Promise<RespConn[]> {
  const settled = await Promise.allSettled(Array.from({ length: n }, () => RespConn.connect(port)));
  const conns = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  const failed = settled.find((s) => s.status === "rejected");
  if (failed) {
    for (const c of conns) c.close();
    throw (failed as PromiseRejectedResult).reason;
  }
  return conns;
}

// ---- one whole reply, walked -----------------------------------------------------

/** Collects the bytes of one RESP reply and notes the instant its last byte arrived. */
export class WholeReply implements ReplyReader<Buffer> {
  private readonly counter = new ReplyCounter();
  private chunks: Buffer[] = [];
  private due = 0;
  /** wallNow() when the reply completed: the moment the client has its events. */
  doneAt = 0;

  start(): this {
    this.chunks = [];
    this.due = this.counter.replies + 1;
    return this;
  }

  feed(chunk: Buffer): boolean {
    this.chunks.push(chunk);
    this.counter.feed(chunk);
    if (this.counter.replies < this.due) return false;
    this.doneAt = wallNow();
    if (this.counter.replies > this.due || !this.counter.idle) throw new RespProtocolError("bytes past the XREAD reply");
    return true;
  }

  result(): Buffer {
    return this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
  }
}

/** A cursor over one complete reply: `XREAD` answers `*1 *2 [$key, *N [*2 [$id, *2k [$f, $v]…]]]`. */
export class RespCursor {
  at = 0;
  constructor(readonly buf: Buffer) {}

  /** `<type><n>CRLF` at the cursor: n (-1 for a null). Throws on an error reply or another type. */
  private header(type: number): number {
    const b = this.buf;
    const t = b[this.at];
    if (t === MINUS) throw new RespProtocolError(`error reply: ${b.toString("utf8", this.at + 1, b.indexOf(CR, this.at))}`);
    if (t !== type) throw new RespProtocolError(`"${String.fromCharCode(t)}" where "${String.fromCharCode(type)}" was due at byte ${this.at}`);
    let at = this.at + 1;
    const neg = b[at] === MINUS;
    if (neg) at++;
    const n = uintAt(b, at);
    while (b[at] !== CR) at++;
    if (b[at + 1] !== LF || Number.isNaN(n)) throw new RespProtocolError(`bad header at byte ${this.at}`);
    this.at = at + 2;
    return neg ? -n : n;
  }

  /** An array's header: its length. */
  array(): number {
    return this.header(STAR);
  }

  /** A bulk string: its start; the cursor moves past it. */
  bulk(): { at: number; len: number } {
    const len = this.header(DOLLAR);
    const at = this.at;
    this.at += len + 2;
    return { at, len };
  }
}
