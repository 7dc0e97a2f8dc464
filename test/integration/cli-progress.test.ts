// src/cli/progress.ts through test/helpers/progress-child.mjs (the dist build:
// run `npm run build` first), in a pseudo-terminal made by util-linux
// `script` and through plain pipes.
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";

const run = promisify(execFile);
const CHILD = fileURLToPath(new URL("../helpers/progress-child.mjs", import.meta.url));

const dirs: string[] = [];
afterEach(() => {
  while (dirs.length) rmSync(dirs.pop()!, { recursive: true, force: true });
});

/** What a terminal showed while `shellCommand` ran in it (stdin empty). */
async function inTerminal(shellCommand: string): Promise<string> {
  const { stdout } = await run("script", ["-qec", shellCommand, "/dev/null"], { timeout: 30_000 });
  return stdout.replaceAll("\r", "");
}

describe("the progress line", () => {
  it("in a terminal, with a total: on stderr, a bar with events done, events/s and an ETA; stdout gets only the output", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ticker-progress-"));
    dirs.push(dir);
    const out = join(dir, "stdout.txt");
    const screen = await inTerminal(`'${process.execPath}' '${CHILD}' 1000 > '${out}'`);
    expect(screen).toMatch(/publish \[=+\] 100% \| 1000\/1000 events \| \d+ events\/s \| ETA 0s/);
    expect(screen).toMatch(/publish \[=*-+\] \d{1,2}% \| \d+\/1000 events \| \d+ events\/s \| ETA \d+s/);
    expect(readFileSync(out, "utf8")).toBe("done\n");
  });

  it("in a terminal, without a total: events done and events/s, no bar and no ETA", async () => {
    const screen = await inTerminal(`'${process.execPath}' '${CHILD}' unknown 2>&1 >/dev/null`);
    expect(screen).toMatch(/publish 1000 events \| \d+ events\/s \| \d+s/);
    expect(screen).not.toContain("ETA");
    expect(screen).not.toMatch(/\[[=-]/);
  });

  it("with --json nothing is drawn, even in a terminal", async () => {
    expect(await inTerminal(`'${process.execPath}' '${CHILD}' 1000 --json`)).toBe("done\n");
  });

  it("with stderr piped not a byte is written to it", async () => {
    const { stdout, stderr } = await run(process.execPath, [CHILD, "1000"], { timeout: 30_000 });
    expect([stdout, stderr]).toEqual(["done\n", ""]);
  });
});
