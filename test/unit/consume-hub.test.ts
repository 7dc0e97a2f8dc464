// The consume hub's logic (membership, takeover, acks, nacks, dead letters,
// the window, the live/log hand-off) driven through its ports with in-memory
// sockets, shards and clock: no server, no worker threads, no real time.
// test/integration/consume*.test.ts hold the same promises end to end.
import { describe, it, expect, vi } from "vitest";
import { DEAD_LETTER_LOG_INTERVAL_MS } from "../../src/front/consume/progress.js";
import { logger } from "../../src/logger.js";
import { frame, range, world } from "../helpers/consume-world.js";

describe("consume hub: group membership and takeover", () => {
  it("when the active member leaves, the standby takes over at the group's checkpoint + 1", () => {
    const w = world();
    w.shards.create("jobs", 10);
    const a = w.connect("jobs", "group=g&from=earliest");
    const b = w.connect("jobs", "group=g");
    expect(a.of("hello")).toMatchObject([{ role: "active", from: 1 }]);
    expect(a.seqs()).toEqual(range(1, 10));
    expect(b.of("hello")).toMatchObject([{ role: "standby", from: null }]);
    w.say(a, { type: "ack", seq: 4 });

    a.close();
    w.settle();
    expect(b.of("hello")).toMatchObject([{ role: "standby" }, { role: "active", from: 5 }]);
    expect(b.seqs()).toEqual(range(5, 10));
    expect(w.hub.members("jobs").groups.get("g")).toMatchObject([{ role: "active", next_seq: 11 }]);
  });

  it("an active member silent for consumer_takeover_ms with a standby waiting gets a takeover error and is closed; the standby takes over", () => {
    const w = world({ consumer_takeover_ms: 3000 });
    w.shards.create("jobs", 6);
    const a = w.connect("jobs", "group=g&from=earliest");
    const b = w.connect("jobs", "group=g");
    w.say(a, { type: "ack", seq: 2 });
    // Answering pings keeps it active however long it takes to ack.
    for (let i = 0; i < 10; i++) {
      w.advance(1000);
      w.hub.pong(a);
    }
    expect(a.closedWith).toBeNull();
    expect(a.pings).toBeGreaterThanOrEqual(9);

    w.advance(2900);
    expect(a.closedWith).toBeNull();
    w.advance(300);
    expect(a.of("error")).toMatchObject([{ code: "takeover" }]);
    expect(a.closedWith).not.toBeNull();
    expect(b.of("hello").at(-1)).toMatchObject({ role: "active", from: 3 });
    expect(b.seqs()).toEqual(range(3, 6));
  });

  it("a group member is pinged every second; a consumer without a group every idle timeout / 4, at most 3 s apart", () => {
    const w = world({ consumer_idle_timeout_ms: 60_000 });
    w.shards.create("jobs", 1);
    const member = w.connect("jobs", "group=g");
    const solo = w.connect("jobs", "");
    for (let i = 0; i < 30; i++) {
      w.advance(1000);
      w.hub.pong(member);
      w.hub.pong(solo);
    }
    expect(member.pings).toBeGreaterThanOrEqual(29);
    expect(solo.pings).toBeGreaterThanOrEqual(9);
    expect(solo.pings).toBeLessThanOrEqual(10);

    const short = world({ consumer_idle_timeout_ms: 4000 });
    short.shards.create("jobs", 1);
    const c = short.connect("jobs", "");
    for (let i = 0; i < 20; i++) {
      short.advance(1000);
      short.hub.pong(c);
    }
    expect(c.pings).toBeGreaterThanOrEqual(19);
    expect(c.closedWith).toBeNull();
  });

  it("without a standby, a silent active member keeps its place until consumer_idle_timeout_ms", () => {
    const w = world({ consumer_takeover_ms: 3000, consumer_idle_timeout_ms: 20_000 });
    w.shards.create("jobs", 3);
    const a = w.connect("jobs", "group=g&from=earliest");
    w.advance(19_900);
    expect(a.closedWith).toBeNull();
    expect(a.of("heartbeat").length).toBeGreaterThan(10);
    w.advance(200);
    expect(a.of("error")).toMatchObject([{ code: "idle_timeout" }]);
    expect(a.closedWith).toBe(1001);
  });
});

