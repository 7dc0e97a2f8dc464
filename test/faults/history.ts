// A Jepsen-style history of one fault run and the checker that judges it.
//
// Producers record every acknowledged event (stream, seq, payload hash) from
// publish responses; consumers record every delivery, every ack they sent and
// every checkpoint the server reported. After the run the checker reads each
// stream back (replay) and counts what broke a promise. Every count must be 0.
//
// The rules, one place each:
// - lost: an acknowledged seq missing from the replay, or there with another
//   payload (also: one seq acknowledged for two different payloads).
// - duplicated: a seq twice in the replay, or one payload appended twice when
//   it was sent with an idempotency key (a keyed retry must not append again).
//   Payloads are unique per run (the producers make them so); an unkeyed
//   request whose answer never came may be retried and land twice (at least
//   once), so only keyed payloads count here.
// - reordered: a replay seq below the one before it.
// - gaps: replay seqs that are not first..head contiguous (first is 1: fault
//   runs keep everything).
// - halfBatches: a payload `{b, n, i}` names its batch, the batch's size and
//   its index; every batch in the replay must be there whole (i = 0..n-1).
// - checkpoint regressions. A checkpoint is *confirmed* when the server
//   reported it (GET .../checkpoint): the store writes an ack to its file
//   before the value becomes what GET reports, so a reported value is on
//   disk. Acks are cumulative and coalesced, so an ack the client sent but the
//   server never reported is not confirmed (it may be lost in a crash). The
//   rule: every reported checkpoint (and every `hello.from - 1` of a group
//   session that resumed from the checkpoint) is at or above the highest one
//   confirmed before it, across restarts; and no checkpoint exceeds the
//   highest ack any member of the group sent (the server invents nothing).
// - sessions: within one connection, deliveries are consecutive (no repeat,
//   no step back, no skip). A new connection may start again at checkpoint + 1
//   (redelivery is allowed), which is not a duplicate; starting past the
//   highest ack sent + 1 would skip events and counts as a gap in delivery.
// - invented: a delivered seq that is not in the replay, or with another
//   payload than the replay's.
import { createHash } from "node:crypto";

export const payloadHash = (payload: unknown): string => createHash("sha1").update(JSON.stringify(payload)).digest("hex").slice(0, 16);

export interface PublishResponse {
  first_seq: number;
  last_seq: number;
  count: number;
  duplicates: Array<{ index: number; seq: number }>;
}

export interface SentEvent {
  payload: unknown;
  idempotency_key?: string;
}

export interface ReplayedEvent {
  seq: number;
  payload?: unknown;
}

export interface Counts {
  /** Acknowledged (stream, seq) pairs the run collected. */
  acked: number;
  /** Events read back over all streams. */
  replayed: number;
  /** Deliveries over all consumer sessions. */
  delivered: number;
  lost: number;
  duplicated: number;
  reordered: number;
  gaps: number;
  halfBatches: number;
  checkpointRegressions: number;
  checkpointsBeyondAcks: number;
  sessionOutOfOrder: number;
  sessionDuplicates: number;
  sessionSkips: number;
  invented: number;
}

/** The counts that must be 0 (everything but the sizes). */
export function failures(c: Counts): Partial<Counts> {
  const { acked: _a, replayed: _r, delivered: _d, ...bad } = c;
  return Object.fromEntries(Object.entries(bad).filter(([, v]) => v !== 0));
}

/** One consumer connection of a group (or without a group). */
export class Session {
  /** Where the server said delivery starts (hello.from); null until the hello. */
  from: number | null = null;
  /** The hello did not name a start: the session resumed from the checkpoint. */
  resumed = false;
  readonly deliveries: Array<{ seq: number; hash: string }> = [];
  readonly acks: number[] = [];

  constructor(
    readonly stream: string,
    readonly group: string | null,
    private readonly onHello: (s: Session) => void,
  ) {}

  /** The server's hello of an active member (a standby's comes when it takes over). */
  hello(from: number, resumed: boolean): void {
    this.from = from;
    this.resumed = resumed;
    this.onHello(this);
  }

  deliver(seq: number, payload: unknown): void {
    this.deliveries.push({ seq, hash: payloadHash(payload) });
  }

  ack(seq: number): void {
    this.acks.push(seq);
  }
}

export class History {
  /** stream -> seq -> payload hash, from publish responses. */
  private readonly acks = new Map<string, Map<number, string>>();
  /** Payload hashes sent with an idempotency key. */
  private readonly keyed = new Set<string>();
  /** Acked seqs whose payload differed from an earlier ack of the same seq, or whose response did not add up. */
  private conflicts = 0;
  readonly sessions: Session[] = [];
  /** Events that happened in order: checkpoints reported and sessions opened. */
  private readonly timeline: Array<{ kind: "checkpoint"; stream: string; group: string; seq: number } | { kind: "session"; session: Session }> = [];

  /** Records a 200 publish response for the events sent (in request order). */
  published(stream: string, res: PublishResponse, events: SentEvent[]): void {
    const dup = new Map(res.duplicates.map((d) => [d.index, d.seq]));
    let seq = res.first_seq;
    let m = this.acks.get(stream);
    if (!m) this.acks.set(stream, (m = new Map()));
    events.forEach((e, i) => {
      const hash = payloadHash(e.payload);
      if (e.idempotency_key !== undefined) this.keyed.add(hash);
      const s = dup.get(i) ?? seq++;
      const had = m!.get(s);
      if (had !== undefined && had !== hash) this.conflicts++;
      else m!.set(s, hash);
    });
    // The response must account for every event: appended ones are first..last.
    const appended = events.length - dup.size;
    if (res.count !== appended || (appended > 0 && seq - 1 !== res.last_seq)) this.conflicts++;
  }

