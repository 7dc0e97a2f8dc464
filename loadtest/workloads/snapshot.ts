// Snapshot then live (issue 15): the time to deliver the newest event of
// every one of 100,000 keys, over GET .../snapshot pages and over a consumer's
// from=snapshot socket (until its snapshot_end), on a stream of 200,000
// events: each key once, then 100,000 updates of keys drawn at random, so
// the keys' newest events are spread over the log. The first snapshot after
// a start builds the key index from the log (cold); later ones only copy the
// cut out of it (warm). A restart shows the rebuild again.
//
//   npm run bench:snapshot
//   npm run bench:snapshot -- --keys 10000 --results out.jsonl
import { parseArgs } from "node:util";
import WebSocket from "ws";
import { stoppedCleanly } from "../../test/harness/process.js";
import type { TickerProcess } from "../../test/harness/ticker.js";
import { HttpRawClient, type HttpRawConnection } from "../../src/client/http.js";
import { report, resultsFile, type Measurement } from "../lib/results.js";
import { cleanupNow, onCleanup, runMain, TempDirs } from "../lib/run.js";
import { startTicker } from "../systems/ticker.js";

const tempDirs = new TempDirs("ticker-bench-snapshot-");
onCleanup(() => tempDirs.removeAll());

const { values: opts } = parseArgs({
  options: {
    keys: { type: "string", default: "100000" },
    runs: { type: "string", default: "5" },
    results: { type: "string" },
  },
  strict: true,
});
const KEYS = Number(opts.keys);
const RUNS = Number(opts.runs);
if (!Number.isSafeInteger(KEYS) || KEYS < 1 || !Number.isSafeInteger(RUNS) || RUNS < 1) {
  console.error("--keys and --runs must be positive integers");
  process.exit(2);
}
const STREAM = "md.snapshot";
const BATCH = 1000;
const IN_FLIGHT = 4;
/** Events per HTTP page: replay_page_events_max, the most a page may hold. */
const PAGE_EVENTS = 10_000;
const JSON_HEADERS = { "Content-Type": "application/json" };

/** A quote of about 50 bytes of payload, like a market-data update. */
const quote = (key: number, i: number) => ({
  type: "quote",
  key: `SYM-${key}`,
  payload: { bid: 100 + (i % 97) / 8, ask: 100.25 + (i % 89) / 8, size: i % 1000 },
});

async function fill(conns: HttpRawConnection[]): Promise<void> {
  const total = 2 * KEYS;
  // A fixed generator: the same draw of updated keys in every run.
  let rnd = 12345;
  const keyOf = (i: number) => {
    if (i < KEYS) return i;
    rnd = (rnd * 1103515245 + 12345) >>> 0;
    return rnd % KEYS;
  };
  const batches: Buffer[] = [];
  for (let at = 0; at < total; at += BATCH) {
    const n = Math.min(BATCH, total - at);
    batches.push(Buffer.from(JSON.stringify({ events: Array.from({ length: n }, (_, j) => quote(keyOf(at + j), at + j)) })));
  }
  // Several connections: batches may be appended out of their order, which changes which event is a key's newest, not how many keys there are.
  let next = 0;
  await Promise.all(
    conns.map(async (c) => {
      for (let b = next++; b < batches.length; b = next++) {
        const r = await c.post(`/v1/streams/${STREAM}/events`, batches[b], JSON_HEADERS);
        if (r.status !== 200) throw new Error(`publish: HTTP ${r.status} ${r.body.toString("utf8").slice(0, 200)}`);
      }
    }),
  );
}

/** Every page of one snapshot over one connection, parsed as a client would: ms, events and pages. */
async function overHttp(c: HttpRawConnection): Promise<{ ms: number; events: number; pages: number }> {
  const t0 = performance.now();
  let r = await c.get(`/v1/streams/${STREAM}/snapshot?limit=${PAGE_EVENTS}`);
  let events = 0;
  let pages = 0;
  for (;;) {
    if (r.status !== 200) throw new Error(`snapshot: HTTP ${r.status} ${r.body.toString("utf8").slice(0, 200)}`);
    const page = JSON.parse(r.body.toString("utf8")) as { as_of_seq: number; events: unknown[]; next_after_seq: number | null };
    events += page.events.length;
    pages++;
    if (page.next_after_seq === null) break;
    r = await c.get(`/v1/streams/${STREAM}/snapshot?as_of_seq=${page.as_of_seq}&after_seq=${page.next_after_seq}&limit=${PAGE_EVENTS}`);
  }
  return { ms: performance.now() - t0, events, pages };
}

