// The fault suite's checker on hand-made histories: a clean run passes, and
// each way of breaking a promise is counted where it belongs.
import { describe, it, expect } from "vitest";
import { History, failures, type ReplayedEvent } from "../faults/history.js";

const ev = (b: string, n: number, i: number, key?: string) => ({ payload: { b, n, i }, ...(key ? { idempotency_key: key } : {}) });
const batch = (b: string, n: number, keyed = false) => Array.from({ length: n }, (_, i) => ev(b, n, i, keyed ? `${b}:${i}` : undefined));
const replay = (...events: Array<[number, unknown]>): ReplayedEvent[] => events.map(([seq, payload]) => ({ seq, payload }));
const ok = (first: number, n: number) => ({ first_seq: first, last_seq: first + n - 1, count: n, duplicates: [] });

/** Stream "s": batch A (seqs 1-2) and B (3-4) acked; a group consumed and acked through 4. */
function cleanRun(): { h: History; events: ReplayedEvent[] } {
  const h = new History();
  h.published("s", ok(1, 2), batch("A", 2));
  h.published("s", ok(3, 2), batch("B", 2, true));
  h.checkpoint("s", "g", 0);
  const c = h.session("s", "g");
  c.hello(1, true);
  const events = replay([1, ev("A", 2, 0).payload], [2, ev("A", 2, 1).payload], [3, ev("B", 2, 0).payload], [4, ev("B", 2, 1).payload]);
  for (const e of events) c.deliver(e.seq, e.payload);
  c.ack(4);
  h.checkpoint("s", "g", 4);
  return { h, events };
}

