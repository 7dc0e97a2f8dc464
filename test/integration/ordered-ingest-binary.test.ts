// Ordered ingest of FlatBuffers batches, as the shard frames them once: the
// publisher stamps a batch without sealing it, and what the log gets is
// sealed in release order, consecutive frames copied as one run, the runs
// broken by holds and by held events of earlier batches released between
// them. Each test checks what a reader sees (seqs, producers, the log's
// frames on disk) and that a refusal part way leaves nothing behind.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { BATCH_END, checkFrameMarked } from "../../src/log/record.js";
import { encodePublishBatch, type OutgoingEvent } from "../../src/wire/client.js";
import { api, perTestServers, replayAll } from "../helpers/server.js";
import { ordered } from "../helpers/ordered.js";

const { start, dir } = perTestServers();

const FB = { "content-type": "application/x-flatbuffers" };
const fev = (producer_id: string, producer_seq: number, extra: Partial<OutgoingEvent> = {}): OutgoingEvent => ({
  type: "t",
  producer_id,
  producer_seq,
  payload_bytes: new Uint8Array([producer_seq, producer_id.charCodeAt(0)]),
  ...extra,
});
const publishFb = (url: string, stream: string, events: OutgoingEvent[]) => api(`${url}/v1/streams/${stream}/events`, "POST", encodePublishBatch(events), FB);
const producerSeqs = (events: any[]) => events.map((e) => [e.seq, e.producer_id ?? e.type, e.producer_seq]);

/** Every frame of the data dir's log segments: whether its CRC checks out, and whether it carries its batch's commit mark. */
function logFrames(dataDir: string): Array<{ ok: boolean; batchEnd: boolean }> {
  const out: Array<{ ok: boolean; batchEnd: boolean }> = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      if (e.isDirectory()) walk(join(d, e.name));
      else if (/^[0-9]+\.log$/.test(e.name)) {
        const buf = readFileSync(join(d, e.name));
        for (let at = 0; at < buf.length; ) {
          const r = checkFrameMarked(buf, at, buf.length, 1 << 24);
          out.push({ ok: r > 0, batchEnd: r > 0 && (r & BATCH_END) !== 0 });
          if (r <= 0) break;
          at += r & ~BATCH_END;
        }
      }
    }
  };
  walk(dataDir);
  return out;
}

