// One data dir, one port, one process: a second server is refused at start.
import { describe, it, expect, afterEach } from "vitest";
import { api, removeDir, replayAll, serveExpectingExit, startServer, tempDataDir, type TestServer } from "../helpers/server.js";

const dirs: string[] = [];
const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) if (s.proc.exitCode === null && s.proc.signalCode === null) await s.kill9();
  for (const d of dirs.splice(0)) removeDir(d);
});

async function start(dataDir: string, args: string[] = []): Promise<TestServer> {
  const s = await startServer({ dataDir, args });
  servers.push(s);
  return s;
}

describe("exclusive ownership", () => {
  it("a second server on a data dir in use exits non-zero at once, naming the dir and the holder's pid, and the first keeps every event", async () => {
    const dataDir = tempDataDir();
    dirs.push(dataDir);
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
    const dataDir = tempDataDir();
    dirs.push(dataDir);
    const first = await start(dataDir);
    await api(`${first.url}/v1/streams/owned/events`, "POST", { events: [{ type: "a" }] });
    await first.kill9();
    const again = await start(dataDir);
    expect((await replayAll(again.url, "owned")).map((e) => e.type)).toEqual(["a"]);
  });

  it("a second server on a port in use exits non-zero with 'address in use', and every request still reaches the first", async () => {
    const dirA = tempDataDir();
    const dirB = tempDataDir();
    dirs.push(dirA, dirB);
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
