// Named timelines and their reader positions in cluster mode: kept in
// PostgreSQL, not in a node's data dir, so that every node serves every
// timeline. Nothing is cached: each request reads the rows it needs (these
// are control-plane requests, and a timeline's page reads far more than one
// row), so a PUT answered by one node is what the next request sees on any
// other. A timeline is not a stream: no shard owns it and no lease fences
// it; concurrent writes are ordered by the rows' locks, and updated_at never
// goes back, so reader positions of an older stream set are told apart
// from the current set's as on one node (readers.ts).
import postgres from "postgres";
import { ApiError } from "../errors.js";
import { textArray } from "../cluster/sql-array.js";
import type { NamedTimeline } from "./names.js";
import { nextTimeline, timelineNotFound, timelinesFull } from "./names.js";
import type { ReaderPosition } from "./readers.js";
import type { TimelineNames, TimelineReaders } from "./name-store.js";

interface TimelineRow {
  name: string;
  streams: string[];
  created_at: string;
  updated_at: string;
}

const timelineOf = (r: TimelineRow): NamedTimeline => ({
  name: r.name,
  streams: r.streams,
  created_at: Number(r.created_at),
  updated_at: Number(r.updated_at),
});

/** The connection both stores share. */
export const clusterTimelinesSql = (postgresUrl: string) => postgres(postgresUrl, { max: 2, onnotice: () => {}, idle_timeout: 30 });

export class ClusterTimelines implements TimelineNames {
  readonly damage: readonly string[] = [];

  constructor(
    private readonly sql: postgres.Sql,
    private readonly timelinesMax: number,
  ) {}

  async find(name: string): Promise<NamedTimeline | undefined> {
    const [r] = await this.sql<TimelineRow[]>`select name, streams, created_at, updated_at from ticker_cluster_timelines where name = ${name}`;
    return r ? timelineOf(r) : undefined;
  }

  async all(): Promise<NamedTimeline[]> {
    const rows = await this.sql<TimelineRow[]>`select name, streams, created_at, updated_at from ticker_cluster_timelines order by name collate "C"`;
    return rows.map(timelineOf);
  }

  put(name: string, streams: readonly string[], now = Date.now()): Promise<{ timeline: NamedTimeline; created: boolean; changed: boolean }> {
    return this.sql.begin(async (tx) => {
      // One writer at a time: the count against timelines_max is then exact.
      await tx`select pg_advisory_xact_lock(hashtext('ticker_cluster_timelines'))`;
      const [row] = await tx<TimelineRow[]>`select name, streams, created_at, updated_at from ticker_cluster_timelines where name = ${name}`;
      const before = row ? timelineOf(row) : undefined;
      if (before && before.streams.join("\n") === streams.join("\n")) return { timeline: before, created: false, changed: false };
      if (!before) {
        const [{ n }] = await tx<{ n: string }[]>`select count(*) as n from ticker_cluster_timelines`;
        if (Number(n) >= this.timelinesMax) throw timelinesFull(this.timelinesMax);
      }
      const t = nextTimeline(name, streams, before, now);
      await tx`insert into ticker_cluster_timelines (name, streams, created_at, updated_at)
        values (${name}, ${tx.json(t.streams)}, ${t.created_at}, ${t.updated_at})
        on conflict (name) do update set streams = excluded.streams, updated_at = excluded.updated_at`;
      // The old set's positions go in the same transaction: a position of the new set, stored after it, stays.
      if (before) await tx`delete from ticker_timeline_readers where timeline = ${name}`;
      return { timeline: t, created: !before, changed: true };
    }) as Promise<{ timeline: NamedTimeline; created: boolean; changed: boolean }>;
  }

  async remove(name: string): Promise<boolean> {
    return this.sql.begin(async (tx) => {
      const r = await tx`delete from ticker_cluster_timelines where name = ${name}`;
      await tx`delete from ticker_timeline_readers where timeline = ${name}`;
      return r.count === 1;
    }) as Promise<boolean>;
  }

  /**
   * Every stream of the set exists in the cluster (it has events, archived or
   * in the tail, or a config); else 404 naming the first missing in set order.
   */
  async streamsExist(streams: readonly string[]): Promise<void> {
    const rows = await this.sql<{ stream: string }[]>`select s as stream from unnest(${textArray([...streams])}::text[]) as s
      where exists (select 1 from ticker_cluster_tail where stream = s) or exists (select 1 from ticker_cluster_segments where stream = s)
        or exists (select 1 from ticker_cluster_streams where stream = s)`;
    const found = new Set(rows.map((r) => r.stream));
    const missing = streams.find((s) => !found.has(s));
    if (missing !== undefined) throw new ApiError(404, "stream_not_found", `stream "${missing}" does not exist`, { stream: missing });
  }
}

export class ClusterReaders implements TimelineReaders {
  constructor(
    private readonly sql: postgres.Sql,
    private readonly readersMax: number,
  ) {}

  async get(t: NamedTimeline, reader: string): Promise<ReaderPosition | null> {
    const [r] = await this.sql<{ cursor: string; updated_at_ms: string }[]>`select cursor, updated_at_ms from ticker_timeline_readers
      where timeline = ${t.name} and reader = ${reader} and updated_at_ms >= ${t.updated_at}`;
    return r ? { timeline: t.name, reader, cursor: r.cursor, updated_at: Number(r.updated_at_ms) } : null;
  }

  /** Stores a reader's cursor for `t`, which must still be the timeline's set (the cursor was checked against it). */
  put(t: NamedTimeline, reader: string, cursor: string, now = Date.now()): Promise<{ position: ReaderPosition; created: boolean }> {
    return this.sql.begin(async (tx) => {
      // For update: one reader's PUT of a timeline at a time, so the count against timeline_readers_max is exact.
      const [cur] = await tx<{ updated_at: string }[]>`select updated_at from ticker_cluster_timelines where name = ${t.name} for update`;
      if (!cur) throw timelineNotFound(t.name);
      if (Number(cur.updated_at) !== t.updated_at)
        throw new ApiError(400, "invalid_cursor", "cursor was made for another stream set (the timeline's streams changed meanwhile)");
      const [had] = await tx`select 1 from ticker_timeline_readers where timeline = ${t.name} and reader = ${reader} and updated_at_ms >= ${t.updated_at}`;
      if (!had) {
        const [{ n }] = await tx<
          { n: string }[]
        >`select count(*) as n from ticker_timeline_readers where timeline = ${t.name} and updated_at_ms >= ${t.updated_at}`;
        if (Number(n) >= this.readersMax) {
          throw new ApiError(409, "limit_reached", `timeline "${t.name}" has positions of timeline_readers_max (${this.readersMax}) readers already`, {
            timeline_readers_max: this.readersMax,
          });
        }
      }
      const updatedAt = Math.max(now, t.updated_at);
      await tx`insert into ticker_timeline_readers (timeline, reader, cursor, updated_at_ms) values (${t.name}, ${reader}, ${cursor}, ${updatedAt})
        on conflict (timeline, reader) do update set cursor = excluded.cursor, updated_at_ms = excluded.updated_at_ms`;
      return { position: { timeline: t.name, reader, cursor, updated_at: updatedAt }, created: !had };
    }) as Promise<{ position: ReaderPosition; created: boolean }>;
  }

  /** Nothing to do: the timeline's PUT or delete removed its positions in its own transaction (ClusterTimelines). */
  forget(): Promise<void> {
    return Promise.resolve();
  }
}
