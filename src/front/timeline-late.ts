// The timeline reads the front gave up on (their page went out without
// them) that their shards have not answered yet, per shard. A shard that
// gets to such a read answers it at once (past its deadline it reads
// nothing), so many still unanswered mean a shard stuck behind other work
// for at least a source timeout: a new read would wait behind the same
// work and time out too. Such a shard gets none until it catches up.

/**
 * Given-up reads a shard may owe before it gets no new one. One late read
 * is a stall (GC, one large replay) the next page should still try; this
 * many is a shard the pages in flight (one per connection) all found behind.
 */
export const TIMELINE_LATE_READS_MAX = 8;

export class LateReads {
  private readonly owed: number[] = [];

  /** The shard owes TIMELINE_LATE_READS_MAX given-up reads: a page leaves it out without asking. */
  behind(shard: number): boolean {
    return (this.owed[shard] ?? 0) >= TIMELINE_LATE_READS_MAX;
  }

  gaveUp(shard: number): void {
    this.owed[shard] = (this.owed[shard] ?? 0) + 1;
  }

  answered(shard: number): void {
    this.owed[shard]--;
  }
}
