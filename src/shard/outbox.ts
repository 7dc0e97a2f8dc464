// The shard's one way back to the front (answers and pushes into the out-ring, in order), used by every operation's module.
import type { ApiError } from "../errors.js";
import type { Ring } from "../ring/ring.js";
import { ContentType, writeResponse, writeResponseWith } from "./protocol.js";

/** A wait for room in the ring ends after this long even without a wake-up (a wake-up lost to a bug costs a second, not a hang). */
const RING_WAIT_MS_MAX = 1000;

/** An answer or a push, as the out-ring takes it. */
interface Reply {
  reqId: number;
  status: number;
  ct: ContentType;
  body: Uint8Array | string | null;
}

/**
 * The shard's one way back to the front: answers and pushes enter the
 * out-ring in the order they are made. What the ring cannot take yet waits
 * here, and the loop reads no request while anything waits.
 */
export class Outbox {
  private readonly queue: Reply[] = [];
  private draining = false;

  constructor(private readonly ring: Ring) {}

  /** Replies waiting for room in the out-ring. */
  get waiting(): number {
    return this.queue.length;
  }

  get messageBytesMax(): number {
    return this.ring.messageBytesMax;
  }

  reply(r: Reply): void {
    if (this.queue.length === 0 && writeResponse(this.ring, r.reqId, r.status, r.ct, r.body)) return;
    // A body may be a view of a reused buffer (the page writer), which a
    // push from an fsync callback can overwrite before the outbox drains.
    if (r.body instanceof Uint8Array) r.body = Uint8Array.prototype.slice.call(r.body);
    this.queue.push(r);
    // Replies also come from callbacks (fsync completions) while the request
    // loop may be parked: drain from here too rather than wait for it.
    if (!this.draining) void this.drain();
  }

  /** An error's JSON answer, with its status. */
  error(reqId: number, e: ApiError): void {
    this.reply({ reqId, status: e.status, ct: ContentType.Json, body: e.body() });
  }

  json(reqId: number, status: number, value: unknown): void {
    this.reply({ reqId, status, ct: ContentType.Json, body: JSON.stringify(value) });
  }

  json200(reqId: number, body: string): void {
    this.reply({ reqId, status: 200, ct: ContentType.Json, body });
  }

  /** A reply written in place when the out-ring has room, else queued. */
  replyWith(reqId: number, status: number, ct: ContentType, bodyBytes: number, fill: (data: Uint8Array, at: number) => void): void {
    if (this.writeNowWith(reqId, status, ct, bodyBytes, fill)) return;
    const body = Buffer.allocUnsafe(bodyBytes);
    fill(body, 0);
    this.reply({ reqId, status, ct, body });
  }

  /** A message written in place now, or not at all (false): only when nothing waits and the ring has room. */
  writeNowWith(reqId: number, status: number, ct: ContentType, bodyBytes: number, fill: (data: Uint8Array, at: number) => void): boolean {
    return this.queue.length === 0 && writeResponseWith(this.ring, reqId, status, ct, bodyBytes, fill);
  }

  async drain(): Promise<void> {
    if (this.draining) return this.ring.waitWritable(RING_WAIT_MS_MAX);
    this.draining = true;
    try {
      while (this.queue.length > 0) {
        const r = this.queue[0];
        if (writeResponse(this.ring, r.reqId, r.status, r.ct, r.body)) this.queue.shift();
        else await this.ring.waitWritable(RING_WAIT_MS_MAX);
      }
    } finally {
      this.draining = false;
    }
  }
}
