// The front's side of the shard workers: starts them, routes each stream to
// its shard, writes requests into that shard's in-ring and hands each
// response from its out-ring to whoever waits for it.
import { Worker } from "node:worker_threads";
import { fileURLToPath } from "node:url";
import type { Config } from "../config.js";
import { deriveLimits, REQUEST_META_BYTES_MAX, type Limits } from "../limits.js";
import { Ring, type RingMessage } from "../ring/ring.js";
import {
  ContentType,
  Op,
  PUSH_REQ_ID,
  readResponse,
  responseJson,
  requestBytes,
  shardOf,
  writeRequest,
  type FrontCommand,
  type RequestMeta,
  type Response,
  type WorkerEvent,
  type WorkerInit,
} from "../shard/protocol.js";
import { logger } from "../logger.js";

export type OnResponse = (r: Response) => void;

const WORKER_URL = new URL("../shard/worker.js", import.meta.url);
/** A wait on the out-ring ends after this long even without a wake-up: the pump ends within it of stop(). */
const RING_WAIT_MS_MAX = 1000;

class Shard {
  readonly inRing: Ring;
  readonly outRing: Ring;
  readonly worker: Worker;
  readonly pending = new Map<number, OnResponse>();
  /** Receives what the shard sends unasked (live batches, deleted streams). */
  onPush: OnResponse = () => {};
  ready: Promise<Extract<WorkerEvent, { type: "ready" }>>;
  closed: Promise<void>;
  private stopped = false;

  constructor(
    private readonly index: number,
    config: Config,
    limits: Limits,
  ) {
    const shard = index;
    const inBuf = Ring.allocate(config.ring_bytes);
    const outBuf = Ring.allocate(config.ring_bytes);
    this.inRing = new Ring(inBuf);
    // The requests of every socket served in one loop iteration wake the shard once.
    this.inRing.deferNotify = "turn";
    this.outRing = new Ring(outBuf);
    const init: WorkerInit = { shard, shards: config.shards, config, limits, inRing: inBuf, outRing: outBuf };
    this.worker = new Worker(fileURLToPath(WORKER_URL), {
      workerData: init,
      name: `shard-${shard}`,
      ...(config.shard_young_generation_mb > 0 ? { resourceLimits: { maxYoungGenerationSizeMb: config.shard_young_generation_mb } } : {}),
    });
    this.ready = new Promise((resolve, reject) => {
      this.closed = new Promise((resolveClosed) => {
        this.worker.on("message", (m: WorkerEvent) => {
          if (m.type === "ready") resolve(m);
          else if (m.type === "closed") resolveClosed();
          else if (m.type === "clusterGained") this.gains.get(`${m.shard}:${m.epoch}`)?.();
          else if (m.type === "fatal") {
            logger().fatal({ kind: "shard", shard }, `shard ${shard} failed: ${m.message}`);
            reject(new Error(m.message));
            process.exit(1);
          }
        });
        this.worker.on("error", (err) => {
          logger().fatal({ kind: "shard", shard, err }, `shard ${shard} crashed: ${err.stack ?? err}`);
          reject(err);
          process.exit(1);
        });
        this.worker.on("exit", () => resolveClosed());
      });
    });
    this.closed ??= Promise.resolve();
    void this.pump();
  }

  /** Cluster mode: clusterGain commands waiting for the thread's clusterGained, by "shard:epoch". */
  readonly gains = new Map<string, () => void>();

  /** deliverReady is running: a call from one of its callbacks returns at once. */
  private delivering = false;

  /** Delivers responses as they arrive; the views are valid only during the callback. */
  private async pump(): Promise<void> {
    while (!this.stopped) {
      this.deliverReady();
      await this.outRing.waitReadable(RING_WAIT_MS_MAX);
    }
  }

