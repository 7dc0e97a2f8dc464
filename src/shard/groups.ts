// Consumer groups on the shard's side: their checkpoints (set, shown, copied
// to PostgreSQL / Redis when those are configured) and their lag behind the
// stream's head. Who is connected is the front's to add.
import { ApiError } from "../errors.js";
import { rejectUnknownFields } from "../validate.js";
import type { ExternalCheckpoints } from "../consumer/external.js";
import { frameTs } from "../log/record.js";
import type { Op, RequestOf } from "./protocol.js";
import type { ShardBuffers } from "./buffers.js";
import type { Stream } from "./stream.js";
import { checkGroup } from "../stream-id.js";
import type { Outbox } from "./worker.js";

const CHECKPOINT_FIELDS: ReadonlySet<string> = new Set(["group", "seq"]);

function groupParam(query: string): string {
  const g = new URLSearchParams(query).get("group");
  if (g === null) throw new ApiError(400, "invalid_parameter", `"group" is required`);
  return checkGroup(g);
}

/** The cluster's part of a checkpoint (src/shard/cluster.ts), set in cluster mode. */
export interface ClusterCheckpoint {
  /** `epoch` undefined: the front does not serve the stream's shard (refused). */
  setCheckpoint(s: Stream, group: string, seq: number, epoch: number | undefined, reqId: number): void;
}

export class ConsumerGroups {
  /** Set by the worker in cluster mode. */
  cluster: ClusterCheckpoint | null = null;

  constructor(
    private readonly outbox: Outbox,
    private readonly buffers: ShardBuffers,
    /** Set once start-up has connected to them, if configured. */
    private readonly external: () => ExternalCheckpoints | null,
  ) {}

  setCheckpoint(s: Stream, req: RequestOf<Op.SetCheckpoint>): void {
    const body = this.buffers.jsonBody(req.body);
    if (typeof body !== "object" || body === null || Array.isArray(body)) throw new ApiError(400, "invalid_body", `body must be {"group": "...", "seq": N}`);
    rejectUnknownFields(body, CHECKPOINT_FIELDS, "invalid_body");
    const group = checkGroup((body as { group?: unknown }).group);
    const seq = (body as { seq?: unknown }).seq;
    if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 0) {
      throw new ApiError(400, "invalid_parameter", `"seq" must be an integer from 0 to head_seq (${s.log.headSeq})`, { head_seq: s.log.headSeq });
    }
    if (seq > s.log.headSeq) {
      throw new ApiError(400, "invalid_parameter", `"seq" ${seq} is above the stream's head_seq ${s.log.headSeq}`, { head_seq: s.log.headSeq });
    }
    // Cluster mode: set once PostgreSQL has it, fenced by the lease (src/shard/cluster.ts).
    if (this.cluster) return this.cluster.setCheckpoint(s, group, seq, req.meta.clusterEpoch, req.reqId);
    s.checkpoints.set(group, seq);
    this.external()?.write(s.id, group, seq);
    this.outbox.json(req.reqId, 200, { group, seq });
  }

  getCheckpoint(s: Stream, req: RequestOf<Op.GetCheckpoint>): void {
    const group = groupParam(req.meta.query);
    this.outbox.json(req.reqId, 200, { group, seq: checkpointOf(s, group).seq });
  }

  lag(s: Stream, req: RequestOf<Op.Lag>): void {
    this.outbox.json(req.reqId, 200, this.lagOf(s, groupParam(req.meta.query)));
  }

  /** Every group with a checkpoint on the stream, with its lag. */
  list(s: Stream, req: RequestOf<Op.Groups>): void {
    this.outbox.json(req.reqId, 200, { groups: [...s.checkpoints.groups.keys()].sort().map((g) => ({ ...this.lagOf(s, g), members: [] })) });
  }

  /**
   * Lag in events and in time: lag_ms is how long the oldest event the group
   * has not acknowledged has waited (0 when it is caught up).
   */
  private lagOf(s: Stream, group: string): Record<string, unknown> {
    const checkpoint = checkpointOf(s, group).seq;
    const head = s.log.committedSeq;
    const lagMs = oldestUnackedAgeMs(s, checkpoint, this.buffers, Date.now());
    return { group, head_seq: head, checkpoint_seq: checkpoint, lag: Math.max(0, head - checkpoint), lag_ms: lagMs };
  }
}

/** How long the oldest event past `checkpoint` has waited (0 when there is none): one record read. */
export function oldestUnackedAgeMs(s: Stream, checkpoint: number, buffers: ShardBuffers, nowMs: number): number {
  const log = s.log;
  const oldest = Math.max(checkpoint + 1, log.firstSeq);
  if (oldest > log.committedSeq) return 0;
  const page = log.read(oldest, oldest, 1, 1, buffers.page);
  return page.count === 1 ? Math.max(0, nowMs - frameTs(page.buf, 0)) : 0;
}

function checkpointOf(s: Stream, group: string) {
  const c = s.checkpoints.get(group);
  if (!c) throw new ApiError(404, "group_not_found", `group "${group}" has no checkpoint on stream "${s.id}"`, { group });
  return c;
}
