import { describe, it, expect } from "vitest";
import { existsSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { REWIND_BYTES, Ring } from "../../src/ring/ring.js";
import { rng } from "../helpers/rng.js";

const HEADER_BYTES = 8;
const align8 = (n: number) => (n + 7) & ~7;
/** Bytes a message of `payloadBytes` occupies in the ring (header + payload, padded). */
const footprint = (payloadBytes: number) => align8(HEADER_BYTES + payloadBytes);

function newRing(capacityBytes: number): Ring {
  return new Ring(Ring.allocate(capacityBytes));
}

/** Deterministic payload: `length` bytes derived from `seed`. */
function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (seed * 31 + i * 7 + 13) & 0xff;
  return out;
}

const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);

interface Taken {
  kind: number;
  offset: number;
  bytes: Uint8Array;
}

/** Reads the oldest message, copies it out, releases it. */
function take(ring: Ring): Taken | null {
  const m = ring.read();
  if (m === null) return null;
  const taken = { kind: m.kind, offset: m.offset, bytes: ring.data.slice(m.offset, m.offset + m.length) };
  ring.release();
  return taken;
}

/** Moves an empty ring's (shared) position forward by `bytes` (a multiple of 8) with empty messages. */
function advanceEmpty(ring: Ring, bytes: number): void {
  const empty = new Uint8Array(0);
  for (let i = 0; i < bytes / HEADER_BYTES; i++) {
    if (!ring.tryWrite(0, empty) || take(ring) === null) throw new Error(`advancing an empty ring failed at step ${i}`);
  }
  expect(ring.usedBytes()).toBe(0);
}

const sleep = (ms: number) => new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), ms));

describe("Ring: empty ring", () => {
  it("read() returns null on a freshly allocated ring", () => {
    const ring = newRing(1024);
    expect(ring.read()).toBeNull();
    expect(ring.usedBytes()).toBe(0);
  });

  it("a written message reads back with the same kind and bytes", () => {
    const ring = newRing(1024);
    const payload = pattern(37, 1);
    expect(ring.tryWrite(42, payload)).toBe(true);
    const m = ring.read();
    expect(m).not.toBeNull();
    expect(m!.kind).toBe(42);
    expect(m!.length).toBe(37);
    expect(ring.data.slice(m!.offset, m!.offset + m!.length)).toEqual(payload);
  });

  it("an empty payload and any kind other than the PAD kind (-1) round-trip", () => {
    const ring = newRing(1024);
    for (const kind of [0, 1, -2, 0x7fffffff, -0x80000000]) {
      expect(ring.tryWrite(kind, new Uint8Array(0))).toBe(true);
      const t = take(ring);
      expect(t).not.toBeNull();
      expect(t!.kind).toBe(kind);
      expect(t!.bytes.length).toBe(0);
    }
  });

  it("reserve()/commit() writes in place and reads back the same", () => {
    const ring = newRing(1024);
    const at = ring.reserve(5);
    expect(at).toBeGreaterThanOrEqual(0);
    ring.data.set([1, 2, 3, 4, 5], at);
    ring.commit(7, 5);
    const t = take(ring);
    expect(t).toEqual({ kind: 7, offset: at, bytes: new Uint8Array([1, 2, 3, 4, 5]) });
  });

  it("read() without release() returns the same message again", () => {
    const ring = newRing(1024);
    ring.tryWrite(1, pattern(10, 1));
    ring.tryWrite(2, pattern(10, 2));
    const a = ring.read();
    const b = ring.read();
    expect(b).toEqual(a);
    expect(a!.kind).toBe(1);
    ring.release();
    expect(ring.read()!.kind).toBe(2);
  });

  it("a message uses header + payload rounded up to 8 bytes, and release() frees it (usedBytes back to 0)", () => {
    const ring = newRing(1024);
    expect(ring.tryWrite(1, pattern(13, 3))).toBe(true);
    expect(ring.usedBytes()).toBe(footprint(13)); // 8 + 13 -> 24
    expect(ring.read()).not.toBeNull();
    expect(ring.usedBytes()).toBe(footprint(13)); // read() alone frees nothing
    ring.release();
    expect(ring.usedBytes()).toBe(0);
    expect(ring.read()).toBeNull();
  });

  it("misuse is rejected: release() without read(), commit() without reserve(), two open reservations, PAD kind", () => {
    const ring = newRing(1024);
    expect(() => ring.release()).toThrow(Error);
    expect(() => ring.commit(1, 0)).toThrow(Error);
    expect(ring.reserve(8)).toBeGreaterThanOrEqual(0);
    expect(() => ring.reserve(8)).toThrow(Error);
    expect(() => ring.commit(-1, 8)).toThrow(RangeError);
    ring.commit(3, 8); // the reservation survived the rejected commit
    expect(take(ring)!.kind).toBe(3);
    ring.tryWrite(1, new Uint8Array(0));
    ring.read();
    ring.release();
    expect(() => ring.release()).toThrow(Error); // one release per read
  });

  it("Ring.allocate rejects capacities below 64 or above 1 GiB and rounds down to a multiple of 8", () => {
    expect(() => Ring.allocate(63)).toThrow(RangeError);
    expect(() => Ring.allocate((1 << 30) + 8)).toThrow(RangeError);
    expect(new Ring(Ring.allocate(1031)).capacity).toBe(1024);
  });

  it("a second Ring over the same buffer sees the other side's messages", () => {
    const buffer = Ring.allocate(1024);
    const producer = new Ring(buffer);
    const consumer = new Ring(buffer);
    producer.tryWrite(9, pattern(20, 9));
    const t = take(consumer);
    expect(t!.kind).toBe(9);
    expect(t!.bytes).toEqual(pattern(20, 9));
    expect(producer.usedBytes()).toBe(0);
  });
});

