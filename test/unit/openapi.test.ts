import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DOCUMENTED_ROUTES, openApiJson } from "../../src/front/openapi.js";
import { OpenApiChecker } from "../helpers/openapi-check.js";

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

describe("the conformance checker (test/helpers/openapi-check.ts) refuses what the document does not describe", () => {
  const checker = new OpenApiChecker(JSON.parse(openApiJson()));
  const json = { "content-type": "application/json" };
  const body = (v: unknown) => Buffer.from(JSON.stringify(v));
  const answer = (method: string, path: string, status: number, b: unknown, headers: Record<string, string> = json) => ({
    method,
    url: `http://h${path}`,
    status,
    headers,
    body: body(b),
  });
  const err = { error: { code: "rate_limited", message: "m" } };

  it("takes a documented answer and records its (operation, status)", () => {
    checker.check(answer("GET", "/v1/streams/s/lag", 200, { group: "g", head_seq: 3, checkpoint_seq: 1, lag: 2, lag_ms: 0 }));
    checker.check(answer("GET", "/v1/streams/s/lag", 429, err, { ...json, "retry-after": "1" }));
    expect([...checker.seen]).toEqual(["GET /v1/streams/{id}/lag 200", "GET /v1/streams/{id}/lag 429"]);
  });

  it.each([
    [
      "a field the schema lacks",
      answer("GET", "/v1/streams/s/lag", 200, { group: "g", head_seq: 3, checkpoint_seq: 1, lag: 2, lag_ms: 0, x: 1 }),
      /additional properties/,
    ],
    ["a required field missing", answer("GET", "/v1/streams/s/checkpoint", 200, { group: "g" }), /must have required property 'seq'/],
    ["a 429 without Retry-After", answer("GET", "/v1/streams/s/lag", 429, err), /Retry-After is missing/],
    ["an undocumented status", answer("GET", "/healthz", 404, err), /status 404 is not documented/],
    ["an error code no one defines", answer("GET", "/healthz", 400, { error: { code: "nope", message: "m" } }), /allowed values/],
    ["an undocumented path answering 200", answer("GET", "/v2/x", 200, {}), /not in \/openapi.json/],
    ["a 405 whose Allow differs from the document", answer("PATCH", "/v1/streams/s/lag", 405, err, { ...json, allow: "GET, POST" }), /Allow is/],
  ])("refuses %s", (_what, a, message) => {
    expect(() => checker.check(a)).toThrow(message);
  });
});
