// A cluster node in its own process (src/cluster/node.ts, built), so that a
// test can kill -9 it, freeze it (SIGSTOP) past its lease, or cut it from
// PostgreSQL. Besides the loop it writes, every WRITE_EVERY_MS, one fenced
// row into `writes` for each shard it believes it holds, whatever its own
// deadline says, and on SIGCONT once more under the leases it held when it
// froze: the database must refuse every write of a stale epoch.
// usage: node cluster-node-child.mjs <postgres url> <node id> <lease ms> <shards>
// Prints JSON lines: started, gained, lost, error, write (with `sent`, when the write was sent, and `may`, its own check then).
import postgres from "postgres";
import { fence } from "../../dist/src/cluster/leases.js";
import { ClusterNode } from "../../dist/src/cluster/node.js";

const WRITE_EVERY_MS = 25;
const [url, nodeId, leaseMs, shards] = process.argv.slice(2);
const out = (m) => process.stdout.write(`${JSON.stringify({ ...m, t: performance.timeOrigin + performance.now() })}\n`);
const sql = postgres(url, { max: 2, onnotice: () => {}, connect_timeout: 2 });
const node = new ClusterNode(sql, { nodeId, advertiseUrl: `http://${nodeId}.invalid`, leaseMs: Number(leaseMs), shards: Number(shards) });
node.on("gained", (ls) => out({ type: "gained", shards: ls.map((l) => l.shard) }));
node.on("lost", (s) => out({ type: "lost", shards: s }));
node.on("error", (e) => out({ type: "error", message: e.message }));
await node.start();
out({ type: "started" });
let writing = false;
/** The leases of the last round of writes: on SIGCONT it writes under them once more, whatever the loop learned on waking. */
let lastHeld = [];
const writeUnder = async (leases) => {
  for (const l of leases) {
    const sent = performance.timeOrigin + performance.now();
    const may = node.leases.mayWrite(l.shard) !== null;
    const r = await sql`insert into writes (shard, node, epoch) select ${l.shard}, ${nodeId}, ${l.epoch}
      from (${fence(sql, l.shard, nodeId, l.epoch)}) as lease`;
    out({ type: "write", shard: l.shard, epoch: l.epoch, landed: r.count, may, sent });
  }
};
process.on("SIGCONT", () => void writeUnder(lastHeld).catch((err) => out({ type: "error", message: err.message })));
setInterval(async () => {
  if (writing) return;
  writing = true;
  try {
    lastHeld = [...node.leases.held.values()];
    await writeUnder(lastHeld);
  } catch (err) {
    out({ type: "error", message: err.message });
  } finally {
    writing = false;
  }
}, WRITE_EVERY_MS);
process.on("SIGTERM", async () => {
  await node.stop();
  await sql.end({ timeout: 2 });
  process.exit(0);
});
