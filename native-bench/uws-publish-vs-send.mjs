// One message to many WebSockets: uWebSockets.js's topic publish (its C++
// loop over the subscribers, drained corked at the end of the loop's turn)
// against a JS loop of ws.cork(() => ws.send(msg)) per socket, as the consume
// hub's live rounds do (src/front/consume/delivery.ts). Both end in one write
// per socket; the question is what the JS loop adds.
//
//   node native-bench/uws-publish-vs-send.mjs [sockets] [message bytes] [rounds]
//   node native-bench/uws-publish-vs-send.mjs 10000 2000
//
// The sockets' other ends are `ws` clients in two child processes, reading
// and dropping every message. Each round sends one message to every socket
// and is timed until the next turn of the event loop (after uWS has drained
// the publish), then waits 20 ms for the clients to read it; the two ways
// alternate round by round. Prints the median and best µs per socket of each.
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import uWS from "uWebSockets.js";
import WebSocket from "ws";

if (process.argv[2] === "--clients") {
  const [port, n] = process.argv.slice(3).map(Number);
  for (let i = 0; i < n; i++) new WebSocket(`ws://127.0.0.1:${port}/`).on("message", () => {});
} else {
  const SOCKETS = Number(process.argv[2] ?? 2000);
  const MESSAGE_BYTES = Number(process.argv[3] ?? 200);
  const ROUNDS = Number(process.argv[4] ?? 40);
  const TOPIC = "all";
  const sockets = [];
  const app = uWS.App().ws("/*", {
    maxBackpressure: 256 * 1024 * 1024,
    open: (ws) => {
      ws.subscribe(TOPIC);
      sockets.push(ws);
    },
  });
  const turn = () => new Promise((resolve) => setImmediate(resolve));
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  app.listen("127.0.0.1", 0, async (token) => {
    if (!token) throw new Error("could not listen");
    const port = uWS.us_socket_local_port(token);
    const self = fileURLToPath(import.meta.url);
    const kids = [0, 1].map((k) => fork(self, ["--clients", String(port), String(Math.ceil(SOCKETS / 2) - (k ? SOCKETS % 2 : 0))]));
    const since = Date.now();
    while (sockets.length < SOCKETS) {
      if (Date.now() - since > 60_000) throw new Error(`${sockets.length} of ${SOCKETS} clients connected in 60 s`);
      await sleep(50);
    }
    const msg = Buffer.alloc(MESSAGE_BYTES, 0x61);
    const us = { send: [], publish: [] };
    for (let round = 0; round < 2 * ROUNDS; round++) {
      const way = round % 2 === 0 ? "send" : "publish";
      const t0 = performance.now();
      if (way === "send") for (const ws of sockets) ws.cork(() => ws.send(msg, false));
      else app.publish(TOPIC, msg, false);
      await turn();
      us[way].push(((performance.now() - t0) * 1000) / SOCKETS);
      await sleep(20);
    }
    for (const [way, xs] of Object.entries(us)) {
      xs.sort((a, b) => a - b);
      console.log(`${way}: ${SOCKETS} sockets, ${MESSAGE_BYTES} B: median ${xs[xs.length >> 1].toFixed(2)} µs a socket, best ${xs[0].toFixed(2)}`);
    }
    for (const k of kids) k.kill();
    process.exit(0);
  });
}
