// Ordered ingest on a full disk (a small tmpfs of our own): a gap timer that
// cannot append backs off instead of spinning, and a batch the log took is
// answered 200 even when held.log cannot be compacted after it.
import { execFileSync } from "node:child_process";
import { appendFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { api, replayAll, startServer, type TestServer } from "../helpers/server.js";

const ev = (producer_id: string, producer_seq: number, extra: Record<string, unknown> = {}) => ({ type: "t", producer_id, producer_seq, ...extra });
const publish = (url: string, stream: string, events: unknown[]) => api(`${url}/v1/streams/${stream}/events`, "POST", { events });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let cleanup: (() => Promise<void>) | null = null;
afterEach(async () => {
  await cleanup?.();
  cleanup = null;
});

async function onTmpfs(): Promise<{ s: TestServer; mnt: string; fill: () => void; free: () => void }> {
  const mnt = mkdtempSync(join(tmpdir(), "ticker-ordered-df-"));
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt]);
  const s = await startServer({ dataDir: join(mnt, "data") });
  const filler = join(mnt, "filler");
  cleanup = async () => {
    await s.kill9();
    execFileSync("umount", [mnt]);
    rmSync(mnt, { recursive: true, force: true });
  };
  const fill = () => {
    const page = Buffer.alloc(4096, 1);
    for (;;) {
      try {
        appendFileSync(filler, page);
      } catch {
        return;
      }
    }
  };
  return { s, mnt, fill, free: () => rmSync(filler, { force: true }) };
}

describe("ordered ingest: disk full", () => {
  it("a gap timer whose release cannot be appended backs off (100 ms doubling to 5 s), and releases once there is room", async () => {
    const { s, fill, free } = await onTmpfs();
    await api(`${s.url}/v1/streams/o`, "PUT", { producer_ordering: true, gap_timeout_ms: 200 });
    await publish(s.url, "o", [ev("a", 1)]);
    expect((await publish(s.url, "o", [ev("a", 3, { payload: "y".repeat(5000) })])).json.held).toHaveLength(1);
    fill();
    await sleep(2000);
    const failures = s
      .output()
      .split("\n")
      .filter((l) => l.includes("releasing held events failed")).length;
    free();
    expect(failures).toBeLessThan(6);
    // Room again: the next try (at most 5 s away) appends the tombstone and the held event.
    const until = Date.now() + 8000;
    let events = await replayAll(s.url, "o");
    while (events.length < 3 && Date.now() < until) {
      await sleep(100);
      events = await replayAll(s.url, "o");
    }
    expect(events.map((e) => `${e.type}${e.producer_seq}`)).toEqual(["t1", "gap2", "t3"]);
  });

  it("a batch the log took is answered 200 even when held.log cannot be compacted after it; a refused one leaves nothing", async () => {
    const { s, fill, free } = await onTmpfs();
    await api(`${s.url}/v1/streams/o`, "PUT", { producer_ordering: true, gap_timeout_ms: 60_000 });
    await publish(s.url, "o", [ev("a", 1), ev("b", 1)]);
    // held.log: b3..b7 (released below) and a3 (still held): a rewrite follows their release.
    await publish(
      s.url,
      "o",
      [3, 4, 5, 6, 7].map((q) => ev("b", q)),
    );
    await publish(s.url, "o", [ev("a", 3)]);
    fill();
    const batch = [{ type: "plain" }, ev("b", 2)];
    const r = await publish(s.url, "o", batch);
    free();
    const head = (await api(`${s.url}/v1/streams/o`, "GET")).json.head_seq;
    // Either refused with nothing appended, or appended and answered 200.
    if (r.status !== 200) expect(head, `answered ${r.status} ${JSON.stringify(r.json)}`).toBe(2);
    const events = await replayAll(s.url, "o");
    expect(events.length).toBe(head);
  });
});
