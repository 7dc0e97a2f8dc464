// Where a subscription stands in its stream, apart from the socket so the
// seq rules can be held by unit tests: which batches to deliver, which are
// stale or duplicate, when events were lost and from where to refill them,
// which acks and nacks the server can take, and where a reconnect resumes.
//
// Within one connection the server sends each seq once, in order (docs/consume.md,
// "How delivery works"); the position jumps only at a hello, a reset, and a
// seek or nack of ours. After a seek or a nack, what the server sent before
// it read ours still arrives and belongs to the old position; the client
// sends a ping in the same TCP write, the server answers it after it has
// taken the seek or nack, and its pong (the barrier) marks where the new
// position begins: batches before it are dropped, the first after it must
// start at the new position. Anything else is a loss, refilled by a seek.

/** Heartbeats showing events past the position, with room in the window and nothing arriving, this long: a stall. */
export const STALL_MS = 3000;

export type Verdict =
  /** Hand the batch's events from index `skip` to the caller (the ones before it were delivered already). */
  | { kind: "deliver"; skip: number }
  /** Stale (sent before our seek or nack) or delivered already. */
  | { kind: "drop" }
  /** Events were lost: seek to `from` (the batch is dropped). */
  | { kind: "refill"; from: number };

const DROP: Verdict = { kind: "drop" };

interface Restart {
  /** Where the server restarts delivery. */
  at: number;
  /** A nack's other outcome: the max_attempts-th nack dead-letters `at` and delivery restarts after it. */
  alt: number | null;
  /** The first ping sent after the seek or nack; its pong, or a later one, is the barrier. */
  barrier: number;
  pong: boolean;
}

export class Position {
  /** The seq the socket brings next; null while standby or before the first hello. */
  expected: number | null = null;
  /** Highest seq handed to the caller since the position last moved. */
  pulled = 0;
  /** The server session's acked seq as far as this client has told it (the window and nacks count from it). */
  acked = 0;
  /** The caller's latest ack, not yet sent when above `acked`. */
  private ackWanted = 0;
  private restart: Restart | null = null;
  private pings = 0;
  private stalledSince: number | null = null;
  /** Whether this connection was active: only then does a reconnect resume at this client's own place. */
  private placed = false;

  constructor(
    readonly group: boolean,
    /** The window sent to the server: most unacked events it has in flight. */
    readonly windowEvents: number,
  ) {}

  /** A hello: an active one places the subscription at `from`, a standby's (from null) has no place. */
  hello(from: number | null): void {
    this.restart = null;
    this.stalledSince = null;
    this.placed = from !== null;
    this.expected = from;
    if (from === null) return;
    this.pulled = this.acked = this.ackWanted = from - 1;
  }

  /** The connection ended: the next one starts from a hello. */
  lost(): void {
    this.expected = null;
    this.restart = null;
  }

  /** Where the next connection (or a refill) starts: null when this client never had a place, so the caller's `from` applies. */
  resumeFrom(): number | null {
    if (!this.placed) return null;
    // A group resumes at its first unacked event, so every event not acked
    // comes again and stays ackable; a plain tail after what the caller got.
    return (this.group ? Math.max(this.acked, this.ackWanted) : this.pulled) + 1;
  }

  onBatch(first: number, last: number): Verdict {
    if (this.expected === null) throw new Error("events came without an active hello");
    this.stalledSince = null;
    const r = this.restart;
    if (r !== null) {
      if (!r.pong) return DROP;
      if (first !== r.at && first !== r.alt) return this.refill();
      // Restarted after `at`: the server dead-lettered it and acked it.
      if (first === r.alt) this.pulled = this.acked = this.ackWanted = first - 1;
      this.restart = null;
      this.expected = last + 1;
      return { kind: "deliver", skip: 0 };
    }
    if (first > this.expected) return this.refill();
    if (last < this.expected) return DROP;
    const skip = this.expected - first;
    this.expected = last + 1;
    return { kind: "deliver", skip };
  }

