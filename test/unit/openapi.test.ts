import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DOCUMENTED_ROUTES, openApiJson } from "../../src/front/openapi.js";

/** Every route registration in src/front: (method, pattern), read from the source the server runs. */
function registeredRoutes(): string[] {
  const out = new Set<string>();
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith(".ts"))
        for (const m of readFileSync(p, "utf8").matchAll(/routes\.(get|post|put|del)\(\s*"([^"]+)"/g)) out.add(`${m[1] === "del" ? "delete" : m[1]} ${m[2]}`);
    }
  };
  walk("src/front");
  return [...out].sort();
}

describe("openapi document", () => {
  it("docs/openapi.json is the document the server serves (npm run docs:openapi rewrites it)", () => {
    expect(readFileSync("docs/openapi.json", "utf8")).toBe(openApiJson());
  });

  it("documents every registered route", () => {
    const documented = new Set(DOCUMENTED_ROUTES.map((r) => `${r.method} ${r.pattern}`));
    expect(registeredRoutes().filter((r) => !documented.has(r))).toEqual([]);
  });
});
