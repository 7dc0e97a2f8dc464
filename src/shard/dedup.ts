// The idempotency window of one stream: idempotency_key -> seq for keys
// appended within dedup_window_ms, at most dedup_keys_max keys (oldest go
// first when full). Rebuilt from the log on start, so it survives restarts.

const NO_KEYS: ReadonlyMap<string, number> = new Map();
const NONE = Object.freeze([]) as unknown as never[];

export class DedupWindow {
  // Allocated on the first key: most streams never see one.
  private seqByKey: Map<string, number> | null = null;
  // Insertion order (ingest_ts never decreases), for expiry from the front.
  // Shared empty arrays until the first key, like the Map.
  private keys: string[] = NONE;
  private seqs: number[] = NONE;
  private tss: number[] = NONE;
  private head = 0;

  constructor(
    private windowMs: number,
    private readonly keysMax: number,
  ) {}

  get size(): number {
    return (this.seqByKey ?? NO_KEYS).size;
  }

  /** Forgets every key (a cluster owner rebuilds the window from the archive and its copy). */
  clear(): void {
    this.seqByKey = null;
    this.keys = this.seqs = this.tss = NONE;
    this.head = 0;
  }

  setWindow(windowMs: number): void {
    this.windowMs = windowMs;
  }

  /** The seq an unexpired key was appended at, or undefined. */
  get(key: string): number | undefined {
    return (this.seqByKey ?? NO_KEYS).get(key);
  }

  add(key: string, seq: number, ts: number): void {
    if (this.windowMs === 0) return;
    if (this.seqByKey === null) {
      this.seqByKey = new Map();
      this.keys = [];
      this.seqs = [];
      this.tss = [];
    }
    const byKey = this.seqByKey;
    byKey.set(key, seq);
    this.keys.push(key);
    this.seqs.push(seq);
    this.tss.push(ts);
    while (byKey.size > this.keysMax) this.dropOldest();
  }

  /** Forgets keys older than the window. */
  expire(nowMs: number): void {
    const cutoff = nowMs - this.windowMs;
    while (this.head < this.keys.length && this.tss[this.head] < cutoff) this.dropOldest();
  }

  /**
   * Forgets keys whose event retention has deleted (seq below the log's
   * first_seq): a duplicate answer names the original seq, which must still
   * exist, and a restart (which rebuilds from the retained log) could not
   * know them anyway. Keys are in seq order, so this drops from the front.
   */
  forgetBelow(firstSeq: number): void {
    while (this.head < this.keys.length && this.seqs[this.head] < firstSeq) this.dropOldest();
  }

  /**
   * Forgets keys at `seq` and after: their records were cut (a failed sync
   * refused them), so a retry must append, not be told it is a duplicate.
   * Keys are in seq order, so this drops from the back.
   */
  forgetFrom(seq: number): void {
    const byKey = this.seqByKey;
    if (byKey === null) return;
    let end = this.keys.length;
    while (end > this.head && this.seqs[end - 1] >= seq) {
      end--;
      if (byKey.get(this.keys[end]) === this.seqs[end]) byKey.delete(this.keys[end]);
    }
    this.keys.length = this.seqs.length = this.tss.length = end;
  }

  private dropOldest(): void {
    const key = this.keys[this.head];
    // A key appended again later keeps its newer entry. (Keys exist, so the map does.)
    const byKey = this.seqByKey as Map<string, number>;
    if (byKey.get(key) === this.seqs[this.head]) byKey.delete(key);
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.keys.length) {
      this.keys = this.keys.slice(this.head);
      this.seqs = this.seqs.slice(this.head);
      this.tss = this.tss.slice(this.head);
      this.head = 0;
    }
  }
}
