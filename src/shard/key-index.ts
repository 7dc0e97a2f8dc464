// The snapshot key index of one stream: key -> seq of its newest event, for
// `from=snapshot` and GET .../snapshot (docs/consume.md). At most
// snapshot_keys_max keys: past it the index is given up (the caller answers
// 409 snapshot_keys_exceeded) rather than dropping keys, since a snapshot
// that silently lacks keys would look complete to the subscriber.
//
// Entries are kept in seq order (a key updated again leaves its older entry
// behind, stale), so a cut in seq order is one pass with no sort, and
// retention drops from the front, as in dedup.ts. Stale entries are
// compacted away once they outnumber the live ones, so memory stays within
// about twice the keys.

/** Stale entries tolerated beyond the live ones before a compaction (keeps small indexes from compacting on every update). */
const STALE_SLACK_ENTRIES = 1024;

export class KeyIndex {
  private readonly seqByKey = new Map<string, number>();
  private keys: string[] = [];
  private seqs: number[] = [];
  private head = 0;
  /** The last seq read into the index (with a key or not). */
  indexedTo: number;
  /**
   * The newest seq the log could not give (a damaged record it reads past),
   * 0 if none: its key's newest event may be that one, so no snapshot is
   * served while it is retained.
   */
  missingTo = 0;

  constructor(
    readonly keysMax: number,
    /** The first seq the index will be given. */
    from: number,
  ) {
    this.indexedTo = from - 1;
  }

  get size(): number {
    return this.seqByKey.size;
  }

  /** The newest seq of `key`, or undefined. */
  get(key: string): number | undefined {
    return this.seqByKey.get(key);
  }

  /** Notes the event at `seq` (null key: an event without one); seqs skipped are missing. False once past keysMax. */
  add(key: string | null, seq: number): boolean {
    if (seq <= this.indexedTo) throw new Error(`key index invariant: seq ${seq} added after ${this.indexedTo}`);
    if (seq > this.indexedTo + 1) this.missingTo = seq - 1;
    this.indexedTo = seq;
    if (key === null) return true;
    const byKey = this.seqByKey;
    byKey.set(key, seq);
    this.keys.push(key);
    this.seqs.push(seq);
    if (byKey.size > this.keysMax) return false;
    if (this.keys.length - this.head - byKey.size > byKey.size + STALE_SLACK_ENTRIES) this.compact();
    return true;
  }

  /** The log could not give the seqs up to `seq`: they are missing. */
  skipTo(seq: number): void {
    if (seq <= this.indexedTo) return;
    this.missingTo = seq;
    this.indexedTo = seq;
  }

  /** Forgets keys whose newest event retention deleted (seq below the log's first_seq). */
  forgetBelow(firstSeq: number): void {
    const byKey = this.seqByKey;
    while (this.head < this.keys.length && this.seqs[this.head] < firstSeq) {
      if (byKey.get(this.keys[this.head]) === this.seqs[this.head]) byKey.delete(this.keys[this.head]);
      this.head++;
    }
    if (this.indexedTo < firstSeq - 1) this.indexedTo = firstSeq - 1;
    if (this.missingTo < firstSeq) this.missingTo = 0;
    if (this.head > STALE_SLACK_ENTRIES && this.head * 2 > this.keys.length) this.compact();
  }

  /** The newest seq of every key, ascending: the snapshot as of indexedTo. */
  cut(): Float64Array {
    const out = new Float64Array(this.seqByKey.size);
    const byKey = this.seqByKey;
    let n = 0;
    for (let i = this.head; i < this.keys.length; i++) if (byKey.get(this.keys[i]) === this.seqs[i]) out[n++] = this.seqs[i];
    if (n !== out.length) throw new Error(`key index invariant: ${n} live entries for ${out.length} keys`);
    return out;
  }

  private compact(): void {
    const byKey = this.seqByKey;
    const keys: string[] = [];
    const seqs: number[] = [];
    for (let i = this.head; i < this.keys.length; i++) {
      if (byKey.get(this.keys[i]) !== this.seqs[i]) continue;
      keys.push(this.keys[i]);
      seqs.push(this.seqs[i]);
    }
    this.keys = keys;
    this.seqs = seqs;
    this.head = 0;
  }
}
