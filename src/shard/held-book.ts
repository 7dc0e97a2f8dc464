// The books of an ordered stream's held.log (src/shard/held-events.ts): the
// bytes held (held_bytes_max counts them), released events whose log records
// still wait for the log's sync (fsync streams: they stay live in the file
// until then), release markers, and keeping the file small. Everything here
// after an event is acknowledged is best effort: a failed marker or rewrite
// leaves a larger file (start-up still drops what the log holds) and is
// retried at the next settle, never failing a request already done.
import { HeldStore, heldEntryBytes, type HeldEntry, type HeldLoad } from "./held-events.js";
import { logger } from "../logger.js";
import type { OpenFiles } from "../log/open-files.js";

export class HeldBook {
  private readonly store: HeldStore;
  private heldBytes = 0;
  /** Released held events whose records wait for the log's sync: live in held.log until synced(). */
  private pending: Array<{ seq: number; entry: HeldEntry }> = [];
  private pendingBytes = 0;
  private sizeBefore = 0;
  private closed = false;
  private detached = false;

  constructor(
    dir: string,
    entryBytesMax: number,
    /** The entries held now (the rule's), for a rewrite. */
    private readonly held: () => Iterable<HeldEntry>,
    private readonly streamId: string,
    /** The shard's open files: held.log is one of them. */
    files: OpenFiles,
  ) {
    this.store = new HeldStore(dir, entryBytesMax, files);
  }

  open(): HeldLoad {
    return this.store.open();
  }

  /** Reads held.log again and starts the books afresh (a rebuild after a failure). */
  reload(): HeldEntry[] {
    this.heldBytes = 0;
    this.pending = [];
    this.pendingBytes = 0;
    return this.store.reload();
  }

  /**
   * Cluster mode: PostgreSQL holds the events (src/shard/cluster-ordered.ts),
   * the books count them only, and held.log is emptied (never read again as
   * the truth: a catch-up replaces whatever a restart loads from it).
   */
  detach(): void {
    this.heldBytes = 0;
    this.pending = [];
    this.pendingBytes = 0;
    this.detached = true;
    this.settle();
  }

  get bytes(): number {
    return this.heldBytes;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Entries held at start-up, already in the file. */
  restored(e: HeldEntry): void {
    this.heldBytes += heldEntryBytes(e);
  }

  /** Writes a batch's newly held events, before the log append (synced when `durable`); undoAdd() takes them back. */
  add(entries: readonly HeldEntry[], durable: boolean): void {
    if (this.detached) throw new Error("ordered ingest: held.log written in cluster mode");
    this.sizeBefore = this.store.bytes;
    this.store.add(entries, durable);
  }

  undoAdd(): void {
    if (!this.detached) this.store.cutTo(this.sizeBefore);
  }

  /** The batch stands: its newly held events count, and those it released leave the file (or wait for the sync). */
  commit(newHeld: readonly HeldEntry[], released: ReadonlyArray<{ seq: number; entry: HeldEntry }>, logDurable: boolean): void {
    for (const e of newHeld) this.heldBytes += heldEntryBytes(e);
    if (released.length === 0) return;
    for (const r of released) this.heldBytes -= heldEntryBytes(r.entry);
    if (this.detached) return;
    if (logDurable) return this.markReleased(released.map((r) => r.entry));
    for (const r of released) {
      this.pending.push(r);
      this.pendingBytes += heldEntryBytes(r.entry);
    }
  }

  /** The log is durable up to `seq`: released events up to it leave the file. */
  synced(seq: number): void {
    if (this.closed) return;
    let n = 0;
    while (n < this.pending.length && this.pending[n].seq <= seq) this.pendingBytes -= heldEntryBytes(this.pending[n++].entry);
    if (n > 0) this.markReleased(this.pending.splice(0, n).map((r) => r.entry));
  }

  private markReleased(entries: HeldEntry[]): void {
    if (this.closed) return;
    try {
      this.store.release(entries);
    } catch (err) {
      logger().warn(
        { kind: "storage", stream: this.streamId, err },
        `stream ${this.streamId}: held.log release markers not written (start-up reads the log instead): ${(err as Error).message}`,
      );
    }
    this.settle();
  }

  /** Empties the file when nothing in it is live, rewrites it when it is mostly released entries and markers. */
  private settle(): void {
    try {
      this.store.settle(this.heldBytes + this.pendingBytes, () => [...this.held(), ...this.pending.map((p) => p.entry)]);
    } catch (err) {
      logger().warn(
        { kind: "storage", stream: this.streamId, err },
        `stream ${this.streamId}: held.log not compacted (retried at the next release): ${(err as Error).message}`,
      );
    }
  }

  close(): void {
    this.closed = true;
    this.store.close();
  }
}
