// Single-producer single-consumer message ring over a SharedArrayBuffer: the
// only data path between the front (main thread) and a shard worker.
//
// Layout: a 128-byte control block (write position and read position on
// separate cache lines), then `capacity` data bytes. A message is an 8-byte
// header (u32 payload bytes, i32 kind) and its payload, padded to 8 bytes.
// Positions run over [0, 2 * capacity) so that "full" and "empty" differ
// without a separate counter; a message never straddles the end of the data
// area: when it does not fit, the producer writes a PAD message to the end
// and starts again at 0. Hence the largest message is capacity / 2.
// The producer also starts again at 0 whenever it finds the ring empty past
// REWIND_BYTES, so a ring that is drained as fast as it is filled keeps
// touching the same few pages instead of every page of its capacity (a ring's
// resident memory follows what is in flight, not its size). That jump is not
// a PAD in the data area (the consumer would have to read the PAD's header
// before the producer could reuse the space behind it, so a burst right after
// a rewind would find the ring nearly full): the producer publishes the
// position it jumped from in the control block, and the consumer, on reaching
// exactly that position, jumps too and clears it. Until the consumer has
// jumped, the producer counts the space as free, since nothing there will be
// read. One jump at most is pending: the next needs the ring empty again.
//
// Wake-ups: each side counts itself in the control block while it waits, and
// the other side calls Atomics.notify only when that count is non-zero. A
// notify that finds a waitAsync waiter is the expensive part of a hand-off
// (a task posted to the other thread's loop and a write to its eventfd: tens
// of µs on a VM); one that finds the waiter busy is skipped. The count is
// raised before waitAsync compares the position, so a commit either sees the
// count or changes the position that the waiter then compares: no lost wake.
// A producer may also defer its notify (`deferNotify`), so that several
// commits wake the reader once: to the end of the current task
// ("microtask"), or to the end of the event loop's current iteration
// ("turn": after every I/O callback the poll phase runs, so the requests of
// many sockets that arrived together cost the reader one wake-up).
//
// Memory ordering: payload bytes are plain writes published by the
// Atomics.store of the write position (and freed by the store of the read
// position), which orders them for the other thread.
//
// Lengths are checked on both sides: the producer refuses a message over
// messageBytesMax and a commit over its reservation; the consumer checks that
// a header it reads claims no more than messageBytesMax, ends inside the data
// area and within what was published, and that a PAD runs exactly to the
// end. A header that fails is shared memory gone wrong, not input: it throws.
import { copyBytes } from "../bytes.js";

const CONTROL_BYTES = 128;
const WRITE = 0; // Int32 index of the write position
const READ = 16; // Int32 index of the read position, 64 bytes away
const JUMP = 8; // Int32 index of 1 + the position the producer jumped from, 0: none
const READERS_WAITING = 24; // consumer waits for WRITE to move (waitReadable)
const WRITERS_WAITING = 4; // producer waits for READ to move (waitWritable)
const HEADER_BYTES = 8;
const KIND_PAD = -1;
/** An empty ring whose write offset is past this starts again at 0. */
export const REWIND_BYTES = 256 * 1024;
/** Smallest data area: room for two messages of a few bytes each. */
export const CAPACITY_BYTES_MIN = 64;
/** Largest data area: positions run over [0, 2 * capacity) in an Int32 of the control block. */
export const CAPACITY_BYTES_MAX = 1024 * 1024 * 1024;

const align8 = (n: number) => (n + 7) & ~7;

export interface RingMessage {
  kind: number;
  /** Offset of the payload in `ring.data`. */
  offset: number;
  length: number;
}

export class Ring {
  readonly capacity: number;
  readonly data: Uint8Array;
  private readonly view: DataView;
  private readonly control: Int32Array;
  private readonly span: number;
  // Each side keeps its own position locally; only it ever writes it.
  private writePos: number;
  private readPos: number;
  private reserved = -1;
  /** Payload bytes of the open reservation: a commit may not claim more. */
  private reservedBytes = 0;
  /** Producer: wake the consumer on every commit (false), or once per task or per loop iteration (see the header). */
  deferNotify: false | "microtask" | "turn" = false;
  private notifyQueued = false;
  /** Producer: the rewind the consumer may not have followed yet (from, to), or -1. */
  private jumpFrom = -1;
  private jumpTo = 0;
  /** Read position seen by the last reserve(): waitWritable() waits for it to move. */
  private readSeen = 0;
  private current = 0;

