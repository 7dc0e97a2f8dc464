// Cluster nodes in their own processes (test/helpers/cluster-node-child.mjs)
// on a real private PostgreSQL, each writing fenced rows for the shards it
// believes it holds: they spread the shards, a frozen node (SIGSTOP past its
// lease) loses its shards to the others and every write it tries on waking
// is refused by the database, a killed node's shards are taken, a node cut
// from PostgreSQL by a proxy stops on its own deadline, and through it all no
// shard's rows ever go back to an older epoch.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { ShardLeases } from "../../src/cluster/leases.js";
import { clusterDb, sleep, until, type ClusterDb } from "../helpers/cluster-db.js";
import { tcpProxy } from "../helpers/tcp-proxy.js";

const CHILD = fileURLToPath(new URL("../helpers/cluster-node-child.mjs", import.meta.url));
const LEASE_MS = 1500;
const SHARDS = 12;

let db: ClusterDb;
const children: ChildProcess[] = [];
beforeAll(async () => {
  db = await clusterDb();
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  await db?.stop();
});

interface Line {
  type: string;
  t: number;
  shards?: number[];
  shard?: number;
  epoch?: number;
  landed?: number;
  may?: boolean;
  sent?: number;
  message?: string;
}

interface Node {
  id: string;
  proc: ChildProcess;
  lines: Line[];
}

function startNode(url: string, id: string): Node {
  const proc = spawn(process.execPath, [CHILD, url, id, String(LEASE_MS), String(SHARDS)], { stdio: ["ignore", "pipe", "inherit"] });
  children.push(proc);
  const node: Node = { id, proc, lines: [] };
  let rest = "";
  proc.stdout!.on("data", (d: Buffer) => {
    const parts = (rest + d.toString("utf8")).split("\n");
    rest = parts.pop()!;
    for (const p of parts) node.lines.push(JSON.parse(p));
  });
  return node;
}

/** Live owners by shard, as the database says. */
async function owners(observer: ShardLeases): Promise<Array<string | null>> {
  return (await observer.map()).map((s) => (s.live ? s.owner : null));
}

const count = (list: Array<string | null>, id: string) => list.filter((o) => o === id).length;

/** Every shard's rows in insertion order have epochs that never go back. */
async function epochsNeverGoBack(sql: postgres.Sql): Promise<void> {
  const rows = await sql<{ shard: number; epoch: string }[]>`select shard, epoch from writes order by id`;
  const last = new Map<number, number>();
  for (const r of rows) {
    const e = Number(r.epoch);
    expect(e).toBeGreaterThanOrEqual(last.get(r.shard) ?? 0);
    last.set(r.shard, e);
  }
  expect(rows.length).toBeGreaterThan(0);
}

describe("cluster nodes in their own processes", () => {
  it("spread the shards; a frozen node loses them and its writes on waking are refused; a killed node's shards are taken; epochs never go back", async () => {
    const { url } = await db.freshUrl();
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    try {
      await sql`create table writes (id bigserial primary key, shard int not null, node text not null, epoch bigint not null)`;
      const observer = new ShardLeases(sql, { nodeId: "observer", leaseMs: LEASE_MS, shards: SHARDS });
      const [, b, c] = ["a", "b", "c"].map((id) => startNode(url, id));
      await until("4 shards on each of 3 nodes", async () => {
        const o = await owners(observer);
        return ["a", "b", "c"].every((id) => count(o, id) === 4) ? o : null;
      });

      // Frozen past its lease: the others take its shards.
      const atFreeze = await observer.map();
      const frozen = new Map(atFreeze.filter((x) => x.owner === "c").map((x) => [x.shard, x.epoch]));
      c.proc.kill("SIGSTOP");
      await until("c's shards on a and b", async () => {
        const o = await owners(observer);
        return [...frozen.keys()].every((s) => o[s] === "a" || o[s] === "b") ? o : null;
      });
      // Taken under new epochs: a claim bumps the epoch, so none of c's can be current.
      const taken = await observer.map();
      for (const [shard, epoch] of frozen) expect(taken[shard].epoch).toBeGreaterThan(epoch);
      // Taken before the signal: whatever the child sends after it, it sent awake.
      const wokeAt = performance.timeOrigin + performance.now();
      c.proc.kill("SIGCONT");
      await until("c to see it lost its shards", () => c.lines.find((l) => l.type === "lost" && l.t > wokeAt) ?? null);
      await sleep(300);
      // On waking it still believed in its old leases and wrote under them: the database took none of it.
      const stale = c.lines.filter((l) => l.type === "write" && l.sent! > wokeAt && frozen.get(l.shard!) === l.epoch);
      expect(stale.length).toBeGreaterThan(0);
      expect(stale.filter((l) => l.landed !== 0)).toEqual([]);

      // Killed: its shards go to the others once its leases run out.
      const killedShards = (await owners(observer)).flatMap((o, shard) => (o === "b" ? [shard] : []));
      b.proc.kill("SIGKILL");
      await until("b's shards on a and c", async () => {
        const o = await owners(observer);
        return killedShards.every((s) => o[s] === "a" || o[s] === "c") ? o : null;
      });
      const final = await owners(observer);
      expect(final.every((o) => o === "a" || o === "c")).toBe(true);
      await until("a balanced spread of a and c", async () => {
        const o = await owners(observer);
        return count(o, "a") === 6 && count(o, "c") === 6 ? o : null;
      });
      // (A write may land after its node's own deadline: that deadline comes before the database's, on purpose.)
      await epochsNeverGoBack(sql);
    } finally {
      await sql.end();
    }
  }, 60_000);

  it("a node cut from PostgreSQL stops writing by its own deadline, and the other node takes its shards", async () => {
    const { url, port, via } = await db.freshUrl();
    const proxy = await tcpProxy(port);
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    try {
      await sql`create table writes (id bigserial primary key, shard int not null, node text not null, epoch bigint not null)`;
      const observer = new ShardLeases(sql, { nodeId: "observer", leaseMs: LEASE_MS, shards: SHARDS });
      startNode(url, "a");
      const cut = startNode(via(proxy.port), "cut");
      await until("6 shards on each node", async () => {
        const o = await owners(observer);
        return count(o, "a") === 6 && count(o, "cut") === 6 ? o : null;
      });
      const atCut = new Map((await observer.map()).filter((x) => x.owner === "cut").map((x) => [x.shard, x.epoch]));
      proxy.cut();
      const cutAt = performance.timeOrigin + performance.now();
      await until("a holding every shard", async () => {
        const o = await owners(observer);
        return count(o, "a") === SHARDS ? o : null;
      });
      // cut's leases ran out in the database before a could take them, and its own deadlines before that.
      const takenAt = performance.timeOrigin + performance.now();
      proxy.heal();
      await until("cut to see it lost its shards", () => cut.lines.find((l) => l.type === "lost" && l.t > cutAt) ?? null);
      await sleep(300);
      // Back in reach, it wrote under the leases it held at the cut until it learnt they were gone: none of it landed,
      // and its own check said no to each of them.
      const stale = cut.lines.filter((l) => l.type === "write" && l.sent! > takenAt && atCut.get(l.shard!) === l.epoch);
      expect(stale.filter((l) => l.landed !== 0 || l.may)).toEqual([]);
      await epochsNeverGoBack(sql);
    } finally {
      await sql.end();
      await proxy.close();
    }
  }, 60_000);
});
