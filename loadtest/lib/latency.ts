// Latency as every benchmark records it: one wall clock for all threads and
// processes of a run (and their offsets, measured), HDR histograms of µs that
// can cross a thread or process boundary encoded, and a recorder that counts
// what fell inside a row's measured window.
import hdr from "hdr-histogram-js";
import type { Histogram } from "hdr-histogram-js";

/** Latencies are recorded in microseconds, 1 µs to 60 s, 3 significant digits. */
export const LATENCY_US_MAX = 60_000_000;

export function newHistogram(): Histogram {
  return hdr.build({
    bitBucketSize: 32, // counts per bucket up to 2^31: far above the ~10^7 deliveries of a row
    autoResize: false,
    lowestDiscernibleValue: 1,
    highestTrackableValue: LATENCY_US_MAX,
    numberOfSignificantValueDigits: 3,
  });
}

export const encodeHistogram = (h: Histogram): string => hdr.encodeIntoCompressedBase64(h);
export const decodeHistogram = (s: string): Histogram => hdr.decodeFromCompressedBase64(s, 32, false);

/**
 * The same wall clock in every thread and process of the run (ms,
 * fractional): the system clock read once per thread at its start, then
 * advanced by the monotonic clock, so a stamp from the producer thread or
 * another process compares with one here.
 */
export const wallNow = (): number => performance.timeOrigin + performance.now();

/** What one side measured; the parts the producer's count is checked against. */
export interface LatencyRecorder {
  hist: Histogram;
  /** Events with tStart <= t < tEnd received, over all consumers. */
  measured: number;
  /** Every event received, warm-up included, over all consumers. */
  total: number;
  /** Latencies below zero (a clock step, or thread clocks apart): recorded as 0. */
  negative: number;
  /** Above LATENCY_US_MAX: recorded as the max. */
  clipped: number;
}

export function newRecorder(): LatencyRecorder {
  return { hist: newHistogram(), measured: 0, total: 0, negative: 0, clipped: 0 };
}

/** Wall-clock window (ms, wallNow) whose events are measured: stamps in [tStart, tEnd). */
export interface Window {
  tStart: number;
  tEnd: number;
}

/** What a latency row needs of a consumer, whichever system it reads. */
export interface LatencyConsumer {
  readonly rec: LatencyRecorder;
  readonly errors: string[];
  /** Replies or messages received. */
  readonly deliveries: number;
  /** Resolves once the consumer is subscribed: every event published from then on reaches it. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Records one latency of an event sent at `t` and received at `recv` (ms), if `t` is in the window. */
export function record(r: LatencyRecorder, t: number, recv: number, tStart: number, tEnd: number): void {
  r.total++;
  if (t < tStart || t >= tEnd) return;
  r.measured++;
  let us = Math.round((recv - t) * 1000);
  if (us < 0) {
    r.negative++;
    us = 0;
  } else if (us > LATENCY_US_MAX) {
    r.clipped++;
    us = LATENCY_US_MAX;
  }
  r.hist.recordValue(us);
}

/** Round trips per clock offset; the shortest one is kept. */
export const CLOCK_PROBES = 20;

export interface ClockOffset {
  offsetMs: number;
  rttMs: number;
}

/** The clock offset of another thread or process: the probe with the shortest round trip, its stamp minus our midpoint. */
export async function clockOffset(probe: () => Promise<number>): Promise<ClockOffset> {
  let best = { offsetMs: NaN, rttMs: Infinity };
  for (let i = 0; i < CLOCK_PROBES; i++) {
    const a = wallNow();
    const t = await probe();
    const b = wallNow();
    if (b - a < best.rttMs) best = { offsetMs: t - (a + b) / 2, rttMs: b - a };
  }
  return best;
}
