// The producer's promises under what a review found breaking them: another
// writer on the same stream (order in the default mode; a fence in the
// exclusive one), a replay whose stream goes away, events the client must
// refuse before they poison a batch, a throwing callback, and the buffered
// bound under concurrent first sends.
import { describe, expect, it } from "vitest";
import { TickerError } from "../../src/client/index.js";
import { api, serverWithClient } from "../helpers/server.js";

describe("ticker/client producer, edges", () => {
  const env = serverWithClient();

  /** Publishes one-event batches to `stream` through plain HTTP until `stop()`. */
  function otherWriter(stream: string): { stop: () => Promise<number> } {
    let going = true;
    let n = 0;
    const done = (async () => {
      while (going) {
        await api(`${env.server.url}/v1/streams/${stream}/events`, "POST", { events: [{ type: "other" }] });
        n++;
      }
    })();
    return {
      stop: async () => {
        going = false;
        await done;
        return n;
      },
    };
  }

  it("by default a producer's events keep their order beside another writer, and each lands once", async () => {
    const other = otherWriter("shared");
    const p = env.client.producer({ lingerMs: 0 });
    for (let i = 0; i < 1500; i++) await p.send("shared", { type: "mine", payload: i });
    await p.close();
    const others = await other.stop();
    const mine: number[] = [];
    let n = 0;
    for await (const e of env.client.replay("shared")) {
      n++;
      if (e.type === "mine") mine.push(e.payload as number);
    }
    expect(mine).toEqual(Array.from({ length: 1500 }, (_, i) => i));
    expect(n).toBe(1500 + others);
  });

  it("an exclusive producer that meets another writer is fenced: it stops, each of its events landed at most once, in order", async () => {
    const other = otherWriter("not-exclusive");
    const p = env.client.producer({ exclusive: true, lingerMs: 0 });
    let err: unknown = null;
    try {
      for (let i = 0; i < 1500; i++) await p.send("not-exclusive", { type: "mine", payload: i });
      await p.close();
    } catch (e) {
      err = e;
    }
    await other.stop();
    expect(err).toMatchObject({ status: 409, code: "not_exclusive" });
    const mine: number[] = [];
    for await (const e of env.client.replay("not-exclusive")) if (e.type === "mine") mine.push(e.payload as number);
    // A batch refused at the fence is never sent again; one already in flight behind it may have landed.
    expect(mine.every((v, i) => i === 0 || v > mine[i - 1])).toBe(true);
    expect(mine.length).toBeLessThan(1500);
  });

  it("an exclusive producer alone keeps several batches in flight and its order", async () => {
    const p = env.client.producer({ exclusive: true, batchEventsMax: 50, lingerMs: 0 });
    const sends: Array<Promise<void>> = [];
    for (let i = 0; i < 5000; i++) sends.push(p.send("alone", { type: "n", payload: i }));
    await Promise.all(sends);
    await p.close();
    const got: number[] = [];
    for await (const e of env.client.replay("alone")) got.push(e.payload as number);
    expect(got).toEqual(Array.from({ length: 5000 }, (_, i) => i));
  });

  it("events the server would refuse are refused by send, and nothing of the call is batched", async () => {
    const p = env.client.producer();
    const bad: Array<[unknown, string]> = [
      [{ type: "x", payload_json: '1},{"type":"injected"' }, "payload_json is not valid JSON"],
      [{ type: "x\uD800" }, "lone surrogate"],
      [{ type: "x", key: 7 }, "key must be a string"],
      [{ type: "x", payload: 10n }, "cannot be serialised"],
    ];
    for (const [e, why] of bad) {
      const err = await p.send("refusals", [{ type: "ok" }, e as { type: string }]).catch((x: unknown) => x);
      expect(err).toBeInstanceOf(TickerError);
      expect(err).toMatchObject({ code: "invalid_event", details: { index: 1 }, retryable: false });
      expect((err as Error).message).toContain(why);
    }
    await p.flush();
    expect((await api(`${env.server.url}/v1/streams/refusals`, "GET")).status).toBe(404);
    await expect(env.client.publish("refusals", [{ type: "x", payload_json: "{" }], { format: "json" })).rejects.toMatchObject({ code: "invalid_event" });
  });

  it("a throwing onPublished is the producer's error, not a crash or a hung flush", async () => {
    const p = env.client.producer({
      onPublished: () => {
        throw new Error("handler bug");
      },
    });
    await p.send("callback", { type: "x" });
    await expect(p.flush()).rejects.toMatchObject({ code: "callback_failed" });
  });

  it("the buffered bound holds for concurrent first sends to a new stream", async () => {
    const p = env.client.producer({ exclusive: true, bufferedEventsMax: 100, batchEventsMax: 10 });
    let most = 0;
    const sends = Array.from({ length: 3000 }, (_, i) =>
      p.send(`bound-${i % 2}`, { type: "n" }).then(() => {
        most = Math.max(most, (p as unknown as { buffered: number }).buffered);
      }),
    );
    await Promise.all(sends);
    await p.close();
    expect(most).toBeLessThanOrEqual(100);
    expect((await env.client.streams.get("bound-0")).head_seq + (await env.client.streams.get("bound-1")).head_seq).toBe(3000);
  });

  it("a replay whose stream is deleted under it rejects the loop, with pages in flight, without an unhandled rejection", async () => {
    await env.client.publish(
      "going",
      Array.from({ length: 1000 }, () => ({ type: "x", payload_bytes: new Uint8Array(100) })),
    );
    const r = env.client.replay("going", { pageEvents: 100, prefetch: 4 });
    let n = 0;
    const err = await (async () => {
      for await (const _ of r) if (++n === 50) await env.client.streams.delete("going");
    })().catch((e: unknown) => e);
    // The deletion landed between pages: the loop saw an error, or the pages already fetched held the rest.
    if (n < 1000) expect(err).toMatchObject({ status: 404 });
    await new Promise((resolve) => setTimeout(resolve, 200)); // an unhandled rejection would fail the run here
  });

  it("a replay to a seq past the head ends at the head", async () => {
    await env.client.publish(
      "short",
      Array.from({ length: 50 }, () => ({ type: "x" })),
    );
    const seqs: number[] = [];
    for await (const e of env.client.replay("short", { from: 1, to: 60 })) seqs.push(e.seq);
    expect(seqs).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    await env.client.streams.put("empty");
    const none: number[] = [];
    for await (const e of env.client.replay("empty", { to: 10 })) none.push(e.seq);
    expect(none).toEqual([]);
  });
});
