// Who consumes what: connection slots, a socket becoming a session of a feed
// (and of a group: one active member, standbys behind it), liveness (pings,
// heartbeats, the idle timeout, the takeover of a silent active member) and
// leaving, after which a standby takes over at the group's checkpoint + 1.
import { noteThrottled } from "../front-metrics.js";
import { ApiError } from "../../errors.js";
import { Op, responseJson } from "../../shard/protocol.js";
import { HubPart } from "./part.js";
import { CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_SERVER_ERROR, type ConsumerSocket } from "./ports.js";
import { Feed, Group, Session } from "./state.js";
import { logger } from "../../logger.js";

/** What the shard answers to ConsumeStart. */
interface StartInfo {
  from: number | null;
  checkpoint: number | null;
  head_seq: number;
  first_seq: number;
}

export interface MemberInfo {
  role: "active" | "standby";
  connected_at: number;
  next_seq: number | null;
}

/**
 * Pings of a group member: a standby may join at any time, and then an
 * active member silent for consumer_takeover_ms (3 s by default) is replaced,
 * so its pongs must come well inside that.
 */
const GROUP_PING_INTERVAL_MS = 1000;
/**
 * Pings of a consumer without a group answer to the idle timeout (60 s by
 * default), four a timeout, and to ticker/client's silence bound (5 s,
 * whatever consumer_heartbeat_interval_ms is): at most this long apart.
 * Every second, as before, cost the front a write and a read a socket a
 * second (10,000 of each at 10,000 consumers).
 */
const SOLO_PING_INTERVAL_MS_MAX = 3000;
const pingIntervalMs = (s: Session, idleTimeoutMs: number): number =>
  s.group === null ? Math.min(idleTimeoutMs / 4, SOLO_PING_INTERVAL_MS_MAX) : GROUP_PING_INTERVAL_MS;

export class Groups extends HubPart {
  /** Sockets open plus upgrades under way, against consumers_max. */
  connections = 0;

  // ---- connect -----------------------------------------------------------

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
  open(ws: ConsumerSocket, query = ws.getUserData().params.query): void {
    const data = ws.getUserData();
    const params = data.params;
    const ok = this.shards.send(this.shards.shardFor(params.stream), Op.ConsumeStart, { stream: params.stream, query }, null, (r) => {
      if (data.closed) return;
      const body = responseJson(r);
      if (r.status !== 200) return this.refuse(ws, ApiError.fromBody(r.status, body));
      this.attach(ws, body as StartInfo);
    });
    if (!ok) this.refuse(ws, new ApiError(429, "shard_busy", "the shard owning this stream is at capacity; retry later", { stream: params.stream }));
  }

  /** Closes a socket that never became a session. */
  refuse(ws: ConsumerSocket, e: ApiError): void {
    if (e.status === 429) noteThrottled(e.code);
    ws.cork(() => {
      ws.send(JSON.stringify({ type: "error", code: e.code, message: e.message }), false);
      ws.end(e.status === 429 || e.status >= 500 ? CLOSE_SERVER_ERROR : CLOSE_POLICY, e.code);
    });
  }

