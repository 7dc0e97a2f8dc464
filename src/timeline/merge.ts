// The order of a timeline and the k-way merge that keeps it. Events of many
// streams come out as one sequence ordered by (ingest_ts, stream id, seq):
// ascending for a forward page, descending for a backward one. Each source
// (a stream's log in the shard, a shard's answer on the front) is already in
// that order, so a binary heap of the sources' next events gives the next
// event of all of them in O(log k). Pure: no bytes, no I/O.

/** Where an event lies in a timeline's order. */
export interface EventKey {
  ts: number;
  /** Stream ids are ASCII (src/stream-id.ts), so `<` on them is byte order. */
  stream: string;
  seq: number;
}

/** The timeline order: ingest_ts, then stream id, then seq. */
export function compareKeys(a: EventKey, b: EventKey): number {
  if (a.ts !== b.ts) return a.ts < b.ts ? -1 : 1;
  if (a.stream !== b.stream) return a.stream < b.stream ? -1 : 1;
  return a.seq === b.seq ? 0 : a.seq < b.seq ? -1 : 1;
}

/** "a comes first" for a page of this direction. */
export function keyOrder(direction: "forward" | "backward"): (a: EventKey, b: EventKey) => boolean {
  return direction === "forward" ? (a, b) => compareKeys(a, b) < 0 : (a, b) => compareKeys(a, b) > 0;
}

/** A binary min-heap by `before` (the item that comes first is on top). */
export class Heap<T> {
  private readonly items: T[] = [];

  constructor(private readonly before: (a: T, b: T) => boolean) {}

  get size(): number {
    return this.items.length;
  }

  peek(): T | undefined {
    return this.items[0];
  }

  push(item: T): void {
    const a = this.items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(a[i], a[parent])) break;
      [a[i], a[parent]] = [a[parent], a[i]];
      i = parent;
    }
  }

  pop(): T | undefined {
    const a = this.items;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop() as T;
    if (a.length > 0) {
      a[0] = last;
      this.siftDown(0);
    }
    return top;
  }

  /** Puts `item` in the top's place and restores the order: a pop and a push in one sift. */
  replaceTop(item: T): void {
    if (this.items.length === 0) throw new Error("heap invariant: replaceTop on an empty heap");
    this.items[0] = item;
    this.siftDown(0);
  }

  private siftDown(from: number): void {
    const a = this.items;
    const n = a.length;
    let i = from;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) return;
      const r = l + 1;
      const child = r < n && this.before(a[r], a[l]) ? r : l;
      if (!this.before(a[child], a[i])) return;
      [a[i], a[child]] = [a[child], a[i]];
      i = child;
    }
  }
}
