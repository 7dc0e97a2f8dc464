// The producer when answers are lost between it and a real server
// (helpers/answer-proxy.ts): a publish that landed but whose answer never
// came, one that never arrived, one that arrives only after the producer
// tried again. In both modes every event must land exactly once, in order,
// and the producer must go on publishing afterwards.
import { describe, expect, it } from "vitest";
import { type ProducerOptions, Ticker } from "../../src/client/index.js";
import { type Action, AnswerProxy } from "../helpers/answer-proxy.js";
import { serverWithClient } from "../helpers/server.js";
import type { PublishEvent } from "../../src/client/index.js";

describe("ticker/client producer with lost answers", () => {
  const env = serverWithClient();

  /** Sends `batches` through a proxy whose policy treats the `nth` publish as `action`; returns the stream's events. */
  async function run(stream: string, options: ProducerOptions, batches: PublishEvent[][], nth: number, action: Action) {
    let publishes = 0;
    const proxy = await AnswerProxy.start(env.server.port, (r) => (r.method === "POST" && ++publishes === nth ? action : "pass"));
    const t = new Ticker({ url: proxy.url });
    try {
      const p = t.producer({ lingerMs: 0, ...options });
      for (const b of batches) {
        await p.send(stream, b);
        await p.flush(); // one batch per request, the nth one as the policy says
      }
      await p.close();
      await proxy.settled();
      const got: string[] = [];
      for await (const e of env.client.replay(stream)) got.push(`${e.type}:${String(e.payload ?? "")}`);
      return { got, log: proxy.log };
    } finally {
      t.close();
      proxy.close();
    }
  }

  const batch = (name: string, n: number, key?: string): PublishEvent[] =>
    Array.from({ length: n }, (_, i) => ({ type: name, payload: i, ...(i === 0 && key ? { idempotency_key: key } : {}) }));
  const want = (...bs: PublishEvent[][]) => bs.flat().map((e) => `${e.type}:${String(e.payload)}`);

  for (const exclusive of [false, true]) {
    const mode = exclusive ? "exclusive" : "keyed";

    it(`${mode}: a batch that landed without its answer is not written again, and the next ones follow`, async () => {
      const bs = [batch("a", 3), batch("b", 3), batch("c", 3)];
      const { got, log } = await run(`landed-${mode}`, { exclusive }, bs, 2, "lose-answer");
      expect(
        log.some((l) => l.includes("answer lost")),
        log.join("\n"),
      ).toBe(true);
      expect(got).toEqual(want(...bs));
    });

    it(`${mode}: the caller's duplicate key first in a lost batch does not duplicate the rest`, async () => {
      const bs = [batch("a", 2, "k-1"), batch("b", 3, "k-1"), batch("c", 2)];
      const { got } = await run(`callerkey-${mode}`, { exclusive }, bs, 2, "lose-answer");
      // b's first event is the server's duplicate of a's first: the rest of b lands once.
      expect(got).toEqual(want(bs[0], bs[1].slice(1), bs[2]));
    });

    it(`${mode}: a request lost on the way to a stream not yet created is sent again`, async () => {
      const bs = [batch("a", 3), batch("b", 2)];
      const { got } = await run(`new-${mode}`, { exclusive }, bs, 1, "lose-request");
      expect(got).toEqual(want(...bs));
    });

    it(`${mode}: a request that reaches the server only after the producer tried again lands once`, async () => {
      const bs = [batch("a", 2), batch("b", 4), batch("c", 2)];
      const { got } = await run(`late-${mode}`, { exclusive }, bs, 2, { late: 300 });
      // Keyed: the late copy is the server's duplicate. Exclusive: it or the retry is refused on its head.
      expect(got).toEqual(want(...bs));
    });
  }
});