  /**
   * Largest payload one message may carry in a ring allocated with
   * `capacityBytes`: a message never wraps around the end of the data area,
   * so only half of it is sure to be free in one piece.
   */
  static messageBytesMaxFor(capacityBytes: number): number {
    return (((capacityBytes & ~7) / 2) & ~7) - HEADER_BYTES;
  }

  /** Allocates the shared memory for a ring with `capacityBytes` of data. */
  static allocate(capacityBytes: number): SharedArrayBuffer {
    const capacity = capacityBytes & ~7;
    if (capacity < CAPACITY_BYTES_MIN || capacity > CAPACITY_BYTES_MAX) throw new RangeError(`ring capacity ${capacityBytes} out of range`);
    return new SharedArrayBuffer(CONTROL_BYTES + capacity);
  }

  constructor(readonly buffer: SharedArrayBuffer) {
    this.capacity = buffer.byteLength - CONTROL_BYTES;
    this.span = 2 * this.capacity;
    this.messageBytesMax = Ring.messageBytesMaxFor(this.capacity);
    this.control = new Int32Array(buffer, 0, CONTROL_BYTES / 4);
    this.data = new Uint8Array(buffer, CONTROL_BYTES, this.capacity);
    this.view = new DataView(buffer, CONTROL_BYTES, this.capacity);
    this.writePos = Atomics.load(this.control, WRITE);
    this.readPos = Atomics.load(this.control, READ);
  }

  /** Largest payload a single message may carry. */
  readonly messageBytesMax: number;

  /** Bytes currently in use (messages written and not yet released). */
  usedBytes(): number {
    return (Atomics.load(this.control, WRITE) - Atomics.load(this.control, READ) + this.span) % this.span;
  }

  // ---- producer side -------------------------------------------------

  /**
   * Reserves room for a payload of `payloadBytes` and returns the offset in
   * `data` to write it at, or -1 when the ring is too full right now. Follow
   * with commit(); at most one reservation is open at a time.
   */
  reserve(payloadBytes: number): number {
    if (this.reserved !== -1) throw new Error("ring: reserve() while a reservation is open");
    const need = align8(HEADER_BYTES + payloadBytes);
    if (payloadBytes < 0 || need > this.capacity / 2) {
      throw new RangeError(`ring: message of ${payloadBytes} bytes exceeds ${this.messageBytesMax}`);
    }
    this.reservedBytes = payloadBytes;
    this.readSeen = Atomics.load(this.control, READ);
    let readFrom = this.readSeen;
    if (this.jumpFrom !== -1) {
      // The consumer moves off the jump's origin only by taking the jump.
      if (readFrom === this.jumpFrom) readFrom = this.jumpTo;
      else this.jumpFrom = -1;
    }
    const free = this.capacity - ((this.writePos - readFrom + this.span) % this.span);
    if (free === this.capacity && this.jumpFrom === -1 && this.writePos % this.capacity >= REWIND_BYTES) {
      const from = this.writePos;
      this.jumpFrom = from;
      this.jumpTo = this.writePos = (from + this.capacity - (from % this.capacity)) % this.span;
      Atomics.store(this.control, JUMP, from + 1); // published with the next commit's write position
    }
    const at = this.writePos % this.capacity;
    const toEnd = this.capacity - at;
    if (toEnd >= need) {
      if (free < need) return -1;
      this.reserved = at;
      return at + HEADER_BYTES;
    }
    if (free < toEnd + need) return -1;
    // Pad to the end; the pad is published together with the message.
    this.view.setUint32(at, toEnd - HEADER_BYTES, true);
    this.view.setInt32(at + 4, KIND_PAD, true);
    this.writePos = (this.writePos + toEnd) % this.span;
    this.reserved = 0;
    return HEADER_BYTES;
  }