describe("history checker", () => {
  it("a clean run has every failure count at 0 and counts what it saw", () => {
    const { h, events } = cleanRun();
    const c = h.check(new Map([["s", events]]));
    expect(failures(c)).toEqual({});
    expect(c).toMatchObject({ acked: 4, replayed: 4, delivered: 4 });
  });

  it("an acknowledged event missing from the replay is lost", () => {
    const { h, events } = cleanRun();
    expect(failures(h.check(new Map([["s", events.slice(0, 3)]])))).toMatchObject({ lost: 1 });
  });

  it("an acknowledged seq replayed with another payload is lost", () => {
    const { h, events } = cleanRun();
    const changed = events.map((e) => (e.seq === 2 ? { seq: 2, payload: { b: "A", n: 2, i: 1, x: 1 } } : e));
    expect(failures(h.check(new Map([["s", changed]])))).toMatchObject({ lost: 1 });
  });

  it("a seq twice in the replay is a duplicate", () => {
    const { h, events } = cleanRun();
    const twice = [...events.slice(0, 2), events[1], ...events.slice(2)];
    expect(failures(h.check(new Map([["s", twice]])))).toMatchObject({ duplicated: 1 });
  });

  it("a keyed payload appended twice (a retry the dedup missed) is a duplicate", () => {
    const { h, events } = cleanRun();
    const again = [...events, { seq: 5, payload: events[2].payload }];
    expect(failures(h.check(new Map([["s", again]])))).toMatchObject({ duplicated: 1 });
  });

  it("a keyed retry answered with duplicates pointing at the original seqs is clean", () => {
    const { h, events } = cleanRun();
    h.published(
      "s",
      {
        first_seq: 5,
        last_seq: 4,
        count: 0,
        duplicates: [
          { index: 0, seq: 3 },
          { index: 1, seq: 4 },
        ],
      },
      batch("B", 2, true),
    );
    expect(failures(h.check(new Map([["s", events]])))).toEqual({});
  });

  it("a duplicates entry pointing at a seq that holds another payload is lost", () => {
    const { h, events } = cleanRun();
    h.published(
      "s",
      {
        first_seq: 5,
        last_seq: 4,
        count: 0,
        duplicates: [
          { index: 0, seq: 1 },
          { index: 1, seq: 4 },
        ],
      },
      batch("B", 2, true),
    );
    expect(failures(h.check(new Map([["s", events]])))).toMatchObject({ lost: 1 });
  });

  it("a seq below the one before it is reordered", () => {
    const { h, events } = cleanRun();
    const swapped = [events[0], events[2], events[1], events[3]];
    expect(failures(h.check(new Map([["s", swapped]])))).toMatchObject({ reordered: 1 });
  });

  it("a hole in the replay seqs is a gap", () => {
    const { h, events } = cleanRun();
    const holed = [...events, ...replay([6, { b: "C", n: 1, i: 0 }])];
    expect(failures(h.check(new Map([["s", holed]])))).toMatchObject({ gaps: 1 });
  });

  it("a batch only partly in the replay is a half batch", () => {
    const { h, events } = cleanRun();
    const half = [...events, ...replay([5, { b: "C", n: 3, i: 0 }], [6, { b: "C", n: 3, i: 1 }])];
    expect(failures(h.check(new Map([["s", half]])))).toMatchObject({ halfBatches: 1 });
  });

  it("a checkpoint reported below one confirmed earlier (after a restart) is a regression", () => {
    const { h, events } = cleanRun();
    h.checkpoint("s", "g", 2);
    expect(failures(h.check(new Map([["s", events]])))).toMatchObject({ checkpointRegressions: 1 });
  });

  it("a group session resuming below the confirmed checkpoint + 1 is a regression; at checkpoint + 1 redelivery is fine", () => {
    const { h, events } = cleanRun();
    const again = h.session("s", "g");
    again.hello(5, true);
    expect(failures(h.check(new Map([["s", events]])))).toEqual({});
    const early = h.session("s", "g");
    early.hello(3, true);
    early.deliver(3, events[2].payload);
    early.deliver(4, events[3].payload);
    expect(failures(h.check(new Map([["s", events]])))).toMatchObject({ checkpointRegressions: 1 });
  });

  it("a checkpoint above every ack the group sent is invented", () => {
    const { h, events } = cleanRun();
    h.checkpoint("s", "g", 9);
    expect(failures(h.check(new Map([["s", events]])))).toMatchObject({ checkpointsBeyondAcks: 1 });
  });

  it("within a session, a repeated delivery is a duplicate and a step back or skip is out of order", () => {
    const { h, events } = cleanRun();
    const s = h.session("s", null);
    s.hello(1, false);
    s.deliver(1, events[0].payload);
    s.deliver(2, events[1].payload);
    s.deliver(2, events[1].payload);
    s.deliver(4, events[3].payload);
    expect(failures(h.check(new Map([["s", events]])))).toMatchObject({ sessionDuplicates: 1, sessionOutOfOrder: 1 });
  });

  it("redelivery from checkpoint + 1 on a new session is not a duplicate", () => {
    const { h, events } = cleanRun();
    h.checkpoint("s", "g", 4);
    const s = h.session("s", "g");
    s.hello(3, false); // an explicit from: the group moved back on purpose
    s.deliver(3, events[2].payload);
    s.deliver(4, events[3].payload);
    expect(failures(h.check(new Map([["s", events]])))).toEqual({});
  });

  it("a session resuming past every ack sent + 1 skipped events", () => {
    const { h, events } = cleanRun();
    const s = h.session("s", "g");
    s.hello(7, true);
    expect(failures(h.check(new Map([["s", events]])))).toMatchObject({ sessionSkips: 1 });
  });

  it("a delivered event that the replay does not hold is invented", () => {
    const { h, events } = cleanRun();
    const s = h.session("s", null);
    s.hello(5, false);
    s.deliver(5, { b: "Z", n: 1, i: 0 });
    expect(failures(h.check(new Map([["s", events]])))).toMatchObject({ invented: 1 });
  });

  it("a stream published to but not read back is an error of the test, not a pass", () => {
    const { h } = cleanRun();
    expect(() => h.check(new Map())).toThrow(/not read back/);
  });
});
