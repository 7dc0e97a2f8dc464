// Streams, end to end against real server processes: the stream id rules on
// every stream route, creating, configuring and deleting streams with PUT, GET
// and DELETE, and publishing when auto_create_streams is off. Every rejected
// request gets the contract's JSON error, creates and changes nothing, and the
// server keeps serving.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { api, removeDir, startServer, type TestServer } from "../helpers/server.js";
import { encodePublishBatch } from "../../src/wire/client.js";
import { EVENT_BYTES_MAX, FB_CT, JSON_CT, expectError, expectOk, itStaysHealthy, rawRequest, smallLimitsServer } from "../helpers/bad-input.js";
import { checkAnswersAgainstOpenApi } from "../helpers/openapi-check.js";

// Every answer `api` gets here is also checked against /openapi.json.
checkAnswersAgainstOpenApi();

describe("stream ids and stream admin, on one server with small limits", () => {
  const { server, streamUrl, eventsUrl, publish, streamIds, publishGood, seeded, expectUnchangedThenServes } = smallLimitsServer();

  describe("stream ids", () => {
    const BAD_IDS: Array<[string, string]> = [
      ["a space (url-encoded)", encodeURIComponent("a b")],
      ["only a space", encodeURIComponent(" ")],
      ["a slash (url-encoded)", encodeURIComponent("a/b")],
      ["a leading dot", ".hidden"],
      ["a leading dash", "-x"],
      ["a leading underscore", "_x"],
      ["dot-dot", ".."],
      ["a single dot", "."],
      ["a colon", encodeURIComponent("a:b")],
      ["a non-ASCII letter", encodeURIComponent("café")],
      ["129 characters", "a".repeat(129)],
    ];

    for (const [what, id] of BAD_IDS) {
      it(`rejects a stream id with ${what} on every stream route with 400 invalid_stream`, async () => {
        const before = await streamIds();
        // Sent verbatim: fetch would resolve "." and ".." segments before sending.
        const publishBody = Buffer.from(JSON.stringify({ events: [{ type: "t" }] }));
        expectError(await rawRequest(eventsUrl(id), "POST", { ...JSON_CT, "content-length": publishBody.length }, [publishBody]), 400, "invalid_stream");
        expectError(await rawRequest(streamUrl(id), "PUT", { ...JSON_CT, "content-length": 2 }, [Buffer.from("{}")]), 400, "invalid_stream");
        expectError(await rawRequest(streamUrl(id), "GET"), 400, "invalid_stream");
        expectError(await rawRequest(streamUrl(id), "DELETE"), 400, "invalid_stream");
        expectError(await rawRequest(eventsUrl(id), "GET"), 400, "invalid_stream");
        expect(await streamIds()).toEqual(before);
      });
    }

    it("answers an empty stream id segment with a JSON 4xx and creates nothing", async () => {
      const before = await streamIds();
      const r = await publish("", { events: [{ type: "t" }] });
      expect([400, 404]).toContain(r.status);
      expectError(r, r.status, r.status === 400 ? "invalid_stream" : "not_found");
      expect(await streamIds()).toEqual(before);
    });

    it("accepts a 128-character lower-case stream id (129 is the first too long)", async () => {
      const id = `${"a".repeat(127)}z`;
      await publishGood(id, 1, 1);
      expect(await streamIds()).toContain(id);
      expect(expectOk(await api(streamUrl(id), "GET")).head_seq).toBe(1);
      expectError(await api(streamUrl(`${id}z`), "GET"), 400, "invalid_stream");
    });

    it("accepts a 128-character stream id of upper-case letters, digits, dots and underscores", async () => {
      // Valid per the id pattern; the on-disk name must not outgrow the filesystem's name limit.
      const id = `A${"B._-".repeat(31)}C.D`;
      expect(id).toHaveLength(128);
      const created = await api(streamUrl(id), "PUT", {});
      expectOk(created, 201);
      await publishGood(id, 1, 1);
      expect(await streamIds()).toContain(id);
    });
  });

  describe("stream admin: PUT, GET and DELETE", () => {
    const BAD_CONFIGS: Array<[string, unknown]> = [
      ["an unknown field", { retention_ms: 1000, colour: "red" }],
      ["a negative retention_ms", { retention_ms: -1 }],
      ["a zero retention_ms", { retention_ms: 0 }],
      ["a string retention_ms", { retention_ms: "1000" }],
      ["a fractional dedup_window_ms", { dedup_window_ms: 1.5 }],
      ['durability "maybe"', { durability: "maybe" }],
      ["a non-boolean producer_ordering", { producer_ordering: "yes" }],
      ["max_event_bytes above the server's event_bytes_max", { max_event_bytes: EVENT_BYTES_MAX + 1 }],
      ["a zero retention_bytes", { retention_bytes: 0 }],
      ["a body that is an array", [1]],
      ["a body that is a string", "retention"],
    ];

    for (const [what, body] of BAD_CONFIGS) {
      it(`rejects a PUT with ${what} with 400 invalid_config, creating and changing nothing`, async () => {
        const n = BAD_CONFIGS.findIndex(([w]) => w === what);
        const fresh = `cfg-new-${n}`;
        expectError(await api(streamUrl(fresh), "PUT", JSON.stringify(body), JSON_CT), 400, "invalid_config");
        expectError(await api(streamUrl(fresh), "GET"), 404, "stream_not_found");
        expect(await streamIds()).not.toContain(fresh);

        const existing = `cfg-old-${n}`;
        expectOk(await api(streamUrl(existing), "PUT", { retention_ms: 60_000 }), 201);
        await publishGood(existing, 2, 1);
        const before = expectOk(await api(streamUrl(existing), "GET"));
        expectError(await api(streamUrl(existing), "PUT", JSON.stringify(body), JSON_CT), 400, "invalid_config");
        expect(expectOk(await api(streamUrl(existing), "GET"))).toEqual(before);
        await expectUnchangedThenServes(existing, 2);
      });
    }

    it("rejects a PUT whose body is not JSON with 400 invalid_json", async () => {
      expectError(await api(streamUrl("cfg-json"), "PUT", "{retention_ms: 1}", JSON_CT), 400, "invalid_json");
      expect(await streamIds()).not.toContain("cfg-json");
    });

    it("rejects a PUT with a non-JSON content type with 415", async () => {
      const r = await api(streamUrl("cfg-ct"), "PUT", "{}", { "content-type": "text/plain" });
      expectError(r, 415, "unsupported_media_type");
      expect(await streamIds()).not.toContain("cfg-ct");
    });

    it("creates with PUT (201), updates with PUT again (200) and merges fields", async () => {
      const id = "cfg-put";
      const created = expectOk(await api(streamUrl(id), "PUT", { retention_ms: 5000, durability: "fsync" }), 201);
      expect(created).toMatchObject({ id, head_seq: 0, first_seq: 1, retention_ms: 5000, durability: "fsync" });
      const updated = expectOk(await api(streamUrl(id), "PUT", { dedup_window_ms: 1000 }), 200);
      expect(updated).toMatchObject({ id, retention_ms: 5000, durability: "fsync", dedup_window_ms: 1000 });
      expectOk(await api(streamUrl(id), "PUT", { max_event_bytes: EVENT_BYTES_MAX }), 200);
      await publishGood(id, 1, 1);
    });

    it("answers GET and DELETE of an unknown stream with 404 stream_not_found", async () => {
      const before = await streamIds();
      expectError(await api(streamUrl("no-such-stream"), "GET"), 404, "stream_not_found");
      expectError(await api(streamUrl("no-such-stream"), "DELETE"), 404, "stream_not_found");
      expect(await streamIds()).toEqual(before);
    });

    it("deletes with 204, after which the stream is 404 everywhere and a new publish starts at seq 1", async () => {
      const id = await seeded("cfg-delete", 3);
      const del = await api(streamUrl(id), "DELETE");
      expect(del.status).toBe(204);
      expect(del.raw.byteLength).toBe(0);
      expectError(await api(streamUrl(id), "GET"), 404, "stream_not_found");
      expectError(await api(eventsUrl(id), "GET"), 404, "stream_not_found");
      expectError(await api(streamUrl(id), "DELETE"), 404, "stream_not_found");
      expect(await streamIds()).not.toContain(id);
      await publishGood(id, 1, 1);
    });
  });

  it("deleting a stream removes it; publishing again starts at seq 1", async () => {
    const s = server();
    await api(`${s.url}/v1/streams/gone/events`, "POST", { events: [{ type: "a" }, { type: "b" }] });
    expect((await api(`${s.url}/v1/streams/gone`, "DELETE")).status).toBe(204);
    expect((await api(`${s.url}/v1/streams/gone`, "GET")).status).toBe(404);
    const again = await api(`${s.url}/v1/streams/gone/events`, "POST", { events: [{ type: "a" }] });
    expect(again.json.first_seq).toBe(1);
  });

  itStaysHealthy(server);
});

