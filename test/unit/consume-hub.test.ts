// The consume hub's logic (membership, takeover, acks, nacks, dead letters,
// the window, the live/log hand-off) driven through its ports with in-memory
// sockets, shards and clock: no server, no worker threads, no real time.
// test/integration/consume*.test.ts hold the same promises end to end.
import { describe, it, expect, vi } from "vitest";
import { configSchema, type Config } from "../../src/config.js";
import { ConsumeHub } from "../../src/front/consume/hub.js";
import { parseParams } from "../../src/front/consume/params.js";
import { DEAD_LETTER_LOG_INTERVAL_MS } from "../../src/front/consume/progress.js";
import type { Clock, ConsumerSocket, ShardLink } from "../../src/front/consume/ports.js";
import type { SocketData } from "../../src/front/consume/state.js";
import type { OnResponse, WatchOwner } from "../../src/front/shards.js";
import {
  CONSUME_HEAD_BYTES,
  ConsumeHeadKind,
  ContentType,
  Op,
  WATCH_JSON,
  writeConsumeHead,
  type ConsumeHead,
  type RequestMeta,
  type Response,
} from "../../src/shard/protocol.js";
import { EVENTS_MESSAGE_HEAD, EVENTS_MESSAGE_TAIL } from "../../src/wire/event-codec.js";
import { logger } from "../../src/logger.js";

type Json = Record<string, unknown>;

/** Timers that run only when the test moves time on. */
class FakeClock implements Clock {
  ms = 1_700_000_000_000;
  readonly immediates: Array<() => void> = [];
  private timers: Array<{ at: number; fn: () => void; everyMs: number }> = [];
  nowMs = () => this.ms;
  // Flushes then take no time, so none waits for the one before.
  preciseMs = () => 0;
  soon(fn: () => void): void {
    this.immediates.push(fn);
  }
  after(ms: number, fn: () => void): void {
    this.timers.push({ at: this.ms + ms, fn, everyMs: 0 });
  }
  every(ms: number, fn: () => void): () => void {
    const t = { at: this.ms + ms, fn, everyMs: ms };
    this.timers.push(t);
    return () => (this.timers = this.timers.filter((x) => x !== t));
  }
  /** The earliest timer due at or before `until`, taken off the list (an interval is put back). */
  takeDue(until: number): (() => void) | null {
    let next: (typeof this.timers)[number] | null = null;
    for (const t of this.timers) if (t.at <= until && (!next || t.at < next.at)) next = t;
    if (!next) return null;
    this.ms = next.at;
    if (next.everyMs > 0) next.at += next.everyMs;
    else this.timers = this.timers.filter((x) => x !== next);
    return next.fn;
  }
}

interface FakeStream {
  events: Json[];
  first: number;
  checkpoints: Map<string, number>;
}

const encoder = new TextEncoder();

