// Cluster mode: a stream's history as replays and consumers read it, the
// archive's closed segments (src/cluster/archived-history.ts) before what
// this node's log holds. A node's copy of a stream starts after the last
// archived seq when it gained the shard, and a node that does not own the
// stream has no copy at all: either way, seqs below the local log come from
// the archive. The archive is read into memory first, a chunk of a segment
// at a time; a read that needs a chunk not there yet throws ArchiveMiss, and
// the shard serves the request again once it is (worker.ts).
import { ApiError } from "../errors.js";
import type { FramePage, StreamLog } from "../log/log.js";
import type { ArchivedHistory } from "../cluster/archived-history.js";
import type { Stream } from "./stream.js";

/** A read needs what `loading` fetches: serve the request again once it settles. */
export class ArchiveMiss extends Error {
  constructor(readonly loading: Promise<void>) {
    super("a chunk of an archived segment is being fetched");
  }
}

/**
 * Fetches of archived segments a read may wait for without getting further:
 * each brings the next segment it needs (or the manifest), and a cache too
 * small for the readers at once could evict it again before the read comes
 * back.
 */
export const ARCHIVE_ATTEMPTS_MAX = 8;

export const archiveUnreadable = () => new ApiError(503, "storage_error", `the archive could not be read after ${ARCHIVE_ATTEMPTS_MAX} tries; retry later`);

/**
 * The tries of a read that goes on over many fetches (a snapshot's key
 * index reads the whole archive, a segment a fetch): only the fetches after
 * which it got no further count toward ARCHIVE_ATTEMPTS_MAX.
 */
export class ArchiveTries {
  private attempts = 0;
  private reached = Number.NEGATIVE_INFINITY;

  /** After `miss` at `progress` (how far the read got; it never goes back): `again` once the fetch settles, or `fail` with 503 past the tries. */
  wait(miss: ArchiveMiss, progress: number, again: () => void, fail: (err: unknown) => void): void {
    if (progress > this.reached) {
      this.reached = progress;
      this.attempts = 0;
    }
    if (++this.attempts >= ARCHIVE_ATTEMPTS_MAX) return fail(archiveUnreadable());
    miss.loading.then(again, fail);
  }
}

/** What replays and consumer reads ask of a log. */
export type ReadLog = Pick<StreamLog, "firstSeq" | "committedSeq" | "seqAtTime" | "read">;

/** What replays and consumer reads ask of a stream. */
export type ReadStream = Pick<Stream, "id" | "idJson" | "replayPages" | "replayEvents"> & { log: ReadLog };

/** The stream's head as the cluster last said (its tail in PostgreSQL), for a node that has no copy; throws ArchiveMiss while it is being read. */
export type ClusterHead = (id: string) => number;

export class HistoryView implements ReadLog {
  constructor(
    private readonly history: ArchivedHistory,
    private readonly id: string,
    /** This node's copy (null: it has none, the stream is another node's). */
    private readonly local: StreamLog | null,
    /** With no copy: the head a page shows (the owner's, as the database has it), so a reader knows there is more past the archive. */
    private readonly clusterHead: ClusterHead | null = null,
  ) {}

  private range(): { firstSeq: number; lastSeq: number } {
    const r = this.history.range(this.id);
    if (r === null) throw this.miss(this.local?.firstSeq ?? 1);
    return r;
  }

  /**
   * The fetch a read waits for. One that fails (a segment whose object
   * retention removed since the manifest was read, the database out of
   * reach) forgets what was read of the stream: the read, served again,
   * starts from the manifest as it is now (410 below what is left).
   */
  private miss(seq: number): ArchiveMiss {
    return new ArchiveMiss(this.history.load(this.id, seq).catch(() => this.history.forget(this.id)));
  }

  get firstSeq(): number {
    const local = this.local;
    // A copy from seq 1 needs no archive to say where history starts.
    if (local && local.firstSeq <= 1) return local.firstSeq;
    const r = this.range();
    if (r.lastSeq === 0) return local ? local.firstSeq : 1;
    return Math.min(r.firstSeq, local?.firstSeq ?? r.firstSeq);
  }

  get committedSeq(): number {
    if (this.local) return this.local.committedSeq;
    const archived = this.range().lastSeq;
    return this.clusterHead ? Math.max(archived, this.clusterHead(this.id)) : archived;
  }

  seqAtTime(ts: number): number {
    if (this.local) return this.local.seqAtTime(ts);
    throw new ApiError(400, "invalid_parameter", `"from_time" is resolved by the stream's owner; ask it (or give "from")`);
  }

  read(from: number, to: number, eventsMax: number, bytesMax: number, out: Buffer): FramePage {
    const local = this.local;
    if (local && from >= local.firstSeq) return local.read(from, to, eventsMax, bytesMax, out);
    const r = this.range();
    if (local && from > r.lastSeq) {
      // Below this node's copy, past what was read of the manifest: newer segments are archived than it said.
      this.history.forget(this.id);
      throw this.miss(from);
    }
    // Past the archive, a node without a copy sends the reader to the owner.
    if (!local && from > r.lastSeq) throw new ApiError(307, "not_owner", `seq ${from} is past the archive: the stream's owner serves it`);
    if (r.lastSeq === 0 || from < r.firstSeq) throw expired(from, this.firstSeq);
    // Up to where this node's copy begins; the next page goes on from there.
    const end = local ? Math.min(to, local.firstSeq - 1) : to;
    const page = this.history.read(this.id, from, end, eventsMax, bytesMax, out);
    if (page === null) throw this.miss(from);
    this.history.readAhead(this.id, page.next > from ? page.next - 1 : from);
    return page;
  }
}

export const expired = (seq: number, firstSeq: number) =>
  new ApiError(410, "expired", `seq ${seq} has expired; the oldest retained seq is ${firstSeq}`, { first_seq: firstSeq });

/** A stream this node has no copy of, read from the archive alone (a replay on a node that does not own it). */
export function archivedOnly(history: ArchivedHistory, id: string, head: ClusterHead): ReadStream {
  return { id, idJson: () => JSON.stringify(id), replayPages: 0, replayEvents: 0, log: new HistoryView(history, id, null, head) };
}
