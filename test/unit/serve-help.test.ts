import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { configDocs, type ConfigKeyDoc } from "../../src/config.js";
import { serveCommand } from "../../src/cli/serve.js";

const flag = (key: string) => `--${key.replaceAll("_", "-")}`;

/** The help's option entries, one string each, however commander wrapped them. */
function helpEntries(): string[] {
  return serveCommand()
    .helpInformation()
    .split(/\n(?= {2}-)/)
    .map((e) => e.replace(/\s+/g, " ").trim());
}

/** The README's row for a key: numbers bare, other values as code, the rule for a machine-dependent default. */
function readmeRow(d: ConfigKeyDoc): string {
  const value = d.defaultRule ?? (d.default === "" ? "(none)" : typeof d.default === "number" ? String(d.default) : `\`${d.default}\``);
  return `| \`${d.key}\` | ${value} | ${d.description} |`;
}

describe("ticker serve --help and the README's configuration table", () => {
  it("every config key is a flag in serve --help, with its description and its default", () => {
    const entries = helpEntries();
    const docs = configDocs();
    expect(docs.length).toBeGreaterThan(50);
    for (const d of docs) {
      const entry = entries.find((e) => e.startsWith(`${flag(d.key)} <`));
      expect(entry, `${flag(d.key)} in serve --help`).toBeDefined();
      const shown = d.default === "" ? "none" : String(d.default);
      expect(entry).toContain(`(default: ${shown}`);
      expect(entry).toContain(d.description.replaceAll("`", ""));
    }
    expect(entries.find((e) => e.startsWith("--shards <n>"))).toContain("one per core, 2 to 4)");
    expect(entries.find((e) => e.startsWith("--tls-cert <path>"))).toContain("short for --tls-cert-file");
    expect(entries.find((e) => e.startsWith("--default-durability <process|fsync>"))).toContain("(default: process)");
  });

  it("the README's table has every key, in the schema's order, with the schema's default and description", () => {
    const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
    const table = readme.slice(readme.indexOf("| Key | Default | Meaning |"));
    const rows = table.slice(0, table.indexOf("\n\n")).split("\n").slice(2);
    expect(rows).toEqual(configDocs().map(readmeRow));
  });
});
