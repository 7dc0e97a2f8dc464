// Redis Streams as the benchmarks drive it (the server itself comes from
// test/harness/redis.ts): producer lanes that XADD stamped entries, over raw
// RESP (cheapest for the client) or ioredis (what an application would use),
// and XREAD BLOCK readers that record every entry's latency the same two
// ways, checking that ids rise.
import { Redis } from "ioredis";
import { ensureBinary, type DaemonVersion } from "../../test/harness/apt.js";
import { redisVersion } from "../../test/harness/redis.js";
import { newRecorder, record, wallNow, type LatencyConsumer, type Window } from "../lib/latency.js";
import { noteError, type Lane } from "../lib/pacing.js";
import { connectAll, encodeCommand, type RespConn, RespCursor, RespProtocolError, WholeReply } from "../lib/resp.js";
import { udecimalAt, uintAt } from "../lib/scan.js";

/** Entries per ioredis XREAD reply at most (see IoredisXreadConsumer). */
export const XREAD_COUNT_MAX = 1000;

/** redis-server's path and version, installing it first if missing; a reason instead when that fails, so the other rows still run. */
export async function findRedis(notes: string[]): Promise<{ binary: string; version: DaemonVersion } | { reason: string }> {
  try {
    const binary = await ensureBinary("redis-server", "redis-server", notes);
    return { binary, version: await redisVersion(binary) };
  } catch (err) {
    return { reason: (err as Error).message };
  }
}

/** "7.0.15 (`Redis server v=7.0.15 …`; Debian package 5:7.0.15-1)" */
export const versionText = (v: DaemonVersion) => `${v.number} (\`${v.line}\`${v.debian ? `; Debian package ${v.debian}` : ""})`;

// ---- producer lanes ---------------------------------------------------------------

/**
 * Producer lanes over raw sockets: `XADD key * t <stamp> p <pad>` × n as one
 * pipeline, RESP encoded here (everything but the stamp is fixed).
 */
export async function respXaddLanes(port: number, lanes: number, key: string, pad: string, res: { accepted: number; errors: string[] }): Promise<Lane[]> {
  const conns = await connectAll(port, lanes);
  const head = `*7\r\n$4\r\nXADD\r\n$${key.length}\r\n${key}\r\n$1\r\n*\r\n$1\r\nt\r\n`;
  const tail = `\r\n$1\r\np\r\n$${pad.length}\r\n${pad}\r\n`;
  return conns.map(
    (conn): Lane => ({
      busy: false,
      async send(n, t) {
        const ts = String(t);
        const cmd = `${head}$${ts.length}\r\n${ts}${tail}`;
        try {
          await conn.send(Buffer.from(cmd.repeat(n), "latin1"), n);
          res.accepted += n;
        } catch (err) {
          noteError(res, `pipeline of ${n} XADDs: ${(err as Error).message}`);
        }
      },
      close: () => conn.close(),
    }),
  );
}

/** Producer lanes over ioredis: `XADD key * t <stamp> p <pad>` × n as one pipeline. */
export async function ioredisXaddLanes(port: number, lanes: number, key: string, pad: string, res: { accepted: number; errors: string[] }): Promise<Lane[]> {
  const clients = await redisClients(port, lanes);
  return clients.map((r) => ({
    busy: false,
    async send(n, t) {
      const ts = String(t);
      const p = r.pipeline();
      for (let i = 0; i < n; i++) p.xadd(key, "*", "t", ts, "p", pad);
      try {
        checkExec(await p.exec(), n);
        res.accepted += n;
      } catch (err) {
        noteError(res, `pipeline of ${n} XADDs: ${(err as Error).message}`);
      }
    },
    close: async () => r.disconnect(),
  }));
}

// ---- ioredis ------------------------------------------------------------------------

