// A raw consume socket for tests of the protocol's messages themselves: every
// message in arrival order (a binary batch as {type: "batch", seqs, next}),
// and a wait on them. Tests that walk the ranges extend it (filters, conflate).
import WebSocket from "ws";
import { decodeEventBatch } from "../../src/wire/client.js";

/** A binary EventBatch message's seqs, read from its frame headers, with its count and next. */
export function batchSeqs(data: Buffer): { seqs: number[]; count: number; next: number } {
  const b = decodeEventBatch(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  const r = Buffer.from(b.records.buffer, b.records.byteOffset, b.records.byteLength);
  const seqs: number[] = [];
  for (let at = 0; at < r.length; at += r.readUInt32LE(at)) seqs.push(Number(r.readBigUInt64LE(at + 8)));
  return { seqs, count: b.count, next: b.next };
}

export class RawConsumer {
  readonly messages: any[] = [];
  private wake: Array<() => void> = [];

  constructor(
    readonly ws: WebSocket,
    autoAck = false,
  ) {
    ws.on("message", (data: Buffer, isBinary) => {
      if (!isBinary) {
        const m = JSON.parse(data.toString("utf8"));
        this.messages.push(m);
        if (autoAck && m.type === "events") ws.send(JSON.stringify({ type: "ack", seq: m.events[m.events.length - 1].seq }));
      } else {
        const { seqs, next } = batchSeqs(data);
        this.messages.push({ type: "batch", seqs, next });
      }
      for (const w of this.wake.splice(0)) w();
    });
  }

  /**
   * Opens the socket (listening from the start: the first messages can come
   * with the upgrade's answer); rejects with the status and body of a refused upgrade.
   */
  static open<T extends RawConsumer>(
    this: new (
      ws: WebSocket,
      autoAck?: boolean,
    ) => T,
    url: string,
    stream: string,
    query: string,
    autoAck = false,
  ): Promise<T> {
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}/v1/streams/${stream}/consume?${query}`);
    return new Promise((resolve, reject) => {
      const c = new this(ws, autoAck);
      ws.once("open", () => resolve(c));
      ws.once("unexpected-response", (_q, res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d));
        res.on("end", () => reject(Object.assign(new Error(body), { status: res.statusCode, body: JSON.parse(body) })));
      });
    });
  }

  until(ok: () => boolean, what: string, ms = 15_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}: ${JSON.stringify(this.messages.slice(-3)).slice(0, 500)}`)), ms);
      const check = () => (ok() ? (clearTimeout(t), resolve()) : this.wake.push(check));
      check();
    });
  }
}
