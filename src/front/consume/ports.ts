// What the consume hub needs from outside it, as small interfaces: a
// consumer's socket, the shards (start, pages, checkpoint writes, dead
// letters, live batches) and a clock. uWS and ShardPool are the real ones;
// test/unit/consume-hub.test.ts drives the hub with in-memory ones.
import type { ShardPool } from "../shards.js";
import type { SocketData } from "./state.js";

/** One consumer's WebSocket as the hub uses it; uWS's WebSocket<SocketData> is one. */
export interface ConsumerSocket {
  getUserData(): SocketData;
  /** 1: sent, 0: queued (backpressure that drains), 2: dropped (over maxBackpressure). */
  send(message: Uint8Array | string, isBinary: boolean): number;
  cork(cb: () => void): unknown;
  getBufferedAmount(): number;
  end(code: number, reason: string): void;
  close(): void;
  ping(): unknown;
}

/**
 * The shards as the hub uses them: ConsumeStart, ConsumeRead, SetCheckpoint
 * and Publish (dead letters) requests, the formats it watches a stream in
 * (setWatch, as owner "consume"), and the live batches they push. Answers
 * come asynchronously, and pushes and answers of one shard in order.
 */
export type ShardLink = Pick<ShardPool, "send" | "shardFor" | "onPush" | "setWatch">;

export interface Clock {
  /** Wall-clock ms: liveness, heartbeats, connected_at. */
  nowMs(): number;
  /** Monotonic ms with sub-ms steps: paces live flushes, which take microseconds. */
  preciseMs(): number;
  /** Runs fn once this turn of the event loop ends. */
  soon(fn: () => void): void;
  after(ms: number, fn: () => void): void;
  /** Runs fn every ms until the returned stop is called. */
  every(ms: number, fn: () => void): () => void;
}

export const systemClock: Clock = {
  nowMs: () => Date.now(),
  preciseMs: () => performance.now(),
  soon: (fn) => void setImmediate(fn),
  after: (ms, fn) => void setTimeout(fn, ms),
  every: (ms, fn) => {
    const t = setInterval(fn, ms);
    return () => clearInterval(t);
  },
};

// WebSocket close codes: 1001 going away, 1008 policy violation, 1011 server error.
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_POLICY = 1008;
export const CLOSE_SERVER_ERROR = 1011;
