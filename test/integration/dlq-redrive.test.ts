// POST /v1/streams/:id/dlq/redrive on a real server: events dead-lettered by
// a real consumer's nacks go back to their stream once, however often the
// redrive is called, by group and range, a bounded page at a time.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Consumer } from "../helpers/consumer.js";
import { api, removeDir, replayAll as replayPages, startServer, tempDataDir, type TestServer } from "../helpers/server.js";

const REDRIVE_LETTERS_MAX = 3;
/** Smaller than a call's letters: a call reads the dlq over several replay pages. */
const PAGE = 2;
const replayAll = (url: string, stream: string, from = 1) => replayPages(url, stream, from, PAGE);

/** Events 1..n of `stream`, with producer fields and idempotency keys of their own. */
async function publish(url: string, stream: string, n: number): Promise<void> {
  const events = Array.from({ length: n }, (_, i) => ({
    type: "job",
    key: `k${i + 1}`,
    producer_id: "p",
    producer_seq: i + 1,
    idempotency_key: `job-${i + 1}`,
    payload: { i: i + 1 },
  }));
  const r = await api(`${url}/v1/streams/${stream}/events`, "POST", { events });
  expect(r.status).toBe(200);
}

/** A consumer of `group` nacks each of `seqs` once (max_attempts=1): each becomes a dead letter. */
async function deadLetter(url: string, stream: string, group: string, seqs: number[]): Promise<void> {
  const c = await Consumer.connect(url, stream, `group=${group}&from=earliest&max_attempts=1`);
  await c.eventsThrough(seqs[0]);
  for (const [i, seq] of seqs.entries()) {
    const before = c.seqs.length;
    c.send({ type: "nack", seq, reason: `boom ${seq}` });
    await expect
      .poll(async () => (await replayAll(url, `${stream}.dlq`)).some((l) => l.payload.group === group && l.payload.seq === seq), { timeout: 10_000 })
      .toBe(true);
    // The next nack must name a delivered seq: wait for the redelivery past this one.
    const next = seqs[i + 1];
    if (next !== undefined) await c.until(() => c.seqs.slice(before).includes(next), `redelivery of ${next}`);
  }
  await c.close();
}

const redrive = (url: string, stream: string, body?: unknown, headers?: Record<string, string>) =>
  api(`${url}/v1/streams/${stream}/dlq/redrive`, "POST", body ?? "", { "content-type": "application/json", ...headers });

