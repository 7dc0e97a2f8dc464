// The `ticker` binary (dist build) as a script runs it: help, usage errors
// and their exit status, and serve taking its flags, environment and file.
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { configDocs } from "../../src/config.js";
import { TICKER_MAIN } from "../harness/ticker.js";
import { api, perTestServers, replayAll, startServer } from "../helpers/server.js";

const exec = promisify(execFile);

/** Runs `ticker <args>` to its end: exit status, stdout, stderr. */
async function ticker(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [TICKER_MAIN, ...args], { env: { ...process.env, ...env }, timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe("the ticker binary", () => {
  const { track, dir } = perTestServers();

  it("--help lists the commands, the global options and examples, on stdout with status 0", async () => {
    const r = await ticker(["--help"]);
    expect([r.code, r.stderr]).toEqual([0, ""]);
    for (const text of ["Usage: ticker", "serve", "--url <url>", "--token <key>", "--json", "Examples:", "docs/cli.md"]) expect(r.stdout).toContain(text);
    expect((await ticker(["help"])).stdout).toBe(r.stdout);
    expect((await ticker(["--version"])).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it("serve --help names every config key as a flag with its default, the aliases and examples", async () => {
    const r = await ticker(["serve", "--help"]);
    expect(r.code).toBe(0);
    for (const d of configDocs()) expect(r.stdout, d.key).toMatch(new RegExp(`--${d.key.replaceAll("_", "-")} <[^>]+>\\s.*\\(default: `));
    for (const text of ["--config <file>", "--tls-cert <path>", "--tls-key <path>", "TICKER_<KEY>", "Examples:", "$ ticker serve"])
      expect(r.stdout).toContain(text);
  });

  it("an unknown command, an unknown flag, a missing value or an extra argument exits 2 and says what was wrong", async () => {
    const cases: Array<[string[], RegExp]> = [
      [["publsh"], /unknown command 'publsh'/],
      [["serve", "--prot", "1"], /unknown option '--prot'[\s\S]*Did you mean --port\?/],
      [["--nope"], /unknown option '--nope'/],
      [["serve", "--port"], /option '--port <n>' argument missing/],
      [["serve", "now"], /too many arguments for 'serve'/],
    ];
    for (const [args, message] of cases) {
      const r = await ticker(args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr, args.join(" ")).toMatch(message);
      expect(r.stdout).toBe("");
    }
  });

  it("a bad config value from a flag, the environment or the file exits 2 naming the key", async () => {
    const d = dir();
    const file = join(d, "ticker.json");
    writeFileSync(file, JSON.stringify({ segment_bytes_max: 1 }));
    const cases: Array<[string[], Record<string, string>, RegExp]> = [
      [["--port", "70000"], {}, /port: /],
      [["--default-durability", "sometimes"], {}, /default_durability: /],
      [[], { TICKER_PUBLISH_EVENTS_MAX: "0" }, /publish_events_max: /],
      [["--config", file], {}, /segment_bytes_max: /],
      [["--config", join(d, "missing.json")], {}, /cannot read config file/],
    ];
    for (const [args, env, message] of cases) {
      const r = await ticker(["serve", "--data-dir", join(d, "data"), ...args], env);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stdout).not.toContain("ticker listening");
    }
    const json = await ticker(["--json", "serve", "--data-dir", join(d, "data"), "--port", "70000"]);
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stderr).error.message).toMatch(/port: /);
  });

  it("serve starts and serves, with keys from the --config file and a flag winning over TICKER_<KEY>", async () => {
    const d = dir();
    const file = join(d, "ticker.json");
    writeFileSync(file, JSON.stringify({ publish_events_max: 5, auto_create_streams: false }));
    const s = track(
      await startServer({ dataDir: join(d, "data"), args: ["--config", file, "--publish-events-max", "3"], env: { TICKER_PUBLISH_EVENTS_MAX: "4" } }),
    );
    expect((await api(`${s.url}/v1/streams/cli.s/events`, "POST", { events: [{ type: "a" }] })).status).toBe(404); // from the file
    expect((await api(`${s.url}/v1/streams/cli.s`, "PUT", {})).status).toBe(201);
    const events = (n: number) => ({ events: Array.from({ length: n }, (_, i) => ({ type: `t${i}` })) });
    expect((await api(`${s.url}/v1/streams/cli.s/events`, "POST", events(4))).status).toBe(413); // the flag's 3, not the environment's 4
    expect((await api(`${s.url}/v1/streams/cli.s/events`, "POST", events(3))).json.last_seq).toBe(3);
    expect((await replayAll(s.url, "cli.s")).map((e) => e.type)).toEqual(["t0", "t1", "t2"]);
    expect(await s.stop()).toBe(0);
  });
});