describe("Ring: rewinding when drained", () => {
  it("a ring drained after every message writes below REWIND_BYTES + one message, whatever its capacity", () => {
    const ring = newRing(8 * REWIND_BYTES);
    const payload = pattern(1000, 5);
    let highest = 0;
    for (let i = 0; i < 20 * (REWIND_BYTES / footprint(1000)); i++) {
      const at = ring.reserve(payload.byteLength);
      highest = Math.max(highest, at);
      ring.data.set(payload, at);
      ring.commit(i % 100, payload.byteLength);
      const m = ring.read()!;
      expect(m.kind).toBe(i % 100);
      expect(sameBytes(ring.data.subarray(m.offset, m.offset + m.length), payload)).toBe(true);
      ring.release();
    }
    expect(highest).toBeLessThan(REWIND_BYTES + footprint(1000));
  });

  it("right after a rewind the producer can fill the whole ring before the consumer follows", () => {
    const ring = newRing(4 * REWIND_BYTES);
    const consumer = new Ring(ring.buffer);
    const big = pattern(REWIND_BYTES / 2 - 64, 3);
    // Walk the write offset past REWIND_BYTES, draining each message.
    while (true) {
      const at = ring.reserve(big.byteLength);
      ring.data.set(big, at);
      ring.commit(1, big.byteLength);
      consumer.read();
      consumer.release();
      if (at + big.byteLength >= REWIND_BYTES) break;
    }
    // Empty and past the mark: the next message starts at 0, and a burst
    // fills the ring up to its capacity, not just the bytes before the mark.
    let burst = 0;
    while (ring.tryWrite(100 + burst, big)) burst++;
    expect(burst).toBe(Math.floor(ring.capacity / footprint(big.byteLength)));
    for (let i = 0; i < burst; i++) {
      const m = consumer.read()!;
      expect(m.kind).toBe(100 + i);
      if (i === 0) expect(m.offset).toBe(HEADER_BYTES);
      expect(sameBytes(consumer.data.subarray(m.offset, m.offset + m.length), big)).toBe(true);
      consumer.release();
    }
    expect(consumer.read()).toBeNull();
    expect(ring.usedBytes()).toBe(0);
  });

  it("a ring with messages in flight does not rewind: they stay in order across the wrap", () => {
    const ring = newRing(4 * REWIND_BYTES);
    const size = 4000;
    const payloads = Array.from({ length: 16 }, (_, i) => pattern(size, i));
    let written = 0;
    let read = 0;
    let mismatches = 0;
    for (let round = 0; round < 600; round++) {
      while (ring.tryWrite(written % 1000, payloads[written % 16])) written++;
      for (let k = 0; k < 7; k++) {
        const m = ring.read();
        if (!m) break;
        if (m.kind !== read % 1000 || !sameBytes(ring.data.subarray(m.offset, m.offset + m.length), payloads[read % 16])) mismatches++;
        ring.release();
        read++;
      }
    }
    expect(mismatches).toBe(0);
    expect(read).toBe(600 * 7);
    expect(written - read).toBeGreaterThan(200); // the ring stayed nearly full: it never found itself empty
  });
});

