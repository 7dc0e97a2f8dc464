// The ack rules of a consumer group, apart from the socket and shard plumbing
// of front/consume/progress.ts, so unit tests (and mutation testing) can hold them:
// an ack is cumulative and never beyond what was delivered, a checkpoint only
// moves forward, and a seq is dead-lettered on its max_attempts-th nack.
import { ApiError } from "../errors.js";

/**
 * Whether an ack of `seq` moves the group on. A checkpoint never moves back:
 * an older (or repeated) ack is already covered by a later one, and taking it
 * would redeliver events to the next member after a failover.
 */
export const ackMovesCheckpoint = (seq: number, acked: number): boolean => seq > acked;

/**
 * Checks an ack against what the session was sent and answers whether it
 * moves the checkpoint. An ack beyond the last delivered seq is refused: it
 * would checkpoint events the consumer never saw, and they would be lost.
 */
export function takeAck(seq: number, acked: number, delivered: number): boolean {
  if (seq > delivered) throw new ApiError(400, "invalid_ack", `ack of ${seq} is beyond the last delivered seq ${delivered}`);
  return ackMovesCheckpoint(seq, acked);
}

/** A nack names one delivered, unacked seq: acked + 1 .. delivered. */
export function checkNack(seq: number, acked: number, delivered: number): void {
  if (seq <= acked || seq > delivered) {
    throw new ApiError(400, "invalid_nack", `nack of ${seq} is outside the delivered, unacked seqs ${acked + 1}..${delivered}`);
  }
}

/**
 * Counts a nack of `seq` in `attempts` (nacks per seq of one group) and
 * returns the count; it is dead-lettered once the count reaches `maxAttempts`.
 */
export function countNack(attempts: Map<number, number>, seq: number): number {
  const n = (attempts.get(seq) ?? 0) + 1;
  attempts.set(seq, n);
  return n;
}

export const deadLetterDue = (attempts: number, maxAttempts: number): boolean => attempts >= maxAttempts;

/** An ack of `seq` is done with every seq up to it: their nack counts go (bounded by the window). */
export function forgetAttempts(attempts: Map<number, number>, seq: number): void {
  for (const k of attempts.keys()) if (k <= seq) attempts.delete(k);
}