describe("streams when auto_create_streams is off", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer({ args: ["--auto-create-streams", "false"] });
  });
  afterAll(async () => {
    if (!s) return;
    await s.stop();
    removeDir(s.dataDir);
  });

  it("answers a publish to an unknown stream with 404 stream_not_found and creates nothing", async () => {
    const json = await api(`${s.url}/v1/streams/nope/events`, "POST", { events: [{ type: "t" }] });
    expectError(json, 404, "stream_not_found");
    const bin = await api(`${s.url}/v1/streams/nope/events`, "POST", encodePublishBatch([{ type: "t" }]), FB_CT);
    expectError(bin, 404, "stream_not_found");
    expectError(await api(`${s.url}/v1/streams/nope`, "GET"), 404, "stream_not_found");
    expect(expectOk(await api(`${s.url}/v1/streams`, "GET")).streams).toEqual([]);
  });

  it("publishes to a stream once it has been created with PUT", async () => {
    expectOk(await api(`${s.url}/v1/streams/made`, "PUT", {}), 201);
    const r = expectOk(await api(`${s.url}/v1/streams/made/events`, "POST", { events: [{ type: "t" }] }));
    expect(r).toMatchObject({ stream: "made", first_seq: 1, last_seq: 1, count: 1 });
  });
});
