// The paced producer of every latency row (bench-consume, bench-peers' W3,
// the capacity report's consumers sweep): publishes at a fixed rate to one
// Ticker stream (HTTP POST of JSON batches), one Redis stream (pipelined
// XADDs, raw RESP or ioredis) or one NATS subject (JetStream publishes),
// stamping each batch with its send time so the consumer can measure end-to-end
// latency. Pacing is lib/pacing.ts's.
//
// It normally runs in its own worker thread (startProducer), so the
// consumer's event loop cannot delay a send and a send cannot delay a
// receive; `runProducer` also runs inline for comparison.
import { isMainThread, workerData } from "node:worker_threads";
import { pace, serveProducerThread, startProducerThread, type Lane, type PaceStats, type Producer } from "../lib/pacing.js";
import { BATCH_EVENTS } from "../lib/results.js";
import type { TickerLaneStats } from "../systems/ticker.js";

const PRODUCER_ROLE = "producer";

/**
 * Which system and client: Ticker over raw HTTP; Redis over raw RESP or
 * ioredis; NATS through nats.js with acks counted on one inbox.
 */
export type ProducerTarget = "ticker" | "redis" | "redis-ioredis" | "nats";

export interface ProducerSpec {
  target: ProducerTarget;
  port: number;
  /** Ticker stream id, Redis key or NATS subject. */
  stream: string;
  /** Events per second. */
  rate: number;
  /** Wall-clock ms (wallNow): sending starts at t0; events stamped in [tStart, tEnd) are measured; sending stops at tEnd. */
  t0: number;
  tStart: number;
  tEnd: number;
  tickMs: number;
  lanes: number;
  /** The payload's filler, `p`, next to the stamp `t`. */
  pad: string;
  /** Stop sending at tEnd even if behind (the peers' rows), or send all that is due (Ticker's). */
  stopAtEnd: boolean;
}

/** pace()'s counters and the lanes': lastSeq and retries stay 0 but for Ticker (the caller checks the others' stream length). */
export interface ProducerResult extends PaceStats, TickerLaneStats {}

async function lanesFor(spec: ProducerSpec, res: ProducerResult): Promise<Lane[]> {
  // Imported per target, so a thread publishing to Ticker loads no Redis or NATS client.
  switch (spec.target) {
    case "ticker":
      return (await import("../systems/ticker.js")).tickerLanes(spec.port, spec.lanes, spec.stream, spec.pad, res);
    case "redis":
      return (await import("../systems/redis.js")).respXaddLanes(spec.port, spec.lanes, spec.stream, spec.pad, res);
    case "redis-ioredis":
      return (await import("../systems/redis.js")).ioredisXaddLanes(spec.port, spec.lanes, spec.stream, spec.pad, res);
    case "nats":
      return (await import("../systems/nats.js")).natsLanes(spec.port, spec.lanes, spec.stream, spec.pad, res);
  }
}

export async function runProducer(spec: ProducerSpec): Promise<ProducerResult> {
  const res: ProducerResult = {
    sent: 0,
    accepted: 0,
    measured: 0,
    lastSeq: 0,
    requests: 0,
    batchMax: 0,
    stalls: 0,
    backlogMax: 0,
    retries: 0,
    tickLateP99Ms: 0,
    tickLateMaxMs: 0,
    rtt: "",
    errors: [],
  };
  const lanes = await lanesFor(spec, res);
  try {
    await pace({ ...spec, batchEventsMax: BATCH_EVENTS }, lanes, res);
  } finally {
    await Promise.all(lanes.map((l) => l.close()));
  }
  return res;
}

/** The producer in its own worker thread (or inline), with its clock's offset from ours. */
export function startProducer(spec: ProducerSpec, inline = false): Producer<ProducerResult> {
  if (inline) return { result: runProducer(spec), offset: Promise.resolve({ offsetMs: 0, rttMs: 0 }) };
  return startProducerThread<ProducerResult>(new URL(import.meta.url), { role: PRODUCER_ROLE, spec });
}

// As a worker: answer clock probes until told the spec, then produce and report.
if (!isMainThread && (workerData as { role?: string } | null)?.role === PRODUCER_ROLE) serveProducerThread(runProducer);
