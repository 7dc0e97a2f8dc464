// Background verification of closed segments after start-up, on a piscina
// thread so neither the front nor a shard worker spends time on it. One
// segment at a time on one thread: it is background work on a 2-core box.
import { Piscina } from "piscina";
import type { ScrubResult, ScrubTask } from "./scrub-task.js";
import { logger } from "../logger.js";

export interface Scrubber {
  done: Promise<void>;
  stop(): Promise<void>;
}

/** Verifies each item's segment in turn; an item may carry more (the shard's stream id), handed back as it came. */
export function startScrub<Item extends ScrubTask>(items: Item[], onResult: (item: Item, damage: ScrubResult | null) => void): Scrubber {
  const pool = new Piscina<ScrubTask, ScrubResult | null>({
    filename: new URL("./scrub-task.js", import.meta.url).href,
    minThreads: 0,
    maxThreads: 1,
    idleTimeout: 1000,
  });
  let stopped = false;
  const done = (async () => {
    for (const item of items) {
      if (stopped) return;
      try {
        const damage = await pool.run({ path: item.path, baseSeq: item.baseSeq, lastSeq: item.lastSeq, frameBytesMax: item.frameBytesMax });
        onResult(item, damage);
      } catch (err) {
        if (!stopped) logger().error({ kind: "scrub", path: item.path, err }, `scrub: ${item.path}: ${(err as Error).message}`);
      }
    }
  })();
  return {
    done,
    stop: async () => {
      stopped = true;
      await pool.destroy();
    },
  };
}
