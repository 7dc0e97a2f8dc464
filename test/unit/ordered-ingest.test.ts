// Ordered ingest's rule, without a server: per producer the stream appends
// producer_seq in order, holds what runs ahead, tombstones a gap once it has
// waited gap_timeout_ms, and calls late or repeated seqs duplicates.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { OrderedIngest, type OrderedIngestLimits, type Release } from "../../src/shard/ordered-ingest.js";

const LIMITS: OrderedIngestLimits = { producersMax: 100, gapTimeoutMs: 5000, producerIdleMs: 60_000 };

const seqsOf = (out: Release<string>[]) => out.map((r) => (r.kind === "event" ? r.producerSeq : `gap ${r.fromSeq}-${r.toSeq}`));

describe("ordered ingest", () => {
  it("holds an event that runs ahead and appends it with the one it waited for, in order", () => {
    const o = new OrderedIngest<string>(LIMITS);
    const out: Release<string>[] = [];
    expect(o.offer("a", 1, "a1", 0, out)).toBe("append");
    expect(o.offer("a", 3, "a3", 10, out)).toBe("held");
    expect(o.offer("a", 4, "a4", 20, out)).toBe("held");
    expect(o.offer("a", 4, "a4 again", 25, out)).toBe("duplicate"); // a retry of a held event
    expect(o.held).toBe(2);
    expect(seqsOf(out)).toEqual([1]);
    expect(o.offer("a", 2, "a2", 30, out)).toBe("append");
    expect(seqsOf(out)).toEqual([1, 2, 3, 4]);
    expect(out.map((r) => (r.kind === "event" ? r.item : ""))).toEqual(["a1", "a2", "a3", "a4"]);
    expect(o.held).toBe(0);
  });

  it("a gap that waits gap_timeout_ms gets a tombstone for exactly the missing range, then the held events; a late one is a duplicate", () => {
    const o = new OrderedIngest<string>(LIMITS);
    const out: Release<string>[] = [];
    o.offer("a", 1, "a1", 0, out);
    o.offer("a", 5, "a5", 100, out);
    o.expire(5099, out);
    expect(seqsOf(out)).toEqual([1]);
    expect(o.nextDeadlineMs()).toBe(5100);
    o.expire(5100, out);
    expect(seqsOf(out)).toEqual([1, "gap 2-4", 5]);
    expect(o.offer("a", 3, "late", 6000, out)).toBe("duplicate");
    expect(o.offer("a", 5, "again", 6000, out)).toBe("duplicate");
    expect(o.offer("a", 6, "a6", 6000, out)).toBe("append");
  });

  it("a producer the stream does not know starts at 1; a first event above 1 waits, and then starts it without a tombstone", () => {
    const o = new OrderedIngest<string>(LIMITS);
    const out: Release<string>[] = [];
    expect(o.offer("b", 7, "b7", 0, out)).toBe("held");
    expect(o.offer("b", 6, "b6", 1, out)).toBe("held"); // the late one before it is ordered, not lost
    o.expire(5000, out);
    expect(seqsOf(out)).toEqual([6, 7]);
    // One base: 0, fractions and NaN are refused (the wire check answers 400 before this).
    for (const bad of [0, -1, 2.5, Number.NaN, 2 ** 53]) expect(() => o.offer("c", bad, "x", 0, out)).toThrow(RangeError);
  });

  it("is bounded: past producers_max a new producer is refused; idle producers are forgotten (held events are the caller's bound)", () => {
    const o = new OrderedIngest<string>({ ...LIMITS, producersMax: 2, producerIdleMs: 1000 });
    const out: Release<string>[] = [];
    o.offer("a", 1, "a1", 0, out);
    expect(o.offer("a", 3, "x", 0, out)).toBe("held");
    expect(o.offer("a", 4, "x", 0, out)).toBe("held");
    expect(o.held).toBe(2);
    expect(o.offer("b", 1, "b1", 0, out)).toBe("append");
    expect(o.offer("c", 1, "c1", 0, out)).toBe("producers_full");
    o.offer("a", 2, "a2", 10, out); // releases 3, 4
    o.expire(2000, out);
    expect(o.producerCount).toBe(0);
    expect(o.offer("c", 1, "c1", 2000, out)).toBe("append");
  });

  it("for any arrival order, loss and timing: each producer's output is in producer_seq order, every event once, gaps tombstoned exactly, none held past the timeout", () => {
    const TICK_MS = 100;
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            events: fc.integer({ min: 1, max: 40 }),
            lost: fc.array(fc.integer({ min: 1, max: 40 }), { maxLength: 5 }),
            repeats: fc.array(fc.integer({ min: 1, max: 40 }), { maxLength: 5 }),
          }),
          { minLength: 1, maxLength: 6 },
        ),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        fc.integer({ min: 0, max: 30 }),
        (producers, seed, jitterTicks) => {
          // Every producer's events, with repeats, minus the lost ones; each sent at a tick
          // near its seq's place, so they arrive out of order by up to jitterTicks.
          let rnd = seed;
          const next = () => (rnd = (Math.imul(rnd, 1103515245) + 12345) >>> 0) / 2 ** 32;
          const sends: Array<{ p: string; seq: number; at: number }> = [];
          producers.forEach((pr, i) => {
            for (let seq = 1; seq <= pr.events; seq++) {
              if (pr.lost.includes(seq)) continue;
              sends.push({ p: `p${i}`, seq, at: seq * 2 + Math.floor(next() * jitterTicks) });
            }
            for (const seq of pr.repeats) if (seq <= pr.events && !pr.lost.includes(seq)) sends.push({ p: `p${i}`, seq, at: 90 + Math.floor(next() * 20) });
          });
          sends.sort((a, b) => a.at - b.at);
          const o = new OrderedIngest<string>({ ...LIMITS, gapTimeoutMs: 10 * TICK_MS });
          const out: Release<string>[] = [];
          const receivedAt = new Map<string, number>();
          // Per producer, the highest seq appended or tombstoned so far, and when each gap went out.
          const settled = new Map<string, number>();
          const gapsOut: Array<{ p: string; from: number; to: number; at: number }> = [];
          const sentAt = new Map<string, number>();
          const releasedAt = new Map<string, number>();
          let now = 0;
          let i = 0;
          const note = (from: number) => {
            for (let k = from; k < out.length; k++) {
              const r = out[k];
              if (r.kind === "event" && !releasedAt.has(r.item)) releasedAt.set(r.item, now);
              if (r.kind === "gap") gapsOut.push({ p: r.producerId, from: r.fromSeq, to: r.toSeq, at: now });
              settled.set(r.producerId, r.kind === "gap" ? r.toSeq : r.producerSeq);
            }
          };
          for (let tick = 0; tick < 400; tick++) {
            now = tick * TICK_MS;
            while (i < sends.length && sends[i].at <= tick) {
              const s = sends[i++];
              const item = `${s.p}:${s.seq}`;
              const before = out.length;
              const repeat = receivedAt.has(item);
              const d = o.offer(s.p, s.seq, item, now, out);
              if (d === "append" || d === "held") {
                expect(repeat).toBe(false); // a repeat is never taken twice
                receivedAt.set(item, now);
              } else {
                expect(d).toBe("duplicate");
                // Only a repeat, or a seq already appended or tombstoned, is a duplicate: never a first send that was still awaited.
                expect(repeat || s.seq <= (settled.get(s.p) ?? 0), `${item} called a duplicate`).toBe(true);
                if (!repeat) sentAt.set(item, now);
              }
              note(before);
            }
            const before = out.length;
            o.expire(now, out);
            note(before);
          }
          expect(o.held).toBe(0);
          // Per producer: events strictly ascending; a gap tombstone covers exactly what lies between.
          const perProducer = new Map<string, Release<string>[]>();
          for (const r of out) perProducer.set(r.producerId, [...(perProducer.get(r.producerId) ?? []), r]);
          for (const [p, rs] of perProducer) {
            let last = 0;
            for (const r of rs) {
              if (r.kind === "gap") {
                expect(r.fromSeq, p).toBe(last + 1);
                expect(r.toSeq).toBeGreaterThanOrEqual(r.fromSeq);
                last = r.toSeq;
              } else {
                expect(r.producerSeq, p).toBeGreaterThan(last);
                if (last > 0) expect(r.producerSeq, `${p} after ${last}`).toBe(last + 1);
                last = r.producerSeq;
              }
            }
          }
          // A seq inside a tombstoned gap was lost, or came only after its gap went out.
          for (const g of gapsOut) {
            for (let seq = g.from; seq <= g.to; seq++) {
              const item = `${g.p}:${seq}`;
              expect(receivedAt.has(item), `${item} was taken, yet tombstoned`).toBe(false);
              const late = sentAt.get(item);
              if (late !== undefined) expect(late).toBeGreaterThanOrEqual(g.at);
            }
          }
          // Every event taken went out once, within the timeout (plus the tick expire() runs on).
          const events = out.filter((r) => r.kind === "event");
          expect(new Set(events.map((r) => (r.kind === "event" ? r.item : ""))).size).toBe(events.length);
          expect(events.length).toBe(receivedAt.size);
          for (const [item, at] of receivedAt)
            expect((releasedAt.get(item) ?? Number.POSITIVE_INFINITY) - at, item).toBeLessThanOrEqual(10 * TICK_MS + TICK_MS);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("a batch rolled back changes nothing: afterwards it behaves exactly like one that never saw the batch", () => {
    const offerArb = fc.record({ p: fc.constantFrom("a", "b", "c"), seq: fc.integer({ min: 1, max: 12 }), dt: fc.integer({ min: 0, max: 3000 }) });
    fc.assert(
      fc.property(
        fc.array(offerArb, { maxLength: 20 }),
        fc.array(offerArb, { minLength: 1, maxLength: 20 }),
        fc.array(offerArb, { maxLength: 20 }),
        (before, batch, after) => {
          const limits = { ...LIMITS, producersMax: 2, gapTimeoutMs: 4000 };
          const tried = new OrderedIngest<string>(limits);
          const twin = new OrderedIngest<string>(limits);
          const outs: [Release<string>[], Release<string>[]] = [[], []];
          let now = 0;
          const run = (ops: typeof before, both: boolean) => {
            for (const op of ops) {
              now += op.dt;
              const item = `${op.p}${op.seq}@${now}`;
              const d = tried.offer(op.p, op.seq, item, now, outs[0]);
              if (both) expect(twin.offer(op.p, op.seq, item, now, outs[1])).toBe(d);
              tried.expire(now, outs[0]);
              if (both) twin.expire(now, outs[1]);
            }
          };
          run(before, true);
          const start = now;
          tried.begin();
          const scratch: Release<string>[] = [];
          for (const op of batch) tried.offer(op.p, op.seq, `batch ${op.p}${op.seq}`, start, scratch);
          tried.rollback();
          expect([tried.held, tried.producerCount, tried.nextDeadlineMs()]).toEqual([twin.held, twin.producerCount, twin.nextDeadlineMs()]);
          run(after, true);
          now += 100_000;
          tried.expire(now, outs[0]);
          twin.expire(now, outs[1]);
          expect(outs[0]).toEqual(outs[1]);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("start-up: producers come back from the log, held events from the file; what the log has is dropped, what now follows is released", () => {
    const o = new OrderedIngest<string>(LIMITS);
    o.restore("a", 4, 1000);
    expect(o.restoreHeld("a", 3, "a3", 900)).toBe(false); // in the log already
    expect(o.restoreHeld("a", 5, "a5", 950)).toBe(true); // its release was not written before the crash
    expect(o.restoreHeld("a", 7, "a7", 960)).toBe(true);
    expect(o.restoreHeld("b", 2, "b2", 970)).toBe(true); // a producer the log does not show: waits for 1
    const out: Release<string>[] = [];
    o.releaseRestored(out);
    expect(seqsOf(out)).toEqual([5]);
    expect(o.held).toBe(2);
    expect([...o.heldItems()].sort()).toEqual(["a7", "b2"]);
    expect(o.isHeld("a", 7)).toBe(true);
    expect(o.nextDeadlineMs()).toBe(960 + LIMITS.gapTimeoutMs); // the timers resume from the receipt times
    o.expire(960 + LIMITS.gapTimeoutMs, out);
    expect(seqsOf(out)).toEqual([5, "gap 6-6", 7]);
    o.expire(970 + LIMITS.gapTimeoutMs, out);
    expect(seqsOf(out)).toEqual([5, "gap 6-6", 7, 2]);
  });
});
