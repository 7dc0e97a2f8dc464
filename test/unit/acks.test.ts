import { describe, it, expect } from "vitest";
import fc from "fast-check";
import { ackMovesCheckpoint, checkNack, countNack, deadLetterDue, forgetAttempts, takeAck } from "../../src/consumer/acks.js";
import { ApiError } from "../../src/errors.js";

function errorOf(fn: () => unknown): ApiError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ApiError) return err;
    throw err;
  }
  throw new Error("expected an ApiError");
}

/** What a group's checkpoint is after a session takes these acks in order (as front/consume/progress.ts applies them). */
function checkpointAfter(acks: number[], delivered: number): number {
  let acked = 0;
  for (const seq of acks) {
    try {
      if (takeAck(seq, acked, delivered)) acked = seq;
    } catch {
      // refused: changes nothing
    }
  }
  return acked;
}

describe("consumer acks", () => {
  it("an older or repeated ack never moves a checkpoint back", () => {
    expect(takeAck(5, 8, 10)).toBe(false);
    expect(takeAck(8, 8, 10)).toBe(false);
    expect(takeAck(9, 8, 10)).toBe(true);
    expect(checkpointAfter([3, 7, 2, 7, 5], 10)).toBe(7);
    // Whatever order acks come in, the checkpoint is the highest valid one.
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 50 }), fc.array(fc.integer({ min: 0, max: 60 }), { maxLength: 30 }), (delivered, acks) => {
        const valid = acks.filter((a) => a <= delivered);
        expect(checkpointAfter(acks, delivered)).toBe(Math.max(0, ...valid));
      }),
    );
  });

  it("an ack beyond the last delivered seq is refused with invalid_ack, one at it is taken", () => {
    const e = errorOf(() => takeAck(11, 4, 10));
    expect(e.status).toBe(400);
    expect(e.code).toBe("invalid_ack");
    expect(e.message).toContain("11");
    expect(e.message).toContain("10");
    expect(takeAck(10, 4, 10)).toBe(true);
    expect(checkpointAfter([11], 10)).toBe(0);
  });

  it("a nack is taken only for a delivered, unacked seq", () => {
    for (const seq of [4, 3, 11]) {
      const e = errorOf(() => checkNack(seq, 4, 10));
      expect(e.status).toBe(400);
      expect(e.code).toBe("invalid_nack");
      expect(e.message).toContain("5..10");
    }
    expect(() => checkNack(5, 4, 10)).not.toThrow();
    expect(() => checkNack(10, 4, 10)).not.toThrow();
  });

  it("the max_attempts-th nack of a seq dead-letters it, counted per seq", () => {
    const attempts = new Map<number, number>();
    const maxAttempts = 3;
    expect(countNack(attempts, 7)).toBe(1);
    expect(countNack(attempts, 8)).toBe(1);
    expect(deadLetterDue(countNack(attempts, 7), maxAttempts)).toBe(false);
    expect(deadLetterDue(countNack(attempts, 7), maxAttempts)).toBe(true);
    expect(attempts.get(8)).toBe(1);
    expect(deadLetterDue(1, 1)).toBe(true);
    expect(deadLetterDue(4, 3)).toBe(true);
  });

  it("an ack forgets the nack counts of every seq up to it and keeps the later ones", () => {
    const attempts = new Map([
      [3, 2],
      [5, 1],
      [6, 4],
    ]);
    forgetAttempts(attempts, 5);
    expect([...attempts]).toEqual([[6, 4]]);
    // A seq nacked again after the ack starts its count over.
    expect(countNack(attempts, 5)).toBe(1);
  });

  it("a move of the checkpoint is exactly a higher seq", () => {
    expect(ackMovesCheckpoint(6, 5)).toBe(true);
    expect(ackMovesCheckpoint(5, 5)).toBe(false);
    expect(ackMovesCheckpoint(4, 5)).toBe(false);
  });
});
