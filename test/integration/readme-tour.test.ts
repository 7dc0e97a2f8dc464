// The README's five-minute tour runs as written: every ```sh and ```ts block
// of its "Five-minute tour" section, in order, against one real server. A
// sh block runs under `bash -euo pipefail` with `ticker` on PATH (the built
// CLI) and TICKER_URL set; `127.0.0.1:8080` in a block becomes the test
// server's address. A ts block is transpiled (TypeScript's own transpiler)
// and run by node from inside the package, so `ticker/client` resolves as
// it does for a user who installed it. A block fails the test by exiting
// non-zero; what it prints is checked where the tour says what to expect
// (a comment `# → text` or `// → text`: the block's output contains text).
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ts from "typescript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../harness/process.js";
import { TICKER_MAIN } from "../harness/ticker.js";
import { removeDir, startServer, type TestServer } from "../helpers/server.js";

interface Block {
  lang: "sh" | "ts";
  code: string;
  line: number;
}

/** The fenced blocks of the README section headed `heading`, in order. */
function tourBlocks(readme: string, heading: string): Block[] {
  const lines = readme.split("\n");
  const start = lines.findIndex((l) => l.trim() === heading);
  if (start < 0) throw new Error(`README has no "${heading}" section`);
  const blocks: Block[] = [];
  for (let i = start + 1; i < lines.length && !/^## /.test(lines[i]); i++) {
    const open = /^```(\w*)\s*$/.exec(lines[i]);
    if (!open) continue;
    const body: string[] = [];
    const line = i + 1;
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]); i++) body.push(lines[i]);
    if (open[1] !== "sh" && open[1] !== "ts") throw new Error(`README line ${line}: a tour block must be sh or ts, not "${open[1]}"`);
    blocks.push({ lang: open[1], code: body.join("\n"), line });
  }
  return blocks;
}

const blocks = tourBlocks(readFileSync(join(REPO_ROOT, "README.md"), "utf8"), "## Five-minute tour");

describe("README five-minute tour", () => {
  let s: TestServer;
  let work: string;
  let bin: string;
  const scratch = join(REPO_ROOT, "dist", "readme-tour");
  beforeAll(async () => {
    s = await startServer();
    work = mkdtempSync(join(tmpdir(), "ticker-tour-"));
    bin = join(work, "bin");
    mkdirSync(bin);
    writeFileSync(join(bin, "ticker"), `#!/bin/sh\nexec "${process.execPath}" "${TICKER_MAIN}" "$@"\n`);
    chmodSync(join(bin, "ticker"), 0o755);
    mkdirSync(scratch, { recursive: true });
  });
  afterAll(async () => {
    await s?.stop();
    if (s) removeDir(s.dataDir);
    rmSync(work, { recursive: true, force: true });
    rmSync(scratch, { recursive: true, force: true });
  });

  it("has blocks of both kinds", () => {
    expect(blocks.some((b) => b.lang === "sh")).toBe(true);
    expect(blocks.some((b) => b.lang === "ts")).toBe(true);
  });

  for (const [n, b] of blocks.entries()) {
    it(`block ${n + 1} (${b.lang}, README line ${b.line}) runs`, () => {
      const address = s.url.replace(/^http:\/\//, "");
      const code = b.code.replaceAll("127.0.0.1:8080", address).replaceAll("localhost:8080", address);
      const env = { ...process.env, TICKER_URL: s.url, PATH: `${bin}:${process.env.PATH}` };
      let r: ReturnType<typeof spawnSync>;
      if (b.lang === "sh") {
        r = spawnSync("bash", ["-euo", "pipefail", "-c", code], { cwd: work, env, encoding: "utf8", timeout: 60_000 });
      } else {
        const js = ts.transpileModule(code, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText;
        const file = join(scratch, `block-${n + 1}.mjs`);
        writeFileSync(file, js);
        r = spawnSync(process.execPath, [file], { cwd: work, env, encoding: "utf8", timeout: 60_000 });
      }
      const out = `${r.stdout}${r.stderr}`;
      expect(r.status, `README line ${b.line}:\n${code}\n--- output ---\n${out}`).toBe(0);
      for (const m of code.matchAll(/(?:#|\/\/)\s*→\s*(.+)$/gm)) expect(out, `README line ${b.line}: expected "${m[1]}"`).toContain(m[1].trim());
    });
  }
});
