// A consumer in its own process, so that a test can kill -9 or freeze it
// (SIGSTOP) the way a crashed or cut-off client would be.
// usage: node consumer-child.mjs <ws url> <ack up to seq>
// Prints one JSON line per message received; acks each batch up to the limit.
import WebSocket from "ws";

const [url, ackUpTo] = process.argv.slice(2);
const limit = Number(ackUpTo);
const ws = new WebSocket(url);
ws.on("message", (data) => {
  const m = JSON.parse(data.toString("utf8"));
  if (m.type === "events") {
    const last = m.events[m.events.length - 1].seq;
    process.stdout.write(`${JSON.stringify({ type: "events", first: m.events[0].seq, last })}\n`);
    const ack = Math.min(last, limit);
    if (ack >= m.events[0].seq) ws.send(JSON.stringify({ type: "ack", seq: ack }));
  } else process.stdout.write(`${JSON.stringify(m)}\n`);
});
ws.on("close", () => process.exit(0));