/** A client's text frame as uWS hands it over. */
function frame(m: Json): ArrayBuffer {
  const b = encoder.encode(JSON.stringify(m));
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

/**
 * One shard in memory. It answers a request as it takes it, and answers and
 * pushes leave in order through one queue, as through the out-ring.
 */
class FakeShards implements ShardLink {
  readonly streams = new Map<string, FakeStream>();
  readonly out: Array<() => void> = [];
  /** true: requests are refused as by a full ring. */
  refuse = false;
  /** Status SetCheckpoint answers (503: the disk is full). */
  checkpointStatus = 200;
  readonly checkpointWrites: Array<{ stream: string; group: string; seq: number }> = [];
  readonly published: Array<{ stream: string; events: Json[] }> = [];
  readonly watch = new Map<string, number>();
  pageReads = 0;
  private push: OnResponse = () => {};
  private reqId = 1;

  shardFor(): number {
    return 0;
  }

  onPush(cb: OnResponse): void {
    this.push = cb;
  }

  send(_shard: number, op: Op, meta: RequestMeta, body: Uint8Array | null, onResponse: OnResponse): boolean {
    if (this.refuse) return false;
    const r = this.answer(op, meta, body);
    r.reqId = this.reqId++;
    this.out.push(() => onResponse(r));
    return true;
  }

  /** The formats the hub follows a stream in, as the pool's setWatch takes them (the real one sends the shard their union with timelines'). */
  setWatch(stream: string, _owner: WatchOwner, mask: number): boolean {
    if (this.refuse) return false;
    this.watch.set(stream, mask);
    return true;
  }

  create(stream: string, events = 0): void {
    this.streams.set(stream, { events: [], first: 1, checkpoints: new Map() });
    this.append(stream, events);
  }

  /**
   * Appends `n` events. A watched stream's batch is pushed rendered
   * ("batch"), or only its new head ("head": the out-ring had no room), or
   * not at all ("none": for the hub's seq checks to be put to the test).
   */
  append(stream: string, n: number, push: "batch" | "head" | "none" = "batch"): void {
    const s = this.streams.get(stream)!;
    if (n === 0) return;
    const first = s.events.length + 1;
    for (let i = 0; i < n; i++) s.events.push({ seq: first + i, stream, type: "t", payload: { i: first + i } });
    const last = s.events.length;
    if (!((this.watch.get(stream) ?? 0) & WATCH_JSON) || push === "none") return;
    if (push === "head") {
      const id = encoder.encode(stream);
      this.pushHead({ kind: ConsumeHeadKind.HeadMoved, headSeq: last, firstSeq: s.first, idBytes: id.byteLength }, id, null);
    } else this.pushBatch(stream, first, last);
  }

  /** Pushes events first..last (already appended) as one live batch. */
  pushBatch(stream: string, first: number, last: number): void {
    const s = this.streams.get(stream)!;
    const id = encoder.encode(stream);
    const json = this.render(s.events.slice(first - 1, last));
    this.pushHead(
      { kind: ConsumeHeadKind.Batch, count: last - first + 1, first, last, firstSeq: s.first, idBytes: id.byteLength, binBytes: 0, jsonBytes: json.byteLength },
      id,
      json,
    );
  }

  private pushHead(h: ConsumeHead, id: Uint8Array, json: Uint8Array | null): void {
    const body = new Uint8Array(CONSUME_HEAD_BYTES + id.byteLength + (json ? json.byteLength : 0));
    writeConsumeHead(body, 0, h);
    body.set(id, CONSUME_HEAD_BYTES);
    if (json) body.set(json, CONSUME_HEAD_BYTES + id.byteLength);
    const r: Response = { status: 200, reqId: 0, ct: ContentType.None, body };
    this.out.push(() => this.push(r));
  }

  private render(events: Json[]): Uint8Array {
    return encoder.encode(EVENTS_MESSAGE_HEAD + events.map((e) => JSON.stringify(e)).join(",") + EVENTS_MESSAGE_TAIL);
  }

  private answer(op: Op, meta: RequestMeta, body: Uint8Array | null): Response {
    const json = (status: number, value: unknown): Response => ({ status, reqId: 0, ct: ContentType.Json, body: encoder.encode(JSON.stringify(value)) });
    // Every request the hub sends names its stream.
    const stream = (meta as { stream: string }).stream;
    const s = this.streams.get(stream);
    const bodyJson = () => JSON.parse(Buffer.from(body!).toString("utf8"));
    switch (op) {
      case Op.ConsumeStart: {
        if (!s) return json(404, { error: { code: "stream_not_found", message: "no such stream" } });
        const q = new URLSearchParams((meta as RequestMeta<Op.ConsumeStart>).query);
        const head = s.events.length;
        const from = q.get("from");
        const group = q.get("group");
        return json(200, {
          from: from === "earliest" ? s.first : from === "latest" ? head + 1 : from === null ? null : Number(from),
          checkpoint: group === null ? null : (s.checkpoints.get(group) ?? null),
          head_seq: head,
          first_seq: s.first,
        });
      }
      case Op.ConsumeRead: {
        this.pageReads++;
        const { from, limit } = meta as RequestMeta<Op.ConsumeRead>;
        if (from < s!.first) return json(410, { error: { code: "expired", message: "expired", first_seq: s!.first } });
        const page = s!.events.slice(from - 1, from - 1 + limit);
        const msg = page.length > 0 ? this.render(page) : new Uint8Array(0);
        const out = new Uint8Array(CONSUME_HEAD_BYTES + msg.byteLength);
        writeConsumeHead(out, 0, {
          kind: ConsumeHeadKind.Page,
          count: page.length,
          next: from + page.length,
          last: page.length > 0 ? from + page.length - 1 : 0,
          headSeq: s!.events.length,
          firstSeq: s!.first,
        });
        out.set(msg, CONSUME_HEAD_BYTES);
        return { status: 200, reqId: 0, ct: ContentType.None, body: out };
      }
      case Op.SetCheckpoint: {
        const { group, seq } = bodyJson() as { group: string; seq: number };
        if (this.checkpointStatus !== 200) return json(this.checkpointStatus, { error: { code: "storage_error", message: "disk full" } });
        this.checkpointWrites.push({ stream, group, seq });
        s!.checkpoints.set(group, seq);
        return json(200, {});
      }
      case Op.Publish: {
        this.published.push({ stream, events: (bodyJson() as { events: Json[] }).events });
        return json(200, {});
      }
      default:
        throw new Error(`the hub sent op ${op}`);
    }
  }
}

/** A consumer's socket; like uWS, end() and close() call the close handler at once, and a closed socket must not be written. */
class FakeSocket implements ConsumerSocket {
  readonly texts: Json[] = [];
  buffered = 0;
  pings = 0;
  closedWith: number | null = null;

  constructor(
    private readonly hub: ConsumeHub,
    private readonly data: SocketData,
  ) {}

  getUserData(): SocketData {
    return this.data;
  }
  send(message: Uint8Array | string, isBinary: boolean): number {
    if (this.closedWith !== null) throw new Error("write to a closed socket");
    if (isBinary) throw new Error("these tests consume JSON");
    this.texts.push(JSON.parse(typeof message === "string" ? message : Buffer.from(message).toString("utf8")));
    return 1;
  }
  cork(cb: () => void): void {
    cb();
  }
  getBufferedAmount(): number {
    return this.buffered;
  }
  end(code: number): void {
    this.gone(code);
  }
  close(): void {
    this.gone(1006);
  }
  ping(): void {
    this.pings++;
  }
  private gone(code: number): void {
    if (this.closedWith !== null) return;
    this.closedWith = code;
    this.hub.close(this);
  }

  /** Seqs of every event received, in order. */
  seqs(): number[] {
    return this.texts.filter((m) => m.type === "events").flatMap((m) => (m.events as Json[]).map((e) => e.seq as number));
  }
  of(type: string): Json[] {
    return this.texts.filter((m) => m.type === type);
  }
}

function world(overrides: Partial<Config> = {}) {
  const config = configSchema.parse(overrides);
  const clock = new FakeClock();
  const shards = new FakeShards();
  const hub = new ConsumeHub(config, shards, clock);
  /** Delivers every answer and push, and runs what they scheduled for the end of the turn. */
  const settle = () => {
    for (;;) {
      if (shards.out.length > 0) shards.out.shift()!();
      else if (clock.immediates.length > 0) clock.immediates.shift()!();
      else return;
    }
  };
  /** Moves time on by `ms`, firing the hub's timers (its 100 ms tick, retries) on the way. */
  const advance = (ms: number) => {
    const until = clock.ms + ms;
    for (let fn = clock.takeDue(until); fn; fn = clock.takeDue(until)) {
      fn();
      settle();
    }
    clock.ms = until;
  };
  const connect = (stream: string, query: string): FakeSocket => {
    if (!hub.admit()) throw new Error("consumers_max");
    const ws = new FakeSocket(hub, { params: parseParams(config, stream, query) });
    hub.open(ws);
    settle();
    return ws;
  };
  const say = (ws: FakeSocket, m: Json) => {
    hub.message(ws, frame(m), false);
    settle();
  };
  return { config, clock, shards, hub, settle, advance, connect, say };
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("consume hub: group membership and takeover", () => {
  it("when the active member leaves, the standby takes over at the group's checkpoint + 1", () => {
    const w = world();
    w.shards.create("jobs", 10);
    const a = w.connect("jobs", "group=g&from=earliest");
    const b = w.connect("jobs", "group=g");
    expect(a.of("hello")).toMatchObject([{ role: "active", from: 1 }]);
    expect(a.seqs()).toEqual(range(1, 10));
    expect(b.of("hello")).toMatchObject([{ role: "standby", from: null }]);
    w.say(a, { type: "ack", seq: 4 });

    a.close();
    w.settle();
    expect(b.of("hello")).toMatchObject([{ role: "standby" }, { role: "active", from: 5 }]);
    expect(b.seqs()).toEqual(range(5, 10));
    expect(w.hub.members("jobs").groups.get("g")).toMatchObject([{ role: "active", next_seq: 11 }]);
  });

  it("an active member silent for consumer_takeover_ms with a standby waiting gets a takeover error and is closed; the standby takes over", () => {
    const w = world({ consumer_takeover_ms: 3000 });
    w.shards.create("jobs", 6);
    const a = w.connect("jobs", "group=g&from=earliest");
    const b = w.connect("jobs", "group=g");
    w.say(a, { type: "ack", seq: 2 });
    // Answering pings keeps it active however long it takes to ack.
    for (let i = 0; i < 10; i++) {
      w.advance(1000);
      w.hub.pong(a);
    }
    expect(a.closedWith).toBeNull();
    expect(a.pings).toBeGreaterThanOrEqual(9);

    w.advance(2900);
    expect(a.closedWith).toBeNull();
    w.advance(300);
    expect(a.of("error")).toMatchObject([{ code: "takeover" }]);
    expect(a.closedWith).not.toBeNull();
    expect(b.of("hello").at(-1)).toMatchObject({ role: "active", from: 3 });
    expect(b.seqs()).toEqual(range(3, 6));
  });

  it("without a standby, a silent active member keeps its place until consumer_idle_timeout_ms", () => {
    const w = world({ consumer_takeover_ms: 3000, consumer_idle_timeout_ms: 20_000 });
    w.shards.create("jobs", 3);
    const a = w.connect("jobs", "group=g&from=earliest");
    w.advance(19_900);
    expect(a.closedWith).toBeNull();
    expect(a.of("heartbeat").length).toBeGreaterThan(10);
    w.advance(200);
    expect(a.of("error")).toMatchObject([{ code: "idle_timeout" }]);
    expect(a.closedWith).toBe(1001);
  });
});

describe("consume hub: acks and checkpoints", () => {
  it("an ack moves the checkpoint only forward, and an ack beyond what was delivered is refused and moves nothing", () => {
    const w = world();
    w.shards.create("jobs", 10);
    const a = w.connect("jobs", "group=g&from=earliest&window=5");
    expect(a.seqs()).toEqual(range(1, 5));
    w.say(a, { type: "ack", seq: 3 });
    w.say(a, { type: "ack", seq: 2 });
    w.say(a, { type: "ack", seq: 3 });
    expect(w.shards.checkpointWrites.map((c) => c.seq)).toEqual([3]);

    const delivered = a.seqs().at(-1)!;
    w.say(a, { type: "ack", seq: delivered + 1 });
    expect(a.of("error")).toMatchObject([{ code: "invalid_ack" }]);
    expect(a.closedWith).toBe(1008);
    expect(w.shards.checkpointWrites.map((c) => c.seq)).toEqual([3]);
    // The next member starts right after the last ack taken.
    const b = w.connect("jobs", "group=g");
    expect(b.of("hello")).toMatchObject([{ role: "active", from: 4 }]);
  });

  it("acks that come while a checkpoint write is in flight are coalesced: the newest is written next", () => {
    const w = world();
    w.shards.create("jobs", 10);
    const a = w.connect("jobs", "group=g&from=earliest");
    for (const seq of [2, 5, 7]) w.hub.message(a, frame({ type: "ack", seq }), false);
    w.settle();
    expect(w.shards.checkpointWrites.map((c) => c.seq)).toEqual([2, 7]);
    expect(w.hub.pendingWrites).toBe(0);
  });

  it("a checkpoint write refused by a full disk is retried until it is written", () => {
    const w = world();
    w.shards.create("jobs", 4);
    const a = w.connect("jobs", "group=g&from=earliest");
    const logged = vi.spyOn(logger(), "error").mockImplementation(() => {});
    w.shards.checkpointStatus = 503;
    w.say(a, { type: "ack", seq: 4 });
    w.advance(100);
    expect(w.shards.checkpointWrites).toEqual([]);
    expect(w.hub.pendingWrites).toBe(1);
    expect(logged).toHaveBeenCalledWith(
      expect.objectContaining({ kind: "checkpoint", group: "g" }),
      expect.stringContaining("checkpoint of group g on jobs not written"),
    );
    logged.mockRestore();
    w.shards.checkpointStatus = 200;
    w.advance(100);
    expect(w.shards.checkpointWrites).toEqual([{ stream: "jobs", group: "g", seq: 4 }]);
    expect(w.hub.pendingWrites).toBe(0);
  });
});

describe("consume hub: nacks and dead letters", () => {
  it("a nack redelivers from its seq, and the max_attempts-th nack dead-letters the event and moves the group past it", () => {
    const w = world();
    w.shards.create("jobs", 5);
    const a = w.connect("jobs", "group=g&from=earliest&max_attempts=2");
    expect(a.seqs()).toEqual(range(1, 5));

    w.say(a, { type: "nack", seq: 3, reason: "boom" });
    // A nack of 3 acknowledges 1..2 and delivers from 3 again.
    expect(w.shards.checkpointWrites.map((c) => c.seq)).toEqual([2]);
    expect(a.seqs()).toEqual([...range(1, 5), ...range(3, 5)]);
    expect(w.shards.published).toEqual([]);

    w.say(a, { type: "nack", seq: 3, reason: "boom again" });
    expect(w.shards.published).toHaveLength(1);
    const { stream, events } = w.shards.published[0];
    expect(stream).toBe("jobs.dlq");
    expect(events).toMatchObject([
      {
        type: "dead_letter",
        idempotency_key: "dlq:g:3",
        payload: { stream: "jobs", seq: 3, group: "g", reason: "boom again", attempts: 2, event: { seq: 3 } },
      },
    ]);
    expect(w.shards.checkpointWrites.map((c) => c.seq)).toEqual([2, 3]);
    expect(a.seqs()).toEqual([...range(1, 5), ...range(3, 5), 4, 5]);
  });

  it("logs at most one dead letter per group a second, and the next line says how many it left out", () => {
    const lines: Array<Record<string, unknown>> = [];
    const warn = vi.spyOn(logger(), "warn").mockImplementation(((o: Record<string, unknown>) => void lines.push(o)) as never);
    try {
      const w = world();
      w.shards.create("jobs", 6);
      const a = w.connect("jobs", "group=g&from=earliest&max_attempts=1");
      for (const seq of [1, 2, 3]) w.say(a, { type: "nack", seq, reason: `boom ${seq}` });
      expect(w.shards.published).toHaveLength(3);
      expect(lines.map((l) => [l.kind, l.seq, l.unlogged])).toEqual([["dead_letter", 1, 0]]);
      w.advance(DEAD_LETTER_LOG_INTERVAL_MS);
      w.say(a, { type: "nack", seq: 4, reason: "boom 4" });
      expect(lines.map((l) => [l.seq, l.unlogged])).toEqual([
        [1, 0],
        [4, 2],
      ]);
    } finally {
      warn.mockRestore();
    }
  });

  it("a nack outside the delivered, unacked seqs is refused and the group does not move", () => {
    const w = world();
    w.shards.create("jobs", 5);
    const a = w.connect("jobs", "group=g&from=earliest");
    w.say(a, { type: "ack", seq: 2 });
    w.say(a, { type: "nack", seq: 2, reason: "" });
    expect(a.of("error")).toMatchObject([{ code: "invalid_nack" }]);
    expect(w.shards.checkpointWrites.map((c) => c.seq)).toEqual([2]);
    expect(w.shards.published).toEqual([]);
  });
});

describe("consume hub: the window and the live path", () => {
  it("delivery pauses once window events are unacked and resumes as acks come", () => {
    const w = world();
    w.shards.create("jobs", 10);
    const a = w.connect("jobs", "group=g&from=earliest&window=3");
    expect(a.seqs()).toEqual(range(1, 3));
    const reads = w.shards.pageReads;
    w.advance(1000);
    expect(a.seqs()).toEqual(range(1, 3));
    expect(w.shards.pageReads).toBe(reads);

    w.say(a, { type: "ack", seq: 2 });
    expect(a.seqs()).toEqual(range(1, 5));
    w.say(a, { type: "ack", seq: 5 });
    expect(a.seqs()).toEqual(range(1, 8));
  });

  it("a caught-up consumer gets pushed batches as they are, without reading the log; a batch over its window is read from the log as room allows", () => {
    const w = world();
    w.shards.create("jobs", 2);
    const a = w.connect("jobs", "group=g&from=earliest&window=4");
    w.say(a, { type: "ack", seq: 2 });
    const reads = w.shards.pageReads;
    w.shards.append("jobs", 3);
    w.settle();
    expect(a.seqs()).toEqual(range(1, 5));
    expect(w.shards.pageReads).toBe(reads);

    // 3 unacked, room for 1: the next batch of 4 cannot go live.
    w.shards.append("jobs", 4);
    w.settle();
    expect(a.seqs()).toEqual(range(1, 6));
    w.say(a, { type: "ack", seq: 6 });
    expect(a.seqs()).toEqual(range(1, 9));
    // Caught up again: live.
    w.say(a, { type: "ack", seq: 9 });
    const readsAfter = w.shards.pageReads;
    w.shards.append("jobs", 2);
    w.settle();
    expect(a.seqs()).toEqual(range(1, 11));
    expect(w.shards.pageReads).toBe(readsAfter);
  });

  it("when the shard pushes only the new head, a live consumer reads those events from the log, without a gap or a duplicate", () => {
    const w = world();
    w.shards.create("jobs", 3);
    const a = w.connect("jobs", "from=latest");
    w.shards.append("jobs", 2);
    w.shards.append("jobs", 3, "head");
    w.settle();
    expect(a.seqs()).toEqual(range(4, 8));
    // Then live again.
    const reads = w.shards.pageReads;
    w.shards.append("jobs", 1);
    w.settle();
    expect(a.seqs()).toEqual(range(4, 9));
    expect(w.shards.pageReads).toBe(reads);
  });

  it("a live batch that does not start at the consumer's next seq sends it to the log: no gap, no duplicate", () => {
    const w = world();
    w.shards.create("jobs", 3);
    const a = w.connect("jobs", "from=latest");
    // A gap: 4..5 never pushed, then 6..7.
    w.shards.append("jobs", 2, "none");
    w.shards.append("jobs", 2);
    w.settle();
    expect(a.seqs()).toEqual(range(4, 7));
    // An overlap: 8..9 not pushed, then a batch of 6..9.
    w.shards.append("jobs", 2, "none");
    w.shards.pushBatch("jobs", 6, 9);
    w.settle();
    expect(a.seqs()).toEqual(range(4, 9));
  });

  it("a socket holding consumer_buffer_bytes_max is sent nothing until it drains, then catches up from the log", () => {
    const w = world();
    w.shards.create("jobs", 1);
    const a = w.connect("jobs", "from=latest");
    a.buffered = w.config.consumer_buffer_bytes_max;
    w.shards.append("jobs", 5);
    w.settle();
    w.advance(300);
    expect(a.seqs()).toEqual([]);

    a.buffered = 0;
    w.hub.drain(a);
    w.settle();
    expect(a.seqs()).toEqual(range(2, 6));
  });
});
