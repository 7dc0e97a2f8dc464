// The load of a cluster fault run (test/faults/cluster.test.ts) and of the
// failover measurements (npm run test:cluster): producers, grouped consumers
// and a checkpoint poller of the fault suite (load.ts), each aimed at a node
// of its own and moved off a node the run takes down.
import { sleep } from "../helpers/cluster-db.js";
import type { History } from "./history.js";
import { CheckpointPoller, GroupConsumer, Producer, rng, type Target } from "./load.js";

export const STREAMS = ["cl.a", "cl.b", "cl.c", "cl.d", "cl.e", "cl.f"];
export const GROUPS = ["g1"];
export const PRODUCERS = 3;

/** The load: each loop has a target node of its own, moved off a node the test takes down. */
export class ClusterLoad {
  readonly targets: Target[] = [];
  readonly producers: Producer[];
  readonly consumers: GroupConsumer[];
  readonly poller: CheckpointPoller;
  private readonly pollTarget: Target;

  constructor(
    readonly history: History,
    seed: number,
    urls: string[],
    /** Names this load's producers (their batch ids and idempotency keys): loads of one history must not repeat them. */
    name: string,
  ) {
    const target = (i: number): Target => {
      const t = { url: urls[i % urls.length] };
      this.targets.push(t);
      return t;
    };
    this.producers = Array.from({ length: PRODUCERS }, (_, i) => new Producer(`${name}${i}`, STREAMS, this.history, rng(seed + 1 + i)));
    this.consumers = STREAMS.flatMap((s) => GROUPS.map((g) => new GroupConsumer(this.history, s, g)));
    this.poller = new CheckpointPoller(
      this.history,
      STREAMS.flatMap((stream) => GROUPS.map((group) => ({ stream, group }))),
    );
    this.producers.forEach((p, i) => p.start(target(i)));
    this.consumers.forEach((c, i) => c.start(target(i + 1)));
    this.pollTarget = target(2);
    this.poller.start(this.pollTarget);
  }

  /** Moves every loop aimed at `away` to `to`. */
  retarget(away: string, to: string): void {
    for (const t of this.targets) if (t.url === away) t.url = to;
  }

  async stop(to: string): Promise<void> {
    const target = { url: to };
    await Promise.all([...this.producers.map((p) => p.stop(target)), ...this.consumers.map((c) => c.stop()), this.poller.stop()]);
    await this.poller.pollOnce(target);
  }

  get unexpected(): string[] {
    return this.producers.flatMap((p) => p.stats.unexpected);
  }
}

/** Each stream exists and each group has checkpoint 0 (so every session resumes from it). */
export async function prepare(via: string, history: History): Promise<void> {
  const p = new Producer("setup", STREAMS, history, rng(1));
  for (const s of STREAMS) {
    while ((await p.publish({ url: via }, p.batch(s, 1, false, true))) !== 200) await sleep(100);
    for (const g of GROUPS) {
      const r = await fetch(`${via}/v1/streams/${s}/checkpoint`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ group: g, seq: 0 }),
      });
      if (r.status !== 200) throw new Error(`checkpoint ${s}/${g}: ${r.status} ${await r.text()}`);
    }
  }
}
