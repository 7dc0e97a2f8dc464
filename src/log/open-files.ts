// The open files of a shard's streams (segments, checkpoint files, held.log), least
// recently used first, at most `filesMax` of them: a shard with 25,000 small
// streams would otherwise hold one file per stream (two with a consumer
// group) and pass the process's ulimit. A file the cache closes is opened
// again by its owner on next use; the owner says when it may not be closed
// (an fdatasync of it running in the thread pool: the fd number would be
// reused under it).
//
// Cost: one Set delete and add when a file other than the last one used is
// used (a publish touches one segment), none when it is the same one.

/** A file the cache may close. Its owner keeps the fd; `evict` closes it and forgets it. */
export interface CachedFile {
  /** False while closing the fd would be wrong (an async fdatasync on it); the cache then passes it by. */
  mayClose(): boolean;
  /** Closes the fd because the cache chose it: the owner opens the file again on next use. */
  evict(): void;
}

export class OpenFiles {
  /** Open files, least recently used first (a Set keeps insertion order). */
  private readonly open = new Set<CachedFile>();
  private last: CachedFile | null = null;
  /** Files closed by the cache, since start (metrics, tests). */
  evictions = 0;

  constructor(readonly filesMax: number) {
    if (!(filesMax >= 1)) throw new Error(`open files invariant: filesMax ${filesMax}`);
  }

  get size(): number {
    return this.open.size;
  }

  /**
   * Call before opening a file: closes the least recently used files that
   * may be closed until there is room for one more. Files that may not be
   * closed stay, and then (only then) the cache holds more than filesMax
   * until their syncs end: each is a sync in flight or due (at most two a
   * fsync log), bounded by the shard's requests in flight.
   */
  makeRoom(): void {
    if (this.open.size < this.filesMax) return;
    for (const f of this.open) {
      if (this.open.size < this.filesMax) break;
      if (!f.mayClose()) continue;
      this.open.delete(f); // deleting the current entry of a Set iteration is safe
      if (this.last === f) this.last = null;
      this.evictions++;
      f.evict();
    }
  }

  /** A file was just opened (after makeRoom). */
  opened(f: CachedFile): void {
    this.open.add(f);
    this.last = f;
  }

  /** A file that is open was used: it becomes the most recently used. */
  used(f: CachedFile): void {
    if (this.last === f) return;
    this.open.delete(f);
    this.open.add(f);
    this.last = f;
  }

  /** Its owner closed the file. */
  closed(f: CachedFile): void {
    this.open.delete(f);
    if (this.last === f) this.last = null;
  }
}

/** For a log or checkpoint file used outside a shard (tools, tests): a cache that never closes anything. */
export const unboundedFiles = () => new OpenFiles(Number.POSITIVE_INFINITY);
