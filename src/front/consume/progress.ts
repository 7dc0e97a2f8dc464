// How far each consumer and group has got: acks (cumulative, coalesced into
// one checkpoint write per group at a time), nacks (redelivery, then a dead
// letter on the max_attempts-th), seeks, and checkpoints set over HTTP. The
// rules themselves are src/consumer/acks.ts; this applies them to sessions.
import { counts } from "../front-metrics.js";
import { ApiError } from "../../errors.js";
import { ackMovesCheckpoint, checkNack, countNack, deadLetterDue, forgetAttempts, takeAck } from "../../consumer/acks.js";
import { CONSUME_HEAD_BYTES, ContentType, Op, responseJson } from "../../shard/protocol.js";
import { HubPart } from "./part.js";
import type { ClientMessage } from "./params.js";
import { CLOSE_SERVER_ERROR } from "./ports.js";
import type { Group, Session } from "./state.js";
import { logger } from "../../logger.js";

/** Wait before retrying a request a busy shard refused. */
const RETRY_MS = 20;
/** At most one dead_letter log line per group this often (ms); the next says how many were left out. */
export const DEAD_LETTER_LOG_INTERVAL_MS = 1000;

/** Acks and nacks come only from a session in a group (the hub refuses them otherwise: no_group). */
function groupOf(s: Session): Group {
  if (!s.group) throw new Error("consume invariant: an ack or nack reached a session without a group");
  return s.group;
}

export class Progress extends HubPart {
  /** A client message of an attached session; throws ApiError for a protocol error. */
  handle(s: Session, m: ClientMessage): void {
    if (m.type !== "seek") {
      if (!s.group) throw new ApiError(400, "no_group", `"${m.type}" needs a consumer group: connect with ?group=`);
    }
    if (s.role !== "active")
      throw new ApiError(409, "not_active", `this connection is a standby of group "${s.group?.name}"; it receives no events until it takes over`);
    const delivered = s.nextSeq - 1;
    switch (m.type) {
      case "ack":
        if (!takeAck(m.seq, s.acked, delivered)) return; // older than an ack already taken
        this.ack(s, m.seq);
        if (!s.live) this.hub.delivery.pump(s);
        return;
      case "nack":
        checkNack(m.seq, s.acked, delivered);
        return this.nack(s, m.seq, m.reason);
      case "seek":
        if (m.seq > s.feed.head + 1) throw new ApiError(400, "invalid_seek", `seek to ${m.seq} is beyond head_seq + 1 (${s.feed.head + 1})`);
        return this.restartAt(s, m.seq, m.seq - 1);
    }
  }

  /** Cumulative: every seq up to `seq` is done; it becomes the group's checkpoint. */
  private ack(s: Session, seq: number): void {
    const g = groupOf(s);
    s.acked = seq;
    forgetAttempts(g.attempts, seq);
    g.checkpoint = seq;
    if (!g.writing) this.writeCheckpoint(g);
  }

  /** Delivery starts over at `seq`; answers to reads already asked for are dropped. */
  private restartAt(s: Session, seq: number, acked: number): void {
    s.nextSeq = seq;
    s.acked = acked;
    s.live = false;
    s.epoch++;
    this.hub.delivery.pump(s);
  }

  /**
   * Redelivers from `seq`. Delivery is in order, so a nack of N also
   * acknowledges everything below N. The max_attempts-th nack of one seq
   * appends it to the dead-letter stream and moves the group past it.
   */
  private nack(s: Session, seq: number, reason: string): void {
    const g = groupOf(s);
    if (ackMovesCheckpoint(seq - 1, s.acked)) this.ack(s, seq - 1);
    const attempts = countNack(g.attempts, seq);
    if (!deadLetterDue(attempts, s.params.maxAttempts)) {
      counts.redeliveries.add(s.feed.stream);
      return this.restartAt(s, seq, seq - 1);
    }
    s.epoch++;
    s.live = false;
    s.busy = true;
    this.deadLetter(s, seq, reason, attempts, s.epoch);
  }

  /**
   * A line per dead letter, but at most one per group per
   * DEAD_LETTER_LOG_INTERVAL_MS: a handler failing on every event would
   * otherwise log every event. The next line says how many were left out
   * (ticker_dead_letters_total counts them all).
   */
  private logDeadLetter(g: Group, d: { stream: string; group: string; seq: number; attempts: number; reason: string; dlq: string }): void {
    const now = this.clock.nowMs();
    if (now - g.deadLetterLoggedMs < DEAD_LETTER_LOG_INTERVAL_MS) {
      g.deadLettersUnlogged++;
      return;
    }
    const unlogged = g.deadLettersUnlogged;
    const more = unlogged > 0 ? ` (${unlogged} more since the last line)` : "";
    logger().warn(
      { kind: "dead_letter", ...d, unlogged },
      `group ${d.group} on ${d.stream}: seq ${d.seq} dead-lettered to ${d.dlq} after ${d.attempts} attempt(s): ${d.reason}${more}`,
    );
    g.deadLetterLoggedMs = now;
    g.deadLettersUnlogged = 0;
  }

