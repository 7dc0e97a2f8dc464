// NATS JetStream as the benchmarks drive it (the server itself comes from
// test/harness/nats.ts), through nats.js as an application would: connections,
// streams, a publisher that counts acks on one inbox (js.publish() costs the
// client more than the server), producer lanes over it, and an ordered push
// consumer that records every message's latency.
import { connect, consumerOpts, createInbox, StorageType, type JsMsg, type Msg, type NatsConnection, type NatsError, type Subscription } from "nats";
import { ensureBinary, type DaemonVersion } from "../../test/harness/apt.js";
import { natsSyncAlwaysSupport, natsVersion } from "../../test/harness/nats.js";
import { newRecorder, record, wallNow, type LatencyConsumer, type Window } from "../lib/latency.js";
import { noteError, type Lane } from "../lib/pacing.js";
import { within } from "../lib/run.js";

/** An ack that does not come this long after its publish fails the batch: a failed row, not a slow one. */
const ACK_TIMEOUT_MS = 60_000;

/** nats-server's path, version and fsync support, installing it first if missing; a reason instead when that fails. */
export async function findNats(
  notes: string[],
): Promise<{ binary: string; version: DaemonVersion; syncAlways: { supported: boolean; answer: string } } | { reason: string }> {
  try {
    const binary = await ensureBinary("nats-server", "nats-server", notes);
    return { binary, version: await natsVersion(binary), syncAlways: await natsSyncAlwaysSupport(binary) };
  } catch (err) {
    return { reason: (err as Error).message };
  }
}

/**
 * noAsyncTraces: by default nats.js allocates an Error per request (and one
 * more per timer) to give a timeout a stack pointing at its caller; at one
 * request per event that is most of the client's CPU. Off, a timeout is
 * still an error, only without the caller's stack.
 */
export function natsConnect(port: number): Promise<NatsConnection> {
  return connect({ servers: `127.0.0.1:${port}`, noAsyncTraces: true, reconnect: false, timeout: 10_000 });
}

export async function natsConnections(port: number, n: number): Promise<NatsConnection[]> {
  return Promise.all(Array.from({ length: n }, () => natsConnect(port)));
}

export async function closeAll(conns: NatsConnection[]): Promise<void> {
  await Promise.all(conns.map((c) => c.close().catch(() => {})));
}

export async function natsAddStream(port: number, name: string, subjects: string[]): Promise<void> {
  const nc = await natsConnect(port);
  try {
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name, subjects, storage: StorageType.File });
  } finally {
    await nc.close();
  }
}

export async function natsStreamState(port: number, name: string): Promise<{ messages: number; lastSeq: number; subjects: number }> {
  const nc = await natsConnect(port);
  try {
    const jsm = await nc.jetstreamManager();
    const s = (await jsm.streams.info(name)).state;
    return { messages: s.messages, lastSeq: s.last_seq, subjects: s.num_subjects ?? NaN };
  } finally {
    await nc.close();
  }
}

/**
 * nats.js settles every request it completes by also rejecting its deferred
 * with a new NatsError ("cancelled", a no-op once resolved): V8 captures a
 * stack trace for each, about a quarter of js.publish()'s client CPU here
 * (alternating runs of 200,000 events: 24,000-25,000 events/s with traces,
 * 27,000-36,000 without). The timed js.publish() rows run with stack traces
 * off; errors keep their messages.
 */
