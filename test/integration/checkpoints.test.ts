// Group checkpoints and lag over HTTP, against a real server, through kill -9.
import { describe, it, expect } from "vitest";
import { api, removeDir, startServer, tempDataDir } from "../helpers/server.js";
import { checkAnswersAgainstOpenApi } from "../helpers/openapi-check.js";

// Every answer `api` gets here is also checked against /openapi.json.
checkAnswersAgainstOpenApi();

describe("checkpoints and lag", () => {
  it("a checkpoint is stored, reported with lag in events and in time, and survives kill -9", async () => {
    const dataDir = tempDataDir();
    let s = await startServer({ dataDir });
    try {
      await api(`${s.url}/v1/streams/orders/events`, "POST", { events: Array.from({ length: 10 }, (_, i) => ({ type: "o", payload: i })) });
      expect((await api(`${s.url}/v1/streams/orders/checkpoint?group=billing`, "GET")).status).toBe(404);
      const set = await api(`${s.url}/v1/streams/orders/checkpoint`, "POST", { group: "billing", seq: 4 });
      expect(set.json).toEqual({ group: "billing", seq: 4 });
      await api(`${s.url}/v1/streams/orders/checkpoint`, "POST", { group: "audit", seq: 10 });
      await new Promise((r) => setTimeout(r, 250));
      const lag = await api(`${s.url}/v1/streams/orders/lag?group=billing`, "GET");
      expect(lag.json).toMatchObject({ group: "billing", head_seq: 10, checkpoint_seq: 4, lag: 6 });
      expect(lag.json.lag_ms).toBeGreaterThanOrEqual(200);
      const caughtUp = await api(`${s.url}/v1/streams/orders/lag?group=audit`, "GET");
      expect(caughtUp.json).toMatchObject({ checkpoint_seq: 10, lag: 0, lag_ms: 0 });
      const groups = await api(`${s.url}/v1/streams/orders/groups`, "GET");
      expect(groups.json.groups.map((g: any) => [g.group, g.checkpoint_seq, g.lag, g.members])).toEqual([
        ["audit", 10, 0, []],
        ["billing", 4, 6, []],
      ]);

      await s.kill9();
      s = await startServer({ dataDir });
      expect((await api(`${s.url}/v1/streams/orders/checkpoint?group=billing`, "GET")).json).toEqual({ group: "billing", seq: 4 });
      expect((await api(`${s.url}/v1/streams/orders/lag?group=billing`, "GET")).json).toMatchObject({ lag: 6 });
    } finally {
      await s.stop();
      removeDir(dataDir);
    }
  });

  it("bad checkpoints are refused with their JSON error and change nothing", async () => {
    const s = await startServer();
    try {
      await api(`${s.url}/v1/streams/c/events`, "POST", { events: [{ type: "a" }, { type: "b" }] });
      await api(`${s.url}/v1/streams/c/checkpoint`, "POST", { group: "g", seq: 1 });
      const cases: Array<[unknown, number, string]> = [
        [{ group: "g", seq: 3 }, 400, "invalid_parameter"],
        [{ group: "g", seq: -1 }, 400, "invalid_parameter"],
        [{ group: "g", seq: 1.5 }, 400, "invalid_parameter"],
        [{ group: "bad group", seq: 1 }, 400, "invalid_group"],
        [{ seq: 1 }, 400, "invalid_group"],
        ["{not json", 400, "invalid_json"],
      ];
      for (const [body, status, code] of cases) {
        const r = await api(`${s.url}/v1/streams/c/checkpoint`, "POST", body, { "content-type": "application/json" });
        expect([r.status, r.json.error.code]).toEqual([status, code]);
      }
      expect((await api(`${s.url}/v1/streams/c/checkpoint`, "POST", "x", { "content-type": "text/plain" })).status).toBe(415);
      expect((await api(`${s.url}/v1/streams/nope/checkpoint`, "POST", { group: "g", seq: 0 })).status).toBe(404);
      expect((await api(`${s.url}/v1/streams/c/lag`, "GET")).json.error.code).toBe("invalid_parameter");
      expect((await api(`${s.url}/v1/streams/c/lag?group=other`, "GET")).json.error.code).toBe("group_not_found");
      expect((await api(`${s.url}/v1/streams/c/groups`, "PUT")).status).toBe(405);
      expect((await api(`${s.url}/v1/streams/c/checkpoint?group=g`, "GET")).json).toEqual({ group: "g", seq: 1 });
      // A deleted stream takes its checkpoints with it.
      await api(`${s.url}/v1/streams/c`, "DELETE");
      await api(`${s.url}/v1/streams/c/events`, "POST", { events: [{ type: "a" }] });
      expect((await api(`${s.url}/v1/streams/c/checkpoint?group=g`, "GET")).status).toBe(404);
    } finally {
      await s.stop();
      removeDir(s.dataDir);
    }
  });
});
