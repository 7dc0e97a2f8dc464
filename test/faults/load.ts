// Load for fault runs: producers that publish JSON and FlatBuffers batches of
// varied sizes (some with idempotency keys, retried with the same keys until
// acknowledged), group consumers that ack what they get, and a poller of the
// checkpoints the server reports. Everything goes into a History; the loops
// survive the server going away and follow it to its next incarnation.
import WebSocket from "ws";
import { encodePublishBatch } from "../../src/wire/client.js";
import { api, replayAll } from "../helpers/server.js";
import type { History, ReplayedEvent, SentEvent, Session } from "./history.js";

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export { rng } from "../helpers/rng.js";

/** The seed of this run: TICKER_FAULT_SEED to repeat one, else fresh (printed). */
export function runSeed(name: string): number {
  const seed = process.env.TICKER_FAULT_SEED ? Number(process.env.TICKER_FAULT_SEED) : Math.floor(Math.random() * 2 ** 31);
  console.log(`${name}: seed ${seed} (repeat with TICKER_FAULT_SEED=${seed})`);
  return seed;
}

/** Where the server is now; the harness moves it on a restart. */
export interface Target {
  url: string;
}

export interface Batch {
  stream: string;
  id: string;
  events: SentEvent[];
  binary: boolean;
  keyed: boolean;
}

/** Batch sizes up to the 1,000-event request limit, small ones most often. */
const SIZES = [1, 1, 3, 10, 10, 50, 100, 250, 1000];
const REQUEST_TIMEOUT_MS = 5000;
/** 503s a fault may cause: a full disk, a server starting or stopping, a cluster shard between owners or its commit refused. */
const EXPECTED_503 = ["disk_full", "not_ready", "shutting_down", "shard_moving", "shard_unowned", "cluster_commit_failed"];

export interface ProducerStats {
  sent: number;
  acked: number;
  /** Answers by status (0: no answer: refused, reset or timed out). */
  statuses: Record<number, number>;
  /** Requests that never got an answer: their batch must be whole or absent. */
  unanswered: Batch[];
  /** Answers that are neither 200, 429 nor 503 disk_full / not ready: each one is a finding. */
  unexpected: string[];
}

export class Producer {
  readonly stats: ProducerStats = { sent: 0, acked: 0, statuses: {}, unanswered: [], unexpected: [] };
  private n = 0;
  private retry: Batch | null = null;
  private running = true;
  private done: Promise<void> | null = null;

  constructor(
    readonly id: string,
    private readonly streams: string[],
    private readonly history: History,
    private readonly random: () => number,
    private readonly opts: { sizes?: number[]; timeoutMs?: number; payloadPad?: number; onAnswer?: (b: Batch, status: number) => void } = {},
  ) {}

  private next(): Batch {
    const r = this.random;
    const sizes = this.opts.sizes ?? SIZES;
    const n = sizes[Math.floor(r() * sizes.length)];
    const keyed = r() < 0.5;
    return this.batch(this.streams[Math.floor(r() * this.streams.length)], n, r() < 0.5, keyed);
  }

  /** A new batch of `n` events, each payload naming its batch (see History: half batches). */
  batch(stream: string, n: number, binary: boolean, keyed: boolean): Batch {
    const id = `${this.id}-${this.n++}`;
    const pad = this.opts.payloadPad ? "x".repeat(this.opts.payloadPad) : undefined;
    const events = Array.from({ length: n }, (_, i) => ({
      payload: pad ? { b: id, n, i, pad } : { b: id, n, i },
      ...(keyed ? { idempotency_key: `${id}:${i}` } : {}),
    }));
    return { stream, id, events, binary, keyed };
  }

  /** Publishes one batch; resolves with the status (0: no answer) and the error code of a refusal. */
  async publish(target: Target, b: Batch): Promise<number> {
    return (await this.send(target, b)).status;
  }

  async send(target: Target, b: Batch): Promise<{ status: number; code?: string }> {
    // A Blob: Node's fetch sends it again on a 307 (a cluster node that does not own the stream); a Uint8Array it cannot.
    const body = b.binary
      ? new Blob([encodePublishBatch(b.events.map((e) => ({ type: "t", payload: e.payload, idempotency_key: e.idempotency_key })))])
      : JSON.stringify({ events: b.events.map((e) => ({ type: "t", ...e })) });
    this.stats.sent++;
    let status = 0;
    let json: any = null;
    try {
      const res = await fetch(`${target.url}/v1/streams/${b.stream}/events`, {
        method: "POST",
        headers: { "content-type": b.binary ? "application/x-flatbuffers" : "application/json" },
        body,
        signal: AbortSignal.timeout(this.opts.timeoutMs ?? REQUEST_TIMEOUT_MS),
      });
      const text = await res.text();
      status = res.status;
      json = text ? JSON.parse(text) : null;
    } catch {
      status = 0;
    }
    this.stats.statuses[status] = (this.stats.statuses[status] ?? 0) + 1;
    if (status === 200) {
      this.history.published(b.stream, json, b.events);
      this.stats.acked += b.events.length;
    } else if (status === 0) this.stats.unanswered.push(b);
    else if (status !== 429 && !(status === 503 && EXPECTED_503.includes(json?.error?.code))) {
      this.stats.unexpected.push(`${status} ${JSON.stringify(json)}`);
    }
    this.opts.onAnswer?.(b, status);
    return { status, code: json?.error?.code };
  }