  /**
   * Hands every message already in the out-ring to whoever waits for it, now.
   * A callback may ask again (a page that starts from an answer or a push);
   * that call returns at once, since the message being handled is not
   * released yet and the loop here goes on to the rest.
   */
  deliverReady(): void {
    if (this.delivering) return;
    this.delivering = true;
    try {
      this.deliverAll();
    } finally {
      this.delivering = false;
    }
  }

  private deliverAll(): void {
    let msg: RingMessage | null;
    while ((msg = this.outRing.read())) {
      const r = readResponse(this.outRing, msg);
      let cb: OnResponse | undefined = this.onPush;
      if (r.reqId !== PUSH_REQ_ID) {
        cb = this.pending.get(r.reqId);
        this.pending.delete(r.reqId);
      }
      try {
        cb?.(r);
      } catch (err) {
        // One failing handler must not stop the answers to everyone else.
        logger().error({ kind: "internal", shard: this.index, err }, `front: handling an answer of shard ${this.index} failed: ${(err as Error).stack ?? err}`);
      } finally {
        this.outRing.release();
      }
    }
  }

  stop(): void {
    this.stopped = true;
  }
}

/** The parts of the front that follow streams live: the consume hub, and timelines' long polls. */
export type WatchOwner = "consume" | "timeline";

export class ShardPool {
  private readonly shards: Shard[] = [];
  private nextReqId = 1;
  /** What each part of the front wants pushed of a stream (WATCH_* bits); its shard is sent their union. */
  private readonly watches = new Map<string, Record<WatchOwner, number>>();
  private readonly pushListeners: OnResponse[] = [];
  /** The config's derived limits, for the front and (in WorkerInit) the shards. */
  readonly limits: Limits;

  constructor(private readonly config: Config) {
    this.limits = deriveLimits(config);
    for (let i = 0; i < config.shards; i++) this.shards.push(new Shard(i, config, this.limits));
    for (const s of this.shards) s.onPush = (r) => this.deliverPush(r);
    // The front takes bodies up to requestBodyBytesMax: each, with its metadata, must fit the ring the shard reads.
    const ringBytesMax = this.shards[0].inRing.messageBytesMax;
    if (ringBytesMax !== this.limits.ringMessageBytesMax || requestBytes(REQUEST_META_BYTES_MAX, this.limits.requestBodyBytesMax) > ringBytesMax) {
      const needed = requestBytes(REQUEST_META_BYTES_MAX, this.limits.requestBodyBytesMax);
      throw new Error(
        `limits invariant: a ring carries ${ringBytesMax} bytes a message (derived: ${this.limits.ringMessageBytesMax}), the largest request takes ${needed}`,
      );
    }
  }

  async ready(): Promise<Array<Extract<WorkerEvent, { type: "ready" }>>> {
    return Promise.all(this.shards.map((s) => s.ready));
  }

  /** Adds a receiver of every shard's unasked messages (live batches, head news, deleted streams). */
  onPush(cb: OnResponse): void {
    this.pushListeners.push(cb);
  }

  private deliverPush(r: Response): void {
    for (const cb of this.pushListeners) cb(r);
  }

  /**
   * Sets what `owner` wants pushed of a stream; the shard hears the union of
   * what every owner wants. False when the shard cannot take the change now
   * (nothing changes then).
   */
  setWatch(stream: string, owner: WatchOwner, mask: number): boolean {
    const before = this.watches.get(stream) ?? { consume: 0, timeline: 0 };
    const after = { ...before, [owner]: mask };
    const union = after.consume | after.timeline;
    if (union !== (before.consume | before.timeline) && !this.send(this.shardFor(stream), Op.Watch, { stream, watch: union }, null, () => {})) return false;
    if (union === 0) this.watches.delete(stream);
    else this.watches.set(stream, after);
    return true;
  }

  get inFlight(): number {
    let n = 0;
    for (const s of this.shards) n += s.pending.size;
    return n;
  }

  shardFor(stream: string): number {
    return shardOf(stream, this.shards.length);
  }

