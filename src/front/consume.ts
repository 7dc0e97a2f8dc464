// Push consumption over WebSocket. The front keeps every consumer's place
// (next seq, acks, window) and serves it one of two ways:
//
// - live: the shard pushes each committed batch of a watched stream once,
//   already rendered; every caught-up consumer whose next seq is the batch's
//   first seq gets those same bytes;
// - log: a consumer that is behind, over its window or over its socket
//   buffer reads pages from the shard (ConsumeRead) until a page reaches the
//   head, then rides live again.
//
// The hand-off compares seqs only. Pushes and page answers come through one
// FIFO out-ring per shard, so a page that reached head H is followed by
// pushes starting at H + 1, and anything else sends the consumer back to the
// log. Memory per consumer is its socket buffer bound plus one message.
//
// One of the two hub files (~700 lines: sessions, feeds, groups, acks and the WebSocket route). Splitting it by what it
// owns is issue 11; this session only touched it surgically.
import uWS from "uWebSockets.js";
import type { Config } from "../config.js";
import { checkQuery, intParam } from "../validate.js";
import type { GuardedApp } from "./auth.js";
import { ApiError } from "../errors.js";
import { ackMovesCheckpoint, checkNack, countNack, deadLetterDue, forgetAttempts, takeAck } from "../consumer/acks.js";
import { CONSUME_HEAD_BYTES, ContentType, Op, WATCH_BINARY, WATCH_JSON, readConsumeHead, responseJson } from "../shard/protocol.js";
import { joinRun, runsOf, type LiveBatch } from "./live-batch.js";
import { STREAM_ID } from "../stream-id.js";
import type { Response } from "../shard/protocol.js";
import { exchange, sendError } from "./http.js";
import type { ShardPool } from "./shards.js";

// "token": the API key, which a browser WebSocket cannot send as a header (src/front/auth.ts).
const QUERY_KEYS = new Set(["group", "from", "from_time", "format", "window", "max_attempts", "token"]);
/** Client messages are small JSON objects; a nack reason is capped. */
const CLIENT_MESSAGE_BYTES_MAX = 4096;
const NACK_REASON_CHARS_MAX = 1024;
const TICK_MS = 100;
const PING_INTERVAL_MS = 1000;
/** Wait before retrying a request a busy shard refused. */
const RETRY_MS = 20;

// WebSocket close codes: 1001 going away, 1008 policy violation, 1011 server error.
const CLOSE_GOING_AWAY = 1001;
const CLOSE_POLICY = 1008;
const CLOSE_SERVER_ERROR = 1011;

interface ConsumeParams {
  stream: string;
  group: string | null;
  binary: boolean;
  window: number;
  maxAttempts: number;
  /** group / from / from_time, resolved by the shard. */
  query: string;
}

interface StartInfo {
  from: number | null;
  checkpoint: number | null;
  head_seq: number;
  first_seq: number;
}

/** What uWS keeps on each socket from the upgrade. */
export interface SocketData {
  params: ConsumeParams;
  /** Set once the shard has said where the consumer starts. */
  session?: Session;
  closed?: boolean;
  /** Messages that came before the session (copied: uWS reuses its buffer). */
  early?: Array<{ data: ArrayBuffer; isBinary: boolean }>;
}

/** Client messages held while the shard answers where a consumer starts. */
const EARLY_MESSAGES_MAX = 16;

type Socket = uWS.WebSocket<SocketData>;

class Session {
  role: "active" | "standby" = "standby";
  nextSeq = 0;
  /** Highest seq acknowledged (or skipped by a seek): the window counts from here. */
  acked = 0;
  /** Following live pushes; false while served from the log. */
  live = false;
  /** A page read or a dead-letter step is in flight. */
  busy = false;
  /** Bumped by seek, nack and promotion: answers to older reads are dropped. */
  epoch = 0;
  closed = false;
  lastSent: number;
  lastSeen: number;
  lastPing: number;
  readonly connectedAt = Date.now();