describe("consume hub: acks and checkpoints", () => {
  it("an ack moves the checkpoint only forward, and an ack beyond what was delivered is refused and moves nothing", () => {
    const w = world();
    w.shards.create("jobs", 10);
    const a = w.connect("jobs", "group=g&from=earliest&window=5");
    expect(a.seqs()).toEqual(range(1, 5));
    w.say(a, { type: "ack", seq: 3 });
    w.say(a, { type: "ack", seq: 2 });
    w.say(a, { type: "ack", seq: 3 });
    expect(w.shards.checkpointWrites.map((c) => c.seq)).toEqual([3]);

    const delivered = a.seqs().at(-1)!;
    w.say(a, { type: "ack", seq: delivered + 1 });
    expect(a.of("error")).toMatchObject([{ code: "invalid_ack" }]);
    expect(a.closedWith).toBe(1008);
    expect(w.shards.checkpointWrites.map((c) => c.seq)).toEqual([3]);
    // The next member starts right after the last ack taken.
    const b = w.connect("jobs", "group=g");
    expect(b.of("hello")).toMatchObject([{ role: "active", from: 4 }]);
  });

  it("acks that come while a checkpoint write is in flight are coalesced: the newest is written next", () => {
    const w = world();
    w.shards.create("jobs", 10);
    const a = w.connect("jobs", "group=g&from=earliest");
    for (const seq of [2, 5, 7]) w.hub.message(a, frame({ type: "ack", seq }), false);
    w.settle();
    expect(w.shards.checkpointWrites.map((c) => c.seq)).toEqual([2, 7]);
    expect(w.hub.pendingWrites).toBe(0);
  });

  it("a checkpoint write refused by a full disk is retried until it is written", () => {
    const w = world();
    w.shards.create("jobs", 4);
    const a = w.connect("jobs", "group=g&from=earliest");
    const logged = vi.spyOn(logger(), "error").mockImplementation(() => {});
    w.shards.checkpointStatus = 503;
    w.say(a, { type: "ack", seq: 4 });
    w.advance(100);
    expect(w.shards.checkpointWrites).toEqual([]);
    expect(w.hub.pendingWrites).toBe(1);
    expect(logged).toHaveBeenCalledWith(
      expect.objectContaining({ kind: "checkpoint", group: "g" }),
      expect.stringContaining("checkpoint of group g on jobs not written"),
    );
    logged.mockRestore();
    w.shards.checkpointStatus = 200;
    w.advance(100);
    expect(w.shards.checkpointWrites).toEqual([{ stream: "jobs", group: "g", seq: 4 }]);
    expect(w.hub.pendingWrites).toBe(0);
  });
});

describe("consume hub: nacks and dead letters", () => {
  it("a nack redelivers from its seq, and the max_attempts-th nack dead-letters the event and moves the group past it", () => {
    const w = world();
    w.shards.create("jobs", 5);
    const a = w.connect("jobs", "group=g&from=earliest&max_attempts=2");
    expect(a.seqs()).toEqual(range(1, 5));

    w.say(a, { type: "nack", seq: 3, reason: "boom" });
    // A nack of 3 acknowledges 1..2 and delivers from 3 again.
    expect(w.shards.checkpointWrites.map((c) => c.seq)).toEqual([2]);
    expect(a.seqs()).toEqual([...range(1, 5), ...range(3, 5)]);
    expect(w.shards.published).toEqual([]);

    w.say(a, { type: "nack", seq: 3, reason: "boom again" });
    expect(w.shards.published).toHaveLength(1);
    const { stream, events } = w.shards.published[0];
    expect(stream).toBe("jobs.dlq");
    expect(events).toMatchObject([
      {
        type: "dead_letter",
        idempotency_key: "dlq:g:3",
        payload: { stream: "jobs", seq: 3, group: "g", reason: "boom again", attempts: 2, event: { seq: 3 } },
      },
    ]);
    expect(w.shards.checkpointWrites.map((c) => c.seq)).toEqual([2, 3]);
    expect(a.seqs()).toEqual([...range(1, 5), ...range(3, 5), 4, 5]);
  });

  it("logs at most one dead letter per group a second, and the next line says how many it left out", () => {
    const lines: Array<Record<string, unknown>> = [];
    const warn = vi.spyOn(logger(), "warn").mockImplementation(((o: Record<string, unknown>) => void lines.push(o)) as never);
    try {
      const w = world();
      w.shards.create("jobs", 6);
      const a = w.connect("jobs", "group=g&from=earliest&max_attempts=1");
      for (const seq of [1, 2, 3]) w.say(a, { type: "nack", seq, reason: `boom ${seq}` });
      expect(w.shards.published).toHaveLength(3);
      expect(lines.map((l) => [l.kind, l.seq, l.unlogged])).toEqual([["dead_letter", 1, 0]]);
      w.advance(DEAD_LETTER_LOG_INTERVAL_MS);
      w.say(a, { type: "nack", seq: 4, reason: "boom 4" });
      expect(lines.map((l) => [l.seq, l.unlogged])).toEqual([
        [1, 0],
        [4, 2],
      ]);
    } finally {
      warn.mockRestore();
    }
  });

  it("a nack outside the delivered, unacked seqs is refused and the group does not move", () => {
    const w = world();
    w.shards.create("jobs", 5);
    const a = w.connect("jobs", "group=g&from=earliest");
    w.say(a, { type: "ack", seq: 2 });
    w.say(a, { type: "nack", seq: 2, reason: "" });
    expect(a.of("error")).toMatchObject([{ code: "invalid_nack" }]);
    expect(w.shards.checkpointWrites.map((c) => c.seq)).toEqual([2]);
    expect(w.shards.published).toEqual([]);
  });
});