  /** Publishes until stop(); a keyed batch is retried with the same keys until acknowledged. */
  start(target: Target): void {
    this.done = (async () => {
      while (this.running) {
        const b = this.retry ?? this.next();
        const status = await this.publish(target, b);
        this.retry = status !== 200 && b.keyed ? b : null;
        if (status !== 200) await sleep(20 + Math.floor(this.random() * 30));
      }
    })();
  }

  /** Stops after the request in flight; a keyed batch still unacknowledged is published once more to `target` if given. */
  async stop(target?: Target): Promise<void> {
    this.running = false;
    await this.done;
    if (target && this.retry) {
      for (let i = 0; i < 50 && this.retry; i++) {
        if ((await this.publish(target, this.retry)) === 200) this.retry = null;
        else await sleep(100);
      }
    }
  }
}

/** A group member in this process: JSON format, acks every message, reconnects while running. */
export class GroupConsumer {
  private ws: WebSocket | null = null;
  private running = true;
  private loop: Promise<void> | null = null;
  sessions = 0;
  /** Each connection's end: close code and the error codes received before it. */
  closes: Array<{ code: number; errors: string[] }> = [];
  current: Session | null = null;

  constructor(
    private readonly history: History,
    readonly stream: string,
    readonly group: string,
  ) {}

  /** One connection; resolves when it closes. */
  connectOnce(target: Target): Promise<{ code: number; errors: string[]; session: Session }> {
    const session = (this.current = this.history.session(this.stream, this.group));
    this.sessions++;
    // A cluster node that does not own the stream refuses the upgrade with 307 to the owner.
    const ws = (this.ws = new WebSocket(`${target.url.replace(/^http/, "ws")}/v1/streams/${this.stream}/consume?group=${this.group}`, {
      followRedirects: true,
    }));
    const errors: string[] = [];
    return new Promise((resolve) => {
      ws.on("message", (data: Buffer) => {
        const m = JSON.parse(data.toString("utf8"));
        if (m.type === "hello" && m.role === "active") session.hello(m.from, true);
        else if (m.type === "events") {
          for (const e of m.events) session.deliver(e.seq, e.payload);
          const last = m.events[m.events.length - 1].seq;
          session.ack(last);
          ws.send(JSON.stringify({ type: "ack", seq: last }));
        } else if (m.type === "error") errors.push(m.code);
      });
      ws.on("error", () => {});
      ws.on("close", (code) => {
        this.closes.push({ code, errors });
        resolve({ code, errors, session });
      });
    });
  }

  start(target: Target): void {
    this.loop = (async () => {
      while (this.running) {
        await this.connectOnce(target);
        if (this.running) await sleep(50);
      }
    })();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.ws?.close();
    // A socket between a redirect and its upgrade may never say it closed: cut it, and do not wait on it for ever.
    if (await Promise.race([this.loop?.then(() => true), sleep(STOP_WAIT_MS).then(() => false)])) return;
    this.ws?.terminate();
    await Promise.race([this.loop, sleep(STOP_WAIT_MS)]);
  }
}

/** How long a consumer's stop waits for its socket to close before it cuts it, and then again. */
const STOP_WAIT_MS = 3000;

/** Polls the checkpoints the server reports (what the checker calls confirmed). */
export class CheckpointPoller {
  private running = true;
  private loop: Promise<void> | null = null;
  polls = 0;

  constructor(
    private readonly history: History,
    private readonly pairs: Array<{ stream: string; group: string }>,
    private readonly intervalMs = 100,
  ) {}

  async pollOnce(target: Target): Promise<void> {
    await Promise.all(
      this.pairs.map(async ({ stream, group }) => {
        try {
          const r = await api(`${target.url}/v1/streams/${stream}/checkpoint?group=${group}`, "GET");
          if (r.status === 200) {
            this.history.checkpoint(stream, group, r.json.seq);
            this.polls++;
          }
        } catch {
          // The server is down or restarting: nothing reported, nothing confirmed.
        }
      }),
    );
  }

  start(target: Target): void {
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        await this.pollOnce(target);
        await sleep(this.intervalMs);
      }
    })();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }
}

/** Every stream read back (JSON replay), for History.check. */
export async function readBack(url: string, streams: string[]): Promise<Map<string, ReplayedEvent[]>> {
  const out = new Map<string, ReplayedEvent[]>();
  for (const s of streams) out.set(s, await replayAll(url, s));
  return out;
}

/** Creates the streams (the first `fsync` of them with durability fsync) and a checkpoint 0 for each group, so every session resumes. */
export async function setUpStreams(url: string, streams: string[], groups: string[], fsyncStreams: string[]): Promise<void> {
  for (const s of streams) {
    const r = await api(`${url}/v1/streams/${s}`, "PUT", fsyncStreams.includes(s) ? { durability: "fsync" } : {});
    if (r.status !== 201 && r.status !== 200) throw new Error(`PUT ${s}: ${r.status} ${JSON.stringify(r.json)}`);
    for (const g of groups) {
      const c = await api(`${url}/v1/streams/${s}/checkpoint`, "POST", { group: g, seq: 0 });
      if (c.status !== 200) throw new Error(`checkpoint ${s}/${g}: ${c.status} ${JSON.stringify(c.json)}`);
    }
  }
}