  /** Publishes the reserved message. */
  commit(kind: number, payloadBytes: number): void {
    const at = this.reserved;
    if (at === -1) throw new Error("ring: commit() without reserve()");
    if (kind === KIND_PAD) throw new RangeError("ring: kind -1 is reserved");
    if (!(payloadBytes >= 0 && payloadBytes <= this.reservedBytes))
      throw new RangeError(`ring: commit() of ${payloadBytes} bytes, ${this.reservedBytes} reserved`);
    this.view.setUint32(at, payloadBytes, true);
    this.view.setInt32(at + 4, kind, true);
    this.reserved = -1;
    this.writePos = (this.writePos + align8(HEADER_BYTES + payloadBytes)) % this.span;
    Atomics.store(this.control, WRITE, this.writePos);
    if (!this.deferNotify) this.wakeReader();
    else if (!this.notifyQueued) {
      this.notifyQueued = true;
      if (this.deferNotify === "turn") setImmediate(this.wakeQueued);
      else queueMicrotask(this.wakeQueued);
    }
  }

  private readonly wakeQueued = () => {
    this.notifyQueued = false;
    this.wakeReader();
  };

  private wakeReader(): void {
    if (Atomics.load(this.control, READERS_WAITING) > 0) Atomics.notify(this.control, WRITE);
  }

  /** Copies `payload` in as one message; false when the ring is too full. */
  tryWrite(kind: number, payload: Uint8Array): boolean {
    const at = this.reserve(payload.byteLength);
    if (at === -1) return false;
    copyBytes(payload, this.data, at);
    this.commit(kind, payload.byteLength);
    return true;
  }

  /**
   * Resolves once the consumer has released something since the last
   * reserve() (at once if it already has). Note: in Node 20 a pending
   * waitAsync does not keep a thread alive; the owner must (a timer, a socket).
   */
  waitWritable(timeoutMs?: number): Promise<void> {
    return this.waitCounted(WRITERS_WAITING, READ, this.readSeen, timeoutMs);
  }

  /** Waits for control[index] to leave `value`, counted in control[counter] meanwhile (see the header). */
  private async waitCounted(counter: number, index: number, value: number, timeoutMs?: number): Promise<void> {
    Atomics.add(this.control, counter, 1);
    try {
      const r = Atomics.waitAsync(this.control, index, value, timeoutMs);
      if (r.async) await r.value;
    } finally {
      Atomics.sub(this.control, counter, 1);
    }
  }

  // ---- consumer side -------------------------------------------------

  /**
   * The oldest unreleased message, or null when the ring is empty. The payload
   * stays valid until release(); read() again without release() returns the
   * same message.
   */
  read(): RingMessage | null {
    const write = Atomics.load(this.control, WRITE);
    while (this.readPos !== write) {
      if (Atomics.load(this.control, JUMP) === this.readPos + 1) {
        Atomics.store(this.control, JUMP, 0);
        this.readPos = (this.readPos + this.capacity - (this.readPos % this.capacity)) % this.span;
        continue;
      }
      const at = this.readPos % this.capacity;
      const length = this.view.getUint32(at, true);
      const kind = this.view.getInt32(at + 4, true);
      if (kind === KIND_PAD) {
        if (at + HEADER_BYTES + length !== this.capacity)
          throw brokenHeader(at, `a PAD of ${length} bytes that does not end the data area (${this.capacity} bytes)`);
        this.readPos = (this.readPos + this.capacity - at) % this.span;
        continue;
      }
      const footprint = align8(HEADER_BYTES + length);
      if (length > this.messageBytesMax || at + footprint > this.capacity || footprint > (write - this.readPos + this.span) % this.span) {
        throw brokenHeader(at, `a message of ${length} bytes: over messageBytesMax (${this.messageBytesMax}), past the data area or past what was written`);
      }
      this.current = footprint;
      return { kind, offset: at + HEADER_BYTES, length };
    }
    return null;
  }

  /** Frees the message returned by the last read(). */
  release(): void {
    if (this.current === 0) throw new Error("ring: release() without read()");
    this.readPos = (this.readPos + this.current) % this.span;
    this.current = 0;
    Atomics.store(this.control, READ, this.readPos);
    if (Atomics.load(this.control, WRITERS_WAITING) > 0) Atomics.notify(this.control, READ);
  }

  /** Resolves once a message may be available (immediately if one is). */
  waitReadable(timeoutMs?: number): Promise<void> {
    return this.waitCounted(READERS_WAITING, WRITE, this.readPos, timeoutMs);
  }
}

/** A header the producer cannot have written: the ring's memory or protocol is broken. */
const brokenHeader = (at: number, what: string) => new Error(`ring invariant: the header at ${at} claims ${what}`);
