// Group checkpoints in cluster mode: written to PostgreSQL (the same
// ticker_checkpoints rows a single node keeps there) before the ack that
// moved them is answered, each statement fenced by the shard's lease, so a
// checkpoint never goes back when the shard moves and a stale owner that
// wakes up cannot move one. Group commit per shard as in the tail: the
// checkpoints set while a statement is in flight go in the next one, the
// latest of each (stream, group) only.
import type postgres from "postgres";
import { fence } from "./leases.js";
import { textArray } from "./sql-array.js";
import { FencedError } from "./tail.js";

interface Waiting {
  stream: string;
  group: string;
  seq: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

interface Queue {
  epoch: number;
  waiting: Waiting[];
  committing: boolean;
}

/** Checkpoints of one statement, at most. */
const COMMIT_CHECKPOINTS_MAX = 1000;

export class FencedCheckpoints {
  private readonly queues = new Map<number, Queue>();

  constructor(
    private readonly sql: postgres.Sql,
    private readonly nodeId: string,
  ) {}

  /** Resolves once the checkpoint is committed under `epoch`; rejects with FencedError if the epoch is not current. */
  set(shard: number, epoch: number, stream: string, group: string, seq: number): Promise<void> {
    let q = this.queues.get(shard);
    if (!q) {
      q = { epoch, waiting: [], committing: false };
      this.queues.set(shard, q);
    }
    if (epoch !== q.epoch) {
      if (epoch < q.epoch) return Promise.reject(new FencedError(shard, epoch));
      for (const w of q.waiting.splice(0)) w.reject(new FencedError(shard, q.epoch));
      q.epoch = epoch;
    }
    const done = new Promise<void>((resolve, reject) => q.waiting.push({ stream, group, seq, resolve, reject }));
    if (!q.committing) void this.commit(shard, q);
    return done;
  }

  private async commit(shard: number, q: Queue): Promise<void> {
    q.committing = true;
    try {
      while (q.waiting.length > 0) {
        const epoch = q.epoch;
        const batch = q.waiting.splice(0, COMMIT_CHECKPOINTS_MAX);
        // One row per (stream, group), the last set: an upsert may not touch a row twice.
        const latest = new Map<string, Waiting>();
        for (const w of batch) latest.set(`${w.stream}\u0000${w.group}`, w);
        const rows = [...latest.values()];
        try {
          const sql = this.sql;
          const r = await sql`insert into ticker_checkpoints (stream, group_name, seq)
            select c.stream, c.group_name, c.seq from (${fence(sql, shard, this.nodeId, epoch)}) as lease,
              unnest(${textArray(rows.map((w) => w.stream))}::text[], ${textArray(rows.map((w) => w.group))}::text[],
                ${textArray(rows.map((w) => String(w.seq)))}::bigint[]) as c(stream, group_name, seq)
            on conflict (stream, group_name) do update set seq = excluded.seq, updated_at = now()`;
          if (r.count !== rows.length) throw new FencedError(shard, epoch);
          for (const w of batch) w.resolve();
        } catch (err) {
          for (const w of batch) w.reject(err as Error);
        }
      }
    } finally {
      q.committing = false;
    }
  }
}
