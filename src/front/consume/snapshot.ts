// `from=snapshot`: a consumer is sent the newest event of every key as of a
// seq S (src/shard/snapshot.ts takes the cut), in `events` messages marked
// "snapshot": true, then {"type":"snapshot_end","as_of_seq":S}, and goes on
// at S + 1 by the log path like any consumer started at `from=S+1`, riding
// live once it has caught up. Nothing after S is in the snapshot and nothing
// at or before it follows, so there is no gap and no duplicate: the seam is
// one seq, fixed in the same shard turn as the cut.
//
// While its snapshot is sent the session is busy, which keeps the log path
// (pump) off it; pages are asked one at a time and held back by the same
// socket buffer bound as log pages (drain resumes them).
import { ApiError } from "../../errors.js";
import { Op, responseJson, type Response } from "../../shard/protocol.js";
import { SNAPSHOT_SOCKET_HEAD_BYTES, type SnapshotSocketHead } from "../../shard/snapshot.js";
import { HubPart } from "./part.js";
import { CLOSE_SERVER_ERROR, type ConsumerSocket } from "./ports.js";
import type { Session } from "./state.js";

/** What uWS's send() answers when it dropped the message (see delivery.ts). */
const SEND_DROPPED = 2;

interface Sending {
  asOf: number;
  next: number | null;
  /** The first page, taken before the session existed: sent after its hello. */
  first: Buffer | null;
  /** Over the socket buffer bound: drain() asks the next page. */
  waiting: boolean;
}

export class SnapshotDelivery extends HubPart {
  // Weak: a socket that closes mid-snapshot leaves nothing behind.
  private readonly taken = new WeakMap<ConsumerSocket, Sending>();
  private readonly sending = new WeakMap<Session, Sending>();

  /** Takes the snapshot (its first page), then opens the consumer at as_of_seq + 1. */
  open(ws: ConsumerSocket): void {
    const data = ws.getUserData();
    const params = data.params;
    const meta = { stream: params.stream, query: "", socket: true };
    const ok = this.shards.send(this.shards.shardFor(params.stream), Op.Snapshot, meta, null, (r) => {
      if (data.closed) return;
      if (r.status !== 200) return this.hub.groups.refuse(ws, ApiError.fromBody(r.status, responseJson(r)));
      const page = readPage(r);
      // A copy: the ring's bytes are reused once this callback returns.
      this.taken.set(ws, { asOf: page.head.as_of_seq, next: page.head.next_after_seq, first: page.message ? Buffer.from(page.message) : null, waiting: false });
      const q = new URLSearchParams(params.query);
      q.set("from", String(page.head.as_of_seq + 1));
      this.hub.groups.open(ws, q.toString());
    });
    if (!ok) this.hub.groups.refuse(ws, new ApiError(429, "shard_busy", "the shard owning this stream is at capacity; retry later", { stream: params.stream }));
  }

  /** The session has had its hello and is held busy (groups.ts attach): its snapshot now. */
  begin(s: Session): void {
    const snap = this.taken.get(s.ws);
    if (!snap) throw new Error("a snapshot consumer attached without its snapshot");
    this.taken.delete(s.ws);
    this.sending.set(s, snap);
    const first = snap.first;
    snap.first = null;
    if (first && !this.send(s, first)) return;
    this.step(s, snap);
  }

  /** A socket drained; true when it was a snapshot waiting for room. */
  drain(s: Session): boolean {
    const snap = this.sending.get(s);
    if (!snap?.waiting) return snap !== undefined;
    snap.waiting = false;
    this.step(s, snap);
    return true;
  }

  private step(s: Session, snap: Sending): void {
    if (s.closed) return;
    if (snap.next === null) {
      this.sending.delete(s);
      this.hub.delivery.sendJson(s, { type: "snapshot_end", as_of_seq: snap.asOf });
      s.busy = false;
      return this.hub.delivery.pump(s);
    }
    if (s.ws.getBufferedAmount() >= this.config.consumer_buffer_bytes_max) {
      snap.waiting = true;
      return;
    }
    const meta = { stream: s.feed.stream, query: `as_of_seq=${snap.asOf}&after_seq=${snap.next}`, socket: true };
    const ok = this.shards.send(s.feed.shard, Op.Snapshot, meta, null, (r) => {
      if (s.closed) return;
      if (r.status !== 200) return this.hub.groups.fail(s, ApiError.fromBody(r.status, responseJson(r)), CLOSE_SERVER_ERROR);
      const page = readPage(r);
      snap.next = page.head.next_after_seq;
      if (page.message && !this.send(s, page.message)) return;
      this.step(s, snap);
    });
    if (!ok) this.hub.groups.fail(s, new ApiError(429, "shard_busy", "the shard owning this stream is at capacity; retry later"), CLOSE_SERVER_ERROR);
  }

  private send(s: Session, msg: Uint8Array): boolean {
    s.lastSent = this.clock.nowMs();
    let status = 0;
    s.ws.cork(() => {
      status = s.ws.send(msg, false);
    });
    // Pages wait below the buffer bound, so uWS's own bound (Limits.socketBytesMax) is never reached.
    if (status === SEND_DROPPED) {
      this.hub.groups.fail(s, new ApiError(500, "internal", "the socket buffer overflowed"), CLOSE_SERVER_ERROR);
      return false;
    }
    return true;
  }
}

function readPage(r: Response): { head: SnapshotSocketHead; message: Uint8Array | null } {
  const b = r.body;
  const headBytes = new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(0, true);
  const headEnd = SNAPSHOT_SOCKET_HEAD_BYTES + headBytes;
  const head = JSON.parse(Buffer.from(b.buffer, b.byteOffset + SNAPSHOT_SOCKET_HEAD_BYTES, headBytes).toString("utf8")) as SnapshotSocketHead;
  return { head, message: b.byteLength > headEnd ? b.subarray(headEnd) : null };
}
