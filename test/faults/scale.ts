// Fault and property tests run short in `npm test` and long in
// `npm run test:faults` (TICKER_FAULTS=long), which also collects one result
// row per fault or input class into docs/RELIABILITY.md.
import { appendFileSync } from "node:fs";

export const LONG = process.env.TICKER_FAULTS === "long";

/** How many cases (cycles, runs) a test tries: `short` in npm test, `long` in test:faults. */
export const scaled = (short: number, long: number) => (LONG ? long : short);

/** One row of docs/RELIABILITY.md. Counts are over every case the test tried. */
export interface ReliabilityRow {
  /** The fault or input class, e.g. "kill -9 under load". */
  fault: string;
  /** What was done, in a few words (streams, producers, groups, sizes). */
  setup: string;
  cases: number;
  /** Cases after which every promise held. */
  survived: number;
  /** Acknowledged events the run produced (0 where the class has no publishes). */
  acked: number;
  lost: number;
  duplicates: number;
  gaps: number;
  /** Anything else the checker counts: reordered, checkpoint regressions, half batches... */
  other?: Record<string, number>;
  /** Bounds measured: recovery ms per GiB, RSS MiB, p99 ms, takeover ms... */
  bounds?: Record<string, string | number>;
}

/** Records a result row when the long run collects them (TICKER_RELIABILITY_RESULTS names the file). */
export function recordResult(row: ReliabilityRow): void {
  const out = process.env.TICKER_RELIABILITY_RESULTS;
  if (out) appendFileSync(out, `${JSON.stringify({ ...row, at: new Date().toISOString() })}\n`);
}
