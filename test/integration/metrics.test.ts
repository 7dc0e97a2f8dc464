// GET /metrics of a real server: every ticker_* series provoked by the thing
// it counts (publish, replay, groups and their lag, consumers, nacks and
// dead letters, 429s, retention, recovery), per-stream series capped by
// metrics_streams_max with the rest in stream="_other", and the access rule.
import { appendFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { escapeStreamId } from "../../src/shard/stream-config.js";
import { Consumer } from "../helpers/consumer.js";
import { METRICS, metricOf } from "../helpers/metric-names.js";
import { scrape } from "../helpers/prometheus.js";

import { api, perTestServers } from "../helpers/server.js";
import { TickerProcess } from "../harness/ticker.js";
import { parseMetrics, Scrape } from "../helpers/prometheus.js";

const { start, dir } = perTestServers();

const publish = (url: string, stream: string, n: number) =>
  api(`${url}/v1/streams/${stream}/events`, "POST", { events: Array.from({ length: n }, (_, i) => ({ type: "t", payload: { i } })) });

describe("GET /metrics", () => {
  it("counts publishes, appends, fsyncs and replays, and shows each stream's head, size and retention", async () => {
    const s = await start(dir(), ["--shards", "2"]);
    expect((await api(`${s.url}/v1/streams/m.sync`, "PUT", { durability: "fsync", retention_bytes: 1_000_000 })).status).toBe(201);
    for (let i = 0; i < 3; i++) expect((await publish(s.url, "m.sync", 10)).status).toBe(200);
    expect((await publish(s.url, "m.fast", 5)).status).toBe(200);
    const refused = await api(`${s.url}/v1/streams/m.fast/events`, "POST", "events", { "content-type": "text/plain" });
    expect(refused.status).toBe(415);
    const page = await api(`${s.url}/v1/streams/m.sync/events?from=1&limit=20`, "GET");
    expect(page.json.events).toHaveLength(20);

    const m = await scrape(s.url);
    expect(m.sum("ticker_ready")).toBe(1);
    expect(m.sum("ticker_streams")).toBe(2);
    expect(m.sum("ticker_events_published_total", { stream: "m.sync" })).toBe(30);
    expect(m.sum("ticker_events_published_total", { stream: "m.fast" })).toBe(5);
    expect(m.sum("ticker_published_bytes_total", { stream: "m.sync" })).toBe(m.sum("ticker_stream_disk_bytes", { stream: "m.sync" }));
    expect(m.sum("ticker_publish_requests_total", { outcome: "ok" })).toBe(4);
    expect(m.sum("ticker_publish_requests_total", { outcome: "unsupported_media_type" })).toBe(1);
    expect(m.sum("ticker_append_duration_seconds_count")).toBe(4);
    expect(m.sum("ticker_fsync_duration_seconds_count")).toBeGreaterThanOrEqual(1);
    expect(m.sum("ticker_append_duration_seconds_bucket", { le: "+Inf" })).toBe(4);
    expect(m.sum("ticker_stream_head_seq", { stream: "m.sync" })).toBe(30);
    expect(m.sum("ticker_stream_first_seq", { stream: "m.sync" })).toBe(1);
    expect(m.sum("ticker_stream_retention_seconds", { stream: "m.fast" })).toBe(7 * 24 * 3600);
    expect(m.sum("ticker_stream_retention_bytes", { stream: "m.sync" })).toBe(1_000_000);
    expect(m.find("ticker_stream_retention_bytes", { stream: "m.fast" })).toEqual([]);
    expect(m.sum("ticker_replay_pages_total", { stream: "m.sync" })).toBe(1);
    expect(m.sum("ticker_replay_events_total", { stream: "m.sync" })).toBe(20);
    expect(m.sum("ticker_replay_duration_seconds_count")).toBe(1);
    expect(m.sum("ticker_http_responses_total", { status: "415" })).toBe(1);
    expect(m.sum("ticker_http_responses_total", { status: "200" })).toBeGreaterThanOrEqual(5);
    expect(m.sum("ticker_http_requests_in_flight")).toBeGreaterThanOrEqual(1); // the scrape itself
    expect(m.labelValues("ticker_event_loop_lag_seconds", "thread")).toEqual(["front", "shard-0", "shard-1"]);
    expect(m.labelValues("ticker_ring_capacity_bytes", "shard")).toEqual(["0", "1"]);
    expect(m.find("ticker_ring_used_bytes")).toHaveLength(4);
    expect(m.sum("ticker_metrics_shards_missing")).toBe(0);
    expect(m.has("process_resident_memory_bytes")).toBe(true);
  });

  it("shows group lag in events and seconds, consumers by role, nacks, dead letters and 429s", async () => {
    const s = await start(dir(), ["--consumers-max", "2"]);
    expect((await publish(s.url, "work", 4)).status).toBe(200);
    expect((await api(`${s.url}/v1/streams/work/checkpoint`, "POST", { group: "idle", seq: 1 })).status).toBe(200);
    const active = await Consumer.connect(s.url, "work", "group=g&from=1&max_attempts=2");
    await active.eventsThrough(4);
    const standby = await Consumer.connect(s.url, "work", "group=g");
    expect((await standby.controlMessage("hello")).role).toBe("standby");
    await expect(Consumer.connect(s.url, "work", "group=g")).rejects.toMatchObject({ status: 429 });
    active.send({ type: "nack", seq: 2, reason: "not yet" });
    await expect.poll(async () => (await scrape(s.url)).sum("ticker_redeliveries_total", { stream: "work" }), { timeout: 10_000 }).toBe(1);
    await active.until(() => active.seqs.filter((q) => q === 2).length === 2, "the redelivery of seq 2");
    active.send({ type: "nack", seq: 2, reason: "never" });
    await expect.poll(async () => (await scrape(s.url)).sum("ticker_dead_letters_total", { stream: "work" }), { timeout: 10_000 }).toBe(1);

    const m = await scrape(s.url);
    expect(m.sum("ticker_group_lag_events", { stream: "work", group: "idle" })).toBe(3);
    expect(m.sum("ticker_group_lag_seconds", { stream: "work", group: "idle" })).toBeGreaterThan(0);
    expect(m.sum("ticker_websocket_connections")).toBe(2);
    expect(m.sum("ticker_consumers", { role: "active" })).toBe(1);
    expect(m.sum("ticker_consumers", { role: "standby" })).toBe(1);
    expect(m.sum("ticker_throttled_total", { reason: "server_busy" })).toBe(1);
    expect(m.sum("ticker_http_responses_total", { status: "429" })).toBe(1);
    // The dead letter went to work.dlq, a stream of its own.
    expect(m.sum("ticker_events_published_total", { stream: "work.dlq" })).toBe(1);

    // By now every metric of the contract (test/helpers/metric-names.ts, which the alerts and
    // the dashboard are checked against) is in the scrape with its labels, and nothing else is.
    expect((await api(`${s.url}/v1/streams/bounded`, "PUT", { retention_bytes: 1_000_000 })).status).toBe(201);
    const all = await scrape(s.url);
    for (const c of METRICS) {
      const samples = all.samples.filter((x) => metricOf(x.name) === c);
      expect(samples.length, c.name).toBeGreaterThan(0);
      for (const x of samples) {
        const expected = c.type === "histogram" && x.name.endsWith("_bucket") ? [...c.labels, "le"] : [...c.labels];
        expect(Object.keys(x.labels).sort(), x.name).toEqual(expected.sort());
      }
    }
    expect(all.samples.filter((x) => x.name.startsWith("ticker_") && !metricOf(x.name)).map((x) => x.name)).toEqual([]);
    await active.close();
    await standby.close();
  });

  it("caps per-stream series at metrics_streams_max and sums the rest into stream=_other", async () => {
    const s = await start(dir(), ["--shards", "2", "--metrics-streams-max", "2"]);
    for (let i = 0; i < 8; i++) expect((await publish(s.url, `cap.${i}`, i + 1)).status).toBe(200);
    for (let i = 0; i < 8; i++) expect((await api(`${s.url}/v1/streams/cap.${i}/checkpoint`, "POST", { group: "g", seq: 0 })).status).toBe(200);
    const m = await scrape(s.url);
    const own = m.labelValues("ticker_stream_disk_bytes", "stream").filter((id) => id !== "_other");
    expect(own.length).toBeLessThanOrEqual(2);
    expect(m.labelValues("ticker_stream_disk_bytes", "stream")).toContain("_other");
    // Nothing is lost by the cap: the series add up to every event published.
    expect(m.sum("ticker_events_published_total")).toBe(36);
    expect(m.find("ticker_stream_head_seq", { stream: "_other" })).toEqual([]);
    expect(m.find("ticker_group_lag_events").filter((x) => x.labels.group !== "_other").length).toBeLessThanOrEqual(2);
    // _other's lag is the worst of the groups it stands for.
    expect(m.sum("ticker_group_lag_events", { stream: "_other", group: "_other" })).toBe(8);
    expect(m.sum("ticker_streams")).toBe(8);
  });

  it("a stream keeps its own series while it exists: a new one with a lower id goes to _other, not in its place", async () => {
    const s = await start(dir(), ["--shards", "1", "--metrics-streams-max", "2"]);
    for (const id of ["keep.b", "keep.c"]) expect((await publish(s.url, id, 3)).status).toBe(200);
    expect((await scrape(s.url)).labelValues("ticker_events_published_total", "stream")).toEqual(["keep.b", "keep.c"]);
    expect((await publish(s.url, "keep.a", 5)).status).toBe(200);
    const m = await scrape(s.url);
    expect(m.labelValues("ticker_events_published_total", "stream")).toEqual(["_other", "keep.b", "keep.c"]);
    expect(m.sum("ticker_events_published_total", { stream: "_other" })).toBe(5);
    // Deleting a shown stream makes room: the next scrape shows the one waiting.
    expect((await api(`${s.url}/v1/streams/keep.b`, "DELETE")).status).toBe(204);
    expect((await scrape(s.url)).labelValues("ticker_events_published_total", "stream")).toEqual(["keep.a", "keep.c"]);
  });

  it("counts retention deletions and recovery findings", async () => {
    const dataDir = dir();
    const s = await start(dataDir, ["--segment-bytes-max", "4096", "--retention-check-interval-ms", "50"]);
    expect((await api(`${s.url}/v1/streams/short`, "PUT", { retention_ms: 300 })).status).toBe(201);
    for (let i = 0; i < 4; i++) expect((await publish(s.url, "short", 50)).status).toBe(200);
    await expect.poll(async () => (await scrape(s.url)).sum("ticker_retention_deleted_segments_total"), { timeout: 10_000 }).toBeGreaterThan(0);
    const after = await scrape(s.url);
    expect(after.sum("ticker_retention_deleted_bytes_total")).toBeGreaterThan(0);
    expect(after.sum("ticker_stream_first_seq", { stream: "short" })).toBeGreaterThan(1);
    expect(after.sum("ticker_recovery_findings_total")).toBe(0);
    expect(await s.stop()).toBe(0);

    const logDir = join(dataDir, "streams", escapeStreamId("short"));
    const last = readdirSync(logDir)
      .filter((f) => f.endsWith(".log"))
      .sort()
      .at(-1)!;
    appendFileSync(join(logDir, last), Buffer.from("\x40\x00\x00\x00what a crash leaves behind"));
    const again = await start(dataDir);
    const m = await scrape(again.url);
    expect(m.sum("ticker_recovery_findings_total", { finding: "torn_tail" })).toBe(1);
    expect(m.sum("ticker_recovery_findings_total", { finding: "corruption" })).toBe(0);
  });

  it("says ticker_ready 0 while the streams are recovered, and 1 once they are", async () => {
    const dataDir = dir();
    const s = await start(dataDir);
    // Enough streams that their recovery takes a while (~0.2 ms each): the scrape lands in it.
    let next = 0;
    const STREAMS = 1500;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let i = next++; i < STREAMS; i = next++) expect((await publish(s.url, `rec.${i}`, 1)).status).toBe(200);
      }),
    );
    expect(await s.stop()).toBe(0);
    let during: Promise<Scrape> | null = null;
    const again = await TickerProcess.start(dataDir, {
      // Listening comes before recovery: a scrape sent now is answered while the shards recover.
      onListening: (t) => {
        during = fetch(`${t.url}/metrics`).then(async (r) => new Scrape(parseMetrics(await r.text())));
      },
    });
    try {
      const m = await during!;
      expect(m.sum("ticker_ready")).toBe(0);
      // The shards are not asked until they are ready: their series are absent, and said to be.
      expect(m.sum("ticker_metrics_shards_missing")).toBe(again.shardCount);
      expect(m.find("ticker_streams")).toEqual([]);
      const after = await scrape(again.url);
      expect(after.sum("ticker_ready")).toBe(1);
      expect(after.sum("ticker_streams")).toBe(STREAMS);
    } finally {
      await again.stop();
    }
  });

  it("needs an admin key without a prefix when keys are on; a wrong method is 405 and an unknown parameter 400", async () => {
    const d = dir();
    const keys = join(d, "keys.json");
    writeFileSync(
      keys,
      JSON.stringify([
        { key: "admin-key-0123456789", scopes: ["admin"] },
        { key: "md-admin-key-0123456789", scopes: ["admin"], prefix: "md." },
        { key: "publisher-key-0123456789", scopes: ["publish"] },
      ]),
    );
    const s = await start(join(d, "data"), ["--api-keys-file", keys]);
    const bearer = (k: string) => ({ authorization: `Bearer ${k}` });
    expect((await api(`${s.url}/metrics`, "GET")).status).toBe(401);
    expect((await api(`${s.url}/metrics`, "GET", undefined, bearer("publisher-key-0123456789"))).status).toBe(403);
    const prefixed = await api(`${s.url}/metrics`, "GET", undefined, bearer("md-admin-key-0123456789"));
    expect(prefixed.status).toBe(403);
    expect(prefixed.json.error.code).toBe("forbidden");
    expect((await scrape(s.url, bearer("admin-key-0123456789"))).sum("ticker_ready")).toBe(1);
    const post = await api(`${s.url}/metrics`, "POST", {}, bearer("admin-key-0123456789"));
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET");
    const unknown = await api(`${s.url}/metrics?format=json`, "GET", undefined, bearer("admin-key-0123456789"));
    expect(unknown.status).toBe(400);
  });
});