describe("consume hub: the window and the live path", () => {
  it("delivery pauses once window events are unacked and resumes as acks come", () => {
    const w = world();
    w.shards.create("jobs", 10);
    const a = w.connect("jobs", "group=g&from=earliest&window=3");
    expect(a.seqs()).toEqual(range(1, 3));
    const reads = w.shards.pageReads;
    w.advance(1000);
    expect(a.seqs()).toEqual(range(1, 3));
    expect(w.shards.pageReads).toBe(reads);

    w.say(a, { type: "ack", seq: 2 });
    expect(a.seqs()).toEqual(range(1, 5));
    w.say(a, { type: "ack", seq: 5 });
    expect(a.seqs()).toEqual(range(1, 8));
  });

  it("a caught-up consumer gets pushed batches as they are, without reading the log; a batch over its window is read from the log as room allows", () => {
    const w = world();
    w.shards.create("jobs", 2);
    const a = w.connect("jobs", "group=g&from=earliest&window=4");
    w.say(a, { type: "ack", seq: 2 });
    const reads = w.shards.pageReads;
    w.shards.append("jobs", 3);
    w.settle();
    expect(a.seqs()).toEqual(range(1, 5));
    expect(w.shards.pageReads).toBe(reads);

    // 3 unacked, room for 1: the next batch of 4 cannot go live.
    w.shards.append("jobs", 4);
    w.settle();
    expect(a.seqs()).toEqual(range(1, 6));
    w.say(a, { type: "ack", seq: 6 });
    expect(a.seqs()).toEqual(range(1, 9));
    // Caught up again: live.
    w.say(a, { type: "ack", seq: 9 });
    const readsAfter = w.shards.pageReads;
    w.shards.append("jobs", 2);
    w.settle();
    expect(a.seqs()).toEqual(range(1, 11));
    expect(w.shards.pageReads).toBe(readsAfter);
  });

  it("when the shard pushes only the new head, a live consumer reads those events from the log, without a gap or a duplicate", () => {
    const w = world();
    w.shards.create("jobs", 3);
    const a = w.connect("jobs", "from=latest");
    w.shards.append("jobs", 2);
    w.shards.append("jobs", 3, "head");
    w.settle();
    expect(a.seqs()).toEqual(range(4, 8));
    // Then live again.
    const reads = w.shards.pageReads;
    w.shards.append("jobs", 1);
    w.settle();
    expect(a.seqs()).toEqual(range(4, 9));
    expect(w.shards.pageReads).toBe(reads);
  });

  it("a live batch that does not start at the consumer's next seq sends it to the log: no gap, no duplicate", () => {
    const w = world();
    w.shards.create("jobs", 3);
    const a = w.connect("jobs", "from=latest");
    // A gap: 4..5 never pushed, then 6..7.
    w.shards.append("jobs", 2, "none");
    w.shards.append("jobs", 2);
    w.settle();
    expect(a.seqs()).toEqual(range(4, 7));
    // An overlap: 8..9 not pushed, then a batch of 6..9.
    w.shards.append("jobs", 2, "none");
    w.shards.pushBatch("jobs", 6, 9);
    w.settle();
    expect(a.seqs()).toEqual(range(4, 9));
  });

  it("a socket holding consumer_buffer_bytes_max is sent nothing until it drains, then catches up from the log", () => {
    const w = world();
    w.shards.create("jobs", 1);
    const a = w.connect("jobs", "from=latest");
    a.buffered = w.config.consumer_buffer_bytes_max;
    w.shards.append("jobs", 5);
    w.settle();
    w.advance(300);
    expect(a.seqs()).toEqual([]);

    a.buffered = 0;
    w.hub.drain(a);
    w.settle();
    expect(a.seqs()).toEqual(range(2, 6));
  });
});
