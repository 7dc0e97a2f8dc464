// A WebSocket consumer for integration tests: a real `ws` client on a real
// socket, recording every message, with waits that fail loudly on timeout.
import WebSocket from "ws";
import { batchSeqs } from "./raw-consumer.js";

export interface ConsumerOptions {
  /** Acknowledge each events message's last seq as it arrives. */
  autoAck?: boolean;
  /** Keep each binary message and JSON event (default true); seqs are always kept. */
  keepMessages?: boolean;
}

export class Consumer {
  /** Control messages (hello, heartbeat, reset, error) in arrival order. */
  readonly control: any[] = [];
  /** Seqs of every delivered event, in arrival order. */
  readonly seqs: number[] = [];
  /** Binary messages as received (binary format only). */
  readonly binary: Uint8Array[] = [];
  /** JSON events as delivered (JSON format only). */
  readonly events: any[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: Array<() => void> = [];

  private constructor(
    readonly ws: WebSocket,
    private readonly opts: ConsumerOptions,
  ) {
    this.closed = new Promise((resolve) => ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on("message", (data: Buffer, isBinary) => this.onMessage(data, isBinary));
  }

  /** Opens the socket; rejects with the HTTP status and body when the upgrade is refused. */
  static connect(baseUrl: string, stream: string, query = "", opts: ConsumerOptions = {}): Promise<Consumer> {
    const url = `${baseUrl.replace(/^http/, "ws")}/v1/streams/${stream}/consume${query ? `?${query}` : ""}`;
    const ws = new WebSocket(url);
    const c = new Consumer(ws, opts);
    return new Promise((resolve, reject) => {
      ws.once("open", () => resolve(c));
      ws.once("unexpected-response", (_req, res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () =>
          reject(Object.assign(new Error(`upgrade refused: ${res.statusCode} ${body}`), { status: res.statusCode, body: JSON.parse(body || "null") })),
        );
      });
      ws.once("error", reject);
    });
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      if (this.opts.keepMessages !== false) this.binary.push(new Uint8Array(data));
      const batch = batchSeqs(data);
      for (const q of batch.seqs) this.seqs.push(q);
      if (this.opts.autoAck && batch.count > 0) this.send({ type: "ack", seq: batch.next - 1 });
    } else {
      const m = JSON.parse(data.toString("utf8"));
      if (m.type === "events") {
        for (const e of m.events) {
          this.seqs.push(e.seq);
          if (this.opts.keepMessages !== false) this.events.push(e);
        }
        if (this.opts.autoAck) this.send({ type: "ack", seq: m.events[m.events.length - 1].seq });
      } else this.control.push(m);
    }
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  send(m: unknown): void {
    this.ws.send(typeof m === "string" ? m : JSON.stringify(m));
  }

  /** Resolves once `ready()` holds, re-checked after every message; rejects after `timeoutMs`. */
  until<T>(ready: () => T | undefined | false, what: string, timeoutMs = 15_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`timed out waiting for ${what}; got ${this.seqs.length} events, control ${JSON.stringify(this.control.slice(-5))}`)),
        timeoutMs,
      );
      const check = () => {
        const v = ready();
        if (v) {
          clearTimeout(timer);
          resolve(v);
        } else this.waiters.push(check);
      };
      check();
    });
  }

  /** The next control message of a type, counting those already received after `after` of them. */
  controlMessage(type: string, after = 0, timeoutMs?: number): Promise<any> {
    return this.until(() => this.control.slice(after).find((m) => m.type === type), `a "${type}" message`, timeoutMs);
  }

  eventsThrough(seq: number, timeoutMs?: number): Promise<true> {
    return this.until(() => this.seqs.length > 0 && this.seqs[this.seqs.length - 1] >= seq, `events through seq ${seq}`, timeoutMs);
  }

  close(): Promise<{ code: number; reason: string }> {
    this.ws.close();
    return this.closed;
  }
}

/** Asserts-friendly check that `seqs` is exactly from..to in order. */
export function isRun(seqs: number[], from: number, to: number): boolean {
  if (seqs.length !== to - from + 1) return false;
  for (let i = 0; i < seqs.length; i++) if (seqs[i] !== from + i) return false;
  return true;
}
