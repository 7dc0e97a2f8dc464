import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { TickerError } from "../../src/client/errors.js";
import { type CliContext, addGlobalOptions, clientContext } from "../../src/cli/context.js";
import { CliError, ExitCode, exitCodeOf } from "../../src/cli/exit-codes.js";

/** Parses `args` as a later client command would get them, and resolves its context. */
function contextFor(args: string[], env: NodeJS.ProcessEnv = {}): CliContext {
  let ctx: CliContext | undefined;
  const program = addGlobalOptions(new Command("ticker")).exitOverride();
  program.addCommand(new Command("streams").action((_opts, cmd: Command) => void (ctx = clientContext(cmd, env))).copyInheritedSettings(program));
  program.parse(args, { from: "user" });
  return ctx!;
}

describe("the client commands' context", () => {
  it("without flags or environment: the local server, no token, human output", () => {
    expect(contextFor(["streams"])).toEqual({ url: "http://127.0.0.1:8080", token: undefined, json: false });
  });

  it("TICKER_URL and TICKER_TOKEN are taken, and flags win over them, before or after the command", () => {
    const env = { TICKER_URL: "https://ticker.example:9443/", TICKER_TOKEN: "from-env" };
    expect(contextFor(["streams"], env)).toEqual({ url: "https://ticker.example:9443", token: "from-env", json: false });
    expect(contextFor(["--url", "http://10.0.0.5:8080", "streams", "--token", "from-flag", "--json"], env)).toEqual({
      url: "http://10.0.0.5:8080",
      token: "from-flag",
      json: true,
    });
    expect(contextFor(["streams"], { TICKER_URL: "", TICKER_TOKEN: "" })).toEqual({ url: "http://127.0.0.1:8080", token: undefined, json: false });
  });

  it("a URL that is not an http(s) base URL is a usage error naming it", () => {
    for (const url of ["127.0.0.1:8080", "ftp://host", "not a url", "http://host/?x=1"]) {
      const err = (() => {
        try {
          contextFor(["--url", url, "streams"]);
        } catch (e) {
          return e;
        }
      })();
      expect(err, url).toBeInstanceOf(CliError);
      expect((err as CliError).exitCode).toBe(ExitCode.usage);
      expect((err as CliError).message).toContain(url);
    }
  });
});

describe("exit statuses", () => {
  it("a 4xx answer is 'refused', a 5xx or no answer is 'server failed', a CliError keeps its own, anything else is 1", () => {
    expect(exitCodeOf(new TickerError(404, "stream_not_found", "no such stream"))).toBe(5);
    expect(exitCodeOf(new TickerError(429, "shard_busy", "busy"))).toBe(5);
    expect(exitCodeOf(new TickerError(503, "not_ready", "recovering"))).toBe(6);
    expect(exitCodeOf(new TickerError(0, "connection_failed", "ECONNREFUSED"))).toBe(6);
    expect(exitCodeOf(new CliError("locked", ExitCode.dataDirLocked))).toBe(3);
    expect(exitCodeOf(new Error("bug"))).toBe(1);
    expect(ExitCode).toEqual({ ok: 0, failure: 1, usage: 2, dataDirLocked: 3, listenFailed: 4, refused: 5, serverFailed: 6 });
  });
});
