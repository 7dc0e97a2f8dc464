// Conditional publish (`?expected_head_seq=n`), end to end against real
// server processes: a batch is appended only on the head it names, else
// 409 head_mismatch with the actual head and nothing appended; JSON and
// FlatBuffers alike; one winner per head among publishes racing on several
// connections; a producer that keeps several batches in flight keeps them
// in order; the retry recipe (409, re-base, duplicates); unknown streams,
// ordered streams, and the parameter's value rules (also as a property).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { HttpRawConnection, type HttpRawReply } from "../../src/client/http.js";
import { encodePublishBatch, type OutgoingEvent } from "../../src/wire/client.js";
import { api, removeDir, replayAll, startServer, type TestServer } from "../helpers/server.js";
import { expectError, expectOk, FB_CT, itStaysHealthy, JSON_CT, streamIdsOf } from "../helpers/bad-input.js";
import { ev } from "../helpers/ordered.js";

const events = (tag: string, n: number, keyed = false): OutgoingEvent[] =>
  Array.from({ length: n }, (_, i) => ({ type: "t", payload: { tag, i }, ...(keyed ? { idempotency_key: `${tag}:${i}` } : {}) }));

const path = (stream: string, expected: number | string | null) => `/v1/streams/${stream}/events${expected === null ? "" : `?expected_head_seq=${expected}`}`;

const json = (r: HttpRawReply) => JSON.parse(r.body.toString("utf8"));

