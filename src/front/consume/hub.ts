// The consume hub: push consumption over WebSocket, every consumer's place
// kept on the front. It holds the feeds and wires its parts, each one
// concern: groups.ts (membership, liveness, takeover), delivery.ts (the live
// path and the log path), progress.ts (acks, nacks, dead letters,
// checkpoints). What it needs from outside is ports.ts, so unit tests drive
// it without a server; routes.ts puts it on the uWS app.
import type { Config } from "../../config.js";
import { ApiError } from "../../errors.js";
import { deriveLimits, type Limits } from "../../limits.js";
import { Delivery } from "./delivery.js";
import { Groups, type MemberInfo } from "./groups.js";
import { parseClientMessage } from "./params.js";
import { CLOSE_GOING_AWAY, CLOSE_POLICY, systemClock, type Clock, type ConsumerSocket, type ShardLink } from "./ports.js";
import { Progress } from "./progress.js";
import { SnapshotDelivery } from "./snapshot.js";
import type { Feed } from "./state.js";

const TICK_MS = 100;
/** Client messages held while the shard answers where a consumer starts. */
const EARLY_MESSAGES_MAX = 16;

export class ConsumeHub {
  /** The hub's state and parts, shared by those parts (not for other routes). */
  readonly feeds = new Map<string, Feed>();
  readonly delivery: Delivery;
  readonly groups: Groups;
  readonly progress: Progress;
  readonly snapshots: SnapshotDelivery;
  /** The live message and socket bounds (src/limits.ts). */
  readonly limits: Limits;
  private readonly stopTick: () => void;

  /** Set by closeAll: upgrades are refused from then on. */
  closing = false;

  constructor(
    readonly config: Config,
    readonly shards: ShardLink,
    readonly clock: Clock = systemClock,
  ) {
    this.limits = deriveLimits(config);
    this.delivery = new Delivery(this);
    this.groups = new Groups(this);
    this.progress = new Progress(this);
    this.snapshots = new SnapshotDelivery(this);
    shards.onPush((r) => this.delivery.onPush(r));
    this.stopTick = clock.every(TICK_MS, () => this.groups.tick());
  }

  /** Bytes uWS may queue on one socket: the buffer bound plus one message of either path. */
  get socketBytesMax(): number {
    return this.limits.socketBytesMax;
  }

  // ---- the socket's events (routes.ts) -----------------------------------

  /** Takes a connection slot for an upgrade; false when consumers_max are connected. */
  admit(): boolean {
    return this.groups.admit();
  }

  open(ws: ConsumerSocket): void {
    if (ws.getUserData().params.snapshot) this.snapshots.open(ws);
    else this.groups.open(ws);
  }

  message(ws: ConsumerSocket, data: ArrayBuffer, isBinary: boolean): void {
    const d = ws.getUserData();
    const s = d.session;
    if (!s) {
      d.early ??= [];
      if (d.early.length >= EARLY_MESSAGES_MAX)
        return this.groups.refuse(ws, new ApiError(429, "server_busy", `more than ${EARLY_MESSAGES_MAX} messages before the hello`));
      d.early.push({ data: data.slice(0), isBinary });
      return;
    }
    if (s.closed) return;
    s.lastSeen = this.clock.nowMs();
    try {
      this.progress.handle(s, parseClientMessage(data, isBinary));
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      this.groups.fail(s, err, CLOSE_POLICY);
    }
  }

  drain(ws: ConsumerSocket): void {
    const s = ws.getUserData().session;
    if (s && !this.snapshots.drain(s)) this.delivery.pump(s);
  }

  pong(ws: ConsumerSocket): void {
    const s = ws.getUserData().session;
    if (s) s.lastSeen = this.clock.nowMs();
  }

  close(ws: ConsumerSocket): void {
    this.groups.close(ws);
  }

  // ---- for other routes and shutdown -------------------------------------

  /** A checkpoint set over HTTP: the group's next member starts from it. */
  noteCheckpoint(stream: string, group: string, seq: number): void {
    this.progress.noteCheckpoint(stream, group, seq);
  }

  /** Connected members of each group of a stream, for GET .../groups. */
  members(stream: string): { head: number; groups: Map<string, MemberInfo[]> } {
    return this.groups.members(stream);
  }

  get consumers(): number {
    return this.groups.connections;
  }

  get consumersMax(): number {
    return this.config.consumers_max;
  }

  /** Clean shutdown: every consumer gets an error and a close; acks already taken are written. */
  closeAll(): void {
    this.closing = true;
    this.stopTick();
    this.groups.failAll();
  }

  /**
   * Cluster mode: the streams `moved` says left this node (their shard's
   * lease passed on): their consumers are closed, and reconnect through any
   * node to the new owner, from their group's checkpoint.
   */
  moved(moved: (stream: string) => boolean): void {
    for (const feed of this.feeds.values()) {
      if (!moved(feed.stream)) continue;
      const e = new ApiError(503, "shard_moving", `stream "${feed.stream}" moved to another node; reconnect`);
      for (const s of [...feed.sessions]) this.groups.fail(s, e, CLOSE_GOING_AWAY);
      for (const g of feed.groups.values()) g.moved = true;
      feed.groups.clear();
      this.groups.dropIfIdle(feed);
    }
  }

  /** Checkpoint writes still on their way to the shards. */
  get pendingWrites(): number {
    return this.progress.pendingWrites;
  }
}
