// The structured log of a real server: one JSON line per thing an operator
// acts on (start, retention, takeover, dead letter, shutdown; recovery and a
// full disk in crash-recovery and disk-full tests), none per event, the
// level and format flags, and the optional access log.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { isAbsolute, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { Consumer } from "../helpers/consumer.js";
import { lineOfKind, linesOfKind, logLines } from "../helpers/log-lines.js";
import { api, perTestServers } from "../helpers/server.js";
import { TICKER_MAIN } from "../harness/ticker.js";

const { start, dir } = perTestServers();

const publish = (url: string, stream: string, n: number) =>
  api(`${url}/v1/streams/${stream}/events`, "POST", { events: Array.from({ length: n }, (_, i) => ({ type: "t", key: `k${i}`, payload: { i } })) });

function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer().listen(0, host, () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

describe("structured logs", () => {
  it("says where it listens, the absolute data dir, shards and durability defaults; says it stopped; nothing per event", async () => {
    const dataDir = dir();
    const s = await start(dataDir, ["--shards", "2", "--default-durability", "fsync"]);
    const listening = await lineOfKind(s.output, "listening");
    expect(listening).toMatchObject({ level: "info", url: s.url, data_dir: dataDir, shards: 2, default_durability: "fsync", api_keys: false });
    expect(isAbsolute(listening.data_dir as string)).toBe(true);
    expect(Date.parse(listening.time)).toBeGreaterThan(0);
    await lineOfKind(s.output, "ready");
    const before = logLines(s.output()).length;
    for (let i = 0; i < 20; i++) expect((await publish(s.url, "quiet", 100)).status).toBe(200);
    expect((await api(`${s.url}/v1/streams/quiet/events?from=1&limit=1000`, "GET")).json.events).toHaveLength(1000);
    expect(logLines(s.output()).length).toBe(before);
    expect(await s.stop()).toBe(0);
    expect(linesOfKind(s.output(), "shutdown").map((l) => l.msg)).toEqual([expect.stringMatching(/^SIGTERM: stopping/), "stopped"]);
  });

  it("logs each retention deletion with the stream, the segments and the seqs it cut, from the shard that did it", async () => {
    const s = await start(dir(), ["--segment-bytes-max", "4096", "--retention-check-interval-ms", "50"]);
    expect((await api(`${s.url}/v1/streams/short`, "PUT", { retention_ms: 300 })).status).toBe(201);
    for (let i = 0; i < 4; i++) expect((await publish(s.url, "short", 50)).status).toBe(200);
    const line = await lineOfKind(s.output, "retention");
    expect(line).toMatchObject({ level: "info", stream: "short", deleted_from_seq: 1 });
    expect(line.segments).toBeGreaterThan(0);
    expect(line.first_seq).toBe((line.deleted_to_seq as number) + 1);
    expect(typeof line.shard).toBe("number");
  });

  it("logs a group's takeover by its standby and a dead letter with its reason", async () => {
    const s = await start(dir());
    expect((await publish(s.url, "work", 3)).status).toBe(200);
    const active = await Consumer.connect(s.url, "work", "group=g&from=1&max_attempts=1");
    await active.eventsThrough(3);
    active.send({ type: "nack", seq: 1, reason: "cannot parse it" });
    const letter = await lineOfKind(s.output, "dead_letter");
    expect(letter).toMatchObject({ level: "warn", stream: "work", group: "g", seq: 1, attempts: 1, reason: "cannot parse it", dlq: "work.dlq" });
    const standby = await Consumer.connect(s.url, "work", "group=g");
    expect((await standby.controlMessage("hello")).role).toBe("standby");
    await active.close();
    const takeover = await lineOfKind(s.output, "takeover");
    expect(takeover).toMatchObject({ level: "info", stream: "work", group: "g", from_seq: 2 });
    await standby.close();
  });

  it("--log-level warn drops info lines but keeps warnings; --log-format pretty writes one readable line per message", async () => {
    // Without the info lines the test harness cannot learn the port: the test picks it.
    const port = await freePort("127.0.0.2");
    const quiet = spawn(process.execPath, [TICKER_MAIN, "serve", "--log-level", "warn", "--host", "127.0.0.2", "--port", String(port), "--data-dir", dir()]);
    let out = "";
    quiet.stdout.on("data", (c: Buffer) => (out += c.toString()));
    try {
      for (let i = 0; i < 400 && (await fetch(`http://127.0.0.2:${port}/readyz`).catch(() => null))?.status !== 200; i++) await sleep(50);
      expect((await publish(`http://127.0.0.2:${port}`, "q", 1)).status).toBe(200);
      const lines = logLines(out);
      expect(lines.map((l) => l.level)).toEqual(["warn"]);
      expect(lines[0]).toMatchObject({ kind: "security", host: "127.0.0.2" });
    } finally {
      quiet.kill("SIGKILL");
    }

    const pretty = await start(dir(), ["--log-format", "pretty"]);
    const text = pretty.output();
    expect(text).toMatch(
      /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: ticker listening on http:\/\/127\.0\.0\.1:\d+ \(data dir \/.+, \d+ shards\); new streams: durability process, retention 604800000 ms$/m,
    );
    expect(text).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: ticker ready: 0 streams recovered in \d+ ms$/m);
    expect(text).not.toContain("{");
  });

  it("a relative --data-dir is logged as the absolute path it resolves to", async () => {
    const cwd = dir();
    const child = spawn(process.execPath, [TICKER_MAIN, "serve", "--port", "0", "--data-dir", "rel/data"], { cwd });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    try {
      const listening = await lineOfKind(() => out, "listening");
      expect(listening.data_dir).toBe(join(cwd, "rel", "data"));
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("the access log has a line per request and upgrade, without the query (where a token may be)", async () => {
    const s = await start(dir(), ["--access-log", "true"]);
    expect((await publish(s.url, "acc", 2)).status).toBe(200);
    expect((await api(`${s.url}/v1/streams/nope`, "GET")).status).toBe(404);
    const c = await Consumer.connect(s.url, "acc", "from=1&token=secret-in-query");
    await c.eventsThrough(2);
    await c.close();
    await lineOfKind(s.output, "access", (l) => l.status === 101);
    const access = linesOfKind(s.output(), "access").map(({ method, path, status }) => ({ method, path, status }));
    expect(access).toEqual([
      { method: "POST", path: "/v1/streams/acc/events", status: 200 },
      { method: "GET", path: "/v1/streams/nope", status: 404 },
      { method: "GET", path: "/v1/streams/acc/consume", status: 101 },
    ]);
    expect(s.output()).not.toContain("secret-in-query");
    for (const l of linesOfKind(s.output(), "access")) expect(l.ms).toBeGreaterThanOrEqual(0);
  });

  it("refuses an unknown level or format at start", async () => {
    const { serveExpectingExit } = await import("../helpers/server.js");
    const level = await serveExpectingExit(["--port", "0", "--data-dir", dir(), "--log-level", "loud"]);
    expect(level.code).toBe(2);
    expect(level.output).toMatch(/log_level/);
    const format = await serveExpectingExit(["--port", "0", "--data-dir", dir(), "--log-format", "xml"]);
    expect(format.code).toBe(2);
    expect(format.output).toMatch(/log_format/);
  });
});
