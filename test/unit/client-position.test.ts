// The client's seq rules (src/client/position.ts): what it delivers, drops
// and refills, the barrier after a seek or nack, the acks the server can
// take, and where a reconnect resumes. Cases a real server does not produce
// (a gap, a stall) are held here; test/integration/client-consume.test.ts
// holds the rest against a server.
import { describe, it, expect } from "vitest";
import fc from "fast-check";
import { Position, STALL_MS } from "../../src/client/position.js";

const deliver = (skip = 0) => ({ kind: "deliver", skip });
const DROP = { kind: "drop" };
const refill = (from: number) => ({ kind: "refill", from });

/** A position at `from`, as an active hello leaves it. */
function at(from: number, group = true, windowEvents = 100): Position {
  const p = new Position(group, windowEvents);
  p.hello(from);
  return p;
}

/** Hands `from`..`to` to the caller. */
function pullThrough(p: Position, from: number, to: number): void {
  for (let s = from; s <= to; s++) p.pull(s);
}

describe("the client's position in a stream", () => {
  it("delivers a batch at the expected seq, cuts what was delivered already off an overlapping one, and drops a repeated one", () => {
    const p = at(1);
    expect(p.onBatch(1, 10)).toEqual(deliver());
    expect(p.onBatch(11, 20)).toEqual(deliver());
    expect(p.onBatch(15, 25)).toEqual(deliver(6));
    expect(p.onBatch(20, 25)).toEqual(DROP);
    expect(p.expected).toBe(26);
  });

  it("takes a batch past the expected seq for a loss: a group refills from its first unacked event, a tail after what it pulled", () => {
    const g = at(1);
    g.onBatch(1, 10);
    pullThrough(g, 1, 8);
    g.ack(5);
    expect(g.onBatch(12, 20)).toEqual(refill(6));
    const t = at(1, false);
    t.onBatch(1, 10);
    pullThrough(t, 1, 8);
    expect(t.onBatch(12, 20)).toEqual(refill(9));
  });

  it("drops what comes before a seek's barrier pong, then wants the seek's seq first", () => {
    const p = at(1, false);
    p.onBatch(1, 10);
    const ping = p.seek(50);
    expect(p.awaitingBarrier).toBe(true);
    expect(p.onBatch(11, 20)).toEqual(DROP); // sent before the server read the seek
    expect(p.onBatch(50, 60)).toEqual(DROP); // even at the seq: it cannot be told from an old one
    p.onPong(ping - 1); // an older ping's answer proves nothing
    expect(p.awaitingBarrier).toBe(true);
    p.onPong(ping + 1); // a later ping (sent when the first one's pong was slow) does
    expect(p.awaitingBarrier).toBe(false);
    expect(p.onBatch(50, 60)).toEqual(deliver());
    expect(p.expected).toBe(61);
  });

  it("refills when the first batch after the barrier does not start at the seek's seq (its start was dropped)", () => {
    const p = at(1, false);
    p.onBatch(1, 10);
    p.onPong(p.seek(5));
    expect(p.onBatch(9, 12)).toEqual(refill(5));
  });

  it("after a nack delivery restarts at its seq, or after it once the server dead-lettered and acked it", () => {
    const redelivered = at(1);
    redelivered.onBatch(1, 10);
    pullThrough(redelivered, 1, 6);
    expect(redelivered.canNack(7)).toBe(false); // not pulled
    expect(redelivered.canNack(4)).toBe(true);
    redelivered.onPong(redelivered.nack(4));
    expect(redelivered.acked).toBe(3);
    expect(redelivered.onBatch(4, 10)).toEqual(deliver());
    const dead = at(1);
    dead.onBatch(1, 10);
    pullThrough(dead, 1, 6);
    dead.onPong(dead.nack(4));
    expect(dead.onBatch(5, 10)).toEqual(deliver());
    expect([dead.acked, dead.resumeFrom()]).toEqual([4, 5]);
  });

  it("ignores a reset before the barrier (it answers the old place) and takes one after it", () => {
    const p = at(1);
    p.onBatch(1, 10);
    const ping = p.seek(3);
    expect(p.onReset(40)).toBe(false);
    p.onPong(ping);
    expect(p.onReset(40)).toBe(true);
    expect([p.expected, p.acked]).toEqual([40, 39]);
    expect(p.onBatch(40, 45)).toEqual(deliver());
  });

  it("refills after heartbeats show the head past it for STALL_MS with room in the window; not with a full window, as standby, or before a barrier", () => {
    const p = at(1, true, 10);
    p.onBatch(1, 5);
    expect(p.onHeartbeat(20, 0)).toBeNull();
    expect(p.onHeartbeat(20, STALL_MS - 1)).toBeNull();
    expect(p.onHeartbeat(20, STALL_MS)).toBe(1);
    expect(p.onHeartbeat(5, 2 * STALL_MS)).toBeNull(); // the head is what came

    const full = at(1, true, 10);
    full.onBatch(1, 10); // ten unacked: the server waits for an ack
    full.onHeartbeat(20, 0);
    expect(full.onHeartbeat(20, STALL_MS)).toBeNull();
    pullThrough(full, 1, 10);
    full.ack(10);
    full.takeAck();
    full.onHeartbeat(20, STALL_MS);
    expect(full.onHeartbeat(20, 2 * STALL_MS)).toBe(11);

    const standby = new Position(true, 10);
    standby.hello(null);
    standby.onHeartbeat(20, 0);
    expect(standby.onHeartbeat(20, STALL_MS)).toBeNull();

    const seeking = at(1, false);
    seeking.seek(3);
    seeking.onHeartbeat(20, 0);
    expect(seeking.onHeartbeat(20, STALL_MS)).toBeNull();
  });

  it("a filtered consumer's heartbeat next_seq moves it past a stretch with nothing for it, so that is no stall and what follows no gap", () => {
    const p = at(1, false);
    expect(p.onBatch(1, 10)).toEqual(deliver()); // a range 1..10 (its events are some of those)
    p.onPassed(31); // 11..30 filtered out
    expect(p.expected).toBe(31);
    p.onHeartbeat(30, 0);
    expect(p.onHeartbeat(30, STALL_MS)).toBeNull();
    expect(p.onBatch(31, 40)).toEqual(deliver());
    p.onPassed(35); // behind what came: changes nothing
    expect(p.expected).toBe(41);
    expect(p.onBatch(45, 50)).toEqual(refill(p.refillFrom())); // 41..44 covered by nothing: a loss

    const seeking = at(1, true);
    seeking.onBatch(1, 10);
    pullThrough(seeking, 1, 10);
    const ping = seeking.nack(5);
    seeking.onPassed(20); // before the barrier: answers the old place
    expect(seeking.expected).toBe(5);
    seeking.onPong(ping);
    seeking.onPassed(20); // past the nacked seq without redelivering it: dead-lettered
    expect([seeking.expected, seeking.acked]).toEqual([20, 5]);
  });

  it("acks name only events pulled since the position last moved, and the newest of several is sent once", () => {
    const p = at(1);
    p.onBatch(1, 10);
    pullThrough(p, 1, 4);
    expect(p.ack(5)).toBe(false);
    expect(p.ack(2)).toBe(true);
    expect(p.ack(4)).toBe(true);
    expect(p.ack(3)).toBe(false);
    expect(p.takeAck()).toBe(4);
    expect(p.takeAck()).toBeNull();
    p.onPong(p.seek(2)); // the server sets the session's acked to 1
    expect(p.ack(3)).toBe(false); // pulled before the seek: it comes again
    p.onBatch(2, 6);
    p.pull(2);
    p.pull(3);
    expect(p.ack(3)).toBe(true);
  });

  it("resumes a group after its last ack (sent or not), a tail after its last pulled event, and with the caller's from when never active", () => {
    const g = at(10);
    g.onBatch(10, 20);
    pullThrough(g, 10, 15);
    g.ack(12);
    g.lost();
    expect(g.resumeFrom()).toBe(13);
    const t = at(10, false);
    t.onBatch(10, 20);
    pullThrough(t, 10, 15);
    t.lost();
    expect(t.resumeFrom()).toBe(16);
    const s = new Position(true, 10);
    expect(s.resumeFrom()).toBeNull();
    s.hello(null);
    expect(s.resumeFrom()).toBeNull();
  });

  it("whatever batches arrive (overlapping, repeated, past a gap), what it delivers runs from its start without a gap or a repeat", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: -5, max: 5 }), fc.integer({ min: 0, max: 6 })), { maxLength: 60 }), (batches) => {
        const p = at(1, false);
        const delivered: number[] = [];
        let serverNext = 1;
        for (const [shift, extra] of batches) {
          const first = Math.max(1, serverNext + shift);
          const last = first + extra;
          const v = p.onBatch(first, last);
          if (v.kind === "deliver") {
            for (let s = first + v.skip; s <= last; s++) delivered.push(s);
            pullThrough(p, first + v.skip, last);
          }
          serverNext = last + 1;
          if (v.kind === "refill") {
            // The server takes the seek: it restarts there, after the pong.
            p.onPong(p.seek(v.from));
            serverNext = v.from;
          }
        }
        expect(delivered).toEqual(Array.from({ length: delivered.length }, (_, k) => k + 1));
      }),
    );
  });
});