describe("dead-letter redrive", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer({
      args: ["--redrive-letters-max", String(REDRIVE_LETTERS_MAX), "--replay-page-events-max", String(PAGE), "--replay-page-events-default", String(PAGE)],
    });
  });
  afterAll(async () => {
    await s.stop();
  });

  it("republishes the dead letters to their stream once; a second call finds duplicates, not copies", async () => {
    await publish(s.url, "jobs", 4);
    await deadLetter(s.url, "jobs", "workers", [2, 3]);
    const r = await redrive(s.url, "jobs");
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ moved: 2, duplicates: 0, skipped: 0, from: 1, to: 2, next: null });
    const after = await replayAll(s.url, "jobs");
    expect(after).toHaveLength(6);
    for (const [i, original] of [2, 3].entries()) {
      const e = after[4 + i];
      expect(e).toMatchObject({ seq: 5 + i, type: "job", key: `k${original}`, payload: { i: original }, idempotency_key: `redrive:${i + 1}` });
      // Ordered streams would take an old producer_seq for a duplicate.
      expect(e.producer_id).toBeUndefined();
      expect(e.producer_seq).toBeUndefined();
    }
    const again = await redrive(s.url, "jobs", {});
    expect(again.json).toEqual({ moved: 0, duplicates: 2, skipped: 0, from: 1, to: 2, next: null });
    expect(await replayAll(s.url, "jobs")).toHaveLength(6);
  });

  it("redrives only the asked group's letters and the asked range; the others are skipped", async () => {
    await publish(s.url, "mixed", 3);
    await deadLetter(s.url, "mixed", "a", [1, 3]);
    await deadLetter(s.url, "mixed", "b", [2]);
    // dlq: 1 = a's seq 1, 2 = a's seq 3, 3 = b's seq 2.
    const b = await redrive(s.url, "mixed", { group: "b" });
    expect(b.json).toEqual({ moved: 1, duplicates: 0, skipped: 2, from: 1, to: 3, next: null });
    expect((await replayAll(s.url, "mixed", 4)).map((e) => e.key)).toEqual(["k2"]);
    const ranged = await redrive(s.url, "mixed", { from: 2, to: 2 });
    expect(ranged.json).toEqual({ moved: 1, duplicates: 0, skipped: 0, from: 2, to: 2, next: null });
    expect((await replayAll(s.url, "mixed", 4)).map((e) => e.key)).toEqual(["k2", "k3"]);
  });

  it("takes at most redrive_letters_max letters a call, and next continues where it stopped", async () => {
    const n = REDRIVE_LETTERS_MAX + 1;
    await publish(s.url, "many", n);
    await deadLetter(
      s.url,
      "many",
      "g",
      Array.from({ length: n }, (_, i) => i + 1),
    );
    const first = await redrive(s.url, "many");
    expect(first.json).toEqual({ moved: REDRIVE_LETTERS_MAX, duplicates: 0, skipped: 0, from: 1, to: REDRIVE_LETTERS_MAX, next: REDRIVE_LETTERS_MAX + 1 });
    const rest = await redrive(s.url, "many", { from: first.json.next });
    expect(rest.json).toEqual({ moved: 1, duplicates: 0, skipped: 0, from: n, to: n, next: null });
    // A range that ends at the limit is done in one call.
    const exact = await redrive(s.url, "many", { to: REDRIVE_LETTERS_MAX });
    expect(exact.json).toMatchObject({ duplicates: REDRIVE_LETTERS_MAX, next: null });
    expect((await replayAll(s.url, "many", n + 1)).map((e) => e.key)).toEqual(Array.from({ length: n }, (_, i) => `k${i + 1}`));
  });

  it("a consumer that closes right after its last nack still gets its dead letter written", async () => {
    await publish(s.url, "nack-close", 2);
    const c = await Consumer.connect(s.url, "nack-close", "group=quick&from=earliest&max_attempts=1");
    await c.eventsThrough(2);
    c.send({ type: "nack", seq: 2, reason: "closing" });
    await c.close();
    await expect
      .poll(async () => (await replayAll(s.url, "nack-close.dlq")).map((l) => [l.payload.seq, l.payload.reason]), { timeout: 10_000 })
      .toEqual([[2, "closing"]]);
  });

  it("an unknown stream is 404; a stream without dead letters has nothing to redrive", async () => {
    const unknown = await redrive(s.url, "nosuch");
    expect(unknown.status).toBe(404);
    expect(unknown.json.error.code).toBe("stream_not_found");
    expect((await api(`${s.url}/v1/streams/nosuch`, "GET")).status).toBe(404);
    await publish(s.url, "clean", 1);
    const clean = await redrive(s.url, "clean", { from: 5 });
    expect(clean.json).toEqual({ moved: 0, duplicates: 0, skipped: 0, from: 5, to: 4, next: null });
  });

  it("refuses bad bodies with invalid_body, as the other JSON routes do", async () => {
    await publish(s.url, "bodies", 1);
    for (const body of [{ from: 0 }, { from: "1" }, { to: 1.5 }, { from: 3, to: 2 }, { group: 7 }, { group: "" }, { limit: 5 }, []]) {
      const r = await redrive(s.url, "bodies", body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.json.error.code, JSON.stringify(body)).toBe("invalid_body");
    }
    const notJson = await redrive(s.url, "bodies", "{from:");
    expect(notJson.json.error.code).toBe("invalid_json");
    const text = await redrive(s.url, "bodies", "{}", { "content-type": "text/plain" });
    expect(text.status).toBe(415);
    expect((await api(`${s.url}/v1/streams/bodies/dlq/redrive`, "GET")).status).toBe(405);
    expect((await api(`${s.url}/v1/streams/bodies/dlq/redrive?from=1`, "POST", {})).json.error.code).toBe("invalid_parameter");
  });
});

describe("dead-letter redrive with API keys", () => {
  const dir = tempDataDir();
  const keys = { both: "k-both", publish: "k-publish", consume: "k-consume", md: "k-md" };
  let s: TestServer;
  beforeAll(async () => {
    writeFileSync(
      join(dir, "keys.json"),
      JSON.stringify([
        { key: keys.both, scopes: ["publish", "consume"] },
        { key: keys.publish, scopes: ["publish"] },
        { key: keys.consume, scopes: ["consume"] },
        { key: keys.md, scopes: ["publish", "consume"], prefix: "md." },
      ]),
    );
    mkdirSync(join(dir, "data"));
    s = await startServer({ dataDir: join(dir, "data"), args: ["--api-keys-file", join(dir, "keys.json")] });
  });
  afterAll(async () => {
    await s.stop();
    removeDir(dir);
  });

  it("needs publish on the stream and consume on its dlq", async () => {
    const as = (key: string) => redrive(s.url, "jobs", {}, { authorization: `Bearer ${key}` });
    const publishOnly = await as(keys.publish);
    expect([publishOnly.status, publishOnly.json.error.scope]).toEqual([403, "consume"]);
    const consumeOnly = await as(keys.consume);
    expect([consumeOnly.status, consumeOnly.json.error.scope]).toEqual([403, "publish"]);
    expect((await as(keys.md)).status).toBe(403);
    expect((await redrive(s.url, "jobs", {})).status).toBe(401);
    // Admitted: the stream does not exist.
    expect((await as(keys.both)).status).toBe(404);
  });
});