describe("Ring: full ring", () => {
  const CAP = 256; // four 64-byte messages fill it; largest message is 128 bytes in the ring
  const FILL = 64 - HEADER_BYTES; // payload whose footprint is exactly 64

  it("reserve() returns -1 and tryWrite() returns false when the ring is completely full", () => {
    const ring = newRing(CAP);
    for (let i = 0; i < 4; i++) expect(ring.tryWrite(i, pattern(FILL, i))).toBe(true);
    expect(ring.usedBytes()).toBe(CAP);
    expect(ring.reserve(0)).toBe(-1);
    expect(ring.tryWrite(9, new Uint8Array(0))).toBe(false);
    expect(ring.usedBytes()).toBe(CAP);
  });

  it("reserve() returns -1 when the free space is smaller than the message, but not when it just fits", () => {
    const ring = newRing(CAP);
    for (let i = 0; i < 3; i++) expect(ring.tryWrite(i, pattern(FILL, i))).toBe(true);
    // 64 bytes free: a 64-byte footprint fits, a 72-byte one does not.
    expect(ring.reserve(FILL + 1)).toBe(-1);
    expect(ring.tryWrite(9, pattern(FILL + 1, 9))).toBe(false);
    const at = ring.reserve(FILL);
    expect(at).toBe(3 * 64 + HEADER_BYTES);
    ring.commit(3, FILL);
    expect(ring.usedBytes()).toBe(CAP);
  });

  it("a failed reserve() leaves no reservation open and changes nothing", () => {
    const ring = newRing(CAP);
    for (let i = 0; i < 4; i++) ring.tryWrite(i, pattern(FILL, i));
    expect(ring.reserve(1)).toBe(-1);
    expect(() => ring.commit(1, 1)).toThrow(Error); // nothing to commit
    expect(ring.reserve(1)).toBe(-1); // and no "reservation already open" error
    for (let i = 0; i < 4; i++) expect(take(ring)).toEqual({ kind: i, offset: i * 64 + HEADER_BYTES, bytes: pattern(FILL, i) });
    expect(ring.read()).toBeNull();
  });

  it("writing succeeds again once the consumer releases, and order is kept", () => {
    const ring = newRing(CAP);
    for (let i = 0; i < 4; i++) ring.tryWrite(i, pattern(FILL, i));
    expect(ring.tryWrite(4, pattern(FILL, 4))).toBe(false);
    // read() without release() does not make room
    expect(ring.read()!.kind).toBe(0);
    expect(ring.tryWrite(4, pattern(FILL, 4))).toBe(false);
    ring.release();
    expect(ring.tryWrite(4, pattern(FILL, 4))).toBe(true);
    expect(ring.tryWrite(5, pattern(FILL, 5))).toBe(false);
    expect(ring.usedBytes()).toBe(CAP);
    for (let i = 1; i <= 4; i++) {
      const t = take(ring);
      expect(t!.kind).toBe(i);
      expect(t!.bytes).toEqual(pattern(FILL, i));
    }
    expect(ring.usedBytes()).toBe(0);
  });

  it("a message that must wrap needs room for the PAD to the end as well, and fits once that is freed", () => {
    const ring = newRing(CAP);
    for (let i = 0; i < 3; i++) ring.tryWrite(i, pattern(FILL, i)); // write position 192
    take(ring); // read position 64: 128 bytes free, but only 64 before the end
    const big = FILL + 8; // footprint 72: does not fit in the 64 bytes to the end
    expect(ring.reserve(big)).toBe(-1); // would need 64 (pad) + 72 > 128
    expect(ring.tryWrite(7, pattern(big, 7))).toBe(false);
    take(ring); // 192 free now
    expect(ring.tryWrite(7, pattern(big, 7))).toBe(true);
    expect(ring.usedBytes()).toBe(64 /* msg 2 */ + 64 /* pad */ + footprint(big));
    expect(take(ring)!.kind).toBe(2);
    const wrapped = take(ring); // the PAD is skipped transparently
    expect(wrapped).toEqual({ kind: 7, offset: HEADER_BYTES, bytes: pattern(big, 7) });
    expect(ring.usedBytes()).toBe(0);
    expect(ring.read()).toBeNull();
  });
});

