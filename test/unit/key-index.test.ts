// The snapshot key index (src/shard/key-index.ts) against a model: after any
// run of appends (with and without keys, with skipped seqs) and retention
// cuts, its cut is the newest retained event of every key in seq order, it
// knows which seqs it missed, and it refuses the key past keysMax.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { KeyIndex } from "../../src/shard/key-index.js";

type Step = { kind: "add"; key: number | null; skip: number } | { kind: "retain"; by: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      kind: fc.constant("add" as const),
      key: fc.option(fc.nat(40), { freq: 5 }),
      skip: fc.oneof({ weight: 9, arbitrary: fc.constant(0) }, fc.nat(3)),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("retain" as const), by: fc.nat(30) }) },
);

describe("snapshot key index", () => {
  it("its cut is the newest retained event of every key, ascending by seq, whatever the appends and retention", () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 3000 }), fc.integer({ min: 1, max: 50 }), (steps, keysMax) => {
        const index = new KeyIndex(keysMax, 1);
        const log: Array<{ seq: number; key: string | null }> = [];
        let seq = 0;
        let first = 1;
        let missing = 0;
        for (const st of steps) {
          if (st.kind === "retain") {
            first = Math.min(seq + 1, first + st.by);
            index.forgetBelow(first);
            if (missing < first) missing = 0;
            continue;
          }
          if (st.skip > 0) missing = seq + st.skip;
          seq += st.skip + 1;
          const key = st.key === null ? null : `k${st.key}`;
          log.push({ seq, key });
          const newest = new Map<string, number>();
          for (const e of log) if (e.seq >= first && e.key !== null) newest.set(e.key, e.seq);
          const ok = index.add(key, seq);
          expect(ok).toBe(newest.size <= keysMax);
          if (!ok) return; // the caller gives the index up here
          expect(index.cut()).toEqual(Float64Array.from([...newest.values()].sort((a, b) => a - b)));
          expect(index.size).toBe(newest.size);
          expect(index.missingTo).toBe(missing);
          if (key !== null) expect(index.get(key)).toBe(seq);
        }
      }),
      { numRuns: 200 },
    );
  });

  it("a key updated again and again keeps the index within about twice its keys", () => {
    const index = new KeyIndex(10, 1);
    for (let seq = 1; seq <= 100_000; seq++) index.add(`k${seq % 3}`, seq);
    expect(index.cut()).toEqual(Float64Array.from([99_998, 99_999, 100_000]));
    // Entries, live and stale: reached through a cut's cost, bounded by the compaction rule.
    expect((index as unknown as { keys: string[] }).keys.length).toBeLessThanOrEqual(2 * 3 + 1024 + 1);
  });

  it("skipTo marks what the log could not give as missing until retention passes it", () => {
    const index = new KeyIndex(10, 1);
    index.add("a", 1);
    index.skipTo(5);
    expect(index.missingTo).toBe(5);
    index.add("b", 6);
    index.forgetBelow(5);
    expect(index.missingTo).toBe(5);
    index.forgetBelow(6);
    expect(index.missingTo).toBe(0);
    expect([...index.cut()]).toEqual([6]);
  });
});
