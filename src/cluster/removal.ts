// A stream's removal in cluster mode: everything the cluster holds of it —
// its tail rows, its manifest rows, its config, its groups' checkpoints,
// ordered ingest's held events and producers —
// goes in one transaction fenced by the shard's lease, the commit point of a
// DELETE. The archive objects the manifest named are then garbage, removed
// by the owner after the commit (an object left by a crash meanwhile is
// named by no manifest row, so nothing reads it).
import type postgres from "postgres";
import { logger } from "../logger.js";
import type { Archive } from "./archive.js";
import { fence } from "./leases.js";
import { keysObjectOf } from "./segment-keys.js";

/** An archived object of a removed stream: the segment, and its .keys object if it had keys. */
export interface RemovedSegment {
  key: string;
  keyed: number;
}

/** What the manifest says of the archived segment ending at a seq: a copy's segment there must match it. */
export interface ArchivedEnd {
  baseSeq: number;
  bytes: number;
  lastTs: number;
}

export class StreamRemoval {
  constructor(
    private readonly sql: postgres.Sql,
    private readonly nodeId: string,
  ) {}

  /** Removes the stream's rows under `epoch`; null (nothing removed) if the epoch is no longer current. */
  async remove(shard: number, epoch: number, stream: string): Promise<RemovedSegment[] | null> {
    return this.sql.begin(async (tx) => {
      const lease = await tx`${fence(tx, shard, this.nodeId, epoch)}`;
      if (lease.length === 0) return null;
      await tx`delete from ticker_cluster_tail where stream = ${stream}`;
      const gone = await tx<{ key: string; keyed: number }[]>`delete from ticker_cluster_segments where stream = ${stream} returning key, keyed`;
      await tx`delete from ticker_cluster_streams where stream = ${stream}`;
      await tx`delete from ticker_checkpoints where stream = ${stream}`;
      await tx`delete from ticker_cluster_held where stream = ${stream}`;
      await tx`delete from ticker_cluster_producers where stream = ${stream}`;
      return gone.map((r) => ({ key: r.key, keyed: Number(r.keyed) }));
    }) as Promise<RemovedSegment[] | null>;
  }

  /** The archived segment whose last seq is `lastSeq`, or null. */
  async archivedEnd(stream: string, lastSeq: number): Promise<ArchivedEnd | null> {
    const [row] = await this.sql<{ base_seq: string; bytes: string; last_ts: string }[]>`
      select base_seq, bytes, last_ts from ticker_cluster_segments where stream = ${stream} and last_seq = ${lastSeq}`;
    return row ? { baseSeq: Number(row.base_seq), bytes: Number(row.bytes), lastTs: Number(row.last_ts) } : null;
  }
}

/**
 * The archive objects of a removed stream (segments and their .keys), after
 * its rows' commit. One that cannot be removed is named by no manifest row,
 * so nothing reads it; it is logged as left behind.
 */
export async function removeObjects(archive: Archive, stream: string, gone: readonly RemovedSegment[]): Promise<void> {
  for (const g of gone)
    for (const key of g.keyed > 0 ? [g.key, keysObjectOf(g.key)] : [g.key]) {
      await archive
        .delete(key)
        .catch((err: Error) =>
          logger().warn(
            { kind: "cluster", stream, key, err: err.message },
            `stream ${stream} deleted: its archive object ${key} was left behind (${err.message})`,
          ),
        );
    }
}
