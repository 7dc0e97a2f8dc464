// The producer of bench-consume and bench-peers' W3 rows runs in a worker
// thread; this starts it, takes its result, and measures its clock against
// ours with round-trip probes (it answers them while it waits for t0).
import { parentPort, Worker, workerData } from "node:worker_threads";
import { wallNow } from "./consume-clients.js";

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