  constructor(
    readonly ws: Socket,
    readonly feed: Feed,
    readonly group: Group | null,
    readonly params: ConsumeParams,
    /** `from` / `from_time` as resolved at connect; null when not given. */
    readonly explicitFrom: number | null,
  ) {
    this.lastSent = this.lastSeen = this.lastPing = this.connectedAt;
  }

  /** Unacked events it may still be sent (groups only; others are bound by the socket buffer). */
  get room(): number {
    return this.group ? this.params.window - (this.nextSeq - 1 - this.acked) : Number.MAX_SAFE_INTEGER;
  }
}

class Group {
  active: Session | null = null;
  readonly standby: Session[] = [];
  /** Latest acknowledged seq known here; null before the first checkpoint. */
  checkpoint: number | null;
  /** A SetCheckpoint is on its way to the shard. */
  writing = false;
  /** Nacks per seq; entries go once the group acks past them. */
  readonly attempts = new Map<number, number>();

  constructor(
    readonly name: string,
    readonly feed: Feed,
    checkpoint: number | null,
  ) {
    this.checkpoint = checkpoint;
  }

  get empty(): boolean {
    return this.active === null && this.standby.length === 0;
  }
}

/** Everything the front knows about one consumed stream. */
class Feed {
  readonly sessions = new Set<Session>();
  readonly groups = new Map<string, Group>();
  /** WATCH_* formats the shard renders live batches in. */
  mask = 0;
  /** Live batches received this turn, sent joined when it ends. */
  pending: LiveBatch[] = [];
  pendingBytes = 0;
  flushQueued = false;
  /** performance.now() before which the next flush waits (see flushLive). */
  nextFlushAt = 0;

  constructor(
    readonly stream: string,
    readonly shard: number,
    public head: number,
    public first: number,
  ) {}
}

export interface MemberInfo {
  role: "active" | "standby";
  connected_at: number;
  next_seq: number | null;
}

export class ConsumeHub {
  private readonly feeds = new Map<string, Feed>();
  /** Sockets open plus upgrades under way, against consumers_max. */
  private connections = 0;
  private readonly tick: NodeJS.Timeout;
  /** Largest message the live path sends as is; larger batches are paged from the log. */
  private readonly liveMessageBytesMax: number;

  constructor(
    private readonly config: Config,
    private readonly pool: ShardPool,
  ) {
    this.liveMessageBytesMax = 2 * config.consume_page_bytes_max;
    pool.onPush((r) => this.onPush(r));
    this.tick = setInterval(() => this.onTick(), TICK_MS);
  }

  /** Bytes uWS may queue on one socket: the buffer bound plus one message of either path. */
  get socketBytesMax(): number {
    return this.config.consumer_buffer_bytes_max + this.liveMessageBytesMax + 8 * this.config.event_bytes_max;
  }

  // ---- connect -----------------------------------------------------------

  /** Checks what the front can check alone; throws ApiError(400). */
  parseParams(stream: string, query: string): ConsumeParams {
    if (!STREAM_ID.test(stream)) throw new ApiError(400, "invalid_stream", `stream id must match ${STREAM_ID.source}`, { stream: stream.slice(0, 200) });
    const q = checkQuery(query, QUERY_KEYS);
    const group = q.get("group");
    if (group !== null && !STREAM_ID.test(group)) throw new ApiError(400, "invalid_group", `group must match ${STREAM_ID.source}`);
    if (q.get("from") !== null && q.get("from_time") !== null) throw new ApiError(400, "invalid_parameter", `give "from" or "from_time", not both`);
    const format = q.get("format") ?? "json";
    if (format !== "json" && format !== "binary") throw new ApiError(400, "invalid_parameter", `"format" must be "json" or "binary"`);
    const window = intParam(q, "window", this.config.consume_window_default, 1, this.config.consume_window_max);
    const maxAttempts = intParam(q, "max_attempts", this.config.consume_max_attempts_default, 1, 1000);
    const forward = new URLSearchParams();
    for (const k of ["group", "from", "from_time"]) if (q.get(k) !== null) forward.set(k, q.get(k)!);
    return { stream, group, binary: format === "binary", window, maxAttempts, query: forward.toString() };
  }