describe("ordered ingest of FlatBuffers batches", () => {
  it("runs around holds, two producers with ids of one length, and held events of an earlier batch released mid-batch: in order, every frame sealed, each batch marked once, also after kill -9", async () => {
    const d = dir();
    let s = await start(d);
    await ordered(s.url, "f", { gap_timeout_ms: 60_000 });
    const first = await publishFb(s.url, "f", [
      fev("ab", 1),
      fev("ab", 2),
      fev("ab", 4), // held, then released by ab3 below
      fev("ab", 5),
      fev("ba", 1),
      fev("ba", 3), // held at the answer
      { type: "plain" },
      fev("ab", 3),
      fev("ba", 5), // held at the answer
      { type: "keyed", idempotency_key: "K" },
    ]);
    expect(first.json).toMatchObject({
      first_seq: 1,
      count: 8,
      held: [
        { index: 5, producer_seq: 3 },
        { index: 8, producer_seq: 5 },
      ],
    });
    const second = await publishFb(s.url, "f", [fev("ab", 6), fev("ba", 2), fev("ba", 4), fev("ab", 7), { type: "keyed", idempotency_key: "K" }]);
    expect(second.json).toMatchObject({ first_seq: 9, count: 6, held: [], duplicates: [{ index: 4, seq: 8 }] });
    const expected = [
      [1, "ab", 1],
      [2, "ab", 2],
      [3, "ba", 1],
      [4, "plain", undefined],
      [5, "ab", 3],
      [6, "ab", 4],
      [7, "ab", 5],
      [8, "keyed", undefined],
      [9, "ab", 6],
      [10, "ba", 2],
      [11, "ba", 3],
      [12, "ba", 4],
      [13, "ba", 5],
      [14, "ab", 7],
    ];
    const events = await replayAll(s.url, "f");
    expect(producerSeqs(events)).toEqual(expected);
    expect(events.slice(0, 8).every((e) => e.ingest_ts === events[0].ingest_ts)).toBe(true);
    expect((await api(`${s.url}/v1/streams/f`, "GET")).json).toMatchObject({ held_events: 0, producers: 2 });
    await s.kill9();
    const frames = logFrames(d);
    expect(frames.every((f) => f.ok)).toBe(true);
    expect(frames.map((f, i) => (f.batchEnd ? i + 1 : 0)).filter((seq) => seq > 0)).toEqual([8, 14]);
    s = await start(d);
    expect(producerSeqs(await replayAll(s.url, "f"))).toEqual(expected);
  });

  it("a batch that releases more than the staging buffer holds, in five runs out of batch order: every payload where it belongs, every frame sealed", async () => {
    const d = dir();
    const s = await start(d);
    await ordered(s.url, "big", { gap_timeout_ms: 60_000 });
    const payload = (q: number) => new Uint8Array(4000).fill(q);
    // a3 and a30 swapped: a30 and a4..a29 wait for a3, then go out after it.
    const order = [1, 2, 30, ...Array.from({ length: 26 }, (_, i) => i + 4), 3, ...Array.from({ length: 10 }, (_, i) => i + 31)];
    const r = await publishFb(
      s.url,
      "big",
      order.map((q) => fev("a", q, { payload_bytes: payload(q) })),
    );
    expect(r.json).toMatchObject({ count: 40, held: [] });
    const events = await replayAll(s.url, "big");
    expect(events.map((e) => e.producer_seq)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    for (const e of events) expect(Buffer.from(e.payload_base64, "base64").equals(Buffer.from(payload(e.producer_seq)))).toBe(true);
    await s.kill9();
    const frames = logFrames(d);
    expect([frames.length, frames.every((f) => f.ok), frames.filter((f) => f.batchEnd).length]).toEqual([40, true, 1]);
  });

  it("a batch refused after its in-order run was framed changes nothing: the next one gets the same seqs, and held events are as they were", async () => {
    const s = await start(dir(), ["--held-events-max", "2"]);
    await ordered(s.url, "r", { gap_timeout_ms: 60_000 });
    await publishFb(s.url, "r", [fev("a", 1), fev("b", 2)]); // b2 held
    const full = await publishFb(s.url, "r", [fev("a", 2), fev("a", 3), fev("b", 1), fev("a", 5), fev("a", 6), fev("a", 7)]);
    expect([full.status, full.json.error.code]).toEqual([429, "held_full"]);
    const bad = await publishFb(s.url, "r", [fev("a", 2), fev("a", 4), { type: "t", producer_id: "a" }]);
    expect([bad.status, bad.json.error.code, bad.json.error.index]).toEqual([400, "invalid_event", 2]);
    expect((await api(`${s.url}/v1/streams/r`, "GET")).json).toMatchObject({ head_seq: 1, held_events: 1 });
    const next = await publishFb(s.url, "r", [fev("a", 2), fev("a", 4), fev("b", 1), fev("a", 3)]);
    expect(next.json).toMatchObject({ first_seq: 2, count: 5, held: [] });
    expect(producerSeqs(await replayAll(s.url, "r"))).toEqual([
      [1, "a", 1],
      [2, "a", 2],
      [3, "b", 1],
      [4, "b", 2],
      [5, "a", 3],
      [6, "a", 4],
    ]);
  });
});

describe("ordered ingest: idempotency keys in a batch with a held event's key", () => {
  it("a key repeated in a batch names the seq its original got, also when an earlier event of the batch was a held event's duplicate", async () => {
    const s = await start(dir());
    await ordered(s.url, "k", { gap_timeout_ms: 60_000 });
    await publishFb(s.url, "k", [fev("a", 1)]);
    await publishFb(s.url, "k", [fev("a", 3, { idempotency_key: "H" })]); // held, with its key
    const r = await publishFb(s.url, "k", [
      { type: "x", idempotency_key: "H" }, // the held a3's duplicate
      { type: "y", idempotency_key: "J" },
      { type: "z", idempotency_key: "J" }, // y's duplicate
      { type: "w", idempotency_key: "H" }, // x's duplicate by the batch, so a3's
    ]);
    expect(r.json).toMatchObject({
      first_seq: 2,
      count: 1,
      duplicates: [
        { index: 0, producer_id: "a", producer_seq: 3 },
        { index: 2, seq: 2 },
        { index: 3, producer_id: "a", producer_seq: 3 },
      ],
    });
    expect((await replayAll(s.url, "k")).map((e) => e.type)).toEqual(["t", "y"]);
  });
});
