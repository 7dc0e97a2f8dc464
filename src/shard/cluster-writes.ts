// The fenced writes of a stream's owner that are on their way to PostgreSQL
// (cluster mode): its batches (the tail), its checkpoints and its config. A
// stream's delete waits for all of them before its removal commits, so that
// none lands after it and brings back a row of the deleted stream (a group
// would resume a new stream of the same name at the old checkpoint). The
// stream's writes are refused meanwhile (WorkerCluster.serving), so the wait
// ends.
export class FencedWrites {
  private readonly writing = new Map<string, Set<Promise<unknown>>>();

  /** `p`, counted as the stream's write until it settles. */
  track<T>(stream: string, p: Promise<T>): Promise<T> {
    let set = this.writing.get(stream);
    if (!set) this.writing.set(stream, (set = new Set()));
    set.add(p);
    const done = () => {
      set.delete(p);
      if (set.size === 0 && this.writing.get(stream) === set) this.writing.delete(stream);
    };
    p.then(done, done);
    return p;
  }

  /** Resolves once none of the stream's writes is in flight, nor a batch (`lastBatch`, which may change while this waits). */
  async settled(stream: string, lastBatch: () => Promise<unknown> | undefined): Promise<void> {
    for (;;) {
      const batch = lastBatch();
      await Promise.allSettled([batch, ...(this.writing.get(stream) ?? [])]);
      if (lastBatch() === batch && !this.writing.has(stream)) return;
    }
  }
}
