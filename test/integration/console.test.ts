// The web console (GET /console) in a real Chromium against a real server:
// what an operator sees move when events are published, a group acks, an
// event is dead-lettered, and what the page does on a server with API keys.
// Screenshots go to test-artifacts/console/; with TICKER_WRITE_DOCS_SCREENSHOT=1
// the stream page is also written to docs/console.png.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchChromium } from "../harness/chromium.js";
import { REPO_ROOT } from "../harness/process.js";
import { Consumer } from "../helpers/consumer.js";
import { api, removeDir, startServer, tempDataDir, type TestServer } from "../helpers/server.js";

/** A page polls once a second; this leaves room for a loaded 2-core machine. */
const WAIT_MS = 20_000;
const ARTIFACTS_DIR = join(REPO_ROOT, "test-artifacts", "console");
const ADMIN_KEY = "console-admin-key";

const publish = async (url: string, stream: string, events: unknown[], headers: Record<string, string> = {}) => {
  const r = await api(`${url}/v1/streams/${stream}/events`, "POST", { events }, headers);
  expect(r.status, JSON.stringify(r.json)).toBe(200);
};

/** Waits until an element matching `selector` shows `text` (a string it contains, or a pattern of its whole text). */
const shows = (page: Page, selector: string, text: string | RegExp) => page.locator(selector).filter({ hasText: text }).first().waitFor({ timeout: WAIT_MS });

async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS_DIR, `${name}.png`), fullPage: true });
}