describe("Ring: wrap-around", () => {
  it("messages of varying sizes (forcing PADs) come out in order with identical bytes over many laps", () => {
    const CAP = 1024;
    const ring = newRing(CAP);
    const max = ring.messageBytesMax;
    const rand = rng(12345);
    const queue: { kind: number; bytes: Uint8Array }[] = [];
    let written = 0;
    let consumed = 0;
    let bytesThrough = 0;
    let pads = 0;
    let nextHeaderAt = 0; // where the next message would start if no PAD were needed
    let sawFull = 0;

    while (bytesThrough < 50 * CAP || queue.length > 0) {
      const produce = bytesThrough < 50 * CAP && (queue.length === 0 || rand() < 0.55);
      if (produce) {
        const r = rand();
        const size = r < 0.1 ? max : r < 0.3 ? Math.floor(rand() * (max + 1)) : Math.floor(rand() * 64);
        const msg = { kind: written % 1000, bytes: pattern(size, written) };
        if (ring.tryWrite(msg.kind, msg.bytes)) {
          queue.push(msg);
          written++;
          bytesThrough += footprint(size);
        } else {
          sawFull++;
          expect(ring.usedBytes()).toBeGreaterThan(CAP - footprint(size) * 2); // it really was (nearly) full
        }
      } else {
        const t = take(ring);
        const expected = queue.shift()!;
        expect(t).not.toBeNull();
        expect(t!.kind).toBe(expected.kind);
        expect(t!.bytes).toEqual(expected.bytes);
        const headerAt = t!.offset - HEADER_BYTES;
        if (headerAt !== nextHeaderAt % CAP) {
          // The only legal jump is a PAD to the end followed by a restart at 0.
          expect(headerAt).toBe(0);
          expect(CAP - (nextHeaderAt % CAP)).toBeLessThan(footprint(t!.bytes.length));
          pads++;
        }
        nextHeaderAt = headerAt + footprint(t!.bytes.length);
        consumed++;
      }
    }

    expect(consumed).toBe(written);
    expect(ring.read()).toBeNull();
    expect(ring.usedBytes()).toBe(0);
    expect(bytesThrough).toBeGreaterThanOrEqual(50 * CAP); // > 25 laps of the 2*capacity position space
    expect(pads).toBeGreaterThan(10);
    expect(sawFull).toBeGreaterThan(10);
  });

  it("the largest allowed message (messageBytesMax) fits in an empty ring at every position", () => {
    const CAP = 512;
    for (let start = 0; start < 2 * CAP; start += HEADER_BYTES) {
      const ring = newRing(CAP);
      advanceEmpty(ring, start);
      const max = ring.messageBytesMax;
      expect(max).toBe(CAP / 2 - HEADER_BYTES);
      const payload = pattern(max, start);
      expect(ring.tryWrite(5, payload), `start position ${start}`).toBe(true);
      const at = start % CAP;
      const padBytes = CAP - at < CAP / 2 ? CAP - at : 0;
      expect(ring.usedBytes()).toBe(padBytes + CAP / 2);
      const t = take(ring);
      expect(t).toEqual({ kind: 5, offset: (padBytes ? 0 : at) + HEADER_BYTES, bytes: payload });
      expect(ring.usedBytes()).toBe(0);
      // and again straight after, from wherever that left the ring
      expect(ring.tryWrite(6, payload)).toBe(true);
      expect(take(ring)).toMatchObject({ kind: 6, bytes: payload });
    }
  });

  it("two largest messages fill the ring exactly", () => {
    const ring = newRing(512);
    const max = ring.messageBytesMax;
    expect(ring.tryWrite(1, pattern(max, 1))).toBe(true);
    expect(ring.tryWrite(2, pattern(max, 2))).toBe(true);
    expect(ring.usedBytes()).toBe(512);
    expect(ring.tryWrite(3, new Uint8Array(0))).toBe(false);
    expect(take(ring)!.bytes).toEqual(pattern(max, 1));
    expect(take(ring)!.bytes).toEqual(pattern(max, 2));
  });

  it("one byte more than messageBytesMax (or a negative size) throws RangeError, on an empty or full ring", () => {
    const ring = newRing(512);
    const max = ring.messageBytesMax;
    expect(() => ring.reserve(max + 1)).toThrow(RangeError);
    expect(() => ring.tryWrite(1, new Uint8Array(max + 1))).toThrow(RangeError);
    expect(() => ring.reserve(-1)).toThrow(RangeError);
    // the throw left no reservation open
    expect(ring.tryWrite(1, pattern(max, 1))).toBe(true);
    expect(ring.tryWrite(2, pattern(max, 2))).toBe(true);
    expect(() => ring.reserve(max + 1)).toThrow(RangeError); // full: still an error, not -1
    expect(take(ring)!.kind).toBe(1);
    expect(take(ring)!.kind).toBe(2);
  });

  // capacity % 16 === 8: capacity/2 is not a multiple of 8, and messageBytesMax must still fit.
  it("messageBytesMax fits even when the capacity is not a multiple of 16", () => {
    const ring = newRing(1032); // capacity 1032, messageBytesMax 508, footprint 520 > 516
    expect(ring.tryWrite(1, new Uint8Array(ring.messageBytesMax))).toBe(true);
  });
});