export async function withoutStackTraces<T>(body: () => Promise<T>): Promise<T> {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return await body();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/**
 * A JetStream publisher that leaves the request machinery out: plain
 * publishes with a reply subject, their acks counted on one inbox
 * subscription per connection (the way the Go client's PublishAsync
 * works). One connection's publishes are stored, and acked, in order, so a
 * batch is acked once the count reaches it. An ack that is not
 * `{"stream":…` is a JetStream error.
 */
export class AckInboxPublisher {
  private readonly inbox = createInbox();
  private readonly sub: Subscription;
  private acked = 0;
  private published = 0;
  private waiter: { upTo: number; resolve: () => void } | null = null;
  errors = 0;
  lastError = "";

  constructor(readonly nc: NatsConnection) {
    this.sub = nc.subscribe(this.inbox, {
      callback: (err: NatsError | null, m: Msg) => {
        if (err) {
          this.errors++;
          this.lastError = err.message;
        } else if (m.data[2] !== 0x73 /* s */) {
          this.errors++;
          this.lastError = new TextDecoder().decode(m.data);
        }
        this.acked++;
        const w = this.waiter;
        if (w && this.acked >= w.upTo) {
          this.waiter = null;
          w.resolve();
        }
      },
    });
  }

  /** Publishes `data` to `subject` n times; resolves once all of them are acked. */
  send(subject: string, n: number, data: (i: number) => Uint8Array): Promise<void> {
    for (let i = 0; i < n; i++) this.nc.publish(subject, data(i), { reply: this.inbox });
    this.published += n;
    const upTo = this.published;
    if (this.acked >= upTo) return Promise.resolve();
    return within(new Promise<void>((resolve) => (this.waiter = { upTo, resolve })), ACK_TIMEOUT_MS, `acks of ${n} publishes`);
  }

  close(): void {
    this.sub.unsubscribe();
  }
}

/**
 * NATS: n JetStream publishes of [stamp as float64 LE, pad], acks counted
 * on the lane's inbox (AckInboxPublisher). js.publish() costs the client
 * ~30 µs of CPU per event here, so it cannot offer 100,000 events/s from
 * one thread; the server still stores and acks every event.
 */
export async function natsLanes(port: number, lanes: number, subject: string, padText: string, res: { accepted: number; errors: string[] }): Promise<Lane[]> {
  const conns = await natsConnections(port, lanes);
  const pad = Buffer.from(padText, "latin1");
  return conns.map((nc) => {
    const pub = new AckInboxPublisher(nc);
    return {
      busy: false,
      async send(n, t) {
        const data = Buffer.allocUnsafe(8 + pad.length);
        data.writeDoubleLE(t, 0);
        pad.copy(data, 8);
        const errorsBefore = pub.errors;
        try {
          await pub.send(subject, n, () => data);
          if (pub.errors > errorsBefore) noteError(res, `${pub.errors - errorsBefore} of ${n} publishes failed: ${pub.lastError}`);
          else res.accepted += n;
        } catch (err) {
          noteError(res, `${n} publishes: ${(err as Error).message}`);
        }
      },
      close: async () => {
        pub.close();
        await nc.close().catch(() => {});
      },
    };
  });
}

/** An ordered push consumer (deliver all, on a new stream), one receive time per message. */
export class NatsLatencyConsumer implements LatencyConsumer {
  readonly errors: string[] = [];
  deliveries = 0;
  private lastSeq = 0;
  private outOfOrder = 0;
  private nc: NatsConnection | null = null;
  private sub: { unsubscribe(): void } | null = null;

  readonly rec = newRecorder();

  constructor(
    private readonly port: number,
    private readonly subject: string,
    private readonly window: Window,
  ) {}

  async start(): Promise<void> {
    this.nc = await natsConnect(this.port);
    const opts = consumerOpts()
      .orderedConsumer()
      .deliverAll()
      .callback((err: NatsError | null, m: JsMsg | null) => {
        const recv = wallNow();
        if (err) {
          noteError(this, err.message);
          return;
        }
        if (!m) return;
        this.deliveries++;
        if (m.seq !== this.lastSeq + 1) this.outOfOrder++;
        this.lastSeq = m.seq;
        const d = m.data;
        record(this.rec, Buffer.from(d.buffer, d.byteOffset, d.byteLength).readDoubleLE(0), recv, this.window.tStart, this.window.tEnd);
      });
    this.sub = await this.nc.jetstream().subscribe(this.subject, opts);
  }

  async stop(): Promise<void> {
    this.sub?.unsubscribe();
    await this.nc?.close().catch(() => {});
    if (this.outOfOrder > 0) this.errors.push(`${this.outOfOrder} messages out of stream order`);
  }
}
