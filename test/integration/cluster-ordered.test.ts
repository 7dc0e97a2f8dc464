// Ordered ingest (producer_ordering) in cluster mode, on two real `ticker
// serve` nodes, a private PostgreSQL and a shared archive: events that run
// ahead are held (in PostgreSQL before the answer lists them) and released
// in producer_seq order by a publish through either node; after kill -9 of
// the owner the new owner releases a held event when its gap closes, or
// behind the gap's tombstone after gap_timeout_ms, and knows each producer's
// place (a producer_seq at or below it is a duplicate) though the producer's
// events are only in the archive; the killed node, back on its old copy,
// takes PostgreSQL's state over its own when it owns the stream again.
import type postgres from "postgres";
import { beforeAll, describe, expect, it } from "vitest";
import { sleep, until } from "../helpers/cluster-db.js";
import { restartNode, settled, type ClusterWorld, smallCluster } from "../helpers/cluster-nodes.js";
import { clusterShardOf } from "../../src/cluster/leases.js";
import { api, replayAll } from "../helpers/server.js";
import { ev, ordered, publish } from "../helpers/ordered.js";
import { rng } from "../helpers/rng.js";

const SHARDS = 4;
const cluster = smallCluster(["o1", "o2"], SHARDS);
const { live, ownerOf, otherThan } = cluster;
let w: ClusterWorld;
let sql: postgres.Sql;
beforeAll(() => {
  w = cluster.world();
  sql = w.sql;
});

const heldRows = async (stream: string) =>
  (
    await sql<{ producer_id: string; producer_seq: string }[]>`select producer_id, producer_seq from ticker_cluster_held where stream = ${stream}
      order by producer_id, producer_seq`
  ).map((r) => [r.producer_id, Number(r.producer_seq)]);

const placeOf = async (stream: string, producer: string) => {
  const [r] = await sql<{ last_seq: string }[]>`select last_seq from ticker_cluster_producers where stream = ${stream} and producer_id = ${producer}`;
  return r ? Number(r.last_seq) : null;
};

/** A publish retried while the shard moves (503, or the node gone), until it is answered otherwise. */
async function publishThroughFailover(url: string, stream: string, events: unknown[]): Promise<Awaited<ReturnType<typeof publish>>> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const r = await publish(url, stream, events).catch(() => null);
    if (r && r.status !== 503) return r;
    if (Date.now() > deadline) throw new Error(`no answer but 503 30 s after the kill: ${JSON.stringify(r?.json)}`);
    await sleep(50);
  }
}

