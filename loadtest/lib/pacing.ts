// A producer at a fixed rate, as every latency row runs one (bench-consume,
// bench-peers' W3, the capacity report's consumers sweep), and the worker
// thread it runs in.
//
// Pacing: a timer every `tickMs` sends the events due so far,
// floor(rate × elapsed) − sent, as one request (split at the server's
// publish_events_max), on one of its lanes (keep-alive connections) that has
// no request outstanding. When every lane is busy the due events wait for the
// next tick and go out in a larger batch: counted as a stall, so a producer
// that fell behind shows in the report instead of lowering the rate quietly.
//
// It runs in its own worker thread, so the consumer's event loop cannot delay
// a send and a send cannot delay a receive; the thread's clock is measured
// against ours with round-trip probes (it answers them while it waits for t0).
import { parentPort, Worker, workerData } from "node:worker_threads";
import { clockOffset, encodeHistogram, LATENCY_US_MAX, newHistogram, wallNow, type ClockOffset } from "./latency.js";

/** A producer's failures kept for the report; more only adds noise. */
const ERRORS_MAX = 10;

/**
 * The latency rows' producer: a timer every 1 ms (the finest Node timer: at
 * 100,000 events/s a batch is ~100 events, at 1,000 events/s one event) on
 * 16 lanes, far above the 1 request per tick the rates need at ~1 ms per
 * answer, so the producer only stalls if the server does.
 */
export const PRODUCER_TICK_MS = 1;
export const PRODUCER_LANES = 16;
/** Time for the producer thread to start and the clock probes, before t0. */
const PRODUCER_LEAD_MS = 500;
/** After the producer's last answer, the consumers get this long to receive the rest. */
export const DRAIN_TIMEOUT_MS = 20_000;

/** A row's instants (wallNow ms): sending starts at t0, is measured from tStart, ends at tEnd. */
export function producerWindow(warmupMs: number, measureMs: number): { t0: number; tStart: number; tEnd: number } {
  const t0 = wallNow() + PRODUCER_LEAD_MS;
  return { t0, tStart: t0 + warmupMs, tEnd: t0 + warmupMs + measureMs };
}

/** Keeps the first ERRORS_MAX failures of a producer. */
export function noteError(res: { errors: string[] }, msg: string): void {
  if (res.errors.length < ERRORS_MAX) res.errors.push(msg);
}

/** What pace() needs of a lane: one request at a time. */
export interface PacedLane {
  busy: boolean;
  /** Sends n events stamped t; resolves once answered (failures are the lane's to record). */
  send(n: number, t: number): Promise<void>;
}

/** A lane as a producer holds it: paced, then closed. */
export interface Lane extends PacedLane {
  close(): void | Promise<void>;
}

export interface PaceOptions {
  rate: number;
  t0: number;
  tStart: number;
  tEnd: number;
  tickMs: number;
  batchEventsMax: number;
  /** Stop sending at tEnd even if behind (what is still due would be stamped after the window). */
  stopAtEnd: boolean;
}

/** The counters pace() fills in (ProducerResult and the peers' results have them). */
export interface PaceStats {
  sent: number;
  measured: number;
  requests: number;
  batchMax: number;
  stalls: number;
  backlogMax: number;
  tickLateP99Ms: number;
  tickLateMaxMs: number;
  rtt: string;
}

/**
 * The pacing loop described at the top of this file, over any lanes (Ticker,
 * Redis, NATS): resolves once every batch sent has been answered.
 */
