// What the hub knows: each consumer's place (Session), each group's members,
// checkpoint and nack counts (Group), each consumed stream (Feed), and what
// uWS keeps on each socket from the upgrade (SocketData).
import type { LiveBatch } from "./live-batch.js";
import type { ConsumeParams } from "./params.js";
import type { ConsumerSocket } from "./ports.js";

export interface SocketData {
  params: ConsumeParams;
  /** Set once the shard has said where the consumer starts. */
  session?: Session;
  closed?: boolean;
  /** Messages that came before the session (copied: uWS reuses its buffer). */
  early?: Array<{ data: ArrayBuffer; isBinary: boolean }>;
}

export class Session {
  role: "active" | "standby" = "standby";
  nextSeq = 0;
  /** Highest seq acknowledged (or skipped by a seek): the window counts from here. */
  acked = 0;
  /** Following live pushes; false while served from the log. */
  live = false;
  /** A page read or a dead-letter step is in flight. */
  busy = false;
  /** Bumped by seek, nack and promotion: answers to older reads are dropped. */
  epoch = 0;
  closed = false;
  /** With a filter: the last event sent (sentEpoch tells which position it belongs to); the window counts up to it. */
  sentSeq = 0;
  sentEpoch = -1;
  /** With max_rate: preciseMs() before which the next log page waits, and whether a timer waits for it. */
  paceAt = 0;
  paceQueued = false;
  lastSent: number;
  lastSeen: number;
  lastPing: number;

  constructor(
    readonly ws: ConsumerSocket,
    readonly feed: Feed,
    readonly group: Group | null,
    readonly params: ConsumeParams,
    /** `from` / `from_time` as resolved at connect; null when not given. */
    readonly explicitFrom: number | null,
    readonly connectedAt: number,
  ) {
    this.lastSent = this.lastSeen = this.lastPing = this.connectedAt;
  }

  /** Unacked events it may still be sent (groups only; others are bound by the socket buffer). */
  get room(): number {
    if (!this.group) return Number.MAX_SAFE_INTEGER;
    // A filtered consumer cannot ack the filtered-out seqs after its last
    // event: the window counts unacked events, not seqs passed.
    const sent = this.params.filter === null ? this.nextSeq - 1 : this.sentEpoch === this.epoch ? Math.max(this.sentSeq, this.acked) : this.acked;
    return this.params.window - (sent - this.acked);
  }

  /** Filtered or rate-limited: served from the log only, where the shard filters and the front paces. */
  get viaLog(): boolean {
    return this.params.filter !== null || this.params.maxRate !== null;
  }
}

export class Group {
  active: Session | null = null;
  readonly standby: Session[] = [];
  /** Latest acknowledged seq known here; null before the first checkpoint. */
  checkpoint: number | null;
  /** A SetCheckpoint is on its way to the shard. */
  writing = false;
  /**
   * Cluster mode: the stream's shard left this node. A checkpoint write
   * refused meanwhile is not tried again: the group goes on at the new owner,
   * and a retry from here, were the shard to come back, would move the
   * checkpoint back to this node's older value.
   */
  moved = false;
  /** Nacks per seq; entries go once the group acks past them. */
  readonly attempts = new Map<number, number>();
  /** When a dead letter of this group was last logged, and how many were not since (progress.ts). */
  deadLetterLoggedMs = Number.NEGATIVE_INFINITY;
  deadLettersUnlogged = 0;

  constructor(
    readonly name: string,
    readonly feed: Feed,
    checkpoint: number | null,
  ) {
    this.checkpoint = checkpoint;
  }

  get empty(): boolean {
    return this.active === null && this.standby.length === 0;
  }
}

/** Everything the front knows about one consumed stream. */
export class Feed {
  /** Its consumers; add() and remove() keep the counts by format. */
  readonly sessions = new Set<Session>();
  /** Sessions that take binary frames, and JSON ones: the formats the shard must render (no walk over 10,000 sessions at each connect). */
  binarySessions = 0;
  jsonSessions = 0;
  readonly groups = new Map<string, Group>();
  /** WATCH_* formats the shard renders live batches in. */
  mask = 0;
  /** Live batches received this turn, sent joined when it ends. */
  pending: LiveBatch[] = [];
  pendingBytes = 0;
  flushQueued = false;
  /** A round of live writes is under way, in slices (see Delivery.flushLive); the next one waits for it. */
  writing = false;
  /** preciseMs() before which the next flush waits (see Delivery.flushLive). */
  nextFlushAt = 0;

  constructor(
    readonly stream: string,
    readonly shard: number,
    public head: number,
    public first: number,
  ) {}

  add(s: Session): void {
    this.sessions.add(s);
    if (s.params.binary) this.binarySessions++;
    else this.jsonSessions++;
  }

  remove(s: Session): void {
    if (!this.sessions.delete(s)) return;
    if (s.params.binary) this.binarySessions--;
    else this.jsonSessions--;
  }
}
