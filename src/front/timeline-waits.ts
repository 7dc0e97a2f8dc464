// Long polls of timeline pages: who waits for which streams, and the news
// that wakes them. A waiting page's streams are watched (WATCH_HEAD: the
// shard pushes a few bytes per committed batch, nothing rendered) through
// the same pushes the consume hub rides, so a page waits without asking
// anything until one of its streams commits a batch. At most
// timeline_waiters_max wait at once.
import type { Config } from "../config.js";
import { CONSUME_HEAD_BYTES, ConsumeHeadKind, readConsumeHead, WATCH_HEAD, type Response } from "../shard/protocol.js";
import type { ShardPool } from "./shards.js";

/**
 * How long a stream stays watched after its last waiter left: a feed polled
 * again and again (the usual long poll) keeps its watch instead of sending
 * the shard two requests per poll.
 */
export const WATCH_LINGER_MS = 10_000;

/** One waiting page: woken once per push of one of its streams. */
export interface Waiter {
  readonly streams: readonly string[];
  wake: () => void;
}

export class TimelineWaits {
  private readonly waiters = new Set<Waiter>();
  private readonly byStream = new Map<string, Set<Waiter>>();
  /** Streams watched for timelines with no waiter left, and since when. */
  private readonly idle = new Map<string, number>();
  private readonly sweep: NodeJS.Timeout;

  constructor(
    private readonly config: Config,
    private readonly shards: Pick<ShardPool, "setWatch" | "onPush">,
  ) {
    shards.onPush((r) => this.onPush(r));
    this.sweep = setInterval(() => this.unwatchIdle(Date.now()), WATCH_LINGER_MS);
    this.sweep.unref();
  }

  get waiting(): number {
    return this.waiters.size;
  }

  /**
   * Starts a wait on `streams`, watching those not watched yet. "full" when
   * timeline_waiters_max wait already, "busy" when a shard could not take
   * the watch now (nothing is kept then). Pushes for the streams wake the
   * waiter from the moment this returns; a page read after it misses none.
   */
  arm(streams: readonly string[], wake: () => void): Waiter | "full" | "busy" {
    if (this.waiters.size >= this.config.timeline_waiters_max) return "full";
    for (const id of streams) {
      if (this.byStream.has(id) || this.idle.delete(id)) continue;
      if (!this.shards.setWatch(id, "timeline", WATCH_HEAD)) return "busy";
      // Watched now: from here on it is unwatched only through `idle`.
      this.idle.set(id, Date.now());
    }
    const w: Waiter = { streams, wake };
    this.waiters.add(w);
    for (const id of streams) {
      this.idle.delete(id);
      let set = this.byStream.get(id);
      if (!set) this.byStream.set(id, (set = new Set()));
      set.add(w);
    }
    return w;
  }

  disarm(w: Waiter): void {
    if (!this.waiters.delete(w)) return;
    const now = Date.now();
    for (const id of w.streams) {
      const set = this.byStream.get(id);
      if (!set) continue;
      set.delete(w);
      if (set.size > 0) continue;
      this.byStream.delete(id);
      this.idle.set(id, now);
    }
  }

  /** Stops watching streams nobody has waited on for WATCH_LINGER_MS. */
  unwatchIdle(now: number): void {
    for (const [id, since] of this.idle) {
      if (now - since < WATCH_LINGER_MS) continue;
      // A shard too busy to hear it keeps pushing a few bytes a batch; the next sweep tries again.
      if (this.shards.setWatch(id, "timeline", 0)) this.idle.delete(id);
    }
  }

  /** A committed batch, news that the head moved, or a deleted stream: its waiters look again. */
  private onPush(r: Response): void {
    let id: string;
    if (r.status === 404) id = Buffer.from(r.body).toString("utf8");
    else {
      const h = readConsumeHead(r.body);
      if (h.kind === ConsumeHeadKind.Page) return;
      id = Buffer.from(r.body.buffer, r.body.byteOffset + CONSUME_HEAD_BYTES, h.idBytes).toString("utf8");
    }
    const set = this.byStream.get(id);
    if (!set) return;
    for (const w of [...set]) w.wake();
  }

  close(): void {
    clearInterval(this.sweep);
  }
}
