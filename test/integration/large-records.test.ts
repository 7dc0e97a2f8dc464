// Records as large as the limits allow, on every path that reads records:
// seek by seq and by time, replay (JSON and binary), consumer pages, lag, the
// dedup rebuild on start and the background scrub. Readers once went through
// fixed 1 MiB and 4 MiB buffers and stopped early at a larger record.
import { describe, it, expect } from "vitest";
import { api, perTestServers } from "../helpers/server.js";
import { Consumer } from "../helpers/consumer.js";
import { decodeEventBatch, decodeRecords } from "../../src/wire/client.js";

/** Above every fixed buffer the readers used to have (1 MiB scan chunk, 4 MiB dedup page). */
const EVENT_BYTES_MAX = 5 * 1024 * 1024;
const ARGS = [
  "--event-bytes-max",
  String(EVENT_BYTES_MAX),
  "--ring-bytes",
  String(96 * 1024 * 1024),
  // Each large record closes a segment: closed segments full of them are scrubbed on restart.
  "--segment-bytes-max",
  String(1024 * 1024),
];

const { start: startWith, dir } = perTestServers();

const start = (dataDir: string) => startWith(dataDir, ARGS);

/** A JSON string payload of exactly `bytes` bytes, its position written in. */
const bigPayload = (bytes: number, tag: string) => `"${tag}${"x".repeat(bytes - 2 - tag.length)}"`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("records at the largest size the limits allow", () => {
  it("are found by seq and by time, replayed, delivered, counted in lag, remembered for dedup across a restart and scrubbed clean", async () => {
    const dataDir = dir();
    let s = await start(dataDir);
    const url = () => `${s.url}/v1/streams/big/events`;
    const small = (n: number, from: number) => Array.from({ length: n }, (_, i) => ({ type: "small", payload: from + i }));
    expect((await api(url(), "POST", { events: small(3, 1) })).status).toBe(200);
    await sleep(20);
    const tBig = Date.now();
    await sleep(5);
    // Built as text: the payload is stored and replayed as the exact JSON sent.
    const bigText = [bigPayload(EVENT_BYTES_MAX, "A"), bigPayload(EVENT_BYTES_MAX, "B")];
    const body = `{"events":[${bigText.map((p, i) => `{"type":"big","idempotency_key":"big-${i}","payload":${p}}`).join(",")}]}`;
    const pub = await api(url(), "POST", body, { "content-type": "application/json" });
    expect(pub.status, JSON.stringify(pub.json)).toBe(200);
    expect([pub.json.first_seq, pub.json.last_seq]).toEqual([4, 5]);
    // One byte over the limit is refused: the test really is at the limit.
    const over = await api(url(), "POST", `{"events":[{"type":"big","payload":${bigPayload(EVENT_BYTES_MAX + 1, "C")}}]}`, {
      "content-type": "application/json",
    });
    expect([over.status, over.json.error.code]).toEqual([413, "event_too_large"]);
    await sleep(20);
    const tAfter = Date.now();
    await sleep(5);
    expect((await api(url(), "POST", { events: small(3, 6) })).json.first_seq).toBe(6);

    const checkReads = async () => {
      // Seek by time: the first record at or after tBig is the first large one, and after tAfter the small ones.
      // (Two of them pass replay_page_bytes_max, 8 MiB: a page holds one.)
      const byTime = await api(`${url()}?from_time=${tBig}&limit=2`, "GET");
      expect([byTime.json.events.map((e: any) => e.seq), byTime.json.next]).toEqual([[4], 5]);
      expect(byTime.json.events[0].payload).toBe(JSON.parse(bigText[0]));
      expect((await api(`${url()}?from_time=${tAfter}&limit=1`, "GET")).json.events[0].seq).toBe(6);
      // Seek by seq, one large record per page, then the rest.
      for (const seq of [4, 5]) {
        const r = await api(`${url()}?from=${seq}&limit=1`, "GET");
        expect([r.json.events[0].seq, r.json.next]).toEqual([seq, seq + 1]);
        expect(r.json.events[0].payload).toBe(JSON.parse(bigText[seq - 4]));
      }
      const all = await api(`${url()}?from=1&limit=100`, "GET");
      // A page stops before the record that would take it past replay_page_bytes_max (8 MiB).
      expect(all.json.events.map((e: any) => e.seq)).toEqual([1, 2, 3, 4]);
      // Binary replay carries the stored frames.
      const bin = await api(`${url()}?from=5&limit=1`, "GET", undefined, { accept: "application/x-flatbuffers" });
      const batch = decodeEventBatch(bin.raw);
      const recs = decodeRecords(batch.records);
      expect(recs.map((r) => r.seq)).toEqual([5]);
      // A consumer from the same time gets the large records first, in order.
      const c = await Consumer.connect(s.url, "big", `from_time=${tBig}`);
      await c.eventsThrough(8);
      expect(c.seqs).toEqual([4, 5, 6, 7, 8]);
      await c.close();
      const cb = await Consumer.connect(s.url, "big", "from=4&format=binary");
      await cb.eventsThrough(8);
      expect(cb.seqs).toEqual([4, 5, 6, 7, 8]);
      await cb.close();
      // Lag reads the oldest unacknowledged record: the large one.
      await api(`${s.url}/v1/streams/big/checkpoint`, "POST", { group: "g", seq: 3 });
      const lag = await api(`${s.url}/v1/streams/big/lag?group=g`, "GET");
      expect([lag.status, lag.json.lag]).toEqual([200, 5]);
      expect(lag.json.lag_ms).toBeGreaterThan(0);
    };
    await checkReads();

    expect(await s.stop()).toBe(0);
    s = await start(dataDir);
    // The dedup window is rebuilt from the log through the large records.
    const retry = await api(url(), "POST", {
      events: [
        { type: "big", idempotency_key: "big-1", payload: "retry" },
        { type: "big", idempotency_key: "big-0", payload: "retry" },
      ],
    });
    expect(retry.json.count).toBe(0);
    expect(retry.json.duplicates).toEqual([
      { index: 0, seq: 5 },
      { index: 1, seq: 4 },
    ]);
    await checkReads();
    // The closed segments holding them were read through by the scrub and found whole.
    const deadline = Date.now() + 20_000;
    while (!/scrub: verified \d+ closed segments/.test(s.output()) && Date.now() < deadline) await sleep(50);
    expect(s.output()).toMatch(/scrub: verified \d+ closed segments/);
    expect(s.output()).not.toMatch(/DAMAGED/);
    const info = (await api(`${s.url}/v1/streams/big`, "GET")).json;
    expect(info.corruptions).toBeUndefined();
    expect(info.head_seq).toBe(8);
  }, 120_000);
});