  /** Takes a connection slot for an upgrade; false when consumers_max are connected. */
  admit(): boolean {
    if (this.connections >= this.config.consumers_max) return false;
    this.connections++;
    return true;
  }

  /**
   * A socket is open: ask the shard where it starts, then attach it. The
   * upgrade itself is synchronous (uWS closes some sockets upgraded from an
   * async callback), so an unknown stream or a bad `from` is reported as an
   * error message and a close rather than as an HTTP status.
   */
  open(ws: Socket): void {
    const data = ws.getUserData();
    const params = data.params;
    const ok = this.pool.send(this.pool.shardFor(params.stream), Op.ConsumeStart, { stream: params.stream, query: params.query }, null, (r) => {
      if (data.closed) return;
      const body = responseJson(r);
      if (r.status !== 200) return this.refuse(ws, ApiError.fromBody(r.status, body));
      this.attach(ws, body as StartInfo);
    });
    if (!ok) this.refuse(ws, new ApiError(429, "shard_busy", "the shard owning this stream is at capacity; retry later", { stream: params.stream }));
  }

  /** Closes a socket that never became a session. */
  private refuse(ws: Socket, e: ApiError): void {
    ws.cork(() => {
      ws.send(JSON.stringify({ type: "error", code: e.code, message: e.message }), false);
      ws.end(e.status === 429 || e.status >= 500 ? CLOSE_SERVER_ERROR : CLOSE_POLICY, e.code);
    });
  }

  private attach(ws: Socket, start: StartInfo): void {
    const params = ws.getUserData().params;
    let feed = this.feeds.get(params.stream);
    if (!feed) {
      feed = new Feed(params.stream, this.pool.shardFor(params.stream), start.head_seq, start.first_seq);
      this.feeds.set(params.stream, feed);
    }
    let group: Group | null = null;
    if (params.group !== null) {
      group = feed.groups.get(params.group) ?? null;
      if (!group) {
        group = new Group(params.group, feed, start.checkpoint);
        feed.groups.set(params.group, group);
      }
    }
    const s = new Session(ws, feed, group, params, start.from);
    ws.getUserData().session = s;
    feed.sessions.add(s);
    // The shard must render live batches in this format before this
    // consumer's first page read: both go through the same ring, in order.
    if (!this.updateWatch(feed)) return this.fail(s, new ApiError(429, "shard_busy", "the shard owning this stream is at capacity; retry later"), CLOSE_SERVER_ERROR);
    if (group && group.active) {
      group.standby.push(s);
      this.hello(s, null);
    } else this.activate(s, s.explicitFrom ?? (group && group.checkpoint !== null ? group.checkpoint + 1 : feed.head + 1));
    const data = ws.getUserData();
    const early = data.early;
    data.early = undefined;
    if (early) for (const m of early) this.message(ws, m.data, m.isBinary);
  }

  private activate(s: Session, from: number): void {
    s.role = "active";
    if (s.group) s.group.active = s;
    s.nextSeq = from;
    s.acked = from - 1;
    s.live = false;
    s.epoch++;
    this.hello(s, from);
    this.pump(s);
  }

  private hello(s: Session, from: number | null): void {
    const f = s.feed;
    this.sendJson(s, { type: "hello", stream: f.stream, group: s.group?.name ?? null, from, head_seq: f.head, first_seq: f.first, role: s.role });
  }

  // ---- the log path ------------------------------------------------------

  /** Sends the consumer its next page from the log, if it may have one now. */
  private pump(s: Session): void {
    if (s.closed || s.role !== "active" || s.busy || s.live) return;
    if (s.ws.getBufferedAmount() >= this.config.consumer_buffer_bytes_max) return; // drain() calls again
    const room = s.room;
    if (room <= 0) return; // an ack calls again
    s.busy = true;
    const epoch = s.epoch;
    const meta = {
      stream: s.feed.stream,
      from: s.nextSeq,
      limit: Math.min(room, this.config.consume_page_events_max),
      accept: s.params.binary ? ContentType.FlatBuffers : ContentType.Json,
    };
    const ok = this.pool.send(s.feed.shard, Op.ConsumeRead, meta, null, (r) => {
      s.busy = false;
      if (s.closed) return;
      if (epoch !== s.epoch) return this.pump(s);
      this.onPage(s, r);
    });
    if (!ok) s.busy = false; // the tick tries again
  }

