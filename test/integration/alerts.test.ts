// docs/alerts.yml through Prometheus's own checker: the rules parse and type-
// check (`promtool check rules`), and each alert fires on the series it is
// written for and stays quiet on the others (`promtool test rules` with
// docs/alerts.test.yml). promtool is installed from Debian when missing,
// never skipped: an alert file nobody evaluates is how alerts silently break.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { ensurePromtool } from "../harness/promtool.js";
import { REPO_ROOT, run } from "../harness/process.js";
import { asSentByGrafana, dashboardExprs } from "../helpers/monitoring-docs.js";

/** apt-get may wait for another file's install (the machine-wide lock), then download and unpack ~20 MB. */
const INSTALL_WAIT_MS_MAX = 15 * 60_000;
const PROMTOOL_TIMEOUT_MS = 60_000;

let promtool = "";
const dir = mkdtempSync(join(tmpdir(), "ticker-alerts-"));

beforeAll(async () => {
  promtool = await ensurePromtool();
}, INSTALL_WAIT_MS_MAX);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function promtoolSays(args: string[]): Promise<string> {
  const r = await run(promtool, args, PROMTOOL_TIMEOUT_MS, { cwd: REPO_ROOT });
  expect(r.ok, `promtool ${args.join(" ")} failed:\n${r.out}`).toBe(true);
  return r.out;
}

describe("docs/alerts.yml", () => {
  it("is a valid rule file for Prometheus", async () => {
    expect(await promtoolSays(["check", "rules", "docs/alerts.yml"])).toMatch(/SUCCESS: \d+ rules found/);
  });

  it("fires each alert on its cases and on none of the look-alikes (docs/alerts.test.yml)", async () => {
    expect(await promtoolSays(["test", "rules", "docs/alerts.test.yml"])).toContain("SUCCESS");
  });
});

describe("docs/grafana-dashboard.json", () => {
  it("asks Prometheus only queries its parser takes", async () => {
    // promtool parses PromQL only inside rule files: each query becomes a recording rule.
    const exprs = dashboardExprs().map(asSentByGrafana);
    const rules = exprs.map((expr, i) => ({ record: `dashboard:query_${i}`, expr }));
    const file = join(dir, "dashboard-queries.yml");
    writeFileSync(file, stringify({ groups: [{ name: "dashboard", rules }] }));
    expect(await promtoolSays(["check", "rules", file])).toContain(`SUCCESS: ${exprs.length} rules found`);
  });
});
