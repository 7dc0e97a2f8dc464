// The idempotency window answers a duplicate with the original seq only while
// that seq exists and is inside the window: retention and expiry forget keys,
// oldest first, and never a newer entry of the same key.
import { describe, it, expect } from "vitest";
import fc from "fast-check";
import { DedupWindow } from "../../src/shard/dedup.js";

describe("idempotency window forgetting", () => {
  it("forgets keys whose seq retention deleted, and keeps the one at first_seq", () => {
    const w = new DedupWindow(1e9, 100);
    for (let seq = 1; seq <= 6; seq++) w.add(`k${seq}`, seq, 1_000 + seq);
    w.forgetBelow(4);
    expect([1, 2, 3, 4, 5, 6].map((s) => w.get(`k${s}`))).toEqual([undefined, undefined, undefined, 4, 5, 6]);
    expect(w.size).toBe(3);
    w.forgetBelow(4); // nothing more to forget
    expect(w.size).toBe(3);
    w.forgetBelow(100);
    expect(w.size).toBe(0);
  });

  it("forgets the keys of records a failed sync cut, from the given seq on, and keeps the rest", () => {
    const w = new DedupWindow(1e9, 100);
    for (let seq = 1; seq <= 6; seq++) w.add(`k${seq}`, seq, 1_000 + seq);
    w.forgetFrom(5);
    expect([1, 2, 3, 4, 5, 6].map((s) => w.get(`k${s}`))).toEqual([1, 2, 3, 4, undefined, undefined]);
    w.add("k5", 5, 1_010); // the retry appends again at the same seq
    expect(w.get("k5")).toBe(5);
    w.forgetBelow(3);
    w.forgetFrom(1); // past the front: everything goes, nothing breaks
    expect(w.size).toBe(0);
  });

  it("a key appended again keeps its newer seq when retention passes the old one", () => {
    const w = new DedupWindow(1e9, 100);
    w.add("k", 1, 1_000);
    w.add("other", 2, 1_001);
    w.add("k", 3, 1_002);
    w.forgetBelow(3);
    expect(w.get("k")).toBe(3);
    expect(w.get("other")).toBeUndefined();
  });

  it("expiry follows a changed window", () => {
    const w = new DedupWindow(10_000, 100);
    w.add("a", 1, 1_000);
    w.add("b", 2, 5_000);
    w.expire(6_000);
    expect(w.size).toBe(2);
    w.setWindow(2_000);
    w.expire(6_000); // cutoff 4_000: a goes, b stays
    expect([w.get("a"), w.get("b")]).toEqual([undefined, 2]);
    w.setWindow(0);
    w.add("c", 3, 6_000);
    expect(w.get("c")).toBeUndefined();
  });

  it("stays exact over long runs of adds, expiry and retention (the window's arrays are compacted on the way)", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            { weight: 8, arbitrary: fc.record({ op: fc.constant("add" as const), key: fc.integer({ min: 0, max: 300 }), dt: fc.integer({ min: 0, max: 5 }) }) },
            { weight: 1, arbitrary: fc.record({ op: fc.constant("expire" as const), dt: fc.integer({ min: 0, max: 400 }) }) },
            { weight: 1, arbitrary: fc.record({ op: fc.constant("forget" as const), back: fc.integer({ min: 0, max: 500 }) }) },
            { weight: 1, arbitrary: fc.record({ op: fc.constant("cut" as const), back: fc.integer({ min: 0, max: 40 }) }) },
          ),
          { minLength: 3000, maxLength: 3500 },
        ),
        (ops) => {
          const windowMs = 300;
          // Never full here (the bound has its own test): what goes is what expiry and retention drop.
          const w = new DedupWindow(windowMs, 1_000_000);
          // The model: every add, in order; a key's answer is its newest entry while that one lives.
          const entries: Array<{ key: string; seq: number; ts: number; live: boolean }> = [];
          let seq = 0;
          let now = 0;
          let firstSeq = 1;
          for (const o of ops) {
            if (o.op === "add") {
              now += o.dt;
              seq++;
              w.add(`k${o.key}`, seq, now);
              entries.push({ key: `k${o.key}`, seq, ts: now, live: true });
            } else if (o.op === "expire") {
              w.expire(now + o.dt);
              for (const e of entries) if (e.ts < now + o.dt - windowMs) e.live = false;
            } else if (o.op === "cut") {
              // A failed sync cut the last `back` records: their seqs are given again.
              const head = Math.max(firstSeq - 1, seq - o.back);
              w.forgetFrom(head + 1);
              for (let i = entries.length - 1; i >= 0 && entries[i].seq > head; i--) {
                // The window keeps one seq per key: a key added again loses its older entry too.
                for (const e of entries) if (e.key === entries[i].key) e.live = false;
                entries.pop();
              }
              seq = head;
            } else {
              firstSeq = Math.max(firstSeq, seq - o.back);
              w.forgetBelow(firstSeq);
              for (const e of entries) if (e.seq < firstSeq) e.live = false;
            }
          }
          for (let k = 0; k <= 300; k++) {
            const newest = entries.findLast((e) => e.key === `k${k}`);
            // An older entry of a key that was added again is never the answer.
            expect(w.get(`k${k}`)).toBe(newest?.live ? newest.seq : undefined);
          }
        },
      ),
      { numRuns: 3 },
    );
  });

  it("the window's memory stays proportional to the keys it holds, however many went through it", () => {
    const w = new DedupWindow(1_000, 1_000_000);
    for (let i = 0; i < 100_000; i++) {
      w.add(`k${i}`, i + 1, i);
      if (i % 100 === 0) w.expire(i);
    }
    // ~1,100 keys live; the order arrays are compacted once their dropped front passes half.
    const held = (w as unknown as { keys: string[] }).keys.length;
    expect(w.size).toBeLessThanOrEqual(1_101);
    expect(held).toBeLessThanOrEqual(2 * w.size + 2 * 1024);
    expect(w.get("k99999")).toBe(100_000);
    expect(w.get("k98999")).toBe(99_000);
  });
});