  private onPage(s: Session, r: Response): void {
    if (r.status === 410) {
      const first = (responseJson(r) as { error: { first_seq: number } }).error.first_seq;
      this.sendJson(s, { type: "reset", from: first, reason: "expired" });
      s.feed.first = first;
      s.nextSeq = first;
      s.acked = Math.max(s.acked, first - 1);
      return this.pump(s);
    }
    if (r.status !== 200) return this.fail(s, ApiError.fromBody(r.status, responseJson(r)), CLOSE_SERVER_ERROR);
    const h = readConsumeHead(r.body);
    const f = s.feed;
    if (h.b > f.head) f.head = h.b;
    f.first = h.firstSeq;
    if (h.count > 0) {
      if (!this.sendData(s, r.body.subarray(CONSUME_HEAD_BYTES))) return;
      s.nextSeq = h.a;
    }
    // Caught up: the next push of this stream starts right after the head
    // this page saw.
    if (s.nextSeq > h.b) s.live = true;
    else this.pump(s);
  }

  drain(ws: Socket): void {
    const s = ws.getUserData().session;
    if (s) this.pump(s);
  }

  // ---- the live path -----------------------------------------------------

  /**
   * A live batch (or head news) from a shard. Batches are held until the
   * current turn of the event loop ends and then sent joined: when the
   * front is busy, a socket gets one write for many pushes.
   */
  private onPush(r: Response): void {
    if (r.status === 404) {
      const feed = this.feeds.get(Buffer.from(r.body).toString("utf8"));
      if (feed) for (const s of [...feed.sessions]) this.fail(s, new ApiError(404, "stream_deleted", `stream "${feed.stream}" was deleted`), CLOSE_GOING_AWAY);
      return;
    }
    const h = readConsumeHead(r.body);
    const idEnd = CONSUME_HEAD_BYTES + h.idBytes;
    const feed = this.feeds.get(Buffer.from(r.body.buffer, r.body.byteOffset + CONSUME_HEAD_BYTES, h.idBytes).toString("utf8"));
    if (!feed) return;
    if (h.b > feed.head) feed.head = h.b;
    feed.first = h.firstSeq;
    // Copies: the ring's bytes are reused once this callback returns.
    const bin = h.binBytes > 0 ? Buffer.from(r.body.subarray(idEnd, idEnd + h.binBytes)) : null;
    const json = h.jsonBytes > 0 ? Buffer.from(r.body.subarray(idEnd + h.binBytes, idEnd + h.binBytes + h.jsonBytes)) : null;
    feed.pending.push({ count: h.count, first: h.a, last: h.b, firstSeq: h.firstSeq, bin, json });
    feed.pendingBytes += h.binBytes + h.jsonBytes;
    if (feed.pendingBytes >= this.liveMessageBytesMax) this.flushLive(feed);
    else if (!feed.flushQueued) {
      feed.flushQueued = true;
      const wait = feed.nextFlushAt - performance.now();
      // Timers have 1 ms steps: a wait shorter than that (one consumer, a
      // quick flush) would become a whole millisecond of latency.
      if (wait < 1) setImmediate(() => this.flushLive(feed));
      else setTimeout(() => this.flushLive(feed), wait);
    }
  }

  /**
   * Sends the batches held for a feed to its live consumers. A flush costs a
   * socket write per consumer (~10 µs each on loopback), so the next one
   * waits as long as this one took: with one consumer that is nothing, with
   * a thousand the front spends at most about half its time writing and each
   * write carries more events.
   */
  private flushLive(feed: Feed): void {
    if (!feed.flushQueued && feed.pending.length === 0) return;
    feed.flushQueued = false;
    const batches = feed.pending;
    feed.pending = [];
    feed.pendingBytes = 0;
    if (this.feeds.get(feed.stream) !== feed) return;
    const t0 = performance.now();
    for (const run of runsOf(batches)) {
      const b = joinRun(feed.stream, run);
      for (const s of feed.sessions) {
        if (s.live && s.role === "active") this.deliverLive(s, b, s.params.binary ? b.bin : b.json);
      }
    }
    const t1 = performance.now();
    feed.nextFlushAt = t1 + (t1 - t0);
  }