describe("publish with expected_head_seq", () => {
  let s: TestServer;
  const post = (stream: string, expected: number | string | null, body: unknown, headers = JSON_CT) =>
    api(`${s.url}${path(stream, expected)}`, "POST", body instanceof Uint8Array ? body : JSON.stringify(body), headers);
  const headOf = async (stream: string): Promise<number> => expectOk(await api(`${s.url}/v1/streams/${stream}`, "GET")).head_seq;
  const payloads = async (stream: string) => (await replayAll(s.url, stream)).map((e) => [e.seq, e.payload]);

  beforeAll(async () => {
    s = await startServer();
  });
  afterAll(async () => {
    expect(await s.stop()).toBe(0);
    removeDir(s.dataDir);
  });

  for (const [form, encode, headers] of [
    ["JSON", (e: OutgoingEvent[]) => ({ events: e }), JSON_CT],
    ["FlatBuffers", (e: OutgoingEvent[]) => encodePublishBatch(e), FB_CT],
  ] as const) {
    it(`${form}: a batch on the stream's head is appended; on any other head it is 409 head_mismatch with the head, and nothing is appended`, async () => {
      const id = `eh-${form}`;
      expect(expectOk(await post(id, 0, encode(events("a", 3)), headers))).toMatchObject({ first_seq: 1, last_seq: 3, count: 3 });
      for (const wrong of [0, 2, 4, 1000]) {
        const err = expectError(await post(id, wrong, encode(events("no", 2)), headers), 409, "head_mismatch");
        expect(err.head_seq).toBe(3);
        expect(err.message).toContain(`expected head_seq ${wrong}`);
        expect(err.message).toContain("head_seq is 3");
      }
      expect(expectOk(await post(id, 3, encode(events("b", 2)), headers))).toMatchObject({ first_seq: 4, last_seq: 5, count: 2 });
      expect(await payloads(id)).toEqual([...[0, 1, 2].map((i) => [i + 1, { tag: "a", i }]), ...[0, 1].map((i) => [i + 4, { tag: "b", i }])]);
    });
  }

  it("publishes racing on one head over several connections: exactly one wins it, the others hear the head it made", async () => {
    const conns = await Promise.all(Array.from({ length: 8 }, () => HttpRawConnection.connect(s.port)));
    try {
      const answers = await Promise.all(conns.map((c, w) => c.post(path("eh-race", 0), Buffer.from(JSON.stringify({ events: events(`w${w}`, 5) })), JSON_CT)));
      const won = answers.filter((a) => a.status === 200);
      expect(won.length).toBe(1);
      expect(json(won[0])).toMatchObject({ first_seq: 1, last_seq: 5 });
      for (const a of answers.filter((x) => x.status !== 200)) {
        expect(a.status).toBe(409);
        expect(json(a).error).toMatchObject({ code: "head_mismatch", head_seq: 5 });
      }
      expect((await replayAll(s.url, "eh-race")).length).toBe(5);
    } finally {
      for (const c of conns) c.close();
    }
  });

  for (const durability of ["process", "fsync"] as const) {
    it(`${durability} stream: writers that re-base on each 409 until their batches are in: every head is won once, the stream is gap-free, each writer's batches whole and in its order`, async () => {
      // On an fsync stream the head a writer is told counts batches still waiting for their sync, and its next batch goes on that head.
      const id = `eh-writers-${durability}`;
      expectOk(await api(`${s.url}/v1/streams/${id}`, "PUT", { durability }), 201);
      const writers = 6;
      const batchesEach = 15;
      const conns = await Promise.all(Array.from({ length: writers }, () => HttpRawConnection.connect(s.port)));
      const winsAt: number[] = [];
      let conflicts = 0;
      try {
        await Promise.all(
          conns.map(async (c, w) => {
            let head = 0;
            for (let b = 0; b < batchesEach; ) {
              const size = 1 + ((w + b) % 4);
              const body = Buffer.from(JSON.stringify({ events: Array.from({ length: size }, (_, i) => ({ type: "t", payload: { w, b, i } })) }));
              const a = await c.post(path(id, head), body, JSON_CT);
              const j = json(a);
              if (a.status === 409) {
                expect(j.error.code).toBe("head_mismatch");
                expect(j.error.head_seq).toBeGreaterThan(head);
                head = j.error.head_seq;
                conflicts++;
                continue;
              }
              expect(a.status, a.body.toString()).toBe(200);
              expect(j.first_seq).toBe(head + 1);
              winsAt.push(head);
              head = j.last_seq;
              b++;
            }
          }),
        );
      } finally {
        for (const c of conns) c.close();
      }
      const log = await replayAll(s.url, id);
      expect(log.map((e) => e.seq)).toEqual(log.map((_, i) => i + 1));
      // Each batch starts right where one won: one winner per head value.
      expect(winsAt.length).toBe(writers * batchesEach);
      expect(new Set(winsAt).size).toBe(winsAt.length);
      const starts = log.filter((e) => e.payload.i === 0).map((e) => e.seq - 1);
      expect([...winsAt].sort((x, y) => x - y)).toEqual(starts);
      for (let w = 0; w < writers; w++) {
        const mine = log.filter((e) => e.payload.w === w).map((e) => [e.payload.b, e.payload.i]);
        const want = Array.from({ length: batchesEach }, (_, b) => Array.from({ length: 1 + ((w + b) % 4) }, (_, i) => [b, i])).flat();
        expect(mine).toEqual(want);
      }
      // They did race: all started on head 0, which only one of them could win.
      expect(conflicts).toBeGreaterThanOrEqual(writers - 1);
    });
  }

  /**
   * One producer keeping `inFlight` batches in flight, one per connection:
   * each names the head the batches before it leave. After a 409 the rest of
   * its window went on heads never reached: it sends again from the first
   * batch not in, on the head the last one in left.
   */
  const publishInFlight = async (stream: string, sizes: number[], inFlight: number): Promise<void> => {
    const conns = await Promise.all(Array.from({ length: inFlight }, () => HttpRawConnection.connect(s.port)));
    try {
      let next = 0; // the first batch not known to be in
      let head = 0;
      while (next < sizes.length) {
        let at = head;
        const window = sizes.slice(next, next + inFlight).map((n, k) => {
          const b = next + k;
          const body = Buffer.from(JSON.stringify({ events: Array.from({ length: n }, (_, i) => ({ type: "t", payload: { b, i } })) }));
          const sent = conns[k].post(path(stream, at), body, JSON_CT);
          at += n;
          return sent;
        });
        for (const a of await Promise.all(window)) {
          if (a.status !== 200) {
            expect(a.status, a.body.toString()).toBe(409);
            break;
          }
          head = json(a).last_seq;
          next++;
        }
      }
    } finally {
      for (const c of conns) c.close();
    }
    const log = await replayAll(s.url, stream);
    expect(log.map((e) => e.seq)).toEqual(log.map((_, i) => i + 1));
    expect(log.map((e) => [e.payload.b, e.payload.i])).toEqual(sizes.flatMap((n, b) => Array.from({ length: n }, (_, i) => [b, i])));
  };

  it("one producer with several batches in flight on several connections: whatever order they arrive in, the log has them in the producer's order", async () => {
    await publishInFlight(
      "eh-inflight",
      Array.from({ length: 40 }, (_, b) => 1 + (b % 5)),
      4,
    );
  });

  it("the same on an fsync stream, whose head counts the batches still waiting for their sync", async () => {
    expectOk(await api(`${s.url}/v1/streams/eh-fsync`, "PUT", { durability: "fsync" }), 201);
    await publishInFlight(
      "eh-fsync",
      Array.from({ length: 24 }, (_, b) => 1 + (b % 3)),
      4,
    );
  });

  it("the retry recipe: a batch whose first answer was lost is 409 on its old head, and sent again on the head it was told is all duplicates", async () => {
    const id = "eh-retry";
    expectOk(await post(id, null, { events: events("before", 2) }));
    const batch = { events: events("mine", 3, true) };
    const first = expectOk(await post(id, 2, batch)); // its answer "lost"
    expect(first).toMatchObject({ first_seq: 3, last_seq: 5, count: 3 });
    const retry = expectError(await post(id, 2, batch), 409, "head_mismatch");
    expect(retry.head_seq).toBe(5);
    const rebased = expectOk(await post(id, retry.head_seq as number, batch));
    expect(rebased).toEqual({ stream: id, first_seq: 6, last_seq: 5, count: 0, duplicates: [0, 1, 2].map((i) => ({ index: i, seq: 3 + i })) });
    // A batch of duplicates and new events on the right head: only the new ones go in, after the head.
    const mixed = expectOk(await post(id, 5, { events: [...events("mine", 3, true).slice(2), ...events("more", 1, true)] }));
    expect(mixed).toMatchObject({ first_seq: 6, last_seq: 6, count: 1, duplicates: [{ index: 0, seq: 5 }] });
    // ...and on a wrong head, even a batch of duplicates only is refused: the head is checked first.
    expect(expectError(await post(id, 5, batch), 409, "head_mismatch").head_seq).toBe(6);
    const tags = (await replayAll(s.url, id)).map((e) => `${e.payload.tag}${e.payload.i}`);
    expect(tags).toEqual(["before0", "before1", "mine0", "mine1", "mine2", "more0"]);
  });

  it("a stream not yet created has head 0: expected_head_seq=0 creates it, any other head is 409 with head_seq 0 and creates nothing", async () => {
    const err = expectError(await post("eh-new", 1, { events: events("x", 1) }), 409, "head_mismatch");
    expect(err.head_seq).toBe(0);
    const bin = expectError(await post("eh-new", 7, encodePublishBatch(events("x", 1)), FB_CT), 409, "head_mismatch");
    expect(bin.head_seq).toBe(0);
    expect(await streamIdsOf(s.url)).not.toContain("eh-new");
    expect(expectOk(await post("eh-new", 0, { events: events("x", 2) }))).toMatchObject({ stream: "eh-new", first_seq: 1, last_seq: 2 });
    expect(await headOf("eh-new")).toBe(2);
  });

  it("a deleted stream's head is 0 again", async () => {
    expectOk(await post("eh-gone", null, { events: events("x", 3) }));
    expectOk(await api(`${s.url}/v1/streams/eh-gone`, "DELETE"), 204);
    expect(expectError(await post("eh-gone", 3, { events: events("y", 1) }), 409, "head_mismatch").head_seq).toBe(0);
    expect(expectOk(await post("eh-gone", 0, { events: events("y", 1) }))).toMatchObject({ first_seq: 1, last_seq: 1 });
  });

  it("a stream with producer_ordering refuses expected_head_seq (400 invalid_parameter) and appends nothing", async () => {
    expectOk(await api(`${s.url}/v1/streams/eh-ordered`, "PUT", { producer_ordering: true }), 201);
    for (const [body, headers] of [
      [{ events: [ev("p", 1)] }, JSON_CT],
      [encodePublishBatch([ev("p", 1)]), FB_CT],
    ] as const) {
      const err = expectError(await post("eh-ordered", 0, body, headers), 400, "invalid_parameter");
      expect(err.parameter).toBe("expected_head_seq");
      expect(err.message).toContain("producer_ordering");
    }
    expect(await headOf("eh-ordered")).toBe(0);
    expect(expectOk(await post("eh-ordered", null, { events: [ev("p", 1)] }))).toMatchObject({ first_seq: 1, count: 1 });
  });

  it("a value that is not a plain integer from 0 to 2^53-1, or the parameter twice, is 400 invalid_parameter and appends nothing", async () => {
    expectOk(await post("eh-bad", null, { events: events("x", 1) }));
    const bad = ["-1", "1.5", "1e3", "", "%2B1", "%201", "0x10", "abc", "9007199254740992", "99999999999999999999", "00000000000000001", "1%00"];
    for (const v of bad) {
      for (const id of ["eh-bad", "eh-bad-new"]) {
        const err = expectError(await post(id, v, { events: events("no", 1) }), 400, "invalid_parameter");
        expect(err, v).toMatchObject({ parameter: "expected_head_seq", min: 0, max: Number.MAX_SAFE_INTEGER });
      }
    }
    const twice = expectError(await post("eh-bad", "1&expected_head_seq=1", { events: events("no", 1) }), 400, "invalid_parameter");
    expect(twice.parameters).toEqual(["expected_head_seq"]);
    // The largest value is a value like any other: a head this stream does not have.
    expect(expectError(await post("eh-bad", "9007199254740991", { events: events("no", 1) }), 409, "head_mismatch").head_seq).toBe(1);
    expect(expectOk(await post("eh-bad", "0001", { events: events("yes", 1) }))).toMatchObject({ first_seq: 2 });
    expect(await headOf("eh-bad")).toBe(2);
    expect(await streamIdsOf(s.url)).not.toContain("eh-bad-new");
  });

  it("expected_head_seq is taken by publish only: any other route refuses it as an unknown parameter", async () => {
    expectOk(await post("eh-only", null, { events: events("x", 1) }));
    const others: Array<[string, string, unknown]> = [
      ["GET", "/v1/streams/eh-only/events", undefined],
      ["GET", "/v1/streams/eh-only", undefined],
      ["PUT", "/v1/streams/eh-only", {}],
      ["POST", "/v1/streams/eh-only/checkpoint", { group: "g", seq: 0 }],
      ["GET", "/v1/streams/eh-only/lag", undefined],
    ];
    for (const [method, route, body] of others) {
      const err = expectError(await api(`${s.url}${route}?expected_head_seq=1`, method, body), 400, "invalid_parameter");
      expect(err.parameters, `${method} ${route}`).toEqual(["expected_head_seq"]);
    }
  });

  it("property: any bytes as the value are 400 unless they are 1 to 16 ASCII digits of at most 2^53-1; those are 200 on the head, else 409 with it", async () => {
    const id = "eh-prop";
    let head = 0;
    const digits = fc.integer({ min: 0x30, max: 0x39 });
    const value = fc.oneof(
      fc.uint8Array({ maxLength: 20 }),
      fc.array(digits, { minLength: 1, maxLength: 18 }).map((a) => Uint8Array.from(a)),
      fc.bigInt({ min: 0n, max: 2n ** 60n }).map((n) => Buffer.from(String(n))),
      fc.integer({ min: 0, max: 3 }).map((n) => Buffer.from(String(n))), // near the head: some land
    );
    await fc.assert(
      fc.asyncProperty(value, async (bytes) => {
        const q = [...bytes].map((b) => `%${b.toString(16).padStart(2, "0")}`).join("");
        const r = await post(id, q, { events: events("p", 1) });
        const text = Buffer.from(bytes).toString("latin1");
        const ok = bytes.length >= 1 && bytes.length <= 16 && /^[0-9]+$/.test(text) && BigInt(text) <= BigInt(Number.MAX_SAFE_INTEGER);
        if (!ok) return void expect(expectError(r, 400, "invalid_parameter").parameter).toBe("expected_head_seq");
        if (BigInt(text) === BigInt(head)) {
          expect(expectOk(r).first_seq).toBe(head + 1);
          head++;
          return;
        }
        expect(expectError(r, 409, "head_mismatch").head_seq).toBe(head);
      }),
      { numRuns: 300 },
    );
    expect((await replayAll(s.url, id)).length).toBe(head);
  });

  itStaysHealthy(() => s);
});

describe("publish with expected_head_seq when auto_create_streams is off", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer({ args: ["--auto-create-streams", "false"] });
  });
  afterAll(async () => {
    if (!s) return;
    await s.stop();
    removeDir(s.dataDir);
  });

  it("an unknown stream is 404 stream_not_found whatever the expected head, as a plain publish", async () => {
    for (const expected of [0, 5]) {
      expectError(await api(`${s.url}${path("nope", expected)}`, "POST", { events: [{ type: "t" }] }), 404, "stream_not_found");
    }
    expectOk(await api(`${s.url}/v1/streams/made`, "PUT", {}), 201);
    expect(expectOk(await api(`${s.url}${path("made", 0)}`, "POST", { events: [{ type: "t" }] }))).toMatchObject({ first_seq: 1 });
  });
});