  private attach(ws: ConsumerSocket, start: StartInfo): void {
    const params = ws.getUserData().params;
    let feed = this.feeds.get(params.stream);
    if (!feed) {
      feed = new Feed(params.stream, this.shards.shardFor(params.stream), start.head_seq, start.first_seq);
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
    const s = new Session(ws, feed, group, params, start.from, this.clock.nowMs());
    ws.getUserData().session = s;
    feed.add(s);
    // The shard must render live batches in this format before this
    // consumer's first page read: both go through the same ring, in order.
    if (!this.hub.delivery.updateWatch(feed))
      return this.fail(s, new ApiError(429, "shard_busy", "the shard owning this stream is at capacity; retry later"), CLOSE_SERVER_ERROR);
    // Busy until its snapshot is sent: the log path starts after it (snapshot.ts).
    if (params.snapshot) s.busy = true;
    if (group?.active) {
      group.standby.push(s);
      this.hello(s, null);
    } else this.activate(s, s.explicitFrom ?? (group && group.checkpoint !== null ? group.checkpoint + 1 : feed.head + 1));
    if (params.snapshot) this.hub.snapshots.begin(s);
    const data = ws.getUserData();
    const early = data.early;
    data.early = undefined;
    if (early) for (const m of early) this.hub.message(ws, m.data, m.isBinary);
  }

  private activate(s: Session, from: number): void {
    s.role = "active";
    if (s.group) s.group.active = s;
    s.nextSeq = from;
    s.acked = from - 1;
    s.live = false;
    s.epoch++;
    this.hello(s, from);
    this.hub.delivery.pump(s);
  }

  private hello(s: Session, from: number | null): void {
    const f = s.feed;
    this.hub.delivery.sendJson(s, { type: "hello", stream: f.stream, group: s.group?.name ?? null, from, head_seq: f.head, first_seq: f.first, role: s.role });
  }

  // ---- leave -------------------------------------------------------------

  close(ws: ConsumerSocket): void {
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
    f.remove(s);
    const g = s.group;
    if (g) {
      if (g.active === s) {
        g.active = null;
        const next = g.standby.shift();
        if (next) {
          const from = g.checkpoint !== null ? g.checkpoint + 1 : (next.explicitFrom ?? f.head + 1);
          logger().info(
            { kind: "takeover", stream: f.stream, group: g.name, from_seq: from, standby_left: g.standby.length },
            `group ${g.name} on ${f.stream}: a standby takes over from seq ${from}`,
          );
          this.activate(next, from);
        }
      } else {
        const i = g.standby.indexOf(s);
        if (i >= 0) g.standby.splice(i, 1);
      }
    }
    this.hub.delivery.updateWatch(f);
    this.dropIfIdle(f);
  }

  /** Forgets a feed (and its groups) once nobody consumes it and no write is pending. */
  dropIfIdle(f: Feed): void {
    for (const [name, g] of f.groups) if (g.empty && !g.writing) f.groups.delete(name);
    if (f.sessions.size === 0 && f.groups.size === 0 && this.feeds.get(f.stream) === f) this.feeds.delete(f.stream);
  }

  /** Sends an error message, then closes. */
  fail(s: Session, e: ApiError, code: number): void {
    if (s.closed) return;
    if (e.status === 429) noteThrottled(e.code);
    this.hub.delivery.sendJson(s, { type: "error", code: e.code, message: e.message });
    this.detach(s);
    s.ws.end(code, e.code);
  }

  /** Clean shutdown: every consumer gets an error and a close. */
  failAll(): void {
    for (const f of [...this.feeds.values()]) {
      for (const s of [...f.sessions]) this.fail(s, new ApiError(503, "shutting_down", "the server is shutting down"), CLOSE_GOING_AWAY);
    }
  }

  // ---- liveness ----------------------------------------------------------

  /** Runs every TICK_MS (hub.ts). */
  tick(): void {
    const now = this.clock.nowMs();
    const c = this.config;
    const delivery = this.hub.delivery;
    for (const f of this.feeds.values()) {
      for (const s of [...f.sessions]) {
        if (now - s.lastSeen > c.consumer_idle_timeout_ms) {
          this.fail(s, new ApiError(408, "idle_timeout", `nothing received for ${c.consumer_idle_timeout_ms} ms`), CLOSE_GOING_AWAY);
          continue;
        }
        if (now - s.lastPing >= pingIntervalMs(s, c.consumer_idle_timeout_ms)) {
          s.lastPing = now;
          s.ws.ping();
        }
        if (now - s.lastSent >= c.consumer_heartbeat_interval_ms) delivery.sendJson(s, heartbeat(s, f.head, now));
        if (!s.closed && !s.live && !s.busy) delivery.pump(s); // after a refused read
      }
      for (const g of f.groups.values()) {
        const a = g.active;
        if (a && g.standby.length > 0 && now - a.lastSeen > c.consumer_takeover_ms) {
          // Silent with a standby waiting: presumed dead (a killed process or a
          // pulled cable sends no close frame); the standby takes over.
          delivery.sendJson(a, { type: "error", code: "takeover", message: `no pong or message for ${c.consumer_takeover_ms} ms; a standby takes over` });
          logger().warn(
            { kind: "takeover", stream: f.stream, group: g.name, silent_ms: now - a.lastSeen },
            `group ${g.name} on ${f.stream}: the active member was silent for ${now - a.lastSeen} ms; closing it`,
          );
          this.detach(a);
          a.ws.close();
        }
      }
    }
  }

  // ---- for other routes --------------------------------------------------

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
}

/**
 * A heartbeat; a filtered, active consumer's also says next_seq: every seq
 * below it was sent before or filtered out, so a client can tell a stretch
 * with nothing for it from a loss (docs/consume.md, "Filters").
 */
function heartbeat(s: Session, head: number, now: number): object {
  if (s.params.filter === null || s.role !== "active") return { type: "heartbeat", head_seq: head, ts: now };
  return { type: "heartbeat", head_seq: head, ts: now, next_seq: s.nextSeq };
}