  /** Reads event `seq`, appends it to `{stream}.dlq`, then acks it. */
  private deadLetter(s: Session, seq: number, reason: string, attempts: number, epoch: number): void {
    const f = s.feed;
    const group = groupOf(s).name;
    const dlq = `${f.stream}.dlq`;
    const retry = () => this.clock.after(RETRY_MS, () => !s.closed && this.deadLetter(s, seq, reason, attempts, epoch));
    const ok = this.shards.send(f.shard, Op.ConsumeRead, { stream: f.stream, from: seq, limit: 1, accept: ContentType.Json }, null, (r) => {
      // A consumer that closed right after its last nack still gets its dead letter written (not its ack:
      // the next member is given the event again, and the letter's idempotency key keeps it single).
      if (s.closed && r.status !== 200) return;
      if (r.status === 410) {
        // Expired meanwhile: nothing left to dead-letter; the reset follows.
        s.busy = false;
        return this.restartAt(s, seq, seq - 1);
      }
      if (r.status !== 200) return this.hub.groups.fail(s, ApiError.fromBody(r.status, responseJson(r)), CLOSE_SERVER_ERROR);
      const msg = JSON.parse(Buffer.from(r.body.subarray(CONSUME_HEAD_BYTES)).toString("utf8")) as { events: Array<Record<string, unknown>> };
      const event = msg.events[0];
      const letter = {
        type: "dead_letter",
        key: typeof event.key === "string" ? event.key : undefined,
        // The same event of the same group is dead-lettered once per dedup window.
        idempotency_key: `dlq:${group}:${seq}`,
        payload: { stream: f.stream, seq, group, reason, attempts, event },
      };
      const body = Buffer.from(JSON.stringify({ events: [letter] }));
      const sent = this.shards.send(this.shards.shardFor(dlq), Op.Publish, { stream: dlq, ct: ContentType.Json }, body, (p) => {
        if (p.status === 200) {
          counts.deadLetters.add(f.stream);
          this.logDeadLetter(groupOf(s), { stream: f.stream, group, seq, attempts, reason, dlq });
        }
        if (s.closed) return;
        if (p.status === 429) return retry();
        if (p.status !== 200) return this.hub.groups.fail(s, ApiError.fromBody(p.status, responseJson(p)), CLOSE_SERVER_ERROR);
        s.busy = false;
        if (epoch !== s.epoch) return this.hub.delivery.pump(s);
        if (ackMovesCheckpoint(seq, s.acked)) this.ack(s, seq);
        this.restartAt(s, seq + 1, seq);
      });
      if (!sent) retry();
    });
    if (!ok) retry();
  }

  private writeCheckpoint(g: Group): void {
    const seq = g.checkpoint;
    if (seq === null) return; // nothing acked yet: nothing to write
    if (g.moved) {
      g.writing = false;
      return;
    }
    g.writing = true;
    const body = Buffer.from(JSON.stringify({ group: g.name, seq }));
    const ok = this.shards.send(g.feed.shard, Op.SetCheckpoint, { stream: g.feed.stream }, body, (r) => {
      if (r.status !== 200) {
        const body = Buffer.from(r.body).toString("utf8");
        logger().error(
          { kind: "checkpoint", stream: g.feed.stream, group: g.name, status: r.status },
          `checkpoint of group ${g.name} on ${g.feed.stream} not written: ${body}`,
        );
      }
      // A full disk or a busy shard passes: the ack was taken, so it is
      // written once it can be, not only when the next ack comes.
      if (r.status === 503 || r.status === 429) return this.clock.after(RETRY_MS, () => this.writeCheckpoint(g)); // still "writing" meanwhile
      g.writing = false;
      if (g.checkpoint !== seq) this.writeCheckpoint(g);
      else this.hub.groups.dropIfIdle(g.feed);
    });
    if (!ok) this.clock.after(RETRY_MS, () => this.writeCheckpoint(g)); // still "writing" meanwhile
  }

  // ---- for other routes and shutdown -------------------------------------

  /** A checkpoint set over HTTP: the group's next member starts from it. */
  noteCheckpoint(stream: string, group: string, seq: number): void {
    const g = this.feeds.get(stream)?.groups.get(group);
    if (g && !g.writing) g.checkpoint = seq;
  }

  /** Checkpoint writes still on their way to the shards. */
  get pendingWrites(): number {
    let n = 0;
    for (const f of this.feeds.values()) for (const g of f.groups.values()) if (g.writing) n++;
    return n;
  }
}