  /** A reset: the wanted seq expired and delivery goes on at `from`. False when it is stale (answers an old position). */
  onReset(from: number): boolean {
    if (this.expected === null) return false;
    if (this.restart !== null) {
      if (!this.restart.pong) return false;
      this.restart = null; // the seek's or nack's seq itself expired
    }
    this.expected = from;
    this.acked = Math.max(this.acked, from - 1);
    this.ackWanted = Math.max(this.ackWanted, this.acked);
    return true;
  }

  /**
   * A filtered consumer's heartbeat: every seq below `next` was sent before
   * it (and taken by onBatch) or filtered out, so the position moves there.
   * After a nack it is past the nacked seq without a redelivery only when
   * the server dead-lettered it.
   */
  onPassed(next: number): void {
    if (this.expected === null) return;
    const r = this.restart;
    if (r !== null) {
      if (!r.pong || next <= r.at) return;
      if (r.alt !== null) this.pulled = this.acked = this.ackWanted = r.at;
      this.restart = null;
    } else if (next <= this.expected) return;
    this.expected = next;
    this.stalledSince = null;
  }

  /** A pong: `id` is the ping's number. */
  onPong(id: number): void {
    if (this.restart !== null && id >= this.restart.barrier) this.restart.pong = true;
  }

  /** The number for a ping: a barrier while a seek or nack waits for one. */
  nextPing(): number {
    return ++this.pings;
  }

  /** Whether a seek or nack still waits for its barrier (the caller pings again after a while). */
  get awaitingBarrier(): boolean {
    return this.restart !== null && !this.restart.pong;
  }

  /**
   * A heartbeat: refill (the seq to seek to) when the head has been past
   * the position for STALL_MS with room in the window and nothing arriving,
   * which the server does not do; a full window is the caller's to free.
   */
  onHeartbeat(headSeq: number, nowMs: number): number | null {
    const want = this.restart ? this.restart.at : this.expected;
    const waiting = want !== null && !this.awaitingBarrier && headSeq >= want && !this.windowFull;
    if (!waiting) {
      this.stalledSince = null;
      return null;
    }
    if (this.stalledSince === null) this.stalledSince = nowMs;
    if (nowMs - this.stalledSince < STALL_MS) return null;
    this.stalledSince = null;
    return this.refillFrom();
  }

  private get windowFull(): boolean {
    return this.group && this.restart === null && this.expected !== null && this.expected - 1 - this.acked >= this.windowEvents;
  }

  /** An event handed to the caller. */
  pull(seq: number): void {
    this.pulled = seq;
  }

  /** The caller acks `seq`: false when it names nothing the server could take (not delivered since the position moved, or acked already). */
  ack(seq: number): boolean {
    if (seq > this.pulled || seq <= Math.max(this.acked, this.ackWanted)) return false;
    this.ackWanted = seq;
    return true;
  }

  /** The ack to send now, if any. */
  takeAck(): number | null {
    if (this.ackWanted <= this.acked) return null;
    this.acked = this.ackWanted;
    return this.acked;
  }

  /** Whether a nack of `seq` names a delivered, unacked event (after takeAck). */
  canNack(seq: number): boolean {
    return seq > Math.max(this.acked, this.ackWanted) && seq <= this.pulled;
  }

  /** A seek to `seq` was sent (acks taken first); returns the ping that follows it. */
  seek(seq: number): number {
    return this.restartAt(seq, null);
  }

  /** A nack of `seq` was sent: redelivery from it, or after it once dead-lettered; returns the ping that follows it. */
  nack(seq: number): number {
    return this.restartAt(seq, seq + 1);
  }

  /** Where a refill seeks: as a reconnect would resume. */
  refillFrom(): number {
    const from = this.resumeFrom();
    if (from === null) throw new Error("a refill without a place");
    return from;
  }

  private refill(): Verdict {
    return { kind: "refill", from: this.refillFrom() };
  }

  private restartAt(at: number, alt: number | null): number {
    // The server's own rule: a seek or nack sets the session's acked to at - 1.
    this.pulled = this.acked = this.ackWanted = at - 1;
    this.expected = at;
    this.stalledSince = null;
    const barrier = this.nextPing();
    this.restart = { at, alt, barrier, pong: false };
    return barrier;
  }
}