  private deliverLive(s: Session, b: LiveBatch, msg: Buffer | null): void {
    if (b.last < s.nextSeq) return; // already sent
    const fits =
      b.count > 0 &&
      b.first === s.nextSeq &&
      msg !== null &&
      msg.byteLength <= this.liveMessageBytesMax &&
      b.count <= s.room &&
      s.ws.getBufferedAmount() < this.config.consumer_buffer_bytes_max;
    if (!fits) {
      s.live = false;
      return this.pump(s);
    }
    if (this.sendData(s, msg)) s.nextSeq = b.last + 1;
  }

  // ---- client messages ---------------------------------------------------

  message(ws: Socket, data: ArrayBuffer, isBinary: boolean): void {
    const d = ws.getUserData();
    const s = d.session;
    if (!s) {
      d.early ??= [];
      if (d.early.length >= EARLY_MESSAGES_MAX) return this.refuse(ws, new ApiError(429, "server_busy", `more than ${EARLY_MESSAGES_MAX} messages before the hello`));
      d.early.push({ data: data.slice(0), isBinary });
      return;
    }
    if (s.closed) return;
    s.lastSeen = Date.now();
    try {
      this.handleMessage(s, parseClientMessage(data, isBinary));
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      this.fail(s, err, CLOSE_POLICY);
    }
  }

  pong(ws: Socket): void {
    const s = ws.getUserData().session;
    if (s) s.lastSeen = Date.now();
  }

