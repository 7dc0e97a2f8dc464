// Rounds of live writes (src/front/consume/delivery.ts): a round to many
// caught-up consumers goes in slices with the event loop served between them,
// what comes during a round goes out after it (or from the log once it is
// more than one message), and the pause between rounds adapts to how long
// the last one took, up to consumer_coalesce_ms_max. Socket writes take
// FakeClock.sendCostMs each, so a round's length is known.
import { describe, it, expect } from "vitest";
import { configSchema, type Config } from "../../src/config.js";
import { range, world, type FakeSocket } from "../helpers/consume-world.js";

/** `n` consumers of `stream` from its head, caught up. */
function consumers(w: ReturnType<typeof world>, stream: string, n: number): FakeSocket[] {
  return Array.from({ length: n }, () => w.connect(stream, "from=latest"));
}

/**
 * 200 caught-up consumers of "q", writes of 0.1 ms each (a round of 20 ms,
 * five slices of ~4 ms), and a first batch of 2 events pushed: returns once
 * the round's first slice is written, with the page reads made so far.
 */
function roundUnderWay(w: ReturnType<typeof world>): { socks: FakeSocket[]; reads: number } {
  w.shards.create("q", 0);
  const socks = consumers(w, "q", 200);
  const reads = w.shards.pageReads;
  w.clock.sendCostMs = 0.1;
  w.shards.append("q", 2);
  w.shards.out.shift()!(); // the push
  w.clock.immediates.shift()!(); // the round's first slice
  return { socks, reads };
}

/**
 * `n` caught-up consumers, writes of 1 ms each: a first round of one event
 * written to all of them, then a second event pushed, whose round waits for
 * the pause (or has gone out, with no pause).
 */
function secondRoundWaiting(config: Partial<Config>, n: number): ReturnType<typeof world> & { socks: FakeSocket[] } {
  const w = world(config);
  w.shards.create("q", 0);
  const socks = consumers(w, "q", n);
  w.clock.sendCostMs = 1;
  w.shards.append("q", 1);
  w.settle();
  expect(socks[n - 1].seqs()).toEqual([1]);
  w.shards.append("q", 1);
  w.settle();
  return { ...w, socks };
}

describe("consume hub: rounds of live writes", () => {
  it("a round to many consumers goes in slices; what is published meanwhile reaches every consumer once, in order, after it", () => {
    const w = world();
    const { socks, reads } = roundUnderWay(w);
    const reached = socks.filter((s) => s.seqs().length > 0).length;
    expect(reached).toBeGreaterThan(0);
    expect(reached).toBeLessThan(200);

    w.shards.append("q", 3);
    w.settle();
    w.advance(25); // the pause after a 20 ms round
    for (const s of socks) expect(s.seqs()).toEqual(range(1, 5));
    // Everyone stayed live: the second batch went out as one more message, not from the log.
    expect(w.shards.pageReads).toBe(reads);
  });

  it("more than one message's worth published during a round goes to the consumers it had not reached from the log: no gap, no duplicate", () => {
    // liveMessageBytesMax is 2 x consume_page_bytes_max: 8 KiB here, ~110 rendered events.
    const w = world({ consume_page_bytes_max: 4096 });
    const { socks, reads } = roundUnderWay(w);
    for (let i = 0; i < 3; i++) w.shards.append("q", 60);
    w.settle();
    w.advance(100);
    for (const s of socks) expect(s.seqs()).toEqual(range(1, 182));
    expect(w.shards.pageReads).toBeGreaterThan(reads);
  });

  it("the pause after a round is as long as the round took, at most consumer_coalesce_ms_max", () => {
    // 10 consumers, a round of 10 ms, the bound 5 ms.
    const w = secondRoundWaiting({ consumer_coalesce_ms_max: 5 }, 10);
    w.advance(4);
    expect(w.socks[0].seqs()).toEqual([1]);
    w.advance(1);
    for (const s of w.socks) expect(s.seqs()).toEqual([1, 2]);

    // A round shorter than the bound (3 consumers, 3 ms): the pause is the round's length.
    const v = secondRoundWaiting({ consumer_coalesce_ms_max: 1000 }, 3);
    v.advance(2);
    expect(v.socks[0].seqs()).toEqual([1]);
    v.advance(1);
    for (const s of v.socks) expect(s.seqs()).toEqual([1, 2]);
  });

  it("with consumer_coalesce_ms_max 0 the next round starts as soon as the last ends", () => {
    const w = secondRoundWaiting({ consumer_coalesce_ms_max: 0 }, 10);
    for (const s of w.socks) expect(s.seqs()).toEqual([1, 2]);
  });

  it("consumer_coalesce_ms_max takes 0 to 1000 ms", () => {
    expect(configSchema.parse({ consumer_coalesce_ms_max: 1000 }).consumer_coalesce_ms_max).toBe(1000);
    expect(() => configSchema.parse({ consumer_coalesce_ms_max: 1001 })).toThrow();
    expect(() => configSchema.parse({ consumer_coalesce_ms_max: -1 })).toThrow();
  });
});
