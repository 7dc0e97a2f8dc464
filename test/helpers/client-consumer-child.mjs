// A ticker/client subscription in its own process, so that a test can kill -9
// it the way a crashed consumer would die (the built client, dist/).
// usage: node client-consumer-child.mjs <base url> <stream> <group> <ack up to seq>
// Prints one JSON line per event ({seq}) and one per role change ({role}); acks each event up to the limit.
import { consume } from "../../dist/src/client/consume.js";

const [url, stream, group, ackUpTo] = process.argv.slice(2);
const sub = consume({ url }, stream, { group, from: "earliest" });
sub.on("role", (role) => process.stdout.write(`${JSON.stringify({ role })}\n`));
for await (const e of sub) {
  process.stdout.write(`${JSON.stringify({ seq: e.seq })}\n`);
  if (e.seq <= Number(ackUpTo)) sub.ack(e.seq);
}