export async function pace(o: PaceOptions, lanes: PacedLane[], res: PaceStats): Promise<void> {
  const rtt = newHistogram();
  const total = Math.floor(((o.tEnd - o.t0) * o.rate) / 1000);
  const late: number[] = [];
  let inFlight = 0;
  await new Promise((r) => setTimeout(r, Math.max(0, o.t0 - wallNow())));
  await new Promise<void>((resolve) => {
    let lastTick = wallNow();
    let stopped = false;
    const tick = () => {
      const now = wallNow();
      late.push(now - lastTick - o.tickMs);
      lastTick = now;
      if (o.stopAtEnd && now >= o.tEnd) {
        clearInterval(timer);
        stopped = true;
        if (inFlight === 0) resolve();
        return;
      }
      let due = Math.min(total, Math.floor(((Math.min(now, o.tEnd) - o.t0) * o.rate) / 1000)) - res.sent;
      for (const lane of lanes) {
        if (due <= 0) break;
        if (lane.busy) continue;
        const n = Math.min(due, o.batchEventsMax);
        // One stamp per batch, taken right before its body is built and written.
        const t = wallNow();
        const inWindow = t >= o.tStart && t < o.tEnd;
        if (inWindow) res.measured += n;
        res.sent += n;
        res.requests++;
        res.batchMax = Math.max(res.batchMax, n);
        due -= n;
        lane.busy = true;
        inFlight++;
        void lane.send(n, t).then(() => {
          if (inWindow) rtt.recordValue(Math.min(LATENCY_US_MAX, Math.max(0, Math.round((wallNow() - t) * 1000))));
          lane.busy = false;
          inFlight--;
          if ((stopped || res.sent === total) && inFlight === 0) resolve();
        });
      }
      if (due > 0) {
        res.stalls++;
        res.backlogMax = Math.max(res.backlogMax, due);
      }
      if (res.sent === total) clearInterval(timer);
    };
    const timer = setInterval(tick, o.tickMs);
  });
  late.sort((a, b) => a - b);
  res.tickLateP99Ms = late[Math.floor(late.length * 0.99)] ?? 0;
  res.tickLateMaxMs = late.at(-1) ?? 0;
  res.rtt = encodeHistogram(rtt);
}

export interface Producer<R> {
  result: Promise<R>;
  /** The producer thread's clock minus ours; 0 inline. */
  offset: Promise<ClockOffset>;
}

/**
 * A worker thread running `main` with `workerData`. It posts
 * {type: "result"} or {type: "failed"} once, and answers each {type:
 * "clock"} with its wallNow(); it is terminated once the result is in.
 */
export function startProducerThread<R>(main: URL, workerData: unknown): Producer<R> {
  const worker = new Worker(main, { workerData });
  let clockWaiter: ((t: number) => void) | null = null;
  const result = new Promise<R>((resolve, reject) => {
    worker.on("message", (m: { type: "clock"; t: number } | { type: "result"; result: R } | { type: "failed"; message: string }) => {
      if (m.type === "clock") clockWaiter?.(m.t);
      else if (m.type === "result") resolve(m.result);
      else reject(new Error(`producer: ${m.message}`));
    });
    worker.on("error", reject);
    worker.on("exit", (code) => reject(new Error(`producer thread exited (code ${code}) without a result`)));
  });
  // The worker answers probes while it waits for t0, so they do not delay a send.
  const online = new Promise<void>((r) => worker.once("online", () => r()));
  const offset = online.then(() =>
    clockOffset(
      () =>
        new Promise<number>((resolve) => {
          clockWaiter = resolve;
          worker.postMessage({ type: "clock" });
        }),
    ),
  );
  void result.finally(() => void worker.terminate()).catch(() => {});
  return { result, offset };
}

/**
 * The worker's side of startProducerThread: answers clock probes (also while
 * `run` waits for its t0), then posts `run`'s result or failure once.
 */
export function serveProducerThread<S, R>(run: (spec: S) => Promise<R>): void {
  const port = parentPort!;
  port.on("message", (m: { type: string }) => {
    if (m.type === "clock") port.postMessage({ type: "clock", t: wallNow() });
  });
  run((workerData as { spec: S }).spec).then(
    (result) => port.postMessage({ type: "result", result }),
    (err: Error) => port.postMessage({ type: "failed", message: err.stack ?? err.message }),
  );
}
