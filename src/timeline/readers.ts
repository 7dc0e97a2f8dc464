// Reader positions of named timelines (the design's timeline_cursors): the
// last cursor a reader stored, with its updated_at. Kept in the timeline's
// directory (readers-log.ts) and, when configured, in PostgreSQL and Redis
// (external-readers.ts), as group checkpoints are. A timeline's positions are
// loaded on its first use, not at start: the newest of the data dir's and
// the external stores' wins, so a node whose data dir was lost gets its
// readers back. Memory: at most timeline_readers_max positions per timeline
// that has been used, each its cursor (a few hundred bytes) and id.
import { ApiError } from "../errors.js";
import { STREAM_ID } from "../stream-id.js";
import type { ExternalReaders, StoredPosition } from "./external-readers.js";
import { type NamedTimeline, type NamedTimelines, timelineNotFound } from "./names.js";
import { ReadersLog } from "./readers-log.js";
import { logger } from "../logger.js";
import type { TimelineReaders } from "./name-store.js";

export interface ReaderPosition {
  timeline: string;
  reader: string;
  cursor: string;
  updated_at: number;
}

/** Reader ids follow the stream id rule: 400 invalid_reader otherwise. */
export function checkReaderId(id: string): void {
  if (!STREAM_ID.test(id)) throw new ApiError(400, "invalid_reader", `reader id must match ${STREAM_ID.source}`, { reader: id.slice(0, 200) });
}

export const readerNotFound = (timeline: string, reader: string) =>
  new ApiError(404, "reader_not_found", `reader "${reader}" has no position on timeline "${timeline}"`, { timeline, reader });

/** One timeline's positions as loaded for one version of its stream set. */
interface Loaded {
  timeline: NamedTimeline;
  log: ReadersLog;
  positions: Map<string, StoredPosition>;
}

export class ReaderPositions implements TimelineReaders {
  private readonly loaded = new Map<string, Loaded>();
  /** Loads under way, so that concurrent first uses of a timeline read its files once. */
  private readonly loading = new Map<NamedTimeline, Promise<Loaded>>();

  constructor(
    private readonly names: NamedTimelines,
    private readonly readersMax: number,
    private readonly external: ExternalReaders | null,
  ) {}

  async get(t: NamedTimeline, reader: string): Promise<ReaderPosition | null> {
    const p = (await this.of(t)).positions.get(reader);
    return p ? view(t.name, reader, p) : null;
  }

  /**
   * Stores a reader's cursor (verified by the caller against `t`'s streams).
   * A new reader past timeline_readers_max is 409 limit_reached. The data
   * dir has it when this returns; Redis is sent it now, PostgreSQL with the
   * next flush.
   */
  async put(t: NamedTimeline, reader: string, cursor: string, now = Date.now()): Promise<{ position: ReaderPosition; created: boolean }> {
    const l = await this.of(t);
    // Loading may have waited: the cursor was checked against `t`, which must still be the timeline.
    const current = this.names.get(t.name);
    if (!current) throw timelineNotFound(t.name);
    if (current !== t) throw new ApiError(400, "invalid_cursor", "cursor was made for another stream set (the timeline's streams changed meanwhile)");
    const created = !l.positions.has(reader);
    if (created && l.positions.size >= this.readersMax) {
      throw new ApiError(409, "limit_reached", `timeline "${t.name}" has positions of timeline_readers_max (${this.readersMax}) readers already`, {
        timeline_readers_max: this.readersMax,
      });
    }
    // Not before the set's own time: positions older than updated_at are taken for another set's.
    const p: StoredPosition = { cursor, updatedAt: Math.max(now, t.updated_at) };
    l.log.put(reader, p);
    l.positions.set(reader, p);
    this.external?.write(t.name, reader, p);
    return { position: view(t.name, reader, p), created };
  }

  /**
   * Forgets a timeline's positions after it was deleted or its streams
   * changed. The data dir's are gone with the directory or dropped by the
   * next load (they are older than the set); the external stores are told
   * here. A failure there is logged, not answered: a position older than its
   * timeline's set is never loaded anyway.
   */
  async forget(name: string): Promise<void> {
    this.loaded.delete(name);
    try {
      await this.external?.deleteTimeline(name);
    } catch (err) {
      logger().error(
        { kind: "timeline", timeline: name, err },
        `timeline readers: forgetting the positions of "${name}" in PostgreSQL/Redis failed: ${(err as Error).message}`,
      );
    }
  }

  /** The positions of `t`'s current stream set, loaded on first use. */
  private of(t: NamedTimeline): Promise<Loaded> {
    const have = this.loaded.get(t.name);
    if (have && have.timeline === t) return Promise.resolve(have);
    let pending = this.loading.get(t);
    if (!pending) {
      pending = this.load(t).finally(() => this.loading.delete(t));
      this.loading.set(t, pending);
    }
    return pending;
  }

  private async load(t: NamedTimeline): Promise<Loaded> {
    let external: Map<string, StoredPosition> | null = null;
    try {
      external = this.external ? await this.external.load(t.name) : null;
    } catch (err) {
      throw new ApiError(503, "storage_error", `reader positions could not be loaded from PostgreSQL/Redis (${(err as Error).message}); retry later`);
    }
    const log = new ReadersLog(this.names.dirOf(t.name), t.updated_at);
    if (log.damage)
      logger().error({ kind: "recovery", timeline: t.name, damaged: log.damage }, `timeline readers: "${t.name}": DAMAGED readers.log: ${log.damage}`);
    const positions = new Map(log.positions);
    for (const [reader, p] of external ?? []) {
      if (p.updatedAt < t.updated_at) continue; // of an older set, or of a deleted timeline of the same name
      const local = positions.get(reader);
      if (!local || local.updatedAt < p.updatedAt) positions.set(reader, p);
    }
    const l = { timeline: t, log, positions };
    // Kept only while it is still the timeline's set: a delete or change during the load makes it stale.
    if (this.names.get(t.name) === t) this.loaded.set(t.name, l);
    return l;
  }
}

const view = (timeline: string, reader: string, p: StoredPosition): ReaderPosition => ({ timeline, reader, cursor: p.cursor, updated_at: p.updatedAt });