describe("Ring: both sides check a message's length", () => {
  /** A ring with one message of `payloadBytes` committed, and the offset of its header in `data`. */
  function oneMessage(capacity: number, payloadBytes: number): { ring: Ring; header: number; view: DataView } {
    const ring = newRing(capacity);
    const at = ring.reserve(payloadBytes);
    ring.commit(7, payloadBytes);
    return { ring, header: at - HEADER_BYTES, view: new DataView(ring.buffer, 128) };
  }

  it("the reader throws on a header whose length is over messageBytesMax, as the writer refuses to write one", () => {
    const { ring, header, view } = oneMessage(1024, 16);
    expect(() => ring.reserve(ring.messageBytesMax + 1)).toThrow(RangeError);
    view.setUint32(header, ring.messageBytesMax + 1, true);
    expect(() => ring.read()).toThrow(/ring invariant/);
  });

  it("the reader throws on a length past what was written, or past the end of the data area", () => {
    const { ring, header, view } = oneMessage(1024, 16);
    view.setUint32(header, 24, true); // within messageBytesMax, but the next 8 bytes were never published
    expect(() => ring.read()).toThrow(/past what was written/);
    view.setUint32(header, 16, true);
    expect(take(ring)!.bytes.byteLength).toBe(16); // restored: the same message reads back
  });

  it("the reader throws on a PAD that does not run to the end of the data area", () => {
    const ring = newRing(1024);
    // 400 + 400 bytes, the first one freed: the next 400 cannot fit before the end, so a PAD goes there.
    ring.tryWrite(1, pattern(400, 1));
    ring.tryWrite(2, pattern(400, 2));
    take(ring);
    take(ring);
    ring.tryWrite(3, pattern(400, 3));
    const view = new DataView(ring.buffer, 128);
    const padAt = footprint(400) * 2;
    expect(view.getInt32(padAt + 4, true)).toBe(-1);
    view.setUint32(padAt, view.getUint32(padAt, true) - 8, true);
    expect(() => ring.read()).toThrow(/PAD/);
  });

  it("the writer refuses a commit of more bytes than it reserved", () => {
    const ring = newRing(1024);
    ring.reserve(16);
    expect(() => ring.commit(1, 17)).toThrow(RangeError);
    ring.commit(1, 16);
    expect(take(ring)!.bytes.byteLength).toBe(16);
  });
});

