// One consume WebSocket (the `ws` package: Node 20 has no stable global
// WebSocket): the upgrade, the messages, flow control, and why it ended, as
// one TickerError. A refused upgrade is the server's HTTP error; after the
// upgrade the server says why in an `error` message before it closes;
// anything else is a lost connection. A redirect (a cluster node refusing the
// upgrade of a stream it does not own) ends the connection too, with the
// Location in the error's details: the subscription follows it itself, as
// ws's own followRedirects would drop the token on another host.
import type { Socket } from "node:net";
import WebSocket from "ws";
import { errorFromAnswer, TickerError } from "./errors.js";

/**
 * HTTP statuses of the codes the server sends in a consume socket's `error`
 * message (which carries no status; docs/consume.md). A code not listed is
 * taken as a server error.
 */
const SOCKET_ERROR_STATUS: Record<string, number> = {
  invalid_parameter: 400,
  invalid_stream: 400,
  invalid_message: 400,
  invalid_ack: 400,
  invalid_nack: 400,
  invalid_seek: 400,
  no_group: 400,
  stream_not_found: 404,
  stream_deleted: 404,
  idle_timeout: 408,
  not_active: 409,
  takeover: 409,
  message_too_large: 413,
  shard_busy: 429,
  server_busy: 429,
  internal: 500,
  corrupt_record: 500,
  not_ready: 503,
  shutting_down: 503,
  storage_error: 503,
  disk_full: 503,
  // Cluster mode: the stream's shard left this node (or has no owner yet); a new connection finds the owner.
  shard_moving: 503,
  shard_unowned: 503,
  stream_deleting: 503,
  cluster_commit_failed: 503,
};

/**
 * Codes after which a new connection may work though their status says
 * otherwise: the server presumed this client dead (a long pause with a
 * standby waiting, or a minute without a pong) or overflowed its socket.
 */
const RETRYABLE_CODES = new Set(["takeover", "idle_timeout", "internal"]);

/** Whether a subscription reconnects after `e` ended its connection. */
export function reconnects(e: TickerError): boolean {
  return e.retryable || RETRYABLE_CODES.has(e.code);
}

export interface ConnectionHandlers {
  message(data: Buffer, isBinary: boolean): void;
  /** A pong to one of our pings, with its number. */
  pong(id: number): void;
  /** Anything came from the server (a message, a ping, a pong). */
  heard(): void;
  /** The connection is over; called once. */
  ended(cause: TickerError): void;
}

export class Connection {
  private readonly ws: WebSocket;
  /** The TCP socket under the WebSocket (from the upgrade answer), to put two frames in one write. */
  private socket: Socket | null = null;
  private cause: TickerError | null = null;
  private over = false;

  constructor(
    url: string,
    token: string | undefined,
    private readonly on: ConnectionHandlers,
  ) {
    const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
    this.ws = new WebSocket(url, { headers, perMessageDeflate: false });
    const ws = this.ws;
    ws.on("upgrade", (res) => {
      this.socket = res.socket;
    });
    ws.on("unexpected-response", (_req, res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const retryAfter = res.headers["retry-after"];
        const e = errorFromAnswer(res.statusCode ?? 0, Buffer.concat(chunks), typeof retryAfter === "string" ? retryAfter : null);
        // A cluster node that does not own the stream names the owner (consume.ts follows it); the header is what counts.
        const location = res.headers.location;
        this.note(location === undefined ? e : new TickerError(e.status, e.code, e.message, { ...e.details, location }, e.retryAfterMs));
        ws.terminate();
      });
      res.on("error", () => ws.terminate());
    });
    ws.on("message", (data: Buffer, isBinary) => {
      on.heard();
      on.message(data, isBinary);
    });
    ws.on("ping", () => on.heard());
    ws.on("pong", (data) => {
      on.heard();
      on.pong(Number(data.toString("latin1")));
    });
    ws.on("error", (err) => this.note(new TickerError(0, "connection_failed", `consume connection failed: ${err.message}`)));
    ws.on("close", (code) => this.end(new TickerError(0, "connection_failed", `the consume connection closed (${code}) without an error message`)));
  }

  /** An `error` message from the server: it closes the socket next. */
  serverError(code: string, message: string): void {
    this.note(new TickerError(SOCKET_ERROR_STATUS[code] ?? 500, code, message));
  }

  send(msg: object): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  /**
   * Sends `msg` and then a ping numbered `ping` in one TCP write, so the
   * server reads both at once and its pong follows whatever it did about
   * `msg` (position.ts, the barrier).
   */
  sendThenPing(msg: object, ping: number): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.socket?.cork();
    this.ws.send(JSON.stringify(msg));
    this.ws.ping(String(ping));
    this.socket?.uncork();
  }

  ping(id: number): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.ping(String(id));
  }

  /** Stops reading the socket: the server keeps what follows in its log. */
  pause(): void {
    this.ws.pause();
  }

  resume(): void {
    this.ws.resume();
  }

  get paused(): boolean {
    return this.ws.isPaused;
  }

  /** Ends the connection with `cause` (the caller's close, or a dead peer). */
  close(cause: TickerError): void {
    this.note(cause);
    if (this.ws.readyState !== WebSocket.OPEN) return this.ws.terminate();
    this.ws.close(1000);
    // A paused socket would read its close frame only once resumed (and one still connecting has none to resume: ws throws).
    this.ws.resume();
  }

  /** Drops the TCP connection at once (a peer that stopped answering sends no close frame). */
  terminate(cause: TickerError): void {
    this.note(cause);
    this.ws.terminate();
  }

  /** The first cause told wins: the refusal or error message over the close that follows it. */
  private note(e: TickerError): void {
    this.cause ??= e;
  }

  private end(fallback: TickerError): void {
    if (this.over) return;
    this.over = true;
    this.on.ended(this.cause ?? fallback);
  }
}