  get count(): number {
    return this.shards.length;
  }

  /** Each shard's two rings, for their occupancy on /metrics. */
  rings(): Array<{ in: Ring; out: Ring }> {
    return this.shards.map((s) => ({ in: s.inRing, out: s.outRing }));
  }

  /**
   * Sends one request to a shard. False when its ring is full right now or it
   * already has shard_requests_max requests in flight: the caller answers
   * 429, nothing is queued here.
   */
  send<O extends Op>(shard: number, op: O, meta: RequestMeta<O>, body: Uint8Array | null, onResponse: OnResponse): boolean {
    const s = this.shards[shard];
    // Every publish, checkpoint and stream config, whoever sends it (a producer, a dead letter, an ack), carries the lease it is fenced by.
    if ((op === Op.Publish || op === Op.SetCheckpoint || op === Op.PutStream || op === Op.DeleteStream) && this.clusterEpoch)
      meta = { ...meta, clusterEpoch: this.clusterEpoch((meta as RequestMeta<Op.Publish>).stream) };
    if (s.pending.size >= this.config.shard_requests_max) return false;
    const reqId = this.nextReqId;
    this.nextReqId = this.nextReqId === 0xffffffff ? 1 : this.nextReqId + 1;
    if (!writeRequest(s.inRing, op, reqId, meta, body)) return false;
    s.pending.set(reqId, onResponse);
    return true;
  }

  /**
   * Delivers the answers already in a shard's out-ring without waiting for
   * the pump's next turn: a timer that gives up on a shard looks there first,
   * so a front that was itself held up (GC, a busy core) does not call late
   * an answer that came in time.
   */
  deliverReady(shard: number): void {
    this.shards[shard].deliverReady();
  }

  /** Sends the same request to every shard and collects the JSON answers. */
  broadcast<O extends Op>(op: O, meta: RequestMeta<O>): Promise<Array<{ status: number; json: unknown }> | null> {
    const answers: Array<{ status: number; json: unknown }> = [];
    return new Promise((resolve) => {
      let left = this.shards.length;
      for (let i = 0; i < this.shards.length; i++) {
        const ok = this.send(i, op, meta, null, (r) => {
          answers[i] = { status: r.status, json: r.ct === ContentType.Json ? responseJson(r) : null };
          if (--left === 0) resolve(answers);
        });
        if (!ok) return resolve(null);
      }
    });
  }

  /**
   * Cluster mode: the epoch of this node's lease on a stream's cluster shard
   * while it serves the shard (undefined: it does not, and the shard refuses
   * the publish).
   */
  clusterEpoch: ((stream: string) => number | undefined) | null = null;

  /** Cluster mode: every thread brings its streams of a cluster shard up to date; resolves once all have. */
  clusterGain(shard: number, epoch: number): Promise<void> {
    const key = `${shard}:${epoch}`;
    return Promise.all(
      this.shards.map(
        (s) =>
          new Promise<void>((resolve) => {
            s.gains.set(key, () => {
              s.gains.delete(key);
              resolve();
            });
            s.worker.postMessage({ type: "clusterGain", shard, epoch } satisfies FrontCommand);
          }),
      ),
    ).then(() => undefined);
  }

  clusterLose(shard: number): void {
    for (const s of this.shards) s.worker.postMessage({ type: "clusterLose", shard } satisfies FrontCommand);
  }

  /** Tells the shard owning `stream` about damage found outside it. */
  notify(stream: string, cmd: FrontCommand): void {
    this.shards[this.shardFor(stream)].worker.postMessage(cmd);
  }

  async shutdown(): Promise<void> {
    for (const s of this.shards) s.worker.postMessage({ type: "shutdown" });
    await Promise.all(this.shards.map((s) => s.closed));
    for (const s of this.shards) {
      s.stop();
      await s.worker.terminate();
    }
  }
}
