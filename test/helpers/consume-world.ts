// The consume hub driven through its ports with in-memory sockets, shards
// and clock: no server, no worker threads, no real time. Used by
// test/unit/consume-hub.test.ts and consume-flush.test.ts.
import { configSchema, type Config } from "../../src/config.js";
import { ConsumeHub } from "../../src/front/consume/hub.js";
import { parseParams } from "../../src/front/consume/params.js";
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

export type Json = Record<string, unknown>;

/** Timers that run only when the test moves time on. */
export class FakeClock implements Clock {
  ms = 1_700_000_000_000;
  readonly immediates: Array<() => void> = [];
  private timers: Array<{ at: number; fn: () => void; everyMs: number }> = [];
  nowMs = () => this.ms;
  /** Monotonic time, moved only by writes: each socket write takes sendCostMs (0: flushes take no time, so none waits for the one before). */
  precise = 0;
  sendCostMs = 0;
  preciseMs = () => this.precise;
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
export function frame(m: Json): ArrayBuffer {
  const b = encoder.encode(JSON.stringify(m));
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

/**
 * One shard in memory. It answers a request as it takes it, and answers and
 * pushes leave in order through one queue, as through the out-ring.
 */
export class FakeShards implements ShardLink {
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
export class FakeSocket implements ConsumerSocket {
  readonly texts: Json[] = [];
  buffered = 0;
  pings = 0;
  closedWith: number | null = null;

  constructor(
    private readonly hub: ConsumeHub,
    private readonly data: SocketData,
    private readonly clock: FakeClock,
  ) {}

  getUserData(): SocketData {
    return this.data;
  }
  send(message: Uint8Array | string, isBinary: boolean): number {
    if (this.closedWith !== null) throw new Error("write to a closed socket");
    if (isBinary) throw new Error("these tests consume JSON");
    this.clock.precise += this.clock.sendCostMs;
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

export function world(overrides: Partial<Config> = {}) {
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
    const ws = new FakeSocket(hub, { params: parseParams(config, stream, query) }, clock);
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

export const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
