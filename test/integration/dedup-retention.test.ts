// Idempotency keys and retention agree before and after a restart, and a
// setting that could not act as asked (ordering with no dedup window) is refused.
import { describe, it, expect } from "vitest";
import { api, perTestServers, startServer } from "../helpers/server.js";

const { start, dir, track } = perTestServers();

const ARGS = ["--retention-check-interval-ms", "20"];

describe("idempotency keys and retention", () => {
  it("a key whose event retention deleted is not a duplicate, before a restart and after one, while a retained key stays one", async () => {
    const dataDir = dir();
    let s = await start(dataDir, ARGS);
    const events = (url: string, key: string, payload: unknown) =>
      api(`${url}/v1/streams/keys/events`, "POST", { events: [{ type: "t", idempotency_key: key, payload }] });
    expect((await api(`${s.url}/v1/streams/keys`, "PUT", { retention_ms: 400 })).status).toBe(201);
    expect((await events(s.url, "k1", 1)).json.first_seq).toBe(1);
    expect((await events(s.url, "k1", "again")).json.duplicates).toEqual([{ index: 0, seq: 1 }]);
    // Wait until retention has deleted seq 1.
    const deadline = Date.now() + 10_000;
    while ((await api(`${s.url}/v1/streams/keys`, "GET")).json.first_seq === 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect((await api(`${s.url}/v1/streams/keys`, "GET")).json.first_seq).toBe(2);
    const before = await events(s.url, "k1", "after retention");
    expect([before.json.count, before.json.first_seq, before.json.duplicates]).toEqual([1, 2, []]);
    // Keep seq 2 retained across the restart.
    expect((await api(`${s.url}/v1/streams/keys`, "PUT", { retention_ms: 3_600_000 })).status).toBe(200);
    expect(await s.stop()).toBe(0);
    s = await start(dataDir, ARGS);
    const after = await events(s.url, "k1", "after restart");
    expect([after.json.count, after.json.duplicates]).toEqual([0, [{ index: 0, seq: 2 }]]);
  });

  it("producer_ordering with a dedup window of 0 is refused (a producer's place lasts the dedup window), and the refusal changes nothing", async () => {
    const s = track(await startServer({ dataDir: dir() }));
    const r = await api(`${s.url}/v1/streams/ord`, "PUT", { producer_ordering: true, dedup_window_ms: 0 });
    expect([r.status, r.json.error.code]).toEqual([400, "invalid_config"]);
    expect(r.json.error.message).toMatch(/producer_ordering/);
    expect((await api(`${s.url}/v1/streams/ord`, "GET")).status).toBe(404);
    expect((await api(`${s.url}/v1/streams/ord`, "PUT", { dedup_window_ms: 0, retention_ms: 5000 })).status).toBe(201);
    const again = await api(`${s.url}/v1/streams/ord`, "PUT", { producer_ordering: true, retention_ms: 9000 });
    expect(again.status).toBe(400);
    const info = (await api(`${s.url}/v1/streams/ord`, "GET")).json;
    expect([info.producer_ordering, info.retention_ms]).toEqual([false, 5000]);
  });
});
