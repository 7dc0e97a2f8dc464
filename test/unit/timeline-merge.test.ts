// The timeline order and its k-way merge (src/timeline/merge.ts): the heap
// gives items in order whatever was pushed, and merging sorted runs gives the
// sort of their union, cut where the caller stops taking.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { compareKeys, Heap, keyOrder, type EventKey } from "../../src/timeline/merge.js";

const key = (ts: number, stream: string, seq: number): EventKey => ({ ts, stream, seq });

const keyArb = fc.record({
  ts: fc.integer({ min: 0, max: 20 }),
  stream: fc.constantFrom("a", "b", "B", "a.1", "z-9", "0"),
  seq: fc.integer({ min: 1, max: 50 }),
});

describe("the timeline order", () => {
  it("orders by ingest_ts, then stream id, then seq", () => {
    expect(compareKeys(key(1, "z", 9), key(2, "a", 1))).toBeLessThan(0);
    expect(compareKeys(key(5, "a", 9), key(5, "b", 1))).toBeLessThan(0);
    expect(compareKeys(key(5, "b", 2), key(5, "b", 3))).toBeLessThan(0);
    expect(compareKeys(key(5, "b", 3), key(5, "b", 3))).toBe(0);
    // Byte order of ids: upper case before lower case, digits before both.
    expect(compareKeys(key(5, "B", 1), key(5, "a", 1))).toBeLessThan(0);
    expect(compareKeys(key(5, "0", 1), key(5, "B", 1))).toBeLessThan(0);
  });

  it("is a total order: antisymmetric and transitive on any keys", () => {
    fc.assert(
      fc.property(keyArb, keyArb, keyArb, (a, b, c) => {
        // Opposite signs, or both 0 (the sum, since 0 and -0 differ to toBe).
        expect(Math.sign(compareKeys(a, b)) + Math.sign(compareKeys(b, a))).toBe(0);
        if (compareKeys(a, b) <= 0 && compareKeys(b, c) <= 0) expect(compareKeys(a, c)).toBeLessThanOrEqual(0);
      }),
    );
  });

  it("backward is forward reversed", () => {
    const fwd = keyOrder("forward");
    const bwd = keyOrder("backward");
    fc.assert(
      fc.property(keyArb, keyArb, (a, b) => {
        expect(bwd(a, b)).toBe(fwd(b, a));
      }),
    );
  });
});

describe("the heap", () => {
  it("pops every pushed item in order, with pushes and replaceTop in between", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: -100, max: 100 }), fc.constantFrom("push", "pop", "replace")), { maxLength: 300 }), (ops) => {
        const h = new Heap<number>((a, b) => a < b);
        const model: number[] = [];
        for (const [v, op] of ops) {
          if (op === "push" || (op === "replace" && model.length === 0)) {
            h.push(v);
            model.push(v);
          } else if (op === "pop") {
            model.sort((a, b) => a - b);
            expect(h.pop()).toBe(model.shift());
          } else {
            model.sort((a, b) => a - b);
            model[0] = v;
            h.replaceTop(v);
          }
          expect(h.size).toBe(model.length);
          if (model.length > 0) expect(h.peek()).toBe(Math.min(...model));
        }
        const rest: number[] = [];
        for (let x = h.pop(); x !== undefined; x = h.pop()) rest.push(x);
        expect(rest).toEqual(model.sort((a, b) => a - b));
      }),
    );
  });

  it("refuses replaceTop on an empty heap", () => {
    expect(() => new Heap<number>((a, b) => a < b).replaceTop(1)).toThrow(/empty heap/);
  });
});

/** Sorted, distinct keys per stream, as a stream's log holds them: seq ascending, ts never decreasing. */
const streamArb = (stream: string) =>
  fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 40 }).map((steps) => {
    let ts = 0;
    return steps.map((step, i) => {
      ts += step;
      return key(ts, stream, i + 1);
    });
  });

describe("merging sorted runs with the heap (as a page merges its sources)", () => {
  it("gives the sort of their union, forward and backward", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.constantFrom("a", "b", "c", "D", "e.1"), { maxLength: 5 }).chain((ids) => fc.tuple(...ids.map(streamArb))),
        (runs: EventKey[][]) => {
          const all = runs.flat();
          for (const direction of ["forward", "backward"] as const) {
            const before = keyOrder(direction);
            const sorted = [...all].sort((a, b) => (direction === "forward" ? compareKeys(a, b) : compareKeys(b, a)));
            const inputs = runs.map((r) => (direction === "forward" ? r : [...r].reverse()));
            type Head = { run: number; at: number };
            const key = (h: Head) => inputs[h.run][h.at];
            const heads = new Heap<Head>((x, y) => before(key(x), key(y)));
            inputs.forEach((r, run) => r.length > 0 && heads.push({ run, at: 0 }));
            const out: EventKey[] = [];
            for (let h = heads.peek(); h; h = heads.peek()) {
              out.push(key(h));
              if (h.at + 1 < inputs[h.run].length) heads.replaceTop({ run: h.run, at: h.at + 1 });
              else heads.pop();
            }
            expect(out).toEqual(sorted);
          }
        },
      ),
    );
  });
});
