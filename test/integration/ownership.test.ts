// One data dir, one port, one process: a second server is refused at start.
import { describe, it, expect } from "vitest";
import { api, perTestServers, replayAll, serveExpectingExit } from "../helpers/server.js";

const { start, dir } = perTestServers();

describe("exclusive ownership", () => {
  it("a second server on a data dir in use exits non-zero at once, naming the dir and the holder's pid, and the first keeps every event", async () => {
    const dataDir = dir();
    const first = await start(dataDir);
    const a = await api(`${first.url}/v1/streams/owned/events`, "POST", { events: [{ type: "a" }, { type: "b" }] });
    expect(a.status).toBe(200);

    const second = await serveExpectingExit(["--port", "0", "--data-dir", dataDir]);
    expect(second.code).not.toBe(0);
    expect(second.code).not.toBeNull();
    expect(second.output).toContain(dataDir);
    expect(second.output).toContain(`pid ${first.proc.pid}`);
    expect(second.output).not.toContain("ticker listening");
    expect(second.ms).toBeLessThan(5000);

    const b = await api(`${first.url}/v1/streams/owned/events`, "POST", { events: [{ type: "c" }] });
    expect(b.json.first_seq).toBe(3);
    expect((await replayAll(first.url, "owned")).map((e) => e.type)).toEqual(["a", "b", "c"]);
  });

  it("kill -9 leaves no stale lock: a restart on the same data dir starts at once and finds every acked event", async () => {
    const dataDir = dir();
    const first = await start(dataDir);
    await api(`${first.url}/v1/streams/owned/events`, "POST", { events: [{ type: "a" }] });
    await first.kill9();
    const again = await start(dataDir);
    expect((await replayAll(again.url, "owned")).map((e) => e.type)).toEqual(["a"]);
  });

  it("a second server on a port in use exits non-zero with 'address in use', and every request still reaches the first", async () => {
    const dirA = dir();
    const dirB = dir();
    const first = await start(dirA);
    const second = await serveExpectingExit(["--port", String(first.port), "--data-dir", dirB]);
    expect(second.code).not.toBe(0);
    expect(second.code).not.toBeNull();
    expect(second.output).toMatch(/address in use/);
    // A shared listener would hand some of these to the other process's empty data dir.
    for (let i = 0; i < 20; i++) {
      const r = await api(`${first.url}/v1/streams/port/events`, "POST", { events: [{ type: "x" }] });
      expect(r.json.first_seq).toBe(i + 1);
    }
  });
});