describe("Ring: waiting", () => {
  it("waitReadable() resolves at once when a message is there, and wakes up when one is written", async () => {
    const ring = newRing(1024);
    ring.tryWrite(1, pattern(4, 1));
    expect(await Promise.race([ring.waitReadable().then(() => "ready" as const), sleep(1000)])).toBe("ready");
    take(ring);
    const waiting = ring.waitReadable(2000).then(() => "ready" as const);
    expect(await Promise.race([waiting, sleep(20)])).toBe("timeout"); // empty: still waiting
    ring.tryWrite(2, pattern(4, 2));
    expect(await Promise.race([waiting, sleep(1000)])).toBe("ready");
  });

  it.each(["microtask", "turn"] as const)(
    "with deferNotify %s, several commits wake a waiting reader (once, when the task or iteration ends)",
    async (mode) => {
      const ring = newRing(1024);
      ring.deferNotify = mode;
      const waiting = ring.waitReadable(2000).then(() => "ready" as const);
      expect(await Promise.race([waiting, sleep(20)])).toBe("timeout");
      ring.tryWrite(1, pattern(4, 1));
      ring.tryWrite(2, pattern(4, 2));
      expect(await Promise.race([waiting, sleep(1000)])).toBe("ready");
      expect(take(ring)?.kind).toBe(1);
      expect(take(ring)?.kind).toBe(2);
      // A reader that starts waiting after the commits finds them at once.
      ring.tryWrite(3, pattern(4, 3));
      expect(await Promise.race([ring.waitReadable(2000).then(() => "ready" as const), sleep(1000)])).toBe("ready");
    },
  );

  it("waitWritable() wakes up when the consumer releases", async () => {
    const ring = newRing(256);
    for (let i = 0; i < 4; i++) ring.tryWrite(i, pattern(56, i));
    expect(ring.tryWrite(9, new Uint8Array(0))).toBe(false);
    const waiting = ring.waitWritable(2000).then(() => "woke" as const);
    expect(await Promise.race([waiting, sleep(20)])).toBe("timeout");
    take(ring);
    expect(await Promise.race([waiting, sleep(1000)])).toBe("woke");
    expect(ring.tryWrite(9, new Uint8Array(0))).toBe(true);
  });

  // The consumer drains the ring between the failed write and waitWritable(), then idles:
  // the producer must not wait for a release that already happened (lost wake-up).
  it("waitWritable() returns promptly when space was freed after the failed write", async () => {
    const ring = newRing(256);
    for (let i = 0; i < 4; i++) ring.tryWrite(i, pattern(56, i));
    expect(ring.tryWrite(9, new Uint8Array(0))).toBe(false); // producer: full, about to wait
    while (take(ring) !== null); // consumer: drains everything in the meantime, then goes idle
    const outcome = await Promise.race([ring.waitWritable(300).then(() => "woke" as const), sleep(100)]);
    expect(outcome).toBe("woke");
  });
});

// ---- cross-thread --------------------------------------------------------

const COUNT = 200_000;
const RING_BYTES = 4096;
/** Payload size of message i, shared verbatim by the worker source and the checker below. */
const SIZE_OF_SRC = "(i) => (i % 1000 === 999 ? 1500 : 4 + ((i * 7919) % 93))";
const sizeOf = new Function(`return ${SIZE_OF_SRC};`)() as (i: number) => number;
/** Upper bound on one wait of the producer; the wait normally ends on the consumer's release. */
const PRODUCER_WAIT_MS = 50;

// Plain JS, run with `eval: true`: it loads the compiled ring module and only drives it.
// A pending Atomics.waitAsync() does not keep a Node event loop alive (nodejs/node#61941), so
// without the ref'd interval the worker would silently exit (code 0) at its first waitWritable().
const PRODUCER_SRC = `
const { parentPort, workerData } = require("node:worker_threads");
const keepAlive = setInterval(() => {}, 1 << 30);
(async () => {
  const { Ring } = await import(workerData.ringUrl);
  const ring = new Ring(workerData.buffer);
  const sizeOf = ${SIZE_OF_SRC};
  const scratch = new Uint8Array(ring.messageBytesMax);
  const view = new DataView(scratch.buffer);
  let fullWaits = 0;
  let slowWaits = 0;
  for (let i = 0; i < workerData.count; i++) {
    const length = sizeOf(i);
    view.setUint32(0, i, true);
    for (let j = 4; j < length; j++) scratch[j] = (i + j) & 0xff;
    while (!ring.tryWrite(i % 7, scratch.subarray(0, length))) {
      fullWaits++;
      const t0 = Date.now();
      await ring.waitWritable(workerData.waitMs);
      if (Date.now() - t0 >= workerData.waitMs) slowWaits++;
    }
  }
  parentPort.postMessage({ done: true, fullWaits, slowWaits });
})()
  .catch((e) => parentPort.postMessage({ error: String((e && e.stack) || e) }))
  .finally(() => clearInterval(keepAlive));
`;