/** A from=snapshot consumer: ms from the upgrade request to its snapshot_end, and the events before it (parsed as a client would). */
function overSocket(port: number): Promise<{ ms: number; events: number }> {
  const t0 = performance.now();
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/streams/${STREAM}/consume?from=snapshot`);
  let events = 0;
  return new Promise((resolve, reject) => {
    ws.on("message", (data: Buffer) => {
      const m = JSON.parse(data.toString("utf8")) as { type: string; events?: unknown[] };
      if (m.type === "events") events += m.events?.length ?? 0;
      else if (m.type === "snapshot_end") {
        const ms = performance.now() - t0;
        ws.close();
        resolve({ ms, events });
      } else if (m.type === "error") reject(new Error(`consume: ${JSON.stringify(m)}`));
    });
    ws.once("error", reject);
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<number> {
  const ms: Measurement[] = [];
  const dir = tempDirs.make();
  let server: TickerProcess | null = null;
  const conns: HttpRawConnection[] = [];
  const check = (what: string, n: number) => {
    if (n !== KEYS) throw new Error(`${what}: ${n} events, expected ${KEYS}`);
  };
  try {
    server = await startTicker(dir);
    conns.push(...(await HttpRawClient.connections(server.port, IN_FLIGHT)));
    await fill(conns);
    const cold = await overHttp(conns[0]);
    check("cold HTTP snapshot", cold.events);
    const http: number[] = [];
    const socket: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const h = await overHttp(conns[0]);
      check("HTTP snapshot", h.events);
      http.push(h.ms);
      const w = await overSocket(server.port);
      check("socket snapshot", w.events);
      socket.push(w.ms);
    }
    for (const c of conns.splice(0)) c.close();
    const how = await server.stop();
    if (!stoppedCleanly(how)) console.error(`server stop: ${how}`);
    server = await startTicker(dir);
    const [after] = await HttpRawClient.connections(server.port, 1);
    conns.push(after);
    const restarted = await overHttp(after);
    check("HTTP snapshot after a restart", restarted.events);
    const note = `${KEYS} keys, ${2 * KEYS} events (each key once, then ${KEYS} updates of random keys), HTTP pages of ${PAGE_EVENTS} (${cold.pages})`;
    const system = "Ticker";
    ms.push(
      { workload: "snapshot", system, metric: "HTTP pages ms (warm)", value: median(http), better: "lower", note },
      { workload: "snapshot", system, metric: "from=snapshot to snapshot_end ms (warm)", value: median(socket), better: "lower" },
      { workload: "snapshot", system, metric: "HTTP pages ms (cold: index built)", value: cold.ms, better: "lower" },
      { workload: "snapshot", system, metric: "HTTP pages ms (after a restart)", value: restarted.ms, better: "lower" },
    );
    const f = (x: number) => `${x.toFixed(0)} ms`;
    console.log(
      `snapshot, ${note}: HTTP pages ${f(median(http))} (median of ${RUNS}, min ${f(Math.min(...http))}, max ${f(Math.max(...http))}); ` +
        `from=snapshot to snapshot_end ${f(median(socket))} (min ${f(Math.min(...socket))}, max ${f(Math.max(...socket))}); ` +
        `first snapshot, index built from the log: ${f(cold.ms)}; first after a restart: ${f(restarted.ms)}`,
    );
    report(ms, opts.results ?? resultsFile());
  } finally {
    for (const c of conns) c.close();
    if (server) {
      const how = await server.stop();
      if (!stoppedCleanly(how)) console.error(`server stop: ${how}`);
    }
    cleanupNow();
  }
  return 0;
}

runMain(main);