  private handleMessage(s: Session, m: ClientMessage): void {
    if (m.type !== "seek") {
      if (!s.group) throw new ApiError(400, "no_group", `"${m.type}" needs a consumer group: connect with ?group=`);
    }
    if (s.role !== "active") throw new ApiError(409, "not_active", `this connection is a standby of group "${s.group?.name}"; it receives no events until it takes over`);
    const delivered = s.nextSeq - 1;
    switch (m.type) {
      case "ack":
        if (!takeAck(m.seq, s.acked, delivered)) return; // older than an ack already taken
        this.ack(s, m.seq);
        if (!s.live) this.pump(s);
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
    const g = s.group!;
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
    this.pump(s);
  }

  /**
   * Redelivers from `seq`. Delivery is in order, so a nack of N also
   * acknowledges everything below N. The max_attempts-th nack of one seq
   * appends it to the dead-letter stream and moves the group past it.
   */
  private nack(s: Session, seq: number, reason: string): void {
    const g = s.group!;
    if (ackMovesCheckpoint(seq - 1, s.acked)) this.ack(s, seq - 1);
    const attempts = countNack(g.attempts, seq);
    if (!deadLetterDue(attempts, s.params.maxAttempts)) return this.restartAt(s, seq, seq - 1);
    s.epoch++;
    s.live = false;
    s.busy = true;
    this.deadLetter(s, seq, reason, attempts, s.epoch);
  }

  /** Reads event `seq`, appends it to `{stream}.dlq`, then acks it. */
  private deadLetter(s: Session, seq: number, reason: string, attempts: number, epoch: number): void {
    const f = s.feed;
    const dlq = `${f.stream}.dlq`;
    const retry = () => setTimeout(() => !s.closed && this.deadLetter(s, seq, reason, attempts, epoch), RETRY_MS);
    const ok = this.pool.send(f.shard, Op.ConsumeRead, { stream: f.stream, from: seq, limit: 1, accept: ContentType.Json }, null, (r) => {
      if (s.closed) return;
      if (r.status === 410) {
        // Expired meanwhile: nothing left to dead-letter; the reset follows.
        s.busy = false;
        return this.restartAt(s, seq, seq - 1);
      }
      if (r.status !== 200) return this.fail(s, ApiError.fromBody(r.status, responseJson(r)), CLOSE_SERVER_ERROR);
      const msg = JSON.parse(Buffer.from(r.body.subarray(CONSUME_HEAD_BYTES)).toString("utf8")) as { events: Array<Record<string, unknown>> };
      const event = msg.events[0];
      const letter = {
        type: "dead_letter",
        key: typeof event.key === "string" ? event.key : undefined,
        // The same event of the same group is dead-lettered once per dedup window.
        idempotency_key: `dlq:${s.group!.name}:${seq}`,
        payload: { stream: f.stream, seq, group: s.group!.name, reason, attempts, event },
      };
      const body = Buffer.from(JSON.stringify({ events: [letter] }));
      const sent = this.pool.send(this.pool.shardFor(dlq), Op.Publish, { stream: dlq, ct: ContentType.Json }, body, (p) => {
        if (s.closed) return;
        if (p.status === 429) return retry();
        if (p.status !== 200) return this.fail(s, ApiError.fromBody(p.status, responseJson(p)), CLOSE_SERVER_ERROR);
        s.busy = false;
        if (epoch !== s.epoch) return this.pump(s);
        if (ackMovesCheckpoint(seq, s.acked)) this.ack(s, seq);
        this.restartAt(s, seq + 1, seq);
      });
      if (!sent) retry();
    });
    if (!ok) retry();
  }

  private writeCheckpoint(g: Group): void {
    const seq = g.checkpoint!;
    g.writing = true;
    const body = Buffer.from(JSON.stringify({ group: g.name, seq }));
    const ok = this.pool.send(g.feed.shard, Op.SetCheckpoint, { stream: g.feed.stream }, body, (r) => {
      if (r.status !== 200) console.error(`checkpoint of group ${g.name} on ${g.feed.stream} not written: ${Buffer.from(r.body).toString("utf8")}`);
      // A full disk or a busy shard passes: the ack was taken, so it is
      // written once it can be, not only when the next ack comes.
      if (r.status === 503 || r.status === 429) return void setTimeout(() => this.writeCheckpoint(g), RETRY_MS); // still "writing" meanwhile
      g.writing = false;
      if (g.checkpoint !== seq) this.writeCheckpoint(g);
      else this.dropIfIdle(g.feed);
    });
    if (!ok) setTimeout(() => this.writeCheckpoint(g), RETRY_MS); // still "writing" meanwhile
  }

  // ---- leave -------------------------------------------------------------

  close(ws: Socket): void {
    const data = ws.getUserData();
    data.closed = true;
    if (data.session) this.detach(data.session);
    else this.connections--;
  }

  private detach(s: Session): void {
    if (s.closed) return;
    s.closed = true;
    this.connections--;
    const f = s.feed;
    f.sessions.delete(s);
    const g = s.group;
    if (g) {
      if (g.active === s) {
        g.active = null;
        const next = g.standby.shift();
        if (next) this.activate(next, g.checkpoint !== null ? g.checkpoint + 1 : (next.explicitFrom ?? f.head + 1));
      } else {
        const i = g.standby.indexOf(s);
        if (i >= 0) g.standby.splice(i, 1);
      }
    }
    this.updateWatch(f);
    this.dropIfIdle(f);
  }

  /** Forgets a feed (and its groups) once nobody consumes it and no write is pending. */
  private dropIfIdle(f: Feed): void {
    for (const [name, g] of f.groups) if (g.empty && !g.writing) f.groups.delete(name);
    if (f.sessions.size === 0 && f.groups.size === 0 && this.feeds.get(f.stream) === f) this.feeds.delete(f.stream);
  }

  /** Tells the shard which live formats the feed needs; false if the shard is too busy to hear it. */
  private updateWatch(f: Feed): boolean {
    let mask = 0;
    for (const s of f.sessions) mask |= s.params.binary ? WATCH_BINARY : WATCH_JSON;
    if (mask === f.mask) return true;
    if (!this.pool.send(f.shard, Op.Watch, { stream: f.stream, watch: mask }, null, () => {})) {
      // A stale wider mask only costs rendering; one lacking a wanted format would starve consumers.
      return (mask & f.mask) === mask;
    }
    f.mask = mask;
    return true;
  }

  /** Sends an error message, then closes. */
  private fail(s: Session, e: ApiError, code: number): void {
    if (s.closed) return;
    this.sendJson(s, { type: "error", code: e.code, message: e.message });
    this.detach(s);
    s.ws.end(code, e.code);
  }

  // ---- timers ------------------------------------------------------------

  private onTick(): void {
    const now = Date.now();
    const c = this.config;
    for (const f of this.feeds.values()) {
      for (const s of [...f.sessions]) {
        if (now - s.lastSeen > c.consumer_idle_timeout_ms) {
          this.fail(s, new ApiError(408, "idle_timeout", `nothing received for ${c.consumer_idle_timeout_ms} ms`), CLOSE_GOING_AWAY);
          continue;
        }
        if (now - s.lastPing >= PING_INTERVAL_MS) {
          s.lastPing = now;
          s.ws.ping();
        }
        if (now - s.lastSent >= c.consumer_heartbeat_interval_ms) this.sendJson(s, { type: "heartbeat", head_seq: f.head, ts: now });
        if (!s.closed && !s.live && !s.busy) this.pump(s); // after a refused read
      }
      for (const g of f.groups.values()) {
        const a = g.active;
        if (a && g.standby.length > 0 && now - a.lastSeen > c.consumer_takeover_ms) {
          // Silent with a standby waiting: presumed dead (a killed process or a
          // pulled cable sends no close frame); the standby takes over.
          this.sendJson(a, { type: "error", code: "takeover", message: `no pong or message for ${c.consumer_takeover_ms} ms; a standby takes over` });
          this.detach(a);
          a.ws.close();
        }
      }
    }
  }

  // ---- sending -----------------------------------------------------------

  private sendJson(s: Session, value: unknown): void {
    if (s.closed) return;
    s.lastSent = Date.now();
    s.ws.cork(() => s.ws.send(JSON.stringify(value), false));
  }

  /** Sends an events message (binary EventBatch or JSON text); false if the socket failed. */
  private sendData(s: Session, msg: Uint8Array): boolean {
    if (s.closed) return false;
    s.lastSent = Date.now();
    let status = 0;
    s.ws.cork(() => {
      status = s.ws.send(msg, s.params.binary);
    });
    // 2 = dropped: uWS's own bound was hit, which the checks above rule out.
    if (status === 2) {
      this.fail(s, new ApiError(500, "internal", "the socket buffer overflowed"), CLOSE_SERVER_ERROR);
      return false;
    }
    return true;
  }

  // ---- for other routes --------------------------------------------------

  /** A checkpoint set over HTTP: the group's next member starts from it. */
  noteCheckpoint(stream: string, group: string, seq: number): void {
    const g = this.feeds.get(stream)?.groups.get(group);
    if (g && !g.writing) g.checkpoint = seq;
  }

  /** Connected members of each group of a stream, for GET .../groups. */
  members(stream: string): { head: number; groups: Map<string, MemberInfo[]> } {
    const out = new Map<string, MemberInfo[]>();
    const f = this.feeds.get(stream);
    if (!f) return { head: 0, groups: out };
    for (const [name, g] of f.groups) {
      const list: MemberInfo[] = [];
      const info = (s: Session): MemberInfo => ({ role: s.role, connected_at: s.connectedAt, next_seq: s.role === "active" ? s.nextSeq : null });
      if (g.active) list.push(info(g.active));
      for (const s of g.standby) list.push(info(s));
      if (list.length > 0) out.set(name, list);
    }
    return { head: f.head, groups: out };
  }

  get consumers(): number {
    return this.connections;
  }

  get consumersMax(): number {
    return this.config.consumers_max;
  }

  /** Set by closeAll: upgrades are refused from then on. */
  closing = false;

  /** Clean shutdown: every consumer gets an error and a close; acks already taken are written. */
  closeAll(): void {
    this.closing = true;
    clearInterval(this.tick);
    for (const f of [...this.feeds.values()]) {
      for (const s of [...f.sessions]) this.fail(s, new ApiError(503, "shutting_down", "the server is shutting down"), CLOSE_GOING_AWAY);
    }
  }

  /** Checkpoint writes still on their way to the shards. */
  get pendingWrites(): number {
    let n = 0;
    for (const f of this.feeds.values()) for (const g of f.groups.values()) if (g.writing) n++;
    return n;
  }
}

type ClientMessage = { type: "ack"; seq: number } | { type: "nack"; seq: number; reason: string } | { type: "seek"; seq: number };

function parseClientMessage(data: ArrayBuffer, isBinary: boolean): ClientMessage {
  if (isBinary) throw new ApiError(400, "invalid_message", "client messages are JSON text frames");
  if (data.byteLength > CLIENT_MESSAGE_BYTES_MAX) throw new ApiError(413, "message_too_large", `client messages are at most ${CLIENT_MESSAGE_BYTES_MAX} bytes`);
  let m: unknown;
  try {
    m = JSON.parse(Buffer.from(data).toString("utf8"));
  } catch {
    throw new ApiError(400, "invalid_message", "message is not valid JSON");
  }
  if (typeof m !== "object" || m === null || Array.isArray(m)) throw new ApiError(400, "invalid_message", "message must be a JSON object");
  const o = m as Record<string, unknown>;
  if (o.type !== "ack" && o.type !== "nack" && o.type !== "seek") {
    throw new ApiError(400, "invalid_message", `"type" must be "ack", "nack" or "seek"`);
  }
  const seq = o.seq;
  if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 1) throw new ApiError(400, "invalid_message", `"seq" must be an integer >= 1`);
  if (o.type !== "nack") return { type: o.type, seq };
  const reason = o.reason ?? "";
  if (typeof reason !== "string" || reason.length > NACK_REASON_CHARS_MAX) {
    throw new ApiError(400, "invalid_message", `"reason" must be a string of at most ${NACK_REASON_CHARS_MAX} characters`);
  }
  return { type: "nack", seq, reason };
}


