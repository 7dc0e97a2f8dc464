// The events a subscription has received and the caller has not pulled yet,
// kept as the batches they came in (no copy per event). A FIFO of batches
// with a moving head, so that taking an event is O(1) however many wait.
import type { ConsumedEvent } from "./json-event.js";

/** Batches taken before the array is cut down to the ones still waiting. */
const COMPACT_BATCHES_MIN = 1024;

interface Batch {
  events: ConsumedEvent[];
  i: number;
}

export class EventQueue {
  private batches: Batch[] = [];
  private head = 0;
  /** Events waiting. */
  count = 0;

  push(events: ConsumedEvent[]): void {
    this.batches.push({ events, i: 0 });
    this.count += events.length;
  }

  shift(): ConsumedEvent | null {
    while (this.head < this.batches.length) {
      const b = this.batches[this.head];
      if (b.i < b.events.length) {
        this.count--;
        return b.events[b.i++];
      }
      this.head++;
      if (this.head >= COMPACT_BATCHES_MIN && this.head * 2 >= this.batches.length) {
        this.batches = this.batches.slice(this.head);
        this.head = 0;
      }
    }
    return null;
  }

  clear(): void {
    this.batches = [];
    this.head = 0;
    this.count = 0;
  }
}
