// bench-peers' NATS JetStream rows, through nats.js as an application would
// use it: W1 (js.publish(), and acks counted on one inbox), W2 (an ordered push
// consumer), W3 (latency through one), W4 (one stream, many subjects) and
// fsync (W1 with `sync_interval: always`, where the server takes it), each
// set on a fresh nats-server with file storage.
import { consumerOpts, type JsMsg, type NatsError } from "nats";
import { startNats, SYNC_ALWAYS_CONFIG } from "../../test/harness/nats.js";
import type { ServerProcess } from "../../test/harness/process.js";
import { diskBytes, processMemory } from "../lib/proc.js";
import { int, mib } from "../lib/report.js";
import { BATCH_EVENTS, IN_FLIGHT, PAYLOAD_BYTES, W4_EVENTS_PER_STREAM, W4_IN_FLIGHT, W4_STREAMS, type Workload } from "../lib/results.js";
import { within } from "../lib/run.js";
import {
  AckInboxPublisher,
  closeAll,
  findNats,
  natsAddStream,
  natsConnect,
  natsConnections,
  NatsLatencyConsumer,
  natsStreamState,
  withoutStackTraces,
} from "../systems/nats.js";
import {
  attempt,
  costNote,
  emit,
  emitError,
  IN_FLIGHT_VARIANT,
  latencyMetrics,
  latencyRow,
  measure,
  onFreshServer,
  oncePerSystem,
  payloadBytes,
  rateMetrics,
  REQUEST_TIMEOUT_MS,
  runLanes,
  runNotes,
  STREAM_KEY,
  streamsMetrics,
  W3_RATES,
  W4_PREFIX,
  type Plan,
  type RunOutcome,
  type SystemSpec,
} from "./peers-rows.js";

/** W1 as specified: per batch, BATCH_EVENTS js.publish() calls started, then all their acks awaited. */
async function natsPublish(server: ServerProcess, events: number, inFlight: number): Promise<RunOutcome> {
  const pool = payloadBytes();
  await natsAddStream(server.port, STREAM_KEY, [STREAM_KEY]);
  const conns = await natsConnections(server.port, inFlight);
  try {
    const jss = new Map(conns.map((c) => [c, c.jetstream({ timeout: REQUEST_TIMEOUT_MS })]));
    let acked = 0;
    let duplicates = 0;
    const cost = await withoutStackTraces(() =>
      measure(server.pid, () =>
        runLanes(conns, events / BATCH_EVENTS, async (nc, b) => {
          const js = jss.get(nc)!;
          const acks = new Array<ReturnType<typeof js.publish>>(BATCH_EVENTS);
          for (let i = 0; i < BATCH_EVENTS; i++) acks[i] = js.publish(STREAM_KEY, pool[(b * BATCH_EVENTS + i) % pool.length]);
          for (const a of await Promise.all(acks)) if (a.duplicate) duplicates++;
          acked += BATCH_EVENTS;
        }),
      ),
    );
    const s = await natsStreamState(server.port, STREAM_KEY);
    if (acked !== events || duplicates > 0 || s.messages !== events || s.lastSeq !== events) {
      throw new Error(
        `${int(acked)} acks (${duplicates} duplicates), stream has ${int(s.messages)} messages, last seq ${int(s.lastSeq)}; expected ${int(events)}`,
      );
    }
    return { cost, check: `${int(acked)} acks, stream ${int(s.messages)} messages` };
  } finally {
    await closeAll(conns);
  }
}