describe("web console in Chromium", () => {
  let browser: Browser;
  let s: TestServer;
  beforeAll(async () => {
    [browser, s] = await Promise.all([launchChromium(), startServer()]);
  });
  afterAll(async () => {
    await browser?.close();
    await s?.stop();
  });

  const open = async (url: string, hash = ""): Promise<Page> => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${url}/console${hash}`);
    return page;
  };

  it("serves its files with their content types and no-cache; any other file is 404 and another method 405, as on every route", async () => {
    for (const [path, type] of [
      ["/console", "text/html"],
      ["/console/", "text/html"],
      ["/console/app.js", "text/javascript"],
      ["/console/style.css", "text/css"],
      ["/console/uPlot.iife.min.js", "text/javascript"],
      ["/console/uPlot.min.css", "text/css"],
    ]) {
      const r = await fetch(`${s.url}${path}`);
      expect(r.status, path).toBe(200);
      expect(r.headers.get("content-type"), path).toBe(`${type}; charset=utf-8`);
      expect(r.headers.get("cache-control"), path).toBe("no-cache");
      expect((await r.arrayBuffer()).byteLength, path).toBeGreaterThan(0);
    }
    for (const path of ["/console/package.json", "/console/..%2Fapi.ts", "/console/a/app.js"]) {
      const r = await api(`${s.url}${path}`, "GET");
      expect(r.status, path).toBe(404);
      expect(r.json.error.code, path).toBe("not_found");
    }
    const post = await api(`${s.url}/console`, "POST", {});
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET");
  });

  it("lists a stream as soon as it is published to; its page tails new events and shows a group's lag fall as it acks", async () => {
    const page = await open(s.url);
    await page.locator("#streams-box").waitFor({ timeout: WAIT_MS });
    await publish(
      s.url,
      "orders",
      Array.from({ length: 5 }, (_, i) => ({ type: "created", key: `o${i + 1}`, payload: { n: i + 1 } })),
    );
    await shows(page, '#streams tr[data-stream="orders"] .head', /^5$/);
    await screenshot(page, "streams");

    await page.locator('#streams tr[data-stream="orders"] a').click();
    await shows(page, '#tail li[data-seq="5"]', '{"n":5}');
    await publish(s.url, "orders", [{ type: "paid", key: "o1", payload: { live: true } }]);
    await shows(page, '#tail li[data-seq="6"]', '{"live":true}');
    // Each event once, newest first, however many polls have run.
    expect(await page.locator("#tail li").evaluateAll((lis) => lis.map((li) => Number(li.getAttribute("data-seq"))))).toEqual([6, 5, 4, 3, 2, 1]);

    expect((await api(`${s.url}/v1/streams/orders/checkpoint`, "POST", { group: "billing", seq: 2 })).status).toBe(200);
    await shows(page, '#groups tr[data-group="billing"] .lag', /^4$/);
    const c = await Consumer.connect(s.url, "orders", "group=billing");
    try {
      await c.eventsThrough(6);
      await shows(page, '#groups tr[data-group="billing"]', "active");
      c.send({ type: "ack", seq: 6 });
      await shows(page, '#groups tr[data-group="billing"] .lag', /^0$/);
    } finally {
      await c.close();
    }
    // The chart has drawn the group (uPlot's legend names each series).
    await shows(page, "#lag-chart .u-legend", "billing");
    await screenshot(page, "stream");
    if (process.env.TICKER_WRITE_DOCS_SCREENSHOT === "1") await page.screenshot({ path: join(REPO_ROOT, "docs", "console.png"), fullPage: true });
    await page.close();
  });

  it("shows a dead letter with its reason, and redrives it to its stream", async () => {
    await publish(s.url, "payments", [
      { type: "charge", key: "c1", payload: { amount: 120 } },
      { type: "charge", key: "c2", payload: { amount: 75 } },
      { type: "charge", key: "c3", payload: { amount: 30 } },
    ]);
    const page = await open(s.url, "#/streams/payments");
    await shows(page, "#dlq", "No dead letters");
    const c = await Consumer.connect(s.url, "payments", "group=ledger&from=earliest&max_attempts=1");
    try {
      await c.eventsThrough(2);
      c.send({ type: "ack", seq: 1 });
      c.send({ type: "nack", seq: 2, reason: "card declined" });
      await shows(page, '#dlq tr[data-dlq-seq="1"] .reason', "card declined");
      await shows(page, '#groups tr[data-group="ledger"]', "active");
      await screenshot(page, "dead-letter");
      await page.locator('#dlq tr[data-dlq-seq="1"] button').click();
      await shows(page, "#redrive-result", "moved 1, duplicates 0");
    } finally {
      await c.close();
    }
    await shows(page, '#tail li[data-seq="4"]', '{"amount":75}');
    await page.close();
  });

  it("pages through a named timeline", async () => {
    await publish(
      s.url,
      "tl-a",
      Array.from({ length: 15 }, (_, i) => ({ type: "a", payload: { i } })),
    );
    await publish(
      s.url,
      "tl-b",
      Array.from({ length: 15 }, (_, i) => ({ type: "b", payload: { i } })),
    );
    expect((await api(`${s.url}/v1/timelines/both`, "PUT", { streams: ["tl-a", "tl-b"] })).status).toBe(201);
    const page = await open(s.url, "#/timelines");
    await page.locator('#timelines tr[data-timeline="both"] a').click();
    await page.locator("#timeline-events tbody tr").nth(24).waitFor({ timeout: WAIT_MS });
    expect(await page.locator("#timeline-events tbody tr").count()).toBe(25);
    await page.locator("#timeline-next").click();
    await page.waitForFunction(() => document.querySelectorAll("#timeline-events tbody tr").length === 5, null, { timeout: WAIT_MS });
    await screenshot(page, "timeline");
    await page.close();
  });
});

describe("web console on a server with API keys", () => {
  let browser: Browser;
  let s: TestServer;
  let dir: string;
  const bearer = { authorization: `Bearer ${ADMIN_KEY}` };
  beforeAll(async () => {
    dir = tempDataDir();
    writeFileSync(join(dir, "keys.json"), JSON.stringify([{ key: ADMIN_KEY, scopes: ["admin", "consume", "publish"] }]));
    [browser, s] = await Promise.all([launchChromium(), startServer({ dataDir: join(dir, "data"), args: ["--api-keys-file", join(dir, "keys.json")] })]);
    await publish(s.url, "secret", [{ type: "t" }, { type: "t" }], bearer);
  });
  afterAll(async () => {
    await browser?.close();
    await s?.stop();
    removeDir(dir);
  });

  it("asks for a key, shows the data once given a good one, and asks again once the key is forgotten", async () => {
    // The page itself is open: it holds no data.
    expect((await fetch(`${s.url}/console`)).status).toBe(200);
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${s.url}/console`);
    await page.locator("#key-form").waitFor({ state: "visible", timeout: WAIT_MS });
    await shows(page, "#key-reason", "needs an API key");
    await screenshot(page, "key-prompt");

    await page.fill("#key-input", "not-a-key");
    await page.click('#key-form button[type="submit"]');
    await shows(page, "#key-reason", "refused");

    await page.fill("#key-input", ADMIN_KEY);
    await page.click('#key-form button[type="submit"]');
    await shows(page, '#streams tr[data-stream="secret"] .head', /^2$/);
    expect(await page.locator("#key-form").isHidden()).toBe(true);
    expect(await page.evaluate(() => Object.values(sessionStorage))).toEqual([ADMIN_KEY]);

    await page.click("#forget-key");
    await page.locator("#key-form").waitFor({ state: "visible", timeout: WAIT_MS });
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
    await page.close();
  });
});