describe("ordered ingest in cluster mode", () => {
  it("holds an event that runs ahead (in PostgreSQL before the answer), and a publish through the other node (307) releases it in order", async () => {
    const stream = "ord-close";
    const owner = await ownerOf(stream);
    const other = otherThan(owner);
    // Through the node that does not own it: the config is the owner's write.
    expect((await ordered(other.url, stream, { gap_timeout_ms: 60_000 })).status).toBe(201);
    const first = await publish(owner.url, stream, [ev("a", 1), ev("a", 3, { payload: 3 }), { type: "plain" }, ev("a", 4)]);
    expect(first.status).toBe(200);
    expect(first.json).toMatchObject({
      first_seq: 1,
      last_seq: 2,
      count: 2,
      held: [
        { index: 1, producer_seq: 3 },
        { index: 3, producer_seq: 4 },
      ],
    });
    expect(await heldRows(stream)).toEqual([
      ["a", 3],
      ["a", 4],
    ]);
    expect(await placeOf(stream, "a")).toBe(1);
    expect((await api(`${owner.url}/v1/streams/${stream}`, "GET")).json).toMatchObject({ held_events: 2, producers: 1 });
    // A retry of a held event is held once.
    expect((await publish(owner.url, stream, [ev("a", 3)])).json).toMatchObject({ count: 0, held: [{ index: 0, producer_seq: 3 }] });

    const closing = await publish(other.url, stream, [ev("a", 2)]);
    expect(closing.status).toBe(200);
    expect(closing.json).toMatchObject({ first_seq: 3, last_seq: 5, count: 3, held: [] });
    expect(await heldRows(stream)).toEqual([]);
    expect(await placeOf(stream, "a")).toBe(4);
    const events = await replayAll(other.url, stream);
    expect(events.map((e) => [e.seq, e.type, e.producer_seq])).toEqual([
      [1, "t", 1],
      [2, "plain", undefined],
      [3, "t", 2],
      [4, "t", 3],
      [5, "t", 4],
    ]);
    expect(events[3].payload).toBe(3);
    // At or below where the producer stands: a duplicate, not appended.
    expect((await publish(owner.url, stream, [ev("a", 2), ev("a", 5)])).json).toMatchObject({
      count: 1,
      first_seq: 6,
      duplicates: [{ index: 0, producer_seq: 2 }],
    });
    // Held again, then the stream deleted through the other node: its held events and places go with it.
    expect((await publish(owner.url, stream, [ev("a", 9)])).json).toMatchObject({ count: 0, held: [{ index: 0, producer_seq: 9 }] });
    expect((await fetch(`${other.url}/v1/streams/${stream}`, { method: "DELETE" })).status).toBe(204);
    expect(await heldRows(stream)).toEqual([]);
    expect(await placeOf(stream, "a")).toBeNull();
  });

  it("a plain stream made ordered keeps its producers' places from its log, and its first ordered commit puts them all in PostgreSQL", async () => {
    const stream = "ord-late";
    const owner = await ownerOf(stream);
    expect((await publish(owner.url, stream, [ev("a", 1), ev("a", 2), ev("a", 3), ev("b", 1)])).json).toMatchObject({ count: 4 });
    expect((await ordered(owner.url, stream)).status).toBe(200);
    expect((await publish(owner.url, stream, [ev("a", 3), ev("a", 4)])).json).toMatchObject({
      first_seq: 5,
      count: 1,
      duplicates: [{ index: 0, producer_seq: 3 }],
    });
    expect([await placeOf(stream, "a"), await placeOf(stream, "b")]).toEqual([4, 1]);
  });

  it("refuses a producer_id PostgreSQL cannot store (a NUL) with 400, the batch whole, and the shard goes on", async () => {
    const stream = "ord-nul";
    const owner = await ownerOf(stream);
    expect((await ordered(owner.url, stream)).status).toBe(201);
    const bad = await publish(owner.url, stream, [ev("ok", 1), ev("a\u0000b", 1)]);
    expect(bad.status).toBe(400);
    expect(bad.json.error.code).toBe("invalid_event");
    expect((await publish(owner.url, stream, [ev("ok", 1)])).json).toMatchObject({ first_seq: 1, count: 1 });
    expect(await placeOf(stream, "ok")).toBe(1);
  });

  it("concurrent publishes of one stream take turns: one producer's events sent at once in any order reach the log once each, in order", async () => {
    const stream = "ord-turns";
    const owner = await ownerOf(stream);
    expect((await ordered(owner.url, stream, { gap_timeout_ms: 60_000 })).status).toBe(201);
    const random = rng(12);
    const seqs = Array.from({ length: 60 }, (_, i) => i + 1);
    for (let i = seqs.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [seqs[i], seqs[j]] = [seqs[j], seqs[i]];
    }
    await Promise.all(
      seqs.map(async (seq) => {
        for (;;) {
          const r = await publish(owner.url, stream, [ev("c", seq, { payload: seq })]);
          if (r.status === 200) return;
          // Past the stream's waiting bound: 429 with Retry-After, and nothing of the batch taken.
          expect(r.status).toBe(429);
          expect(r.headers.get("retry-after")).toBe("1");
          await sleep(100);
        }
      }),
    );
    const events = await replayAll(owner.url, stream);
    expect(events.map((e) => [e.seq, e.producer_seq, e.payload])).toEqual(Array.from({ length: 60 }, (_, i) => [i + 1, i + 1, i + 1]));
    expect(await heldRows(stream)).toEqual([]);
    expect(await placeOf(stream, "c")).toBe(60);
  });

  it("after kill -9 of the owner, the new owner releases held events when their gap closes or times out, and knows each producer's place from PostgreSQL", async () => {
    // Three streams of one owner (the one killed): the first name of each kind whose shard it owns.
    const victim = await ownerOf("ord-gap-0");
    const view = (await (await fetch(`${victim.url}/v1/cluster`)).json()) as { shards: Array<{ owner: string }> };
    const ofVictim = (prefix: string) => {
      for (let i = 0; ; i++) if (view.shards[clusterShardOf(`${prefix}-${i}`, SHARDS)].owner === victim.id) return `${prefix}-${i}`;
    };
    const gapped = ofVictim("ord-gap");
    const timed = ofVictim("ord-timeout");
    const placed = ofVictim("ord-place");
    const survivor = otherThan(victim);
    expect((await ordered(victim.url, gapped, { gap_timeout_ms: 60_000 })).status).toBe(201);
    expect((await ordered(victim.url, timed, { gap_timeout_ms: 3000 })).status).toBe(201);
    expect((await ordered(victim.url, placed, { gap_timeout_ms: 60_000 })).status).toBe(201);

    expect((await publish(victim.url, gapped, [ev("p", 1), ev("p", 3, { payload: "held" })])).json).toMatchObject({
      count: 1,
      held: [{ index: 1, producer_seq: 3 }],
    });
    const sentAtMs = Date.now();
    expect((await publish(victim.url, timed, [ev("q", 1), ev("q", 4, { payload: "late" })])).json).toMatchObject({
      count: 1,
      held: [{ index: 1, producer_seq: 4 }],
    });
    // A producer whose events all reach the archive: the new owner's copy starts after them.
    const pad = "x".repeat(400);
    for (let seq = 1; seq <= 60; seq += 20) {
      const batch = Array.from({ length: 20 }, (_, i) => ev("d", seq + i, { payload: pad }));
      expect((await publish(victim.url, placed, batch)).json).toMatchObject({ count: 20 });
    }
    for (let i = 0; i < 3; i++)
      expect(
        (
          await publish(
            victim.url,
            placed,
            Array.from({ length: 20 }, () => ({ type: "plain", payload: pad })),
          )
        ).status,
      ).toBe(200);
    await until("the producer's events archived", async () => {
      const [r] = await sql<{ last: string | null }[]>`select max(last_seq) as last from ticker_cluster_segments where stream = ${placed}`;
      return Number(r.last ?? 0) > 60 ? true : null;
    });

    victim.server.killNow();
    // The gap closes on the new owner: the held event follows the one it waited for.
    const closing = await publishThroughFailover(survivor.url, gapped, [ev("p", 2)]);
    expect(closing.status).toBe(200);
    expect(closing.json).toMatchObject({ first_seq: 2, last_seq: 3, count: 2, held: [] });
    const gappedEvents = await replayAll(survivor.url, gapped);
    expect(gappedEvents.map((e) => [e.seq, e.producer_seq, e.payload ?? null])).toEqual([
      [1, 1, null],
      [2, 2, null],
      [3, 3, "held"],
    ]);
    expect(await heldRows(gapped)).toEqual([]);

    // The other gap times out on the new owner: its tombstone, then the held event, no sooner than gap_timeout_ms after its receipt.
    const timedEvents = await until("the timed-out gap's tombstone and held event", async () => {
      const events = await replayAll(survivor.url, timed).catch(() => []);
      return events.length >= 3 ? events : null;
    });
    expect(timedEvents.map((e) => [e.seq, e.type, e.producer_seq])).toEqual([
      [1, "t", 1],
      [2, "gap", 3],
      [3, "t", 4],
    ]);
    expect(timedEvents[1].payload).toEqual({ producer_id: "q", from_producer_seq: 2, to_producer_seq: 3 });
    expect(timedEvents[2].payload).toBe("late");
    expect(timedEvents[1].ingest_ts).toBeGreaterThanOrEqual(sentAtMs + 3000);
    expect(await heldRows(timed)).toEqual([]);
    // Late after the tombstone: a duplicate.
    expect((await publish(survivor.url, timed, [ev("q", 2)])).json).toMatchObject({ count: 0, duplicates: [{ index: 0, producer_seq: 2 }] });

    // The producer's place came from PostgreSQL, not from the new owner's copy (which starts after the archive).
    const info = (await api(`${survivor.url}/v1/streams/${placed}`, "GET")).json;
    expect(info.first_seq).toBeGreaterThan(60);
    const again = await publish(survivor.url, placed, [ev("d", 60), ev("d", 1), ev("d", 61)]);
    expect(again.json).toMatchObject({
      count: 1,
      duplicates: [
        { index: 0, producer_seq: 60 },
        { index: 1, producer_seq: 1 },
      ],
      held: [],
    });
    const tail = await replayAll(survivor.url, placed, again.json.first_seq);
    expect(tail.map((e) => [e.producer_id, e.producer_seq])).toEqual([["d", 61]]);
  });

  it("a killed node, back on its old copy, owns the stream again with PostgreSQL's ordered state, not its copy's", async () => {
    // Two nodes again: the one the last test killed comes back.
    for (const dead of w.nodes.filter((n) => n.server.exit !== null)) w.nodes.push(await restartNode(w.setup, dead));
    await settled(live(), SHARDS);
    const stream = "ord-back";
    const first = await ownerOf(stream);
    expect((await ordered(first.url, stream, { gap_timeout_ms: 60_000 })).status).toBe(201);
    expect((await publish(first.url, stream, [ev("r", 1), ev("r", 3), ev("r", 5)])).json).toMatchObject({
      count: 1,
      held: [{ producer_seq: 3 }, { producer_seq: 5 }],
    });
    first.server.killNow();
    await first.server.ended;
    const second = otherThan(first);
    // The second node closes the first gap; r 5 stays held.
    expect((await publishThroughFailover(second.url, stream, [ev("r", 2)])).json).toMatchObject({ first_seq: 2, count: 2 });
    const back = await restartNode(w.setup, first);
    w.nodes.push(back);
    await settled([back, second], SHARDS);
    second.server.killNow();
    await second.server.ended;
    await settled([back], SHARDS);
    const info = await until("the stream served by the returned node", async () => {
      const r = await api(`${back.url}/v1/streams/${stream}`, "GET");
      return r.status === 200 ? r.json : (await sleep(100), null);
    });
    expect(info).toMatchObject({ head_seq: 3, held_events: 1, producers: 1 });
    // Its copy has r at 1 and nothing held (held.log is not written in cluster mode); the cluster has r at 3 and r 5 held.
    expect((await publish(back.url, stream, [ev("r", 3), ev("r", 5)])).json).toMatchObject({
      count: 0,
      duplicates: [{ index: 0, producer_seq: 3 }],
      held: [{ index: 1 }],
    });
    expect((await publish(back.url, stream, [ev("r", 4)])).json).toMatchObject({ first_seq: 4, last_seq: 5, count: 2 });
    expect((await replayAll(back.url, stream)).map((e) => e.producer_seq)).toEqual([1, 2, 3, 4, 5]);
  }, 60_000);
});