export async function redisClient(port: number): Promise<Redis> {
  // No reconnects and no offline queue: a benchmark wants the error, not a retry.
  const r = new Redis({ host: "127.0.0.1", port, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on("error", () => {}); // Surfaces as the failed command's rejection.
  await r.connect();
  return r;
}

export async function redisClients(port: number, n: number): Promise<Redis[]> {
  return Promise.all(Array.from({ length: n }, () => redisClient(port)));
}

/** Throws the first error reply of a pipeline's exec(). */
export function checkExec(res: [Error | null, unknown][] | null, n: number): void {
  if (!res || res.length !== n) throw new Error(`pipeline of ${n} answered ${res?.length ?? "nothing"}`);
  for (const [err] of res) if (err) throw err;
}

/** Rises strictly, across pages too: "ms-seq" ids compared as numbers. */
export class IdOrder {
  private ms = -1;
  private seq = -1;
  bad = 0;
  see(id: string): void {
    const dash = id.indexOf("-");
    const ms = Number(id.slice(0, dash));
    const seq = Number(id.slice(dash + 1));
    if (ms < this.ms || (ms === this.ms && seq <= this.seq)) this.bad++;
    this.ms = ms;
    this.seq = seq;
  }
}

// ---- readers ------------------------------------------------------------------------

/**
 * One ioredis connection looping `XREAD COUNT 1000 BLOCK 0 STREAMS key
 * <last id>`, from 0-0: the stream is new and empty, so nothing is missed
 * between the subscribe and the first event. The receive time is when
 * ioredis hands over the parsed reply, once per reply. COUNT bounds a
 * reply: without it a reader that fell behind once asks for everything
 * since, redis-server blocks its event loop (and the producer's XADDs)
 * rendering a reply of 10^5 entries, ioredis takes as long again to parse
 * it, and the reader never catches up (seen at 100,000 events/s with an AOF:
 * 70 replies in 12 s, p50 1.7 s).
 */
export class IoredisXreadConsumer implements LatencyConsumer {
  readonly errors: string[] = [];
  deliveries = 0;
  private readonly order = new IdOrder();
  private stopped = false;
  private loop: Promise<void> = Promise.resolve();
  private r: Redis | null = null;

  readonly rec = newRecorder();

  constructor(
    private readonly port: number,
    private readonly key: string,
    private readonly window: Window,
  ) {}

  async start(): Promise<void> {
    this.r = await redisClient(this.port);
    this.loop = this.run(this.r);
  }

  private async run(r: Redis): Promise<void> {
    let lastId = "0-0";
    while (!this.stopped) {
      let reply: [string, [string, string[]][]][] | null;
      try {
        reply = (await r.xread("COUNT", XREAD_COUNT_MAX, "BLOCK", 0, "STREAMS", this.key, lastId)) as [string, [string, string[]][]][] | null;
      } catch (err) {
        if (!this.stopped) this.errors.push(`XREAD: ${(err as Error).message}`);
        return;
      }
      const recv = wallNow();
      if (!reply) continue;
      this.deliveries++;
      const entries = reply[0][1];
      for (const [id, fields] of entries) {
        this.order.see(id);
        // Fields are t, <stamp>, p, <pad>.
        record(this.rec, Number(fields[1]), recv, this.window.tStart, this.window.tEnd);
      }
      if (entries.length > 0) lastId = entries[entries.length - 1][0];
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.r?.disconnect();
    await this.loop;
    if (this.order.bad > 0) this.errors.push(`${this.order.bad} ids did not rise`);
  }
}

const T_FIELD = Buffer.from("t");

/**
 * One reader looping `XREAD BLOCK 0 STREAMS key <last id>` on its own
 * connection. The first read asks for `$` (entries added after it); each
 * next one for entries after the last id it got. Re-asking for `$` every
 * time, as a naive loop does, would lose whatever was added between two
 * reads, and the count check below would say so.
 */
export class XreadConsumer implements LatencyConsumer {
  readonly rec = newRecorder();
  readonly errors: string[] = [];
  private lastId = "$";
  private prevMs = -1;
  private prevSeq = -1;
  /** XREAD replies. */
  deliveries = 0;
  private stopped = false;
  private loop: Promise<void> | null = null;

  constructor(
    private readonly conn: RespConn,
    private readonly key: string,
    private readonly window: Window,
  ) {}

  /** Writes the first XREAD before it resolves, so every entry added from then on is seen. */
  async start(): Promise<void> {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    const reader = new WholeReply();
    while (!this.stopped) {
      let buf: Buffer;
      try {
        buf = await this.conn.request(encodeCommand(["XREAD", "BLOCK", "0", "STREAMS", this.key, this.lastId]), reader.start());
      } catch (err) {
        if (!this.stopped) this.errors.push(`XREAD: ${(err as Error).message}`);
        return;
      }
      this.deliveries++;
      try {
        this.walk(buf, reader.doneAt);
      } catch (err) {
        this.errors.push(`XREAD reply: ${(err as Error).message}`);
        return;
      }
    }
  }

  private walk(buf: Buffer, recv: number): void {
    const c = new RespCursor(buf);
    if (c.array() !== 1) throw new RespProtocolError("expected one stream in the reply");
    if (c.array() !== 2) throw new RespProtocolError("expected [key, entries]");
    c.bulk();
    const n = c.array();
    let lastAt = 0;
    let lastLen = 0;
    for (let e = 0; e < n; e++) {
      if (c.array() !== 2) throw new RespProtocolError(`entry ${e} is not [id, fields]`);
      const id = c.bulk();
      const dash = buf.indexOf(0x2d /* - */, id.at);
      const ms = uintAt(buf, id.at);
      const seq = uintAt(buf, dash + 1);
      if (ms < this.prevMs || (ms === this.prevMs && seq <= this.prevSeq)) {
        this.errors.push(`id ${buf.toString("latin1", id.at, id.at + id.len)} does not rise past ${this.prevMs}-${this.prevSeq}`);
      }
      this.prevMs = ms;
      this.prevSeq = seq;
      lastAt = id.at;
      lastLen = id.len;
      const items = c.array();
      let t = NaN;
      for (let f = 0; f < items; f += 2) {
        const name = c.bulk();
        const value = c.bulk();
        if (name.len === 1 && buf[name.at] === T_FIELD[0]) t = udecimalAt(buf, value.at);
      }
      if (Number.isNaN(t)) throw new RespProtocolError(`entry ${e}: no field t`);
      record(this.rec, t, recv, this.window.tStart, this.window.tEnd);
    }
    if (n > 0) this.lastId = buf.toString("latin1", lastAt, lastAt + lastLen);
  }

  /** Entries read so far, warm-up included. */
  get total(): number {
    return this.rec.total;
  }

  /** Stops after the read in flight: closes the connection, whose blocked XREAD then fails unreported. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.conn.close();
    await this.loop;
  }
}