  /** A checkpoint the server reported (GET .../checkpoint?group=). */
  checkpoint(stream: string, group: string, seq: number): void {
    this.timeline.push({ kind: "checkpoint", stream, group, seq });
  }

  session(stream: string, group: string | null): Session {
    const s = new Session(stream, group, (started) => this.timeline.push({ kind: "session", session: started }));
    this.sessions.push(s);
    return s;
  }

  get ackedEvents(): number {
    let n = 0;
    for (const m of this.acks.values()) n += m.size;
    return n;
  }

  /** Judges the history against every stream read back; `replays` must hold every stream published to. */
  check(replays: Map<string, ReplayedEvent[]>): Counts {
    const c: Counts = {
      acked: this.ackedEvents,
      replayed: 0,
      delivered: 0,
      lost: this.conflicts,
      duplicated: 0,
      reordered: 0,
      gaps: 0,
      halfBatches: 0,
      checkpointRegressions: 0,
      checkpointsBeyondAcks: 0,
      sessionOutOfOrder: 0,
      sessionDuplicates: 0,
      sessionSkips: 0,
      invented: 0,
    };
    const bySeq = new Map<string, Map<number, string>>();
    for (const [stream, events] of replays) {
      c.replayed += events.length;
      const m = new Map<number, string>();
      bySeq.set(stream, m);
      const payloads = new Map<string, number>();
      const batches = new Map<string, { n: number; seen: Set<number> }>();
      let expect = 1;
      let prev = 0;
      for (const e of events) {
        const hash = payloadHash(e.payload);
        if (m.has(e.seq)) c.duplicated++;
        else m.set(e.seq, hash);
        if (e.seq < prev) c.reordered++;
        prev = e.seq;
        if (e.seq !== expect) c.gaps++;
        expect = e.seq + 1;
        if (this.keyed.has(hash)) {
          const k = (payloads.get(hash) ?? 0) + 1;
          payloads.set(hash, k);
          if (k > 1) c.duplicated++;
        }
        const p = e.payload as { b?: unknown; n?: unknown; i?: unknown } | null;
        if (p && typeof p === "object" && typeof p.b === "string" && typeof p.n === "number" && typeof p.i === "number") {
          let b = batches.get(p.b);
          if (!b) batches.set(p.b, (b = { n: p.n, seen: new Set() }));
          b.seen.add(p.i);
        }
      }
      for (const b of batches.values()) {
        let whole = b.seen.size === b.n;
        for (const i of b.seen) if (i < 0 || i >= b.n) whole = false;
        if (!whole) c.halfBatches++;
      }
    }
    for (const [stream, acked] of this.acks) {
      const m = bySeq.get(stream);
      if (!m) throw new Error(`history: stream ${stream} was published to but not read back`);
      for (const [seq, hash] of acked) if (m.get(seq) !== hash) c.lost++;
    }
    this.checkSessions(c, bySeq);
    this.checkCheckpoints(c);
    return c;
  }

  private checkSessions(c: Counts, bySeq: Map<string, Map<number, string>>): void {
    for (const s of this.sessions) {
      c.delivered += s.deliveries.length;
      const m = bySeq.get(s.stream);
      let prev = s.from === null ? null : s.from - 1;
      for (const d of s.deliveries) {
        if (!m || m.get(d.seq) !== d.hash) c.invented++;
        if (prev !== null) {
          if (d.seq <= prev) {
            if (s.deliveries.some((o) => o !== d && o.seq === d.seq)) c.sessionDuplicates++;
            else c.sessionOutOfOrder++;
          } else if (d.seq !== prev + 1) c.sessionOutOfOrder++;
        }
        prev = prev === null ? d.seq : Math.max(prev, d.seq);
      }
    }
  }

  private checkCheckpoints(c: Counts): void {
    const key = (stream: string, group: string) => `${stream}\u0000${group}`;
    const confirmed = new Map<string, number>();
    const acksSent = new Map<string, number>();
    for (const s of this.sessions) {
      if (s.group === null) continue;
      const k = key(s.stream, s.group);
      let top = acksSent.get(k) ?? 0;
      for (const a of s.acks) if (a > top) top = a; // no spread: a long session sends more acks than a call takes arguments
      acksSent.set(k, top);
    }
    for (const t of this.timeline) {
      if (t.kind === "checkpoint") {
        const k = key(t.stream, t.group);
        const best = confirmed.get(k) ?? 0;
        if (t.seq < best) c.checkpointRegressions++;
        if (t.seq > (acksSent.get(k) ?? 0)) c.checkpointsBeyondAcks++;
        confirmed.set(k, Math.max(best, t.seq));
      } else {
        const s = t.session;
        if (s.group === null || !s.resumed || s.from === null) continue;
        const k = key(s.stream, s.group);
        // A session is judged by what was confirmed when it started delivering.
        if (s.from - 1 < (confirmed.get(k) ?? 0)) c.checkpointRegressions++;
        if (s.from - 1 > (acksSent.get(k) ?? 0)) c.sessionSkips++;
      }
    }
  }
}
