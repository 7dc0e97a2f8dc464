// How the log names a record it cannot serve: where it lies and why. Recovery
// reports it, a read stops at it, the scrub finds it later; the front hears
// of it through the shard, so it is one shape for all of them.
export interface CorruptionInfo {
  segment: number;
  position: number;
  /** The seq that was expected at that position. */
  seq: number;
  reason: string;
}

export class CorruptRecordError extends Error {
  constructor(readonly info: CorruptionInfo) {
    super(`record ${info.seq} is damaged (${info.reason}) in segment ${info.segment} at byte ${info.position}`);
  }
}