/** The WebSocket route: upgrade only once the shard has said where the consumer starts. */
export function consumeRoute(routes: GuardedApp, hub: ConsumeHub, isReady: () => boolean): void {
  routes.ws<SocketData>("/v1/streams/:id/consume", "consume", {
    compression: uWS.DISABLED,
    maxPayloadLength: CLIENT_MESSAGE_BYTES_MAX * 4,
    maxBackpressure: hub.socketBytesMax,
    closeOnBackpressureLimit: 0,
    // Liveness is the hub's own (pings, takeover, idle timeout).
    idleTimeout: 0,
    sendPingsAutomatically: false,
    upgrade: (res, req, context) => {
      const x = exchange(res);
      if (!isReady()) return sendError(x, new ApiError(503, "not_ready", "the server is still recovering its streams"));
      if (hub.closing) return sendError(x, new ApiError(503, "shutting_down", "the server is shutting down; retry on another node or after the restart"));
      let params: ConsumeParams;
      try {
        params = hub.parseParams(req.getParameter(0) ?? "", req.getQuery() ?? "");
      } catch (err) {
        return sendError(x, err as ApiError);
      }
      if (!hub.admit()) {
        const max = hub.consumersMax;
        return sendError(x, new ApiError(429, "server_busy", `consumers_max (${max}) consumers are connected; retry later`, { consumers_max: max }));
      }
      x.done = true;
      res.upgrade<SocketData>({ params }, req.getHeader("sec-websocket-key"), req.getHeader("sec-websocket-protocol"), req.getHeader("sec-websocket-extensions"), context);
    },
    open: (ws) => hub.open(ws),
    message: (ws, data, isBinary) => hub.message(ws, data, isBinary),
    drain: (ws) => hub.drain(ws),
    pong: (ws) => hub.pong(ws),
    close: (ws) => hub.close(ws),
  });
}
