// A group member in its own process, so that a fault test can freeze it
// (SIGSTOP) or kill it the way a stuck or crashed client would be.
// usage: node consumer-proc.mjs <ws url>
// Prints one JSON line per thing it saw or did: {"t":"hello"|"events"|"ack"|"error"|"close", ...};
// an ack line is printed just before the ack is sent (a freeze may fall between the two).
import WebSocket from "ws";

const out = (m) => process.stdout.write(`${JSON.stringify(m)}\n`);
const ws = new WebSocket(process.argv[2]);
ws.on("message", (data) => {
  const m = JSON.parse(data.toString("utf8"));
  if (m.type === "events") {
    out({ t: "events", events: m.events.map((e) => ({ seq: e.seq, payload: e.payload })) });
    const seq = m.events[m.events.length - 1].seq;
    out({ t: "ack", seq });
    ws.send(JSON.stringify({ type: "ack", seq }));
  } else if (m.type === "hello") out({ t: "hello", role: m.role, from: m.from });
  else if (m.type === "error") out({ t: "error", code: m.code });
});
ws.on("error", () => {});
ws.on("close", (code) => {
  out({ t: "close", code });
  process.exit(0);
});