describe("Ring: cross-thread", () => {
  it(`a worker producer's ${COUNT} counters arrive once each, in order, intact, through a ${RING_BYTES}-byte ring`, async () => {
    const distRing = fileURLToPath(new URL("../../dist/src/ring/ring.js", import.meta.url));
    if (!existsSync(distRing)) {
      throw new Error(`compiled ring module missing at ${distRing}: run \`npx tsc -p tsconfig.json\` first (npm test does it via pretest)`);
    }
    const buffer = Ring.allocate(RING_BYTES);
    const ring = new Ring(buffer);
    const worker = new Worker(PRODUCER_SRC, {
      eval: true,
      workerData: { ringUrl: pathToFileURL(distRing).href, buffer, count: COUNT, waitMs: PRODUCER_WAIT_MS },
    });
    let failure: string | null = null;
    let report: { fullWaits: number; slowWaits: number } | null = null;
    worker.on("message", (m: { error?: string; fullWaits: number; slowWaits: number }) => {
      if (m.error !== undefined) failure = `producer failed: ${m.error}`;
      else report = m;
    });
    worker.on("error", (e) => (failure = `producer crashed: ${e.stack ?? e}`));
    worker.on("exit", (code) => {
      if (report === null) failure ??= `producer exited (code ${code}) before writing all ${COUNT} messages`;
    });

    const deadline = Date.now() + 12_000;
    let next = 0;
    let emptyWaits = 0;
    let mismatch: string | null = null;
    try {
      while (next < COUNT && mismatch === null) {
        if (failure !== null) break;
        const m = ring.read();
        if (m === null) {
          if (Date.now() > deadline) break;
          emptyWaits++;
          await ring.waitReadable(100);
          continue;
        }
        const counter =
          m.length >= 4 ? ring.data[m.offset]! | (ring.data[m.offset + 1]! << 8) | (ring.data[m.offset + 2]! << 16) | (ring.data[m.offset + 3]! << 24) : -1;
        if (counter !== next) mismatch = `expected counter ${next}, got ${counter} (length ${m.length}, kind ${m.kind})`;
        else if (m.kind !== next % 7) mismatch = `message ${next}: kind ${m.kind}, expected ${next % 7}`;
        else if (m.length !== sizeOf(next)) mismatch = `message ${next}: length ${m.length}, expected ${sizeOf(next)}`;
        else {
          for (let j = 4; j < m.length; j++) {
            if (ring.data[m.offset + j] !== ((next + j) & 0xff)) {
              mismatch = `message ${next}: byte ${j} is ${ring.data[m.offset + j]}, expected ${(next + j) & 0xff}`;
              break;
            }
          }
        }
        ring.release();
        next++;
      }
      expect(failure).toBeNull();
      expect(mismatch).toBeNull();
      expect(next, `timed out after ${next} of ${COUNT} messages`).toBe(COUNT);
      // The producer finished: nothing extra is left behind.
      while (report === null && failure === null && Date.now() < deadline) await sleep(5);
      expect(failure).toBeNull();
      expect(report).not.toBeNull();
      expect(ring.read()).toBeNull();
      expect(ring.usedBytes()).toBe(0);
      // Both "full" and "empty" were actually hit, so the waits were exercised.
      expect(report!.fullWaits).toBeGreaterThan(0);
      expect(emptyWaits).toBeGreaterThan(0);
    } finally {
      await worker.terminate();
    }
  }, 15_000);
});
