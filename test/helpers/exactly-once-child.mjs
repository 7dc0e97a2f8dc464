// A group consumer in its own process whose effect is a PostgreSQL write, so
// that a test can kill -9 it at a chosen point (the built client, dist/).
// usage: node exactly-once-child.mjs <ticker url> <stream> <group> <postgres url> <schema> <helper|naive> <batch events> <pause>
// The effect of an event {amount}: a row in <schema>.effects and the amount
// added to <schema>.balance. "helper" runs it through processExactlyOnce,
// "naive" commits it and then acks. Prints {committed, processed, skipped}
// after each commit. <pause> is "none", "handler:<seq>" (block inside the
// transaction, after the effect of the first event at or past seq) or
// "ack:<seq>" (block after the first commit at or past seq, before its ack);
// it prints {paused} and blocks there for the test to kill it.
import postgres from "postgres";
import { Ticker, processExactlyOnce } from "../../dist/src/client/index.js";

const [url, stream, group, pgUrl, schema, mode, batchEvents, pause] = process.argv.slice(2);
const [pauseAt, pauseSeq] = pause === "none" ? [null, 0] : [pause.split(":")[0], Number(pause.split(":")[1])];
const sql = postgres(pgUrl, { max: 1, onnotice: () => {}, connection: { search_path: schema } });
// No `from`: each start resumes after the group's checkpoint, as a restarted consumer would.
const sub = new Ticker({ url }).consume(stream, { group, window: 500 });
const blocker = new Int32Array(new SharedArrayBuffer(4));

/** Synchronous: nothing queued for the event loop (an ack, a commit) goes out before the kill. */
function pauseIf(at, seq) {
  if (at !== pauseAt || seq < pauseSeq) return;
  process.stdout.write(`${JSON.stringify({ paused: seq })}\n`);
  Atomics.wait(blocker, 0, 0);
}

function committed(lastSeq, processed, skipped) {
  process.stdout.write(`${JSON.stringify({ committed: lastSeq, processed, skipped })}\n`);
  pauseIf("ack", lastSeq);
}

async function effect(tx, e) {
  await tx`insert into effects (stream, seq, amount) values (${stream}, ${e.seq}, ${e.payload.amount})`;
  await tx`update balance set total = total + ${e.payload.amount}`;
  pauseIf("handler", e.seq);
}

if (mode === "helper") {
  await processExactlyOnce(sub, sql, (e, tx) => effect(tx, e), {
    batchEvents: Number(batchEvents),
    onCommit: (b) => committed(b.last_seq, b.processed, b.skipped),
  });
} else {
  for await (const e of sub) {
    await sql.begin((tx) => effect(tx, e));
    committed(e.seq, 1, 0);
    sub.ack(e.seq);
  }
}