/** W1 "acks on one inbox": as natsPublish, through AckInboxPublisher. */
async function natsPublishAckInbox(server: ServerProcess, events: number, inFlight: number): Promise<RunOutcome> {
  const pool = payloadBytes();
  await natsAddStream(server.port, STREAM_KEY, [STREAM_KEY]);
  const conns = await natsConnections(server.port, inFlight);
  const pubs = conns.map((c) => new AckInboxPublisher(c));
  try {
    let acked = 0;
    const cost = await measure(server.pid, () =>
      runLanes(pubs, events / BATCH_EVENTS, async (pub, b) => {
        await pub.send(STREAM_KEY, BATCH_EVENTS, (i) => pool[(b * BATCH_EVENTS + i) % pool.length]);
        acked += BATCH_EVENTS;
      }),
    );
    const errors = pubs.reduce((a, p) => a + p.errors, 0);
    const s = await natsStreamState(server.port, STREAM_KEY);
    if (errors > 0) throw new Error(`${errors} publishes failed, the last: ${pubs.find((p) => p.errors > 0)!.lastError}`);
    if (acked !== events || s.messages !== events || s.lastSeq !== events)
      throw new Error(`${int(acked)} acks, stream has ${int(s.messages)} messages, last seq ${int(s.lastSeq)}; expected ${int(events)}`);
    return { cost, check: `${int(acked)} acks, stream ${int(s.messages)} messages` };
  } finally {
    for (const p of pubs) p.close();
    await closeAll(conns);
  }
}

/**
 * W2: an ordered push consumer delivering all of the stream: the client
 * library's way to read a stream once, in order (it resets the consumer on
 * a gap). Stream seqs must run 1, 2, 3, … and every message be the payload's size.
 */
async function natsReplay(server: ServerProcess, events: number): Promise<RunOutcome> {
  const nc = await natsConnect(server.port);
  let sub: { unsubscribe(): void } | null = null;
  try {
    let received = 0;
    let lastSeq = 0;
    let bad = 0;
    const cost = await measure(server.pid, async () => {
      const done = new Promise<void>((resolve, reject) => {
        const opts = consumerOpts()
          .orderedConsumer()
          .deliverAll()
          .callback((err: NatsError | null, m: JsMsg | null) => {
            if (err) return reject(err);
            if (!m) return;
            received++;
            if (m.seq !== lastSeq + 1 || m.data.length !== PAYLOAD_BYTES) bad++;
            lastSeq = m.seq;
            if (received === events) resolve();
          });
        nc.jetstream()
          .subscribe(STREAM_KEY, opts)
          .then((s) => (sub = s), reject);
      });
      await within(done, REQUEST_TIMEOUT_MS * 2, `ordered consumer (${int(received)} of ${int(events)} received)`);
    });
    // Anything past the stream's end would be a duplicate delivery.
    await new Promise((r) => setTimeout(r, 100));
    if (received !== events || bad > 0)
      throw new Error(`received ${int(received)} messages, expected ${int(events)}; ${bad} out of order or of the wrong size`);
    return { cost, check: `${int(received)} messages, seqs 1..${int(lastSeq)} in order` };
  } finally {
    (sub as { unsubscribe(): void } | null)?.unsubscribe();
    await nc.close().catch(() => {});
  }
}

/**
 * W4: one stream on `w4.*`, W4_EVENTS_PER_STREAM publishes to each of
 * W4_STREAMS subjects, acked per subject, through AckInboxPublisher: with
 * js.publish() the client's own CPU would be most of the time measured.
 */
async function natsStreams(server: ServerProcess): Promise<RunOutcome> {
  const pool = payloadBytes();
  await natsAddStream(server.port, W4_PREFIX, [`${W4_PREFIX}.*`]);
  const conns = await natsConnections(server.port, W4_IN_FLIGHT);
  const pubs = conns.map((c) => new AckInboxPublisher(c));
  try {
    const cost = await measure(server.pid, () =>
      runLanes(pubs, W4_STREAMS, (pub, s) => pub.send(`${W4_PREFIX}.${s}`, W4_EVENTS_PER_STREAM, (i) => pool[(s * W4_EVENTS_PER_STREAM + i) % pool.length])),
    );
    const errors = pubs.reduce((a, p) => a + p.errors, 0);
    if (errors > 0) throw new Error(`${errors} publishes failed, the last: ${pubs.find((p) => p.errors > 0)!.lastError}`);
    const st = await natsStreamState(server.port, W4_PREFIX);
    if (st.messages !== W4_STREAMS * W4_EVENTS_PER_STREAM || st.subjects !== W4_STREAMS)
      throw new Error(`stream has ${int(st.messages)} messages on ${st.subjects} subjects`);
    return { cost, check: `${int(st.messages)} messages on ${int(st.subjects)} subjects` };
  } finally {
    for (const p of pubs) p.close();
    await closeAll(conns);
  }
}

export async function runNats(system: SystemSpec, plan: Plan): Promise<void> {
  const found = await findNats(runNotes);
  if ("reason" in found) {
    for (const w of plan.workloads) if (w !== "fsync") emitError(system, w, "", new Error(found.reason));
    return;
  }
  const { version: v, syncAlways: sync } = found;
  const takeVersion = oncePerSystem(`nats-server ${v.number} (\`${v.line}\`${v.debian ? `, Debian ${v.debian}` : ""}); `);
  // Checked in the 2.9.10 source (server/filestore.go): each message is written to its block file
  // before the ack (flush in place, no fsync), and a timer fsyncs every block each defaultSyncInterval.
  const durability =
    `file storage; durability: acked once written to the stream's block file (write(2), no fsync), all blocks fsynced by a timer` +
    (v.number.startsWith("2.9.") ? " every 60 s (2.9's fixed defaultSyncInterval)" : " (sync_interval, default 2 min)") +
    `; \`sync_interval: always\` ${sync.supported ? "is accepted by this server" : `is not supported by this server (\`nats-server -t\`: ${sync.answer}), so there is no NATS fsync row`}`;
  runNotes.push(`NATS JetStream ${v.number}: ${durability}.`);
  const start = (config?: string) => () => startNats({ config });
  const clientNote = "nats.js (noAsyncTraces)";
  const publishNote = `${clientNote}, Error.stackTraceLimit = 0 while timed (nats.js captures a stack for every request it completes, ~25% of its CPU)`;

  if (plan.workloads.has("W1")) {
    await onFreshServer(start(), system, [["W1", ""]], (s) =>
      attempt(system, "W1", "", async () => {
        const o = await natsPublish(s, plan.events, 1);
        emit(
          system,
          "W1",
          "",
          rateMetrics(plan.events, o.cost),
          o.check,
          `${takeVersion()}${publishNote}: ${BATCH_EVENTS} js.publish() started, then their acks awaited, 1 batch in flight; ${durability}; ${costNote(o.cost)}; data dir after: ${mib(diskBytes(s.dir)).toFixed(0)} MiB`,
        );
      }),
    );
  }
  if (plan.workloads.has("W1") || plan.workloads.has("W2")) {
    const failRows: [Workload, string][] = [
      ...(plan.workloads.has("W1") ? [["W1", IN_FLIGHT_VARIANT(IN_FLIGHT)] as [Workload, string]] : []),
      ...(plan.workloads.has("W2") ? [["W2", ""] as [Workload, string]] : []),
    ];
    await onFreshServer(start(), system, failRows, async (s) => {
      const loaded = plan.workloads.has("W1")
        ? await attempt(system, "W1", IN_FLIGHT_VARIANT(IN_FLIGHT), async () => {
            const o = await natsPublish(s, plan.events, IN_FLIGHT);
            emit(
              system,
              "W1",
              IN_FLIGHT_VARIANT(IN_FLIGHT),
              rateMetrics(plan.events, o.cost),
              o.check,
              `${takeVersion()}${publishNote}: as the plain row, ${IN_FLIGHT} batches in flight over ${IN_FLIGHT} connections; ${costNote(o.cost)}`,
            );
          })
        : // Without W1 the stream is loaded untimed, the quicker way.
          await attempt(system, "W2", "", async () => void (await natsPublishAckInbox(s, plan.events, IN_FLIGHT)));
      if (!plan.workloads.has("W2")) return;
      if (!loaded) return plan.workloads.has("W1") ? emitError(system, "W2", "", new Error("no data: W1 did not complete")) : undefined;
      await attempt(system, "W2", "", async () => {
        const o = await natsReplay(s, plan.events);
        emit(
          system,
          "W2",
          "",
          rateMetrics(plan.events, o.cost),
          o.check,
          `${takeVersion()}${clientNote}: ordered push consumer (js.subscribe with consumerOpts().orderedConsumer().deliverAll() and a callback), time includes creating it; ${costNote(o.cost)}`,
        );
      });
    });
  }
  if (plan.workloads.has("W1")) {
    // Not in the brief's list: the same W1 without js.publish()'s per-request client cost, to show the server's own rate.
    const variant = `${IN_FLIGHT} in flight, acks on one inbox`;
    await onFreshServer(start(), system, [["W1", variant]], (s) =>
      attempt(system, "W1", variant, async () => {
        const o = await natsPublishAckInbox(s, plan.events, IN_FLIGHT);
        emit(
          system,
          "W1",
          variant,
          rateMetrics(plan.events, o.cost),
          o.check,
          `${takeVersion()}${clientNote}: nc.publish() with a reply subject, ${BATCH_EVENTS} per batch, acks counted on one inbox subscription per connection (as the Go client's PublishAsync), ${IN_FLIGHT} batches in flight over ${IN_FLIGHT} connections: js.publish() spends ~30 µs of client CPU per event on its request machinery, this path does not; ${costNote(o.cost)}`,
        );
      }),
    );
  }
  if (plan.workloads.has("fsync") && sync.supported) {
    for (const [variant, inFlight] of [
      ["sync_interval always", 1],
      [`sync_interval always, ${IN_FLIGHT} in flight`, IN_FLIGHT],
    ] as const) {
      await onFreshServer(start(SYNC_ALWAYS_CONFIG), system, [["fsync", variant]], (s) =>
        attempt(system, "fsync", variant, async () => {
          const o = await natsPublish(s, plan.events, inFlight);
          emit(
            system,
            "fsync",
            variant,
            rateMetrics(plan.events, o.cost),
            o.check,
            `${takeVersion()}${publishNote}: W1 as its js.publish() rows, on a server configured with \`${SYNC_ALWAYS_CONFIG.trim()}\`; ${costNote(o.cost)}`,
          );
        }),
      );
    }
  }
  for (const w of ["W3-20k", "W3-100k"] as const) {
    if (!plan.workloads.has(w)) continue;
    await onFreshServer(start(), system, [[w, ""]], (s) =>
      attempt(system, w, "", async () => {
        await natsAddStream(s.port, STREAM_KEY, [STREAM_KEY]);
        // The float64 stamp takes 8 of the event's PAYLOAD_BYTES.
        const o = await latencyRow("nats", (window) => new NatsLatencyConsumer(s.port, STREAM_KEY, window), s, W3_RATES[w], plan, PAYLOAD_BYTES - 8);
        emit(
          system,
          w,
          "",
          latencyMetrics(o),
          o.check,
          `${takeVersion()}producer thread: JetStream publishes of [float64 stamp, pad] with acks counted on one inbox per connection (js.publish() cannot offer 100,000 events/s from one Node thread); consumer: ordered push consumer (deliver all) with a callback on its own connection, receive time per message; file storage, no fsync before the ack (see W1); ${o.note}`,
        );
      }),
    );
  }
  if (plan.workloads.has("W4")) {
    await onFreshServer(start(), system, [["W4", ""]], (s) =>
      attempt(system, "W4", "", async () => {
        const o = await natsStreams(s);
        emit(
          system,
          "W4",
          "",
          streamsMetrics(o.cost, mib(processMemory(s.pid).rss), mib(diskBytes(s.dir))),
          o.check,
          `${takeVersion()}${clientNote}: ONE stream on subjects \`${W4_PREFIX}.*\`, so a "stream" here is a subject (a NATS stream is a heavier thing: its own store and limits), ${W4_EVENTS_PER_STREAM} publishes to each of ${int(W4_STREAMS)} subjects with acks counted on one inbox per connection (as W1's "acks on one inbox" row; js.publish() would time the client), acks awaited per subject, ${W4_IN_FLIGHT} subjects in flight over ${W4_IN_FLIGHT} connections; stream creation not timed; RSS is VmRSS after; ${costNote(o.cost)}`,
        );
      }),
    );
  }
}
